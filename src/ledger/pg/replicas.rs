//! The daemons sharing the ledger on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::replicas`).

use chrono::{DateTime, Utc};

use super::{PgLedger, ms};
use crate::ledger::LedgerError;
use crate::ledger::replicas::FORGET_AFTER;

impl PgLedger {
    /// As [`crate::ledger::Ledger::replica_seen`].
    pub async fn replica_seen(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        live_since: DateTime<Utc>,
    ) -> Result<Vec<String>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO replicas (holder, started_at, seen_at) VALUES ($1, $2, $2)
             ON CONFLICT (holder) DO UPDATE SET seen_at = $2",
        )
        .bind(holder)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM replicas WHERE seen_at < $1")
            .bind(ms(now - FORGET_AFTER))
            .execute(&mut *tx)
            .await?;
        let live = sqlx::query_scalar(
            "SELECT holder FROM replicas WHERE seen_at >= $1 OR holder = $2
             ORDER BY holder COLLATE \"C\"",
        )
        .bind(ms(live_since))
        .bind(holder)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(live)
    }

    /// As [`crate::ledger::Ledger::replica_gone`].
    pub async fn replica_gone(&self, holder: &str) -> Result<(), LedgerError> {
        sqlx::query("DELETE FROM replicas WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
