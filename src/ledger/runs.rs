//! Bookkeeping of passes (`runs`), account pauses and discrepancies.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::time::to_db;
use super::{LedgerError, SqliteLedger};

/// Counters of one pass, written to its `runs` row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounters {
    pub claimed: u64,
    pub checked: u64,
    pub finalized: u64,
    pub calls: u64,
    pub errors: u64,
}

impl RunCounters {
    pub fn add(&mut self, o: RunCounters) {
        self.claimed += o.claimed;
        self.checked += o.checked;
        self.finalized += o.finalized;
        self.calls += o.calls;
        self.errors += o.errors;
    }
}

/// An open discrepancy as `discrepancies list` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DiscrepancyRow {
    pub id: i64,
    pub payment_id: Option<i64>,
    pub account: String,
    pub kind: String,
    pub detail: String,
    pub found_at: String,
    pub resolved_at: Option<String>,
    pub resolution_note: Option<String>,
}

impl DiscrepancyRow {
    pub(super) fn from_row(r: &sqlx::sqlite::SqliteRow) -> Self {
        Self {
            id: r.get("id"),
            payment_id: r.get("payment_id"),
            account: r.get("account"),
            kind: r.get("kind"),
            detail: r.get("detail"),
            found_at: r.get("found_at"),
            resolved_at: r.get("resolved_at"),
            resolution_note: r.get("resolution_note"),
        }
    }
}

/// The columns [`DiscrepancyRow::from_row`] reads.
pub(super) const DISCREPANCY_COLUMNS: &str =
    "id, payment_id, account, kind, detail, found_at, resolved_at, resolution_note";

impl SqliteLedger {
    /// Records the start of a pass. An earlier pass of the same process still marked `running`
    /// is over (a process runs its passes one at a time, and one that finishes records its end
    /// itself): its end could not be written, e.g. on a full disk, so it is closed as `failed`
    /// here rather than left looking alive.
    pub async fn start_run(
        &self,
        owner: &str,
        trigger: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, LedgerError> {
        sqlx::query(
            "UPDATE runs SET status = 'failed', finished_at = ?,
                 message = COALESCE(message, 'the pass ended but its end could not be recorded')
             WHERE owner = ? AND status = 'running'",
        )
        .bind(to_db(now))
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar(
            "INSERT INTO runs (owner, trigger, started_at) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(owner)
        .bind(trigger)
        .bind(to_db(now))
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn finish_run(
        &self,
        run_id: i64,
        status: &str,
        c: RunCounters,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE runs SET finished_at = ?, status = ?, claimed = ?, checked = ?, finalized = ?,
                             calls = ?, errors = ?, message = ?
             WHERE id = ?",
        )
        .bind(to_db(now))
        .bind(status)
        .bind(c.claimed as i64)
        .bind(c.checked as i64)
        .bind(c.finalized as i64)
        .bind(c.calls as i64)
        .bind(c.errors as i64)
        .bind(message)
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps the engine away from an account until `until` (rate limit, merchant stopped …).
    /// Fenced like the account's payments: a lane that woke up after another took its account
    /// over must not pause the new holder with an answer that arrived too late.
    pub async fn pause_account(
        &self,
        fence: &super::Fence,
        until: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "INSERT INTO account_pauses (account, paused_until, reason, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (account) DO UPDATE SET
                 paused_until = MAX(paused_until, excluded.paused_until),
                 reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(&fence.account)
        .bind(to_db(until))
        .bind(reason)
        .bind(to_db(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn discrepancies(
        &self,
        include_resolved: bool,
    ) -> Result<Vec<DiscrepancyRow>, LedgerError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DISCREPANCY_COLUMNS} FROM discrepancies
                 WHERE ? OR resolved_at IS NULL ORDER BY id"
        )))
        .bind(include_resolved)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(DiscrepancyRow::from_row).collect())
    }

    /// Marks a discrepancy resolved with a note. `false` if there is no open one with that id.
    pub async fn resolve_discrepancy(
        &self,
        id: i64,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE discrepancies SET resolved_at = ?, resolution_note = ? WHERE id = ? AND resolved_at IS NULL",
        )
        .bind(to_db(now))
        .bind(note)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl SqliteLedger {
    /// The runs recorded and the gateway calls they made (`run_totals`, kept by triggers).
    pub async fn run_totals(&self) -> Result<(i64, i64), LedgerError> {
        Ok(
            sqlx::query_as("SELECT runs, calls FROM run_totals WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The accounts paused at `now` (`/readyz`).
    pub async fn paused_accounts(&self, now: DateTime<Utc>) -> Result<Vec<String>, LedgerError> {
        Ok(sqlx::query_scalar(
            "SELECT account FROM account_pauses WHERE paused_until > ? ORDER BY account",
        )
        .bind(to_db(now))
        .fetch_all(&self.pool)
        .await?)
    }
}
