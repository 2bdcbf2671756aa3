//! The daemons sharing the ledger on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::replicas`).

use chrono::{DateTime, Utc};

use super::{PgLedger, on_server_clock};
use crate::ledger::LedgerError;
use crate::ledger::replicas::FORGET_AFTER;

/// How far this host's clock may be from the server's before every beat says so (the
/// difference measured includes the time the statement took to arrive).
const SKEW_WARNING_SECONDS: f64 = 2.0;

/// Leases and liveness are timed on the server's clock, but account pauses, payment schedules
/// and the pace a lane hands to the next holder are times of the replicas' own clocks, and
/// shift by their difference: a replica whose clock runs ahead resumes a paused merchant early.
fn warn_of_clock_skew(server_ahead: f64) {
    if server_ahead.abs() > SKEW_WARNING_SECONDS {
        let (by, side) = (
            server_ahead.abs(),
            if server_ahead > 0.0 {
                "behind"
            } else {
                "ahead of"
            },
        );
        tracing::warn!(
            seconds = by,
            "this host's clock is {by:.1} s {side} the PostgreSQL server's: account pauses and payment schedules shift by that much between replicas; keep the hosts' clocks in sync (NTP)"
        );
    }
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::replica_seen`].
    pub async fn replica_seen(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        live_since: DateTime<Utc>,
    ) -> Result<Vec<String>, LedgerError> {
        // On the server's clock, like the leases: a replica whose clock lags is not taken for
        // gone, nor one whose clock runs ahead for the only one live.
        let mut tx = self.beats.begin().await?;
        // Read once the connection is ours: a wait for it is no clock difference.
        let read_at = (self.clock)();
        let server_ahead: f64 = sqlx::query_scalar(concat!(
            "INSERT INTO replicas (holder, started_at, seen_at) SELECT $1, t.now, t.now
             FROM (SELECT ",
            on_server_clock!("2", "3"),
            " AS now) t
             ON CONFLICT (holder) DO UPDATE SET seen_at = excluded.seen_at
             RETURNING extract(epoch FROM statement_timestamp() - $3::timestamptz)::float8"
        ))
        .bind(holder)
        .bind(now)
        .bind(read_at)
        .fetch_one(&mut *tx)
        .await?;
        warn_of_clock_skew(server_ahead);
        sqlx::query(concat!(
            "DELETE FROM replicas WHERE seen_at < ",
            on_server_clock!("1", "2")
        ))
        .bind(now - FORGET_AFTER)
        .bind(read_at)
        .execute(&mut *tx)
        .await?;
        let live = sqlx::query_scalar(concat!(
            "SELECT holder FROM replicas WHERE seen_at >= ",
            on_server_clock!("1", "3"),
            " OR holder = $2 ORDER BY holder COLLATE \"C\""
        ))
        .bind(live_since)
        .bind(holder)
        .bind(read_at)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(live)
    }

    /// As [`crate::ledger::Ledger::replica_gone`].
    pub async fn replica_gone(&self, holder: &str) -> Result<(), LedgerError> {
        sqlx::query("DELETE FROM replicas WHERE holder = $1")
            .bind(holder)
            .execute(&self.beats)
            .await?;
        Ok(())
    }
}
