//! Opening the ledger: file created with mode 0600, pragmas on the connect options,
//! embedded migrations applied.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Ledger, LedgerError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Creates the file with owner-only permissions before SQLite sees it: the ledger holds
/// payment evidence. SQLite gives its `-wal`/`-shm` files the database file's permissions.
fn create_private(path: &Path) -> Result<(), LedgerError> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    let err = |source| LedgerError::CreateFile {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .or_else(|e| {
            // Another process created it first: fine.
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(err(e))
            }
        })
}

/// Opens (creating if needed) and migrates the ledger.
///
/// Pragmas: WAL so readers (the CLI) never block the daemon; `busy_timeout` so concurrent
/// writers wait instead of failing with "database is locked"; foreign keys on;
/// `synchronous=FULL` because a learned payment state must survive power loss, not only a
/// process crash (NORMAL in WAL mode may lose the last commits on power loss).
pub async fn open(path: &Path, busy_timeout: Duration) -> Result<Ledger, LedgerError> {
    create_private(path)?;
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(busy_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|source| LedgerError::Open {
            path: path.display().to_string(),
            source,
        })?;
    MIGRATOR.run(&pool).await?;
    Ok(Ledger { pool })
}
