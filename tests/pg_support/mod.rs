//! A fresh PostgreSQL database per test, on the server `PAYRECON_TEST_PG_URL` names (`bash
//! tests/run.sh` starts one; `.ci/run` runs that). Without the variable the tests fail, loudly:
//! a PostgreSQL test that passes without a server would prove nothing.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::PgPool;

/// The server's URL, or a panic saying how to get one.
pub fn server_url() -> String {
    std::env::var("PAYRECON_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "PAYRECON_TEST_PG_URL is not set: the PostgreSQL tests need a server. Run the \
             suite with `bash tests/run.sh` (it starts a throw-away server), or start one with \
             `bash tests/pg/server.sh start DIR` and export the URL it prints"
        )
    })
}

/// A database of its own for one test (created now, never shared), with the ledger's
/// migrations applied: the pool and its URL.
pub async fn fresh_ledger() -> (PgPool, String) {
    let url = fresh_database().await;
    let pool = payrecon::ledger::pg::connect(&url, Duration::from_secs(10))
        .await
        .unwrap();
    (pool, url)
}

/// An empty database of its own for one test: its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = server_url();
    let admin = sqlx::PgPool::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {server}: {e}"));
    // A random part too: a test binary may hold this module twice (its own `mod pg_support`
    // and `common`'s), each with its own counter.
    let name = format!(
        "payrecon_test_{}_{}_{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(&server).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// Whether the engine, binary and crash/concurrency tests run on PostgreSQL:
/// `PAYRECON_TEST_STORE=postgres` (`tests/run.sh` runs a list of them so after the whole suite).
/// Unset or `sqlite`: SQLite, the default. Anything else is a mistake, and says so.
pub fn postgres_wanted() -> bool {
    match std::env::var("PAYRECON_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("PAYRECON_TEST_STORE={other:?}: expected `sqlite` or `postgres`"),
    }
}

/// The URL of a fresh, migrated database, for code that is not async (or runs on a
/// current-thread runtime): created on a thread with a runtime of its own.
pub fn fresh_ledger_url() -> String {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let (pool, url) = fresh_ledger().await;
                pool.close().await;
                url
            })
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The store key of a test config's `[ledger]` table: `path = "<sqlite_file>"`, or with
/// `PAYRECON_TEST_STORE=postgres` `url = "<a fresh database>"` (the test server trusts its
/// role: no password).
pub fn ledger_store_toml(sqlite_file: &std::path::Path) -> String {
    ledger_store(sqlite_file).0
}

/// [`ledger_store_toml`] and the PostgreSQL database's URL it names, if it names one (for
/// [`Db::open`]).
pub fn ledger_store(sqlite_file: &std::path::Path) -> (String, Option<String>) {
    if postgres_wanted() {
        let url = fresh_ledger_url();
        (format!("url = \"{url}\""), Some(url))
    } else {
        (format!("path = \"{}\"", sqlite_file.display()), None)
    }
}

/// A ledger a test's binary writes, opened beside it, whichever store holds it, for the
/// checks' own queries. Queries written for both: `$1` parameters (SQLite reads them too);
/// times decoded as `DateTime<Utc>` (SQLite's RFC 3339 text and PostgreSQL's timestamptz
/// alike) or tested with `IS NULL`.
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// The PostgreSQL database at `url`, or else the SQLite file `sqlite_file` (the binary
    /// created it).
    pub async fn open(url: Option<&str>, sqlite_file: &std::path::Path) -> Db {
        match url {
            Some(url) => Db::Postgres(PgPool::connect(url).await.unwrap()),
            None => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(sqlite_file)
                    .busy_timeout(Duration::from_secs(30));
                Db::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(opts)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    /// The database `ledger` is open on (its pool, shared: do not `close` it).
    pub fn of(ledger: &payrecon::ledger::Ledger) -> Db {
        use payrecon::ledger::Ledger;
        match ledger {
            Ledger::Sqlite(l) => Db::Sqlite(l.pool().clone()),
            Ledger::Postgres(l) => Db::Postgres(l.pool().clone()),
        }
    }

    /// The rows of `sql` as `T` (a tuple of types both stores decode).
    pub async fn fetch_all<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        self.fetch_all_with(sql, &[]).await
    }

    /// The rows of `sql` with the text parameters `args` bound to `$1`, `$2`, ….
    pub async fn fetch_all_with<T>(&self, sql: &str, args: &[&str]) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let q = || sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Db::Sqlite(p) => {
                let mut query = sqlx::query_as(q());
                for a in args {
                    query = query.bind(*a);
                }
                query.fetch_all(p).await
            }
            Db::Postgres(p) => {
                let mut query = sqlx::query_as(q());
                for a in args {
                    query = query.bind(*a);
                }
                query.fetch_all(p).await
            }
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The one value of a query that returns one row of one column.
    pub async fn scalar<T>(&self, sql: &str, args: &[&str]) -> T
    where
        (T,): for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let mut rows: Vec<(T,)> = self.fetch_all_with(sql, args).await;
        assert_eq!(rows.len(), 1, "{sql}: {} rows", rows.len());
        rows.remove(0).0
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Db::Sqlite(_))
    }

    pub async fn close(self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// A SQLite ledger in a temporary directory (kept alive by the returned guard).
pub async fn sqlite_ledger() -> (tempfile::TempDir, payrecon::ledger::SqliteLedger) {
    let dir = tempfile::tempdir().unwrap();
    let l = payrecon::ledger::open_sqlite(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    (dir, l)
}

pub async fn pg_ledger() -> payrecon::ledger::pg::PgLedger {
    let (pool, url) = fresh_ledger().await;
    pool.close().await;
    payrecon::ledger::pg::PgLedger::open(&url, Duration::from_secs(10))
        .await
        .unwrap()
}

/// `$body` as two tests, `$name::sqlite` and `$name::postgres`, with `$l` the store. A test
/// file that uses it declares `#[macro_use] mod pg_support;`.
#[allow(unused_macros)]
macro_rules! contract {
    ($name:ident, |$l:ident| $body:block) => {
        mod $name {
            use super::*;
            #[allow(unused_imports)]
            use crate::pg_support::{pg_ledger, sqlite_ledger};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (_dir, $l) = sqlite_ledger().await;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $l = pg_ledger().await;
                $body
            }
        }
    };
}

/// Raw SQL on a store's pool, for what a contract test sets up or checks behind the ledger's
/// back.
pub trait Raw {
    /// Whether lease times are the server's as each statement ran (PostgreSQL: a lease taken
    /// later ends later by that statement's latency), rather than exactly the `now` passed.
    const LEASES_ON_SERVER_CLOCK: bool;
    async fn exec(&self, sql: &str) -> u64;
    async fn text(&self, sql: &str) -> Option<String>;
    async fn count(&self, sql: &str) -> i64;
}

macro_rules! raw_for {
    ($store:ty, $server_clock:expr) => {
        impl Raw for $store {
            const LEASES_ON_SERVER_CLOCK: bool = $server_clock;
            async fn exec(&self, sql: &str) -> u64 {
                sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(self.pool())
                    .await
                    .unwrap()
                    .rows_affected()
            }
            async fn text(&self, sql: &str) -> Option<String> {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_one(self.pool())
                    .await
                    .unwrap()
            }
            async fn count(&self, sql: &str) -> i64 {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_one(self.pool())
                    .await
                    .unwrap()
            }
        }
    };
}
raw_for!(payrecon::ledger::SqliteLedger, false);
raw_for!(payrecon::ledger::pg::PgLedger, true);

/// `t` as both ledgers keep it (milliseconds).
pub fn ms(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::TimeDelta::milliseconds(1))
        .unwrap()
}
