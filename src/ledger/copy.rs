//! Moving a SQLite ledger to PostgreSQL (`payrecon ledger copy --to URL`, issue 18): every row
//! of every table, with its id, in ONE PostgreSQL transaction, verified before it commits.
//!
//! Each table of the SQLite schema (`migrations/`) is handled deliberately:
//!
//! - copied, rows and ids as they are: [`COPIED`] (runs, payments, events, discrepancies, sweep
//!   cursors and schedule positions, account pauses, account leases with their fencing tokens,
//!   so a fence taken on the new ledger is still above every token handed out on the old);
//! - the trigger-kept counts, [`DERIVED`]: not copied but computed from the copied rows, once
//!   (the counting triggers are off for the copy's transaction, see [`COUNT_TRIGGERS`]), then
//!   verified against the source's rows (and its own counts, which a warning reports when they
//!   drifted);
//! - not copied: `replicas` (daemons' presence: a live one refuses the copy, a stale one means
//!   nothing on the new ledger) and `_sqlx_migrations` (each store has its own).
//!
//! A SQLite table not in these lists, or a column either side has and the list lacks, refuses
//! the copy before anything is written: a later migration must say how its table moves.
//!
//! The source is read inside one `BEGIN IMMEDIATE` transaction: what is copied is one state,
//! and no process writes the SQLite ledger while the copy runs (a daemon started meanwhile
//! waits for the lock, then finds its lanes as they were). Before anything is read it refuses
//! while a daemon holds a lane (an `account_leases` row whose lease has not expired), a replica
//! was seen within a lease, or a payment is held (`payrecon pay`, a pass).
//!
//! The target must be an empty payrecon ledger (migrated here first); its tables are locked
//! (`EXCLUSIVE`: readable, not writable) for the transaction, so a replica started against it
//! early waits and then sees the copied ledger. Rows go in batches through `UNNEST` of one
//! array per column, streamed from SQLite (never the whole table in memory). Identity
//! sequences are set past the largest id copied. Times: SQLite's fixed-width UTC text
//! (`ledger::time`) becomes `timestamptz` (the same instant; a value that is not such a time
//! refuses the copy, naming the row). Text, evidence included, is copied byte for byte.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;

use super::pg::PgLedger;
use super::time::{from_db, to_db};
use super::{LedgerError, SqliteLedger};

/// A column's type, as both stores read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    /// SQLite: fixed-width UTC text; PostgreSQL: `timestamptz`.
    Time,
}

/// A copied table: its columns (the same names on both stores), its order (the primary key)
/// and the aggregates compared after the copy (SQL both stores accept, each a bigint).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    order_by: &'static str,
    /// Whether `id` is an identity column on PostgreSQL (its sequence is set afterwards).
    identity: bool,
    checks: &'static [(&'static str, &'static str)],
}

use Kind::{Int, Text, Time};

const MAX_ID: (&str, &str) = ("max id", "COALESCE(MAX(id), 0)");

/// In an order the foreign keys accept (events and discrepancies name payments and runs).
const COPIED: &[Table] = &[
    Table {
        name: "runs",
        columns: &[
            ("id", Int),
            ("owner", Text),
            ("trigger", Text),
            ("started_at", Time),
            ("finished_at", Time),
            ("status", Text),
            ("claimed", Int),
            ("checked", Int),
            ("finalized", Int),
            ("calls", Int),
            ("errors", Int),
            ("message", Text),
        ],
        order_by: "id",
        identity: true,
        checks: &[MAX_ID, ("sum of calls", "COALESCE(SUM(calls), 0)")],
    },
    Table {
        name: "payments",
        columns: &[
            ("id", Int),
            ("account", Text),
            ("provider", Text),
            ("kind", Text),
            ("out_trade_no", Text),
            ("provider_ref", Text),
            ("original_ref", Text),
            ("pay_type", Text),
            ("amount", Int),
            ("currency", Text),
            ("state", Text),
            ("provider_code", Text),
            ("attempts", Int),
            ("retry_reason", Text),
            ("retry_repeats", Int),
            ("next_check_at", Time),
            ("created_at", Time),
            ("registered_at", Time),
            ("updated_at", Time),
            ("in_progress_since", Time),
            ("expires_at", Time),
            ("lease_owner", Text),
            ("lease_expires_at", Time),
            ("reversal_requested_at", Time),
            ("last_run_id", Int),
            ("notified_at", Time),
            ("nudged_at", Time),
        ],
        order_by: "id",
        identity: true,
        checks: &[
            MAX_ID,
            ("sum of amounts", "COALESCE(SUM(amount), 0)"),
            ("sum of attempts", "COALESCE(SUM(attempts), 0)"),
            ("open", "COUNT(next_check_at)"),
        ],
    },
    Table {
        name: "events",
        columns: &[
            ("id", Int),
            ("payment_id", Int),
            ("run_id", Int),
            ("at", Time),
            ("kind", Text),
            ("from_state", Text),
            ("to_state", Text),
            ("provider_code", Text),
            ("message", Text),
            ("evidence", Text),
        ],
        order_by: "id",
        identity: true,
        checks: &[
            MAX_ID,
            ("evidence characters", "COALESCE(SUM(length(evidence)), 0)"),
        ],
    },
    Table {
        name: "discrepancies",
        columns: &[
            ("id", Int),
            ("payment_id", Int),
            ("account", Text),
            ("kind", Text),
            ("detail", Text),
            ("evidence", Text),
            ("found_at", Time),
            ("resolved_at", Time),
            ("resolution_note", Text),
            ("subject", Text),
        ],
        order_by: "id",
        identity: true,
        checks: &[
            MAX_ID,
            ("resolved", "COUNT(resolved_at)"),
            ("evidence characters", "COALESCE(SUM(length(evidence)), 0)"),
        ],
    },
    Table {
        name: "sweep_cursors",
        columns: &[
            ("account", Text),
            ("window_start", Time),
            ("window_end", Time),
            ("round", Int),
            ("next_page", Int),
            ("records_seen", Int),
            ("completed_at", Time),
            ("updated_at", Time),
        ],
        order_by: "account, window_start, window_end, round",
        identity: false,
        checks: &[
            ("sum of records seen", "COALESCE(SUM(records_seen), 0)"),
            ("completed", "COUNT(completed_at)"),
        ],
    },
    Table {
        name: "sweep_schedule",
        columns: &[
            ("account", Text),
            ("swept_until", Time),
            ("rechecked_from", Time),
            ("updated_at", Time),
        ],
        order_by: "account",
        identity: false,
        checks: &[],
    },
    Table {
        name: "account_pauses",
        columns: &[
            ("account", Text),
            ("paused_until", Time),
            ("reason", Text),
            ("updated_at", Time),
        ],
        order_by: "account",
        identity: false,
        checks: &[],
    },
    Table {
        name: "account_leases",
        columns: &[
            ("account", Text),
            ("holder", Text),
            ("token", Int),
            ("acquired_at", Time),
            ("heartbeat_at", Time),
            ("expires_at", Time),
            ("pace_per_minute", Int),
            ("next_call_at", Time),
        ],
        order_by: "account",
        identity: false,
        checks: &[
            ("sum of tokens", "COALESCE(SUM(token), 0)"),
            ("max token", "COALESCE(MAX(token), 0)"),
        ],
    },
];

/// Kept by triggers on both stores; verified against the source's rows, never copied.
const DERIVED: &[&str] = &["payment_counts", "discrepancy_counts", "run_totals"];

/// The PostgreSQL triggers that count inserted rows (`migrations/postgres/0001_ledger.sql`).
const COUNT_TRIGGERS: &[(&str, &str)] = &[
    ("payments", "payment_counts_insert"),
    ("discrepancies", "discrepancy_counts_insert"),
    ("runs", "run_totals_insert"),
];

/// What those triggers would have counted, from the copied rows at once.
const COUNTS_FROM_ROWS: &[&str] = &[
    "INSERT INTO payment_counts (account, provider, state, n)
     SELECT account, provider, state, COUNT(*) FROM payments GROUP BY account, provider, state
     ON CONFLICT (account, provider, state) DO UPDATE SET n = payment_counts.n + EXCLUDED.n",
    "INSERT INTO discrepancy_counts (account, kind, open)
     SELECT account, kind, COUNT(*) FROM discrepancies WHERE resolved_at IS NULL
      GROUP BY account, kind
     ON CONFLICT (account, kind) DO UPDATE SET open = discrepancy_counts.open + EXCLUDED.open",
    "UPDATE run_totals
        SET runs = runs + (SELECT COUNT(*) FROM runs),
            calls = calls + (SELECT COALESCE(SUM(calls), 0) FROM runs)
      WHERE id = 1",
];

/// Deliberately not copied (see the module's documentation).
const NOT_COPIED: &[&str] = &["replicas", "_sqlx_migrations"];

/// Rows per `INSERT … SELECT FROM UNNEST`, at most.
pub const BATCH_ROWS: usize = 2000;
/// Text bytes per batch, at most (evidence can be long): a batch is sent when either is reached.
const BATCH_BYTES: usize = 8 << 20;

/// How the copy runs.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The daemons' lease (`[reconcile] lease`): a replica seen within it is alive.
    pub lease: Duration,
    /// Rows per batch.
    pub batch_rows: usize,
    /// A progress bar per table on stderr (when it is a terminal).
    pub progress: bool,
}

/// One table's comparison after the copy: what the source has, what the target has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub table: &'static str,
    pub what: String,
    pub source: i64,
    pub target: i64,
}

/// What a successful copy moved and verified.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub rows: Vec<(&'static str, i64)>,
    /// Every comparison made (all equal, or the copy would have failed).
    pub checks: Vec<Check>,
    /// The next id of each identity column after the copy.
    pub next_ids: Vec<(&'static str, i64)>,
    /// Where the source's own trigger-kept counts disagreed with its rows (the target's are
    /// computed from the rows, and right).
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

/// Why the copy did not happen. Whatever the reason, the target holds nothing of it.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A daemon works the source: stop it first.
    #[error("{0}")]
    SourceBusy(String),
    /// The target holds a ledger already.
    #[error("{0}")]
    TargetNotEmpty(String),
    /// A table or column this version does not know how to copy.
    #[error("{0}")]
    Schema(String),
    /// A source value the target cannot hold.
    #[error("{0}")]
    Data(String),
    /// The target's rows do not match the source's after the copy.
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Ledger(LedgerError::Query(e))
    }
}

/// One batch of a table's rows, column by column.
enum Values {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Time(Vec<Option<DateTime<Utc>>>),
}

impl Values {
    fn new(kind: Kind, capacity: usize) -> Self {
        match kind {
            Int => Values::Int(Vec::with_capacity(capacity)),
            Text => Values::Text(Vec::with_capacity(capacity)),
            Time => Values::Time(Vec::with_capacity(capacity)),
        }
    }

    fn clear(&mut self) {
        match self {
            Values::Int(v) => v.clear(),
            Values::Text(v) => v.clear(),
            Values::Time(v) => v.clear(),
        }
    }
}

fn pg_type(kind: Kind) -> &'static str {
    match kind {
        Int => "bigint[]",
        Text => "text[]",
        Time => "timestamptz[]",
    }
}

fn column_list(t: &Table) -> String {
    t.columns
        .iter()
        .map(|(c, _)| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn insert_sql(t: &Table) -> String {
    let arrays = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, k))| format!("${}::{}", i + 1, pg_type(*k)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {} ({}) {} SELECT * FROM UNNEST({arrays})",
        t.name,
        column_list(t),
        if t.identity {
            "OVERRIDING SYSTEM VALUE"
        } else {
            ""
        }
    )
}

fn checks_sql(t: &Table) -> String {
    let mut exprs = vec!["COUNT(*)".to_string()];
    exprs.extend(t.checks.iter().map(|(_, e)| format!("CAST({e} AS BIGINT)")));
    format!("SELECT {} FROM {}", exprs.join(", "), t.name)
}

/// Copies the SQLite ledger `source` into the empty PostgreSQL ledger `target` (migrated), in
/// one transaction that commits only once every comparison holds.
pub async fn copy_to_postgres(
    source: &SqliteLedger,
    target: &PgLedger,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let started = std::time::Instant::now();
    let mut report = CopyReport::default();
    // The source, for writing: one state, and nobody writes it while we read.
    let mut src = source.pool().begin_with("BEGIN IMMEDIATE").await?;
    refuse_live_holders(&mut src, options.lease).await?;
    check_source_schema(&mut src).await?;

    let mut dst = target.pool().begin().await?;
    let all: Vec<&str> = COPIED
        .iter()
        .map(|t| t.name)
        .chain(DERIVED.iter().copied())
        .chain(["replicas"])
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        all.join(", ")
    )))
    .execute(&mut *dst)
    .await?;
    check_target_schema(&mut dst).await?;
    refuse_non_empty(&mut dst).await?;

    // The count triggers are off while the rows go in, and the counts are computed once
    // afterwards from the copied rows: a trigger per row updates the same few count rows
    // again and again in one transaction, each update a new version of the row that the next
    // one must walk past, so the copy slowed down with every row (100,000 payments: 33 s with
    // the triggers, 4 s without; 600,000 rows: 750 rows/s against 24,700). `ALTER TABLE` is
    // transactional: a copy that fails or is killed leaves the triggers on.
    for (table, trigger) in COUNT_TRIGGERS {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} DISABLE TRIGGER {trigger}"
        )))
        .execute(&mut *dst)
        .await?;
    }
    for t in COPIED {
        let n = copy_table(t, &mut src, &mut dst, options).await?;
        report.rows.push((t.name, n));
    }
    for sql in COUNTS_FROM_ROWS {
        sqlx::query(*sql).execute(&mut *dst).await?;
    }
    for (table, trigger) in COUNT_TRIGGERS {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} ENABLE TRIGGER {trigger}"
        )))
        .execute(&mut *dst)
        .await?;
    }
    for t in COPIED.iter().filter(|t| t.identity) {
        let next: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{0}', 'id'), COALESCE(MAX(id), 0) + 1, false)
             FROM {0}",
            t.name
        )))
        .fetch_one(&mut *dst)
        .await?;
        report.next_ids.push((t.name, next));
    }
    verify(&mut src, &mut dst, &mut report).await?;
    let bad: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.source != c.target)
        .map(|c| {
            format!(
                "{} {}: source {}, target {}",
                c.table, c.what, c.source, c.target
            )
        })
        .collect();
    if !bad.is_empty() {
        return Err(CopyError::Mismatch(format!(
            "the copy does not match the source ({}); nothing was committed",
            bad.join("; ")
        )));
    }
    dst.commit().await?;
    // Read only: ending it either way writes nothing.
    src.rollback().await?;
    // Statistics for the planner now, not at autovacuum's next round: the first passes on a
    // ledger planned without them claim by nested loops over every due payment (seconds a
    // claim; `pg::intake::analyze_after_bulk_insert`). The rows are committed either way.
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {}", all.join(", "))))
        .execute(target.pool())
        .await
    {
        tracing::warn!(error = %e, "could not analyze the copied tables; autovacuum will");
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn refuse_live_holders(
    src: &mut sqlx::SqliteConnection,
    lease: Duration,
) -> Result<(), CopyError> {
    let now = Utc::now();
    let live_since = now - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
    let mut held = Vec::new();
    let leases = sqlx::query(
        "SELECT account, holder, expires_at FROM account_leases
          WHERE holder IS NOT NULL AND expires_at > ?1 ORDER BY account",
    )
    .bind(to_db(now))
    .fetch_all(&mut *src)
    .await?;
    for r in leases {
        held.push(format!(
            "account {} is held by {} until {}",
            r.get::<String, _>(0),
            r.get::<String, _>(1),
            r.get::<String, _>(2)
        ));
    }
    let replicas =
        sqlx::query("SELECT holder, seen_at FROM replicas WHERE seen_at >= ?1 ORDER BY holder")
            .bind(to_db(live_since))
            .fetch_all(&mut *src)
            .await?;
    for r in replicas {
        held.push(format!(
            "daemon {} was alive at {}",
            r.get::<String, _>(0),
            r.get::<String, _>(1)
        ));
    }
    let payments = sqlx::query(
        "SELECT id, lease_owner, lease_expires_at FROM payments
          WHERE lease_owner IS NOT NULL AND lease_expires_at > ?1 ORDER BY id LIMIT 5",
    )
    .bind(to_db(now))
    .fetch_all(&mut *src)
    .await?;
    for r in payments {
        held.push(format!(
            "payment {} is held by {} until {}",
            r.get::<i64, _>(0),
            r.get::<String, _>(1),
            r.get::<String, _>(2)
        ));
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(CopyError::SourceBusy(format!(
        "the SQLite ledger is in use: {}. Stop every payrecon daemon (and wait for running \
         commands) before copying; a lease of a daemon that died runs out by itself",
        held.join("; ")
    )))
}

fn unknown_columns(
    table: &str,
    have: &[String],
    want: &[(&str, Kind)],
    store: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in have {
        if !want.iter().any(|(w, _)| w == c) {
            out.push(format!(
                "{store} column {table}.{c} is unknown to this payrecon"
            ));
        }
    }
    for (w, _) in want {
        if !have.iter().any(|c| c == w) {
            out.push(format!("{store} table {table} lacks column {w}"));
        }
    }
    out
}

async fn check_source_schema(src: &mut sqlx::SqliteConnection) -> Result<(), CopyError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
          ORDER BY name",
    )
    .fetch_all(&mut *src)
    .await?;
    let mut problems = Vec::new();
    for name in &tables {
        let known = COPIED.iter().any(|t| t.name == name)
            || DERIVED.contains(&name.as_str())
            || NOT_COPIED.contains(&name.as_str());
        if !known {
            problems.push(format!(
                "SQLite table {name} is unknown to this payrecon (a newer ledger?)"
            ));
        }
    }
    for t in COPIED {
        let have: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .bind(t.name)
                .fetch_all(&mut *src)
                .await?;
        problems.extend(unknown_columns(t.name, &have, t.columns, "SQLite"));
    }
    schema_result(problems)
}

async fn check_target_schema(dst: &mut sqlx::PgConnection) -> Result<(), CopyError> {
    let mut problems = Vec::new();
    for t in COPIED {
        let have: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(t.name)
        .fetch_all(&mut *dst)
        .await?;
        problems.extend(unknown_columns(t.name, &have, t.columns, "PostgreSQL"));
    }
    schema_result(problems)
}

fn schema_result(problems: Vec<String>) -> Result<(), CopyError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(CopyError::Schema(format!(
        "cannot copy this ledger: {}; nothing was written",
        problems.join("; ")
    )))
}

async fn refuse_non_empty(dst: &mut sqlx::PgConnection) -> Result<(), CopyError> {
    let mut held = Vec::new();
    for name in COPIED.iter().map(|t| t.name).chain(["replicas"]) {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {name}")))
                .fetch_one(&mut *dst)
                .await?;
        if n > 0 {
            held.push(format!("{n} {name}"));
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(CopyError::TargetNotEmpty(format!(
        "the target is not an empty ledger: it holds {}. Copy into a new, empty database \
         (nothing was written)",
        held.join(", ")
    )))
}

async fn copy_table(
    t: &Table,
    src: &mut sqlx::SqliteConnection,
    dst: &mut sqlx::PgConnection,
    options: &CopyOptions,
) -> Result<i64, CopyError> {
    let batch_rows = options.batch_rows.max(1);
    let bar = if options.progress {
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            t.name
        )))
        .fetch_one(&mut *src)
        .await?;
        Some(progress_bar(t.name, total))
    } else {
        None
    };
    let insert = insert_sql(t);
    let mut values: Vec<Values> = t
        .columns
        .iter()
        .map(|(_, k)| Values::new(*k, batch_rows))
        .collect();
    let (mut in_batch, mut bytes, mut copied) = (0usize, 0usize, 0i64);
    let select = format!(
        "SELECT {} FROM {} ORDER BY {}",
        column_list(t),
        t.name,
        t.order_by
    );
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *src);
    while let Some(row) = rows.try_next().await? {
        for (i, ((column, _), v)) in t.columns.iter().zip(values.iter_mut()).enumerate() {
            match v {
                Values::Int(v) => v.push(row.try_get(i)?),
                Values::Text(v) => {
                    let s: Option<String> = row.try_get(i)?;
                    bytes += s.as_ref().map_or(0, String::len);
                    v.push(s);
                }
                Values::Time(v) => {
                    let s: Option<String> = row.try_get(i)?;
                    let t_value = match s {
                        None => None,
                        Some(s) => Some(from_db(&s).ok_or_else(|| {
                            CopyError::Data(format!(
                                "{}.{column} of the row {} is not a time: {s:?}; nothing was \
                                 written (correct the row in the SQLite ledger, then copy again)",
                                t.name,
                                row_key(t, &row)
                            ))
                        })?),
                    };
                    v.push(t_value);
                }
            }
        }
        in_batch += 1;
        if in_batch >= batch_rows || bytes >= BATCH_BYTES {
            send(&insert, &mut values, &mut *dst).await?;
            copied += in_batch as i64;
            if let Some(b) = &bar {
                b.inc(in_batch as u64);
            }
            (in_batch, bytes) = (0, 0);
        }
    }
    drop(rows);
    if in_batch > 0 {
        send(&insert, &mut values, &mut *dst).await?;
        copied += in_batch as i64;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(copied)
}

/// The row's key for messages: its id, or its primary key's text columns.
fn row_key(t: &Table, row: &sqlx::sqlite::SqliteRow) -> String {
    let keys: Vec<&str> = t.order_by.split(", ").collect();
    keys.iter()
        .map(|k| {
            let i = t.columns.iter().position(|(c, _)| c == k).unwrap_or(0);
            let v = row
                .try_get::<Option<String>, _>(i)
                .ok()
                .flatten()
                .or_else(|| {
                    row.try_get::<Option<i64>, _>(i)
                        .ok()
                        .flatten()
                        .map(|n| n.to_string())
                })
                .unwrap_or_default();
            format!("{k} {v:?}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn send(
    insert: &str,
    values: &mut [Values],
    dst: &mut sqlx::PgConnection,
) -> Result<(), CopyError> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.to_string()));
    for v in values.iter() {
        q = match v {
            Values::Int(v) => q.bind(v.clone()),
            Values::Text(v) => q.bind(v.clone()),
            Values::Time(v) => q.bind(v.clone()),
        };
    }
    q.execute(&mut *dst).await?;
    for v in values.iter_mut() {
        v.clear();
    }
    Ok(())
}

fn progress_bar(table: &str, total: i64) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::with_draw_target(
        Some(total.max(0) as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>15} [{bar:40}] {pos}/{len} rows, {per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_prefix(table.to_string());
    b
}

/// Every comparison: per copied table its row count and aggregates, and the trigger-kept
/// tables against the source's rows.
async fn verify(
    src: &mut sqlx::SqliteConnection,
    dst: &mut sqlx::PgConnection,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    for t in COPIED {
        let sql = checks_sql(t);
        let s = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(&mut *src)
            .await?;
        let d = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *dst)
            .await?;
        let labels = std::iter::once("rows").chain(t.checks.iter().map(|(l, _)| *l));
        for (i, what) in labels.enumerate() {
            report.checks.push(Check {
                table: t.name,
                what: what.to_string(),
                source: s.try_get(i)?,
                target: d.try_get(i)?,
            });
        }
    }

    // payment_counts: the target's (kept by its triggers) against the source's rows.
    let from_rows = grouped_sqlite(
        src,
        "SELECT account || '/' || provider || '/' || state, COUNT(*) FROM payments
          GROUP BY account, provider, state",
    )
    .await?;
    let stored = grouped_sqlite(
        src,
        "SELECT account || '/' || provider || '/' || state, n FROM payment_counts WHERE n <> 0",
    )
    .await?;
    let target = grouped_pg(
        dst,
        "SELECT account || '/' || provider || '/' || state, n FROM payment_counts WHERE n <> 0",
    )
    .await?;
    compare_grouped(
        "payment_counts",
        "payments",
        &from_rows,
        &stored,
        &target,
        report,
    );

    let from_rows = grouped_sqlite(
        src,
        "SELECT account || '/' || kind, COUNT(*) FROM discrepancies WHERE resolved_at IS NULL
          GROUP BY account, kind",
    )
    .await?;
    let stored = grouped_sqlite(
        src,
        "SELECT account || '/' || kind, open FROM discrepancy_counts WHERE open <> 0",
    )
    .await?;
    let target = grouped_pg(
        dst,
        "SELECT account || '/' || kind, open FROM discrepancy_counts WHERE open <> 0",
    )
    .await?;
    compare_grouped(
        "discrepancy_counts",
        "open discrepancies",
        &from_rows,
        &stored,
        &target,
        report,
    );

    let (runs, calls): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(calls), 0) FROM runs")
            .fetch_one(&mut *src)
            .await?;
    let stored: Option<(i64, i64)> = sqlx::query_as("SELECT runs, calls FROM run_totals")
        .fetch_optional(&mut *src)
        .await?;
    let (t_runs, t_calls): (i64, i64) =
        sqlx::query_as("SELECT runs, calls::bigint FROM run_totals WHERE id = 1")
            .fetch_optional(&mut *dst)
            .await?
            .unwrap_or((-1, -1));
    if stored.is_some_and(|s| s != (runs, calls)) {
        report.warnings.push(format!(
            "the SQLite ledger's run_totals say {:?} (runs, calls) but its runs add up to \
             ({runs}, {calls}); the PostgreSQL ledger has the latter",
            stored.unwrap_or_default()
        ));
    }
    for (what, source, target) in [("runs", runs, t_runs), ("calls", calls, t_calls)] {
        report.checks.push(Check {
            table: "run_totals",
            what: what.to_string(),
            source,
            target,
        });
    }
    Ok(())
}

async fn grouped_sqlite(
    src: &mut sqlx::SqliteConnection,
    sql: &'static str,
) -> Result<BTreeMap<String, i64>, CopyError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&mut *src).await?;
    Ok(rows.into_iter().collect())
}

async fn grouped_pg(
    dst: &mut sqlx::PgConnection,
    sql: &'static str,
) -> Result<BTreeMap<String, i64>, CopyError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&mut *dst).await?;
    Ok(rows.into_iter().collect())
}

/// A trigger-kept table's groups: one check for the number of groups and the total, and one
/// per group that differs (so a mismatch names it).
fn compare_grouped(
    table: &'static str,
    counted: &str,
    from_rows: &BTreeMap<String, i64>,
    stored: &BTreeMap<String, i64>,
    target: &BTreeMap<String, i64>,
    report: &mut CopyReport,
) {
    if stored != from_rows {
        report.warnings.push(format!(
            "the SQLite ledger's {table} disagree with its {counted}; the PostgreSQL ledger \
             counts the rows themselves"
        ));
    }
    report.checks.push(Check {
        table,
        what: "groups".into(),
        source: from_rows.len() as i64,
        target: target.len() as i64,
    });
    report.checks.push(Check {
        table,
        what: format!("total {counted}"),
        source: from_rows.values().sum(),
        target: target.values().sum(),
    });
    for key in from_rows.keys().chain(target.keys()) {
        let (s, t) = (
            from_rows.get(key).copied().unwrap_or(0),
            target.get(key).copied().unwrap_or(0),
        );
        if s != t
            && !report
                .checks
                .iter()
                .any(|c| c.table == table && c.what == *key)
        {
            report.checks.push(Check {
                table,
                what: key.clone(),
                source: s,
                target: t,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_copied_table_inserts_one_array_per_column() {
        for t in COPIED {
            let sql = insert_sql(t);
            assert_eq!(sql.matches("[]").count(), t.columns.len(), "{sql}");
            assert_eq!(sql.contains("OVERRIDING SYSTEM VALUE"), t.identity);
        }
    }

    #[test]
    fn the_table_lists_do_not_overlap() {
        let mut names: Vec<&str> = COPIED.iter().map(|t| t.name).collect();
        names.extend(DERIVED);
        names.extend(NOT_COPIED);
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
