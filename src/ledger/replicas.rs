//! The daemons sharing the ledger (`replicas`): each says it is alive every third of its lease
//! and learns who else is, so that it takes no more than its fair share of the accounts' lanes
//! (`reconcile::share`).

use chrono::{DateTime, Utc};

use super::time::to_db;
use super::{LedgerError, SqliteLedger};

/// A replica not seen for this long has its row deleted (it died without saying so).
pub(crate) const FORGET_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(1);

impl SqliteLedger {
    /// Records that `holder` is alive at `now` and returns the replicas seen since
    /// `live_since` (`holder` among them), sorted.
    pub async fn replica_seen(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        live_since: DateTime<Utc>,
    ) -> Result<Vec<String>, LedgerError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO replicas (holder, started_at, seen_at) VALUES (?1, ?2, ?2)
             ON CONFLICT (holder) DO UPDATE SET seen_at = ?2",
        )
        .bind(holder)
        .bind(to_db(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM replicas WHERE seen_at < ?")
            .bind(to_db(now - FORGET_AFTER))
            .execute(&mut *tx)
            .await?;
        let live = sqlx::query_scalar(
            "SELECT holder FROM replicas WHERE seen_at >= ? OR holder = ? ORDER BY holder",
        )
        .bind(to_db(live_since))
        .bind(holder)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(live)
    }

    /// Deletes `holder`'s row: it stops, and the others may take its share at once.
    pub async fn replica_gone(&self, holder: &str) -> Result<(), LedgerError> {
        sqlx::query("DELETE FROM replicas WHERE holder = ?")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
