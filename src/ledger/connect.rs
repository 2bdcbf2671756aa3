//! Opening the ledger: file created with mode 0600, pragmas on the connect options,
//! embedded migrations applied.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{LedgerError, SqliteLedger};

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

/// The ledger file as it was when opened: the path and its device and inode.
#[derive(Debug, Clone)]
pub(super) struct FileIdentity {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Result<Self, LedgerError> {
        let m = std::fs::metadata(path).map_err(|source| LedgerError::Stat {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    pub(super) fn check(&self) -> Result<(), LedgerError> {
        let why = match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == (self.dev, self.ino) => return Ok(()),
            Ok(m) => format!(
                "it is now inode {} on device {}, the open file is inode {} on device {}",
                m.ino(),
                m.dev(),
                self.ino,
                self.dev
            ),
            Err(e) => format!("the path cannot be read: {e}"),
        };
        Err(LedgerError::Replaced {
            path: self.path.display().to_string(),
            why,
        })
    }
}

/// Decides whether a connection goes back to the pool: not if it is still inside a
/// transaction. When a `COMMIT` fails with SQLITE_FULL (a full disk), SQLite has already
/// rolled the transaction back, so the `ROLLBACK` sqlx queues when the transaction is dropped
/// fails with "no transaction is active" and sqlx's depth counter stays at 1; reused, that
/// connection would fail every later `BEGIN` with "attempted to call begin_with at non-zero
/// transaction depth" even after space returns. Closing it (SQLite rolls back whatever is
/// left) and letting the pool open a fresh one is the only state that is certainly clean.
async fn discard_if_in_transaction(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction's rollback is queued, not yet run: it runs before this round
    // trip, so the depth read afterwards is the connection's real state.
    conn.ping().await?;
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("a ledger connection was left inside a failed transaction; closing it");
    }
    Ok(clean)
}

/// Opens (creating if needed) and migrates the ledger.
///
/// Pragmas: WAL so readers (the CLI) never block the daemon; `busy_timeout` so concurrent
/// writers wait instead of failing with "database is locked"; foreign keys on;
/// `synchronous=FULL` because a learned payment state must survive power loss, not only a
/// process crash (NORMAL in WAL mode may lose the last commits on power loss).
/// `wal_autocheckpoint` stays at SQLite's 1,000 pages: a checkpoint after every 256 pages
/// copied the payments pages a dense pass touches again and again into the database file at
/// almost every commit (dense throughput 4,000/s against 6,600/s, docs/PERFORMANCE.md).
/// `journal_size_limit` truncates the WAL back to that size after a checkpoint, so a WAL that
/// grew while the disk was full gives its space back once the disk has room again.
pub async fn open_sqlite(path: &Path, busy_timeout: Duration) -> Result<SqliteLedger, LedgerError> {
    create_private(path)?;
    // Taken before SQLite opens the file, so a swap between the two can only make the first
    // check fail, never hide a later move.
    let file = FileIdentity::of(path)?;
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("wal_autocheckpoint", "1000")
        .pragma("journal_size_limit", "4194304")
        .foreign_keys(true)
        .busy_timeout(busy_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .after_release(|conn, _| Box::pin(discard_if_in_transaction(conn)))
        .connect_with(opts)
        .await
        .map_err(|source| LedgerError::Open {
            path: path.display().to_string(),
            source,
        })?;
    MIGRATOR.run(&pool).await?;
    Ok(SqliteLedger { pool, file })
}
