//! What the ledger says at one instant, for the metrics endpoint (`crate::metrics`): counts
//! from the trigger-kept tables (`payment_counts`, `discrepancy_counts`, migration 0008), the
//! oldest open payment of each account by a seek per open state, and the lanes. Read at scrape
//! time, so a value is never older than the scrape and an account or state that disappears
//! from the ledger disappears from the metrics.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::time::from_db;
use super::{LaneRow, LedgerError, SqliteLedger};

/// Payments per (account, state), summed over providers, by account; rows of states that
/// emptied stay in `payment_counts` with 0.
/// Shared with the PostgreSQL ledger: the sum is cast back to an integer (PostgreSQL's sum of
/// a bigint is a numeric).
pub(super) const PAYMENTS_BY_STATE: &str =
    "SELECT account, state, CAST(SUM(n) AS BIGINT) AS n FROM payment_counts
     GROUP BY account, state ORDER BY account, state";

/// Open discrepancies per (account, kind), by account and kind; resolved kinds stay with 0.
pub(super) const OPEN_DISCREPANCIES: &str =
    "SELECT account, kind, open FROM discrepancy_counts ORDER BY account, kind";

/// The oldest open (pending, in progress, reversing) payment's `created_at` per account, by
/// account: a seek in `payments_by_account_state` for each (account, open state) that has
/// payments.
pub(super) const OLDEST_OPEN_BY_ACCOUNT: &str = "SELECT c.account,
            MIN((SELECT p.created_at FROM payments p
                  WHERE p.account = c.account AND p.state = c.state
                  ORDER BY p.created_at LIMIT 1)) AS oldest
     FROM payment_counts c
     WHERE c.state IN ('pending', 'in_progress', 'reversing') AND c.n > 0
     GROUP BY c.account ORDER BY c.account";

/// The ledger's gauges at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerGauges {
    /// (account, state, payments) for every (account, state) the ledger ever counted, by
    /// account.
    pub payments: Vec<(String, String, i64)>,
    /// (account, kind, open discrepancies).
    pub open_discrepancies: Vec<(String, String, i64)>,
    /// (account, creation time of its oldest open payment), for accounts with open payments.
    pub oldest_open: Vec<(String, DateTime<Utc>)>,
    /// Every account with payments or a lease: holder, heartbeat, due backlog, pause.
    pub lanes: Vec<LaneRow>,
}

impl SqliteLedger {
    /// The gauges of the metrics endpoint; `now` decides which leases and pauses are live
    /// and which payments are due.
    pub async fn gauges(&self, now: DateTime<Utc>) -> Result<LedgerGauges, LedgerError> {
        let triples = |rows: Vec<sqlx::sqlite::SqliteRow>| -> Vec<(String, String, i64)> {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        };
        let payments = triples(sqlx::query(PAYMENTS_BY_STATE).fetch_all(&self.pool).await?);
        let open_discrepancies = triples(
            sqlx::query(OPEN_DISCREPANCIES)
                .fetch_all(&self.pool)
                .await?,
        );
        let oldest_open = sqlx::query(OLDEST_OPEN_BY_ACCOUNT)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let raw: String = r.get("oldest");
                let at = from_db(&raw).ok_or(LedgerError::Corrupt {
                    column: "payments.created_at",
                    value: raw.chars().take(80).collect(),
                })?;
                Ok((r.get("account"), at))
            })
            .collect::<Result<_, LedgerError>>()?;
        Ok(LedgerGauges {
            payments,
            open_discrepancies,
            oldest_open,
            lanes: self.lanes(now).await?,
        })
    }
}
