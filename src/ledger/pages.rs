//! Keyset pages for the API (`GET /v1/payments`, `GET /v1/discrepancies`): payments in the
//! order of their creation, discrepancies in id order, after a given id. Each page costs a seek
//! plus its rows, however large the ledger: one account's page walks that account's index; a
//! page without an account reads one page from each account that has such rows (the accounts
//! are few, read from the trigger-kept counts) and merges them.

use sqlx::sqlite::SqliteRow;

use super::queries::{PAYMENT_COLUMNS, PaymentRow};
use super::runs::{DISCREPANCY_COLUMNS, DiscrepancyRow};
use super::{LedgerError, SqliteLedger};
use crate::domain::PaymentState;

/// The most rows one page holds.
pub const MAX_PAGE: u32 = 1000;

/// Which payments a page lists.
#[derive(Debug, Clone, Default)]
pub struct PaymentPage {
    pub state: Option<PaymentState>,
    pub account: Option<String>,
    /// Payments after this one in creation order (0: from the start).
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

/// Payments of account ?3 (in state ?4 when `state`) after payment ?1 in the order of their
/// creation (ties by id), at most ?2; none after an id no payment has (`'~'` sorts after
/// every time), so a wrong page token never starts the walk over: a seek in `payments_by_created` or
/// `payments_by_account_state`, both `(account, [state,] created_at)` plus the row id, which
/// the lanes' writes maintain anyway (no index of its own, so listing costs the hot path
/// nothing).
pub(super) fn payments_page_sql(state: bool) -> String {
    let (index, filter) = if state {
        ("payments_by_account_state", "AND state = ?4")
    } else {
        ("payments_by_created", "")
    };
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments INDEXED BY {index}
         WHERE account = ?3 {filter}
           AND (created_at, id) > (COALESCE((SELECT created_at FROM payments WHERE id = ?1),
                                             CASE WHEN ?1 = 0 THEN '' ELSE '~' END), ?1)
         ORDER BY created_at, id LIMIT ?2"
    )
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

/// The accounts that have payments (in state ?1, unless it is NULL).
pub(super) const ACCOUNTS_WITH_PAYMENTS: &str =
    "SELECT DISTINCT account FROM payment_counts WHERE (?1 IS NULL OR state = ?1) AND n > 0";

/// The accounts that have open discrepancies.
pub(super) const ACCOUNTS_WITH_OPEN: &str =
    "SELECT DISTINCT account FROM discrepancy_counts WHERE open > 0";

impl SqliteLedger {
    pub async fn payments_page(&self, page: &PaymentPage) -> Result<Vec<PaymentRow>, LedgerError> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let state = page.state.map(PaymentState::as_str);
        let accounts = match &page.account {
            Some(a) => vec![a.clone()],
            None => {
                sqlx::query_scalar(ACCOUNTS_WITH_PAYMENTS)
                    .bind(state)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let rows = self
            .merged(
                &payments_page_sql(state.is_some()),
                &accounts,
                page.after,
                limit,
                state,
                |r| {
                    let p = PaymentRow::from_row(r);
                    Ok(((p.created_at.clone(), p.id), p))
                },
            )
            .await?;
        Ok(rows)
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
        self.merged(&sql, &accounts, page.after, limit, None, |r| {
            let d = DiscrepancyRow::from_row(r);
            Ok(((String::new(), d.id), d))
        })
        .await
    }

    /// One page of `sql` per account, merged in the order of the keys `read` gives, and cut to
    /// `limit`. The account (?3) and the state (?4) are bound only when the statement has
    /// them: SQLite refuses extra parameters.
    async fn merged<T, K: Ord>(
        &self,
        sql: &str,
        accounts: &[String],
        after: i64,
        limit: u32,
        state: Option<&str>,
        read: impl Fn(&SqliteRow) -> Result<(K, T), LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
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
            for r in &q.fetch_all(&self.pool).await? {
                all.push(read(r)?);
            }
        }
        Ok(merge(all, limit))
    }
}

/// Pages of several accounts, `(key, row)`, merged in key order and cut to `limit`.
pub(super) fn merge<K: Ord, T>(mut all: Vec<(K, T)>, limit: u32) -> Vec<T> {
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.truncate(limit as usize);
    all.into_iter().map(|(_, t)| t).collect()
}
