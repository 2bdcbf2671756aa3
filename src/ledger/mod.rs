//! The SQLite ledger: payments, their append-only event history, runs, discrepancies, sweep
//! cursors, account pauses and account leases (schema in `migrations/`).
//!
//! All SQL is plain runtime `sqlx::query` (no compile-time macros, so no database is needed to
//! build) and sticks to what PostgreSQL also accepts where it can, so a second backend behind
//! the same methods stays possible.

mod account_lease;
mod apply;
mod claim;
mod connect;
pub mod copy;
mod gauges;
mod intake;
mod nudge;
mod pages;
pub mod pg;
mod queries;
mod replicas;
mod runs;
mod store;
mod sweeps;
pub mod time;

#[cfg(test)]
mod plan_tests;

pub use account_lease::{AccountHolder, Acquired, Fence, LaneRow};
pub use apply::{NewDiscrepancy, NewEvent, PaymentUpdate, WriteGuard};
pub use claim::{ClaimScope, Claimed, DuePosition};
pub use connect::open_sqlite;
pub use gauges::LedgerGauges;
pub use intake::{IntakeReport, NewPayment};
pub use nudge::{CheckRequested, Nudged};
pub use pages::{DiscrepancyPage, MAX_PAGE, PaymentPage};
pub use queries::{EventRow, ListFilter, PaymentRow, StateCount, Stats};
pub use runs::{DiscrepancyRow, RunCounters};
pub use store::{Ledger, open, open_store};
pub use sweeps::{
    FoundRefund, KnownPayment, SchedulePosition, SweepCursor, SweepDiscrepancy, SweepRound,
};

use sqlx::SqlitePool;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("ledger {path}: cannot create the file: {source}")]
    CreateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {path}: cannot read the file's metadata: {source}")]
    Stat {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {path}: {why}")]
    Schema { path: String, why: String },
    #[error("ledger migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("ledger query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("ledger holds an unreadable value in {column}: {value:?}")]
    Corrupt { column: &'static str, value: String },
    #[error(
        "ledger {path} no longer names the ledger file this process opened ({why}); it was \
         moved, deleted or replaced while payrecon ran, and writing on would split the ledger \
         in two"
    )]
    Replaced { path: String, why: String },
    #[error(
        "fenced out: account {account} is held by another process now (our lease token {token} \
         is no longer the account's); this write is refused"
    )]
    FencedOut { account: String, token: i64 },
}

/// A handle on a SQLite ledger file. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
    /// The file the pool opened: its path and what it was when opened.
    file: connect::FileIdentity,
}

impl SqliteLedger {
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Checks that the configured path still names the file this ledger opened (same device
    /// and inode). A moved or deleted ledger stays open and writable for this process, so
    /// nothing else would notice that its writes go where nobody reads them.
    pub fn check_file(&self) -> Result<(), LedgerError> {
        self.file.check()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
