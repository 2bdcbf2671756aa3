//! Keyset pages for the API (`GET /v1/payments`, `GET /v1/discrepancies`): rows in id order
//! after a given id. Each page costs a seek plus its rows, however large the ledger: a filter
//! with an account walks that account's index; a filter on a state or on open discrepancies
//! without an account reads one page from each account that has such rows (the accounts are
//! few, read from the trigger-kept counts) and merges them.

use sqlx::sqlite::SqliteRow;

use super::queries::{PAYMENT_COLUMNS, PaymentRow};
use super::runs::{DISCREPANCY_COLUMNS, DiscrepancyRow};
use super::{Ledger, LedgerError};
use crate::domain::PaymentState;

/// The most rows one page holds.
pub const MAX_PAGE: u32 = 1000;

/// Which payments a page lists.
#[derive(Debug, Clone, Default)]
pub struct PaymentPage {
    pub state: Option<PaymentState>,
    pub account: Option<String>,
    /// Rows with an id above this one (0: from the start).
    pub after: i64,
    pub limit: u32,
}

/// Which discrepancies a page lists.
#[derive(Debug, Clone, Default)]
pub struct DiscrepancyPage {
    pub account: Option<String>,
    /// Resolved ones too.
    pub include_resolved: bool,
    pub after: i64,
    pub limit: u32,
}

/// Payments after ?1, at most ?2: by id alone (primary key).
pub(super) fn payments_page_sql(account: bool, state: bool) -> String {
    let filter = match (account, state) {
        (false, false) => "",
        (true, false) => "account = ?3 AND",
        (_, true) => "account = ?3 AND state = ?4 AND",
    };
    format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {filter} id > ?1 ORDER BY id LIMIT ?2")
}

/// Discrepancies after ?1, at most ?2, of account ?3 (when `account`), open only unless
/// `resolved`.
pub(super) fn discrepancies_page_sql(account: bool, resolved: bool) -> String {
    let filter = match (account, resolved) {
        (false, true) => "",
        (true, true) => "account = ?3 AND",
        (_, false) => "resolved_at IS NULL AND account = ?3 AND",
    };
    format!(
        "SELECT {DISCREPANCY_COLUMNS} FROM discrepancies WHERE {filter} id > ?1 \
         ORDER BY id LIMIT ?2"
    )
}

/// The accounts that have payments in state ?1.
pub(super) const ACCOUNTS_IN_STATE: &str =
    "SELECT DISTINCT account FROM payment_counts WHERE state = ? AND n > 0";

/// The accounts that have open discrepancies.
pub(super) const ACCOUNTS_WITH_OPEN: &str =
    "SELECT DISTINCT account FROM discrepancy_counts WHERE open > 0";

impl Ledger {
    pub async fn payments_page(&self, page: &PaymentPage) -> Result<Vec<PaymentRow>, LedgerError> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let state = page.state.map(PaymentState::as_str);
        let accounts = match (&page.account, state) {
            (Some(a), _) => vec![a.clone()],
            (None, Some(s)) => {
                sqlx::query_scalar(ACCOUNTS_IN_STATE)
                    .bind(s)
                    .fetch_all(&self.pool)
                    .await?
            }
            (None, None) => vec![String::new()],
        };
        let sql = payments_page_sql(page.account.is_some() || state.is_some(), state.is_some());
        let rows = self
            .merged(&sql, &accounts, page.after, limit, state, |r| {
                Ok(PaymentRow::from_row(r))
            })
            .await?;
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    pub async fn discrepancies_page(
        &self,
        page: &DiscrepancyPage,
    ) -> Result<Vec<DiscrepancyRow>, LedgerError> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let accounts = match (&page.account, page.include_resolved) {
            (Some(a), _) => vec![a.clone()],
            (None, false) => {
                sqlx::query_scalar(ACCOUNTS_WITH_OPEN)
                    .fetch_all(&self.pool)
                    .await?
            }
            (None, true) => vec![String::new()],
        };
        let by_account = page.account.is_some() || !page.include_resolved;
        let sql = discrepancies_page_sql(by_account, page.include_resolved);
        let rows = self
            .merged(&sql, &accounts, page.after, limit, None, |r| {
                Ok(DiscrepancyRow::from_row(r))
            })
            .await?;
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    /// One page of `sql` per account, merged in id order and cut to `limit`. The account
    /// (?3) and the state (?4) are bound only when the statement has them: SQLite refuses
    /// extra parameters.
    async fn merged<T>(
        &self,
        sql: &str,
        accounts: &[String],
        after: i64,
        limit: u32,
        state: Option<&str>,
        read: impl Fn(&SqliteRow) -> Result<T, LedgerError>,
    ) -> Result<Vec<(i64, T)>, LedgerError> {
        use sqlx::Row;
        let mut all = Vec::new();
        for account in accounts {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(limit);
            if sql.contains("?3") {
                q = q.bind(account);
            }
            if sql.contains("?4") {
                q = q.bind(state);
            }
            let rows = q.fetch_all(&self.pool).await?;
            for r in &rows {
                all.push((r.get::<i64, _>("id"), read(r)?));
            }
        }
        all.sort_by_key(|(id, _)| *id);
        all.truncate(limit as usize);
        Ok(all)
    }
}
