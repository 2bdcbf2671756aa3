//! The PostgreSQL ledger: the SQLite ledger's contract on a database several replicas share
//! (docs/ARCHITECTURE.md §8). Its schema is `migrations/postgres/` (the SQLite ledger's tables,
//! constraints, the append-only rule and the trigger-kept counts in PostgreSQL's types); each
//! file here ports the SQLite file of the same name, method for method (`ledger::Ledger`
//! dispatches to either; `tests/ledger_contract*.rs` run the same tests on both). Where SQLite
//! serialises writers, this store locks what it decides on: the lease row `FOR SHARE` in a
//! fenced write, a payment row `FOR UPDATE` where a decision reads the state it changes.

mod apply;
mod claim;
mod intake;
mod leases;
mod nudge;
mod pages;
mod queries;
mod replicas;
mod runs;
mod sweeps;

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::LedgerError;
use crate::config::PgSettings;

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

/// SQL for a replica's time `$now` moved onto the server's clock: `$now` plus how far the
/// server's clock (`statement_timestamp()`) is from the replica's when it sent the statement
/// (`$read_at`, [`PgLedger::clock`]), at the ledger's precision. Lease expiry and replica
/// liveness are decided with it, so replicas whose clocks disagree still agree on when a lease
/// ran out: one clock decides, whoever asks (docs/ARCHITECTURE.md §8, "Clocks"). `$now` is
/// usually the replica's reading a moment before; a test moves time by passing a later one.
macro_rules! on_server_clock {
    ($now:literal, $read_at:literal) => {
        concat!(
            "date_trunc('milliseconds', $",
            $now,
            "::timestamptz + (statement_timestamp() - $",
            $read_at,
            "::timestamptz))"
        )
    };
}
pub(crate) use on_server_clock;

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

/// How many connections the beats (lease renewals, replica liveness) have to themselves.
const BEAT_CONNECTIONS: u32 = 4;

/// How long a beat waits for a row lock before it fails (and its lane retries a second later):
/// a renewal queued behind a lock a frozen replica holds (until the server ends its session,
/// `busy_timeout`) must not keep the beat connections from the other lanes' renewals.
const BEAT_LOCK_TIMEOUT: &str = "2s";

/// A handle on a PostgreSQL ledger. Cheap to clone (connection pools).
#[derive(Debug, Clone)]
pub struct PgLedger {
    pool: PgPool,
    /// Connections of their own for what keeps this replica's leases and liveness: a lane's
    /// heartbeat or the replica's beat that waited behind its own busy lanes (a window page
    /// being planned holds a connection for seconds) would let its lease run out, or let the
    /// others count it gone and take more than their share. Opened at the first beat.
    beats: PgPool,
    /// This replica's clock (its host's): read beside a time it sends for the server to
    /// decide on, so the server can correct the time by the clocks' difference
    /// ([`on_server_clock`]).
    clock: fn() -> chrono::DateTime<chrono::Utc>,
}

impl PgLedger {
    /// Connects to the ledger at `url`, migrating its schema if it is behind.
    pub async fn open(url: &str, connect_timeout: Duration) -> Result<Self, LedgerError> {
        Ok(Self::on(connect(url, connect_timeout).await?))
    }

    /// Connects to the ledger the settings name (the password from its file, else from
    /// `PGPASSFILE`/`~/.pgpass`), migrating its schema if it is behind.
    pub async fn connect_with(
        settings: &PgSettings,
        connect_timeout: Duration,
    ) -> Result<Self, LedgerError> {
        let mut options =
            PgConnectOptions::from_str(&settings.url).map_err(|source| LedgerError::Open {
                path: shown(&settings.url),
                source,
            })?;
        if let Some(password) = &settings.password {
            options = options.password(password.expose_secret());
        }
        Ok(Self::on(
            pool_with(
                options,
                &settings.url,
                settings.max_connections,
                connect_timeout,
            )
            .await?,
        ))
    }

    fn on(pool: PgPool) -> Self {
        let beats = PgPoolOptions::new()
            .max_connections(BEAT_CONNECTIONS)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(
                (*pool.connect_options())
                    .clone()
                    .options([("lock_timeout", BEAT_LOCK_TIMEOUT)]),
            );
        Self {
            pool,
            beats,
            clock: chrono::Utc::now,
        }
    }

    /// The same ledger as a replica whose clock reads `clock` (its host's by default): how
    /// the tests put replicas on hosts whose clocks disagree.
    pub fn with_clock(self, clock: fn() -> chrono::DateTime<chrono::Utc>) -> Self {
        Self { clock, ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.beats.close().await;
        self.pool.close().await;
    }
}

/// Connects to the PostgreSQL ledger at `url`, migrating its schema if it is behind.
pub async fn connect(url: &str, connect_timeout: Duration) -> Result<PgPool, LedgerError> {
    let options = PgConnectOptions::from_str(url).map_err(|source| LedgerError::Open {
        path: shown(url),
        source,
    })?;
    pool_with(options, url, 8, connect_timeout).await
}

async fn pool_with(
    options: PgConnectOptions,
    url: &str,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<PgPool, LedgerError> {
    let options = bounded_idle_transactions(options, connect_timeout);
    let opened = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(connect_timeout)
        .connect_with(options.clone())
        .await;
    let pool = match opened {
        Ok(pool) => pool,
        Err(sqlx::Error::PoolTimedOut) => {
            return Err(LedgerError::Open {
                path: shown(url),
                source: why_no_connection(&options, connect_timeout).await,
            });
        }
        Err(source) => {
            return Err(LedgerError::Open {
                path: shown(url),
                source,
            });
        }
    };
    ensure_schema(&pool, url).await?;
    Ok(pool)
}

/// Why the pool could open no connection in `timeout`: the pool retries a refused or
/// unresolvable server until then and says only that it timed out, so one more attempt tells
/// the operator what the server (or the network) answered.
async fn why_no_connection(options: &PgConnectOptions, timeout: Duration) -> sqlx::Error {
    use sqlx::Connection;
    // A refused or unresolvable server answers at once; one that does not answer has had
    // `timeout` already.
    let again = timeout.min(Duration::from_secs(1));
    match tokio::time::timeout(again, sqlx::PgConnection::connect_with(options)).await {
        Ok(Err(e)) => e,
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            sqlx::Error::PoolTimedOut
        }
        Err(_) => sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from the server within {:?}", timeout + again),
        )),
    }
}

/// A session of this process that sits inside a transaction without a word for
/// `idle` (at least a second) is ended by the server, and its transaction rolled back. Every
/// transaction of the ledger is a few statements sent back to back, so only a stalled process
/// (SIGSTOP, a paused VM, a network partition) stays that long, and the row locks it holds
/// (the lease row `FOR SHARE` of a fenced write) would otherwise keep every other replica off
/// the account, and block its acquisition, its reaper and their connections, until the server
/// noticed the dead peer (TCP keepalive: hours). A value the URL's `options` set is kept.
fn bounded_idle_transactions(options: PgConnectOptions, idle: Duration) -> PgConnectOptions {
    const GUC: &str = "idle_in_transaction_session_timeout";
    if options.get_options().is_some_and(|o| o.contains(GUC)) {
        return options;
    }
    let ms = idle.max(Duration::from_secs(1)).as_millis();
    options.options([(GUC, format!("{ms}ms"))])
}

/// Applies the migrations only when the ledger's schema is behind this payrecon: a schema that
/// is current is only read (no DDL), so the role replicas run as needs no right to create or
/// alter tables (docs/OPERATIONS.md, "Running replicas"). A schema that is behind is
/// migrated if the role may, and otherwise refused with what to run.
async fn ensure_schema(pool: &PgPool, url: &str) -> Result<(), LedgerError> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> =
        match sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
        {
            Ok(v) => v,
            // No migrations table: an empty database.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => None,
            Err(e) => return Err(e.into()),
        };
    match applied {
        Some(v) if v == latest => Ok(()),
        Some(v) if v > latest => Err(LedgerError::Schema {
            path: shown(url),
            why: format!(
                "its schema is at migration {v}, newer than this payrecon knows ({latest}): run the payrecon that migrated it, or a newer one"
            ),
        }),
        applied => MIGRATOR.run(pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(d))
                if d.code().as_deref() == Some("42501") =>
            {
                LedgerError::Schema {
                    path: shown(url),
                    why: format!(
                        "its schema is at migration {}, this payrecon needs {latest}, and this role may not change the schema ({}): run `payrecon migrate` with the URL of the role that owns the schema",
                        applied.map_or("none".to_string(), |v| v.to_string()),
                        d.message()
                    ),
                }
            }
            other => other.into(),
        }),
    }
}
