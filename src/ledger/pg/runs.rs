//! Runs and discrepancies on PostgreSQL, with the SQLite ledger's contract (`ledger::runs`,
//! `ledger::nudge`): a pass's start and end, the discrepancies a person reads and resolves, and
//! a notified order the ledger lacks, recorded once (here by a unique index, so two replicas
//! recording it at once record it once).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgLedger, ms};
use crate::ledger::time::to_db;
use crate::ledger::{DiscrepancyRow, LedgerError, RunCounters};

pub(super) fn discrepancy_row(r: &PgRow) -> DiscrepancyRow {
    DiscrepancyRow {
        id: r.get("id"),
        payment_id: r.get("payment_id"),
        account: r.get("account"),
        kind: r.get("kind"),
        detail: r.get("detail"),
        found_at: to_db(r.get("found_at")),
        resolved_at: r.get::<Option<DateTime<Utc>>, _>("resolved_at").map(to_db),
        resolution_note: r.get("resolution_note"),
    }
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::start_run`].
    pub async fn start_run(
        &self,
        owner: &str,
        trigger: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, LedgerError> {
        sqlx::query(
            "UPDATE runs SET status = 'failed', finished_at = $1,
                 message = COALESCE(message, 'the pass ended but its end could not be recorded')
             WHERE owner = $2 AND status = 'running'",
        )
        .bind(ms(now))
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar(
            "INSERT INTO runs (owner, trigger, started_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(owner)
        .bind(trigger)
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?)
    }

    /// As [`crate::ledger::Ledger::finish_run`].
    pub async fn finish_run(
        &self,
        run_id: i64,
        status: &str,
        c: RunCounters,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE runs SET finished_at = $1, status = $2, claimed = $3, checked = $4,
                             finalized = $5, calls = $6, errors = $7, message = $8
             WHERE id = $9",
        )
        .bind(ms(now))
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

    /// As [`crate::ledger::Ledger::discrepancies`].
    pub async fn discrepancies(
        &self,
        include_resolved: bool,
    ) -> Result<Vec<DiscrepancyRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT id, payment_id, account, kind, detail, found_at, resolved_at, resolution_note
             FROM discrepancies WHERE $1 OR resolved_at IS NULL ORDER BY id",
        )
        .bind(include_resolved)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(discrepancy_row).collect())
    }

    /// As [`crate::ledger::Ledger::resolve_discrepancy`].
    pub async fn resolve_discrepancy(
        &self,
        id: i64,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE discrepancies SET resolved_at = $1, resolution_note = $2
             WHERE id = $3 AND resolved_at IS NULL",
        )
        .bind(ms(now))
        .bind(note)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// As [`crate::ledger::Ledger::record_notified_unknown`].
    pub async fn record_notified_unknown(
        &self,
        account: &str,
        subject: &str,
        detail: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "INSERT INTO discrepancies (account, kind, detail, evidence, found_at, subject)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(crate::domain::DiscrepancyKind::NotifiedUnknown.as_str())
        .bind(detail)
        .bind(evidence.to_string())
        .bind(ms(now))
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The runs recorded and the gateway calls they made (`run_totals`, kept by triggers).
    pub async fn run_totals(&self) -> Result<(i64, i64), LedgerError> {
        Ok(
            sqlx::query_as("SELECT runs, calls FROM run_totals WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
