//! The PostgreSQL ledger (issue 18, under way): its schema (`migrations/postgres/`, the SQLite
//! ledger's tables, constraints, the append-only rule and the trigger-kept counts in
//! PostgreSQL's types), the connection that applies it, and the first operations with the SQLite
//! ledger's contract: account leases with their fence, account pauses, registering payments and
//! reading them with their history, runs, discrepancies (`tests/ledger_contract.rs` runs the
//! same tests on both). The engine still runs on SQLite
//! only.

mod apply;
mod claim;
mod intake;
mod leases;
mod nudge;
mod pages;
mod queries;
mod runs;
mod sweeps;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::LedgerError;

/// The PostgreSQL migrations, applied in order; never edit an applied one.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// `t` at the SQLite ledger's precision (milliseconds). Every time the PostgreSQL ledger
/// writes goes through this: PostgreSQL would keep microseconds, and a value read back and
/// compared with what the other store (or the engine, holding a value it read) has must be
/// the same value (`nudged_at` against `seen_nudged_at`, a due unit's keyset position).
pub(crate) fn ms(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

/// `url` without its password, for messages: a URL is never logged with one.
pub fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unreadable PostgreSQL URL)".to_string(),
    }
}

/// A handle on a PostgreSQL ledger. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct PgLedger {
    pool: PgPool,
}

impl PgLedger {
    /// Connects to the ledger at `url` and applies its migrations.
    pub async fn open(url: &str, connect_timeout: Duration) -> Result<Self, LedgerError> {
        Ok(Self {
            pool: connect(url, connect_timeout).await?,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Connects to the PostgreSQL ledger at `url` and applies its migrations.
pub async fn connect(url: &str, connect_timeout: Duration) -> Result<PgPool, LedgerError> {
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(connect_timeout)
        .connect(url)
        .await
        .map_err(|source| LedgerError::Open {
            path: shown(url),
            source,
        })?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
