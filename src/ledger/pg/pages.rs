//! Keyset pages on PostgreSQL, with the SQLite ledger's contract (`ledger::pages`): payments in
//! the order of their creation (ties by id) after a given payment, discrepancies in id order,
//! one page per account merged. A payment id no payment has starts no walk: its page is empty
//! (from `0`, the start).

use sqlx::postgres::PgRow;

use super::PgLedger;
use super::intake::payment_row;
use super::queries::pg_sql;
use super::runs::discrepancy_row;
use crate::domain::PaymentState;
use crate::ledger::pages::{
    ACCOUNTS_WITH_OPEN, ACCOUNTS_WITH_PAYMENTS, discrepancies_page_sql, merge,
};
use crate::ledger::queries::PAYMENT_COLUMNS;
use crate::ledger::{
    DiscrepancyPage, DiscrepancyRow, LedgerError, MAX_PAGE, PaymentPage, PaymentRow,
};

/// Payments of account $3 (in state $4 when `state`) after payment $1 in the order of their
/// creation (ties by id), at most $2: a seek in `payments_by_created` or
/// `payments_by_account_state`, both `(account, [state,] created_at, id)`. After an id no
/// payment has, `infinity` (no row), as SQLite's `'~'`; from 0, `-infinity`.
fn payments_page_sql(state: bool) -> String {
    let filter = if state { "AND state = $4" } else { "" };
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE account = $3 {filter}
           AND (created_at, id) > (COALESCE((SELECT created_at FROM payments WHERE id = $1),
                                            CASE WHEN $1 = 0 THEN '-infinity'::timestamptz
                                                 ELSE 'infinity'::timestamptz END), $1)
         ORDER BY created_at, id LIMIT $2"
    )
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::payments_page`].
    pub async fn payments_page(&self, page: &PaymentPage) -> Result<Vec<PaymentRow>, LedgerError> {
        let limit = page.limit.clamp(1, MAX_PAGE);
        let state = page.state.map(PaymentState::as_str);
        let accounts = match &page.account {
            Some(a) => vec![a.clone()],
            None => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(pg_sql(ACCOUNTS_WITH_PAYMENTS)))
                    .bind(state)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let sql = payments_page_sql(state.is_some());
        self.merged(&sql, &accounts, page.after, limit, state, |r| {
            let p = payment_row(r);
            ((p.created_at.clone(), p.id), p)
        })
        .await
    }

    /// As [`crate::ledger::Ledger::discrepancies_page`].
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
        let sql = pg_sql(&discrepancies_page_sql(by_account, page.include_resolved));
        self.merged(&sql, &accounts, page.after, limit, None, |r| {
            let d = discrepancy_row(r);
            (d.id, d)
        })
        .await
    }

    /// One page of `sql` per account, merged in the order of the keys `read` gives, and cut to
    /// `limit`. The account ($3) and the state ($4) are bound only when the statement has
    /// them: PostgreSQL refuses extra parameters.
    async fn merged<T, K: Ord>(
        &self,
        sql: &str,
        accounts: &[String],
        after: i64,
        limit: u32,
        state: Option<&str>,
        read: impl Fn(&PgRow) -> (K, T),
    ) -> Result<Vec<T>, LedgerError> {
        let mut all = Vec::new();
        for account in accounts {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(i64::from(limit));
            if sql.contains("$3") {
                q = q.bind(account);
            }
            if sql.contains("$4") {
                q = q.bind(state);
            }
            all.extend(q.fetch_all(&self.pool).await?.iter().map(&read));
        }
        Ok(merge(all, limit))
    }
}
