//! What window sweeps read and write: cursors, the ledger side of a page, and the list of
//! payments a closed window should contain.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::time::to_db;
use super::{Ledger, LedgerError};

/// Progress of one month piece of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepCursor {
    pub next_page: u32,
    pub records_seen: u64,
    pub completed: bool,
}

/// A ledger payment a sweep record refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownPayment {
    pub id: i64,
    pub kind: String,
    pub out_trade_no: String,
    pub provider_ref: Option<String>,
    pub state: String,
    pub amount: i64,
    pub currency: String,
}

impl Ledger {
    pub async fn sweep_cursor(
        &self,
        account: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Option<SweepCursor>, LedgerError> {
        let row = sqlx::query(
            "SELECT next_page, records_seen, completed_at FROM sweep_cursors
             WHERE account = ? AND window_start = ? AND window_end = ?",
        )
        .bind(account)
        .bind(to_db(start))
        .bind(to_db(end))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SweepCursor {
            next_page: r.get::<i64, _>("next_page").clamp(1, u32::MAX as i64) as u32,
            records_seen: r.get::<i64, _>("records_seen").max(0) as u64,
            completed: r.get::<Option<String>, _>("completed_at").is_some(),
        }))
    }

    pub async fn save_sweep_cursor(
        &self,
        account: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        cursor: SweepCursor,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO sweep_cursors (account, window_start, window_end, next_page, records_seen, completed_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (account, window_start, window_end) DO UPDATE SET
                 next_page = ?4, records_seen = ?5, completed_at = ?6, updated_at = ?7",
        )
        .bind(account)
        .bind(to_db(start))
        .bind(to_db(end))
        .bind(i64::from(cursor.next_page))
        .bind(cursor.records_seen as i64)
        .bind(cursor.completed.then(|| to_db(now)))
        .bind(to_db(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The end of the latest completed sweep of `account`, if any.
    pub async fn last_swept_until(&self, account: &str) -> Result<Option<String>, LedgerError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(window_end) FROM sweep_cursors WHERE account = ? AND completed_at IS NOT NULL",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Ledger payments of `account` with one of these gateway ids or order numbers.
    pub async fn known_payments(
        &self,
        account: &str,
        refs: &[&str],
        orders: &[&str],
    ) -> Result<Vec<KnownPayment>, LedgerError> {
        let rows = sqlx::query(
            "SELECT id, kind, out_trade_no, provider_ref, state, amount, currency FROM payments
             WHERE account = ?1
               AND (provider_ref IN (SELECT value FROM json_each(?2))
                    OR out_trade_no IN (SELECT value FROM json_each(?3)))",
        )
        .bind(account)
        .bind(serde_json::to_string(refs).unwrap_or_default())
        .bind(serde_json::to_string(orders).unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| KnownPayment {
                id: r.get("id"),
                kind: r.get("kind"),
                out_trade_no: r.get("out_trade_no"),
                provider_ref: r.get("provider_ref"),
                state: r.get("state"),
                amount: r.get("amount"),
                currency: r.get("currency"),
            })
            .collect())
    }

    /// Makes open payments due now, so the next pass settles them under a lease.
    pub async fn make_due(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE payments SET next_check_at = ?1
             WHERE id IN (SELECT value FROM json_each(?2))
               AND state IN ('pending', 'in_progress', 'reversing')
               AND (next_check_at IS NULL OR next_check_at > ?1)",
        )
        .bind(to_db(now))
        .bind(serde_json::to_string(ids).unwrap_or_default())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `(id, out_trade_no)` of the payments of `account` created in `[from, to]`.
    pub async fn payments_created_in(
        &self,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(i64, String)>, LedgerError> {
        Ok(sqlx::query_as(
            "SELECT id, out_trade_no FROM payments
             WHERE account = ? AND kind = 'payment' AND created_at >= ? AND created_at <= ?
             ORDER BY id",
        )
        .bind(account)
        .bind(to_db(from))
        .bind(to_db(to))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether a discrepancy of this kind (open or resolved) is already recorded for the payment,
    /// or, for records the ledger does not have, already names `key`: repeated sweeps and passes
    /// do not report the same thing twice.
    pub async fn discrepancy_exists(
        &self,
        account: &str,
        payment_id: Option<i64>,
        kind: &str,
        key: &str,
    ) -> Result<bool, LedgerError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM discrepancies
             WHERE account = ?1 AND kind = ?2
               AND (payment_id = ?3 OR (?3 IS NULL AND instr(detail, ?4) > 0))",
        )
        .bind(account)
        .bind(kind)
        .bind(payment_id)
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
}
