//! `payrecon ledger copy --to URL`: a SQLite ledger moved into an empty PostgreSQL ledger,
//! every row with its id, verified, in one transaction; refused while a daemon works the
//! source, when the target holds a ledger, or with a password in the URL. Run with
//! `bash tests/run.sh --test ledger_copy` (it starts a throw-away PostgreSQL server).

mod pg_support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use payrecon::domain::{AccountName, Currency, Money, OutTradeNo, Provider, RecordKind};
use payrecon::ledger::pg::PgLedger;
use payrecon::ledger::time::to_db;
use payrecon::ledger::{
    Ledger, NewPayment, RunCounters, SchedulePosition, SqliteLedger, SweepCursor, SweepRound,
};
use sqlx::Row;

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
const TTL: Duration = Duration::from_secs(60);

struct Source {
    dir: tempfile::TempDir,
    ledger: Ledger,
}

impl Source {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[ledger]\npath = \"{}\"\n",
            dir.path().join("ledger.db").display()
        );
        std::fs::write(dir.path().join("payrecon.toml"), cfg).unwrap();
        let ledger = payrecon::ledger::open(&dir.path().join("ledger.db"), Duration::from_secs(5))
            .await
            .unwrap();
        Self { dir, ledger }
    }

    fn sqlite(&self) -> &SqliteLedger {
        self.ledger.as_sqlite().unwrap()
    }

    async fn sql(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self.sqlite().pool())
            .await
            .unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("payrecon.toml")
    }

    /// `payrecon --config … ledger copy ARGS`.
    fn copy(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.config())
            .args(["ledger", "copy"])
            .args(args)
            .env_remove("PAYRECON_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn new_payment(account: &str, no: &str, amount: i64, minutes_ago: i64) -> NewPayment {
    let provider = if account == "tw" {
        Provider::Ecpay
    } else {
        Provider::Qfpay
    };
    let currency = if account == "tw" { "TWD" } else { "HKD" };
    NewPayment {
        account: AccountName::parse(account).unwrap(),
        provider,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, provider).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(amount, Currency::parse(currency).unwrap()).unwrap(),
        created_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
        expires_at: None,
    }
}

const STATES: &[&str] = &[
    "pending",
    "in_progress",
    "succeeded",
    "failed",
    "cancelled",
    "reversing",
    "reversed",
    "refunded",
    "partially_refunded",
    "needs_review",
];

/// Evidence as a gateway sends it: key order, spacing, escapes and non-ASCII text that a JSON
/// round trip would change.
fn evidence(i: usize) -> String {
    format!("{{\"z\":{i},  \"a\" : \"中文 \\u00e9\\n\",\"n\":1.50,\"dup\":1,\"dup\":2}}")
}

/// A ledger with something in every table: payments in every state on two accounts, events
/// with odd evidence, runs (one still running), discrepancies open and resolved, sweep
/// cursors and schedule positions, a pause, leases released with their tokens, a stale
/// replica row.
async fn fill(src: &Source) {
    let l = &src.ledger;
    let now = Utc::now();
    let run = l.start_run("old-daemon", "cron", now).await.unwrap();
    l.finish_run(
        run,
        "completed",
        RunCounters {
            claimed: 7,
            checked: 6,
            finalized: 5,
            calls: 11,
            errors: 1,
        },
        Some("done"),
        now,
    )
    .await
    .unwrap();
    let running = l.start_run("old-daemon", "cli", now).await.unwrap();

    let mut batch = Vec::new();
    for i in 0..40 {
        let account = if i % 3 == 0 { "tw" } else { "hk" };
        batch.push(new_payment(account, &format!("ORD{i:03}"), 100 + i, 60 - i));
    }
    let report = l.register(&batch, now).await.unwrap();
    assert_eq!(report.inserted.len(), 40);
    for (i, (_, id)) in report.inserted.iter().enumerate() {
        let state = STATES[i % STATES.len()];
        let final_ = !matches!(
            state,
            "pending" | "in_progress" | "reversing" | "needs_review"
        );
        src.sql(&format!(
            "UPDATE payments SET state = '{state}', provider_ref = 'REF{id}',
                    attempts = {a}, retry_reason = 'r{a}', retry_repeats = {a},
                    provider_code = '已授權', last_run_id = {run},
                    next_check_at = {next}, updated_at = '{now}',
                    notified_at = {notified}, nudged_at = {notified},
                    reversal_requested_at = {rev}, in_progress_since = {rev}
              WHERE id = {id}",
            a = i % 4,
            next = if final_ {
                "NULL".to_string()
            } else {
                format!("'{}'", to_db(now + chrono::Duration::seconds(i as i64)))
            },
            now = to_db(now),
            notified = if i % 5 == 0 {
                format!("'{}'", to_db(now - chrono::Duration::seconds(3)))
            } else {
                "NULL".into()
            },
            rev = if state.starts_with("revers") {
                format!("'{}'", to_db(now - chrono::Duration::seconds(9)))
            } else {
                "NULL".into()
            },
        ))
        .await;
        for k in 0..3 {
            src.sql(&format!(
                "INSERT INTO events (payment_id, run_id, at, kind, from_state, to_state,
                                     provider_code, message, evidence)
                 VALUES ({id}, {run_id}, '{at}', 'observed', 'pending', '{state}', '0000',
                         'it''s {k}', '{ev}')",
                run_id = if k == 0 {
                    "NULL".into()
                } else {
                    run.to_string()
                },
                at = to_db(now + chrono::Duration::milliseconds(k)),
                ev = evidence(i * 3 + k as usize).replace('\'', "''"),
            ))
            .await;
        }
    }
    // A refund record with its original's gateway id.
    src.sql(&format!(
        "INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref, original_ref,
                               amount, currency, state, created_at, registered_at, updated_at)
         VALUES ('hk', 'qfpay', 'refund', 'ORD001', 'RR1', 'REF2', 50, 'HKD', 'refunded',
                 '{t}', '{t}', '{t}')",
        t = to_db(now)
    ))
    .await;

    // Discrepancies: about payments and about records, open and resolved.
    for i in 1..=6i64 {
        src.sql(&format!(
            "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at)
             VALUES ({i}, 'hk', 'amount_mismatch', 'amount {i}', '{ev}', '{t}')",
            ev = evidence(i as usize),
            t = to_db(now)
        ))
        .await;
    }
    assert!(
        l.record_notified_unknown(
            "tw",
            "T999",
            "notified, unknown",
            &serde_json::json!({"x": 1}),
            now
        )
        .await
        .unwrap()
    );
    for d in l.discrepancies(false).await.unwrap().iter().take(3) {
        assert!(
            l.resolve_discrepancy(d.id, "checked by hand", now)
                .await
                .unwrap()
        );
    }

    // Leases: taken and released a few times (tokens 3 and 1), a pause, sweep progress.
    for _ in 0..3 {
        let a = l
            .acquire_account("hk", "old-daemon", TTL, 60, now)
            .await
            .unwrap()
            .unwrap();
        if a.fence.token == 2 {
            l.pause_account(
                &a.fence,
                now + chrono::Duration::hours(1),
                "rate limited",
                now,
            )
            .await
            .unwrap();
            let (start, end) = (
                now - chrono::Duration::days(2),
                now - chrono::Duration::days(1),
            );
            l.save_sweep_cursor(
                &a.fence,
                start,
                end,
                SweepRound::Fresh,
                SweepCursor {
                    next_page: 4,
                    records_seen: 120,
                    completed: false,
                },
                now,
            )
            .await
            .unwrap();
            l.save_sweep_cursor(
                &a.fence,
                start,
                end,
                SweepRound::LookBack,
                SweepCursor {
                    next_page: 9,
                    records_seen: 400,
                    completed: true,
                },
                now,
            )
            .await
            .unwrap();
            l.save_schedule_position(
                &a.fence,
                SchedulePosition {
                    swept_until: end,
                    rechecked_from: start,
                },
                now,
            )
            .await
            .unwrap();
        }
        assert!(
            l.release_account(&a.fence, Some(now + chrono::Duration::seconds(2)))
                .await
                .unwrap()
        );
    }
    let a = l
        .acquire_account("tw", "old-daemon", TTL, 30, now)
        .await
        .unwrap()
        .unwrap();
    l.release_account(&a.fence, None).await.unwrap();
    // A replica that stopped long ago without removing its row.
    src.sql(&format!(
        "INSERT INTO replicas (holder, started_at, seen_at) VALUES ('gone-daemon', '{t}', '{t}')",
        t = to_db(now - chrono::Duration::hours(3))
    ))
    .await;
    let _ = running;
}

async fn target() -> (String, PgLedger) {
    let (pool, url) = pg_support::fresh_ledger().await;
    pool.close().await;
    let pg = PgLedger::open(&url, Duration::from_secs(10)).await.unwrap();
    (url, pg)
}

/// Rows of every table the target holds.
async fn target_rows(pg: &PgLedger) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in [
        "payments",
        "events",
        "runs",
        "discrepancies",
        "sweep_cursors",
        "sweep_schedule",
        "account_pauses",
        "account_leases",
        "replicas",
        "payment_counts",
        "discrepancy_counts",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
            .fetch_one(pg.pool())
            .await
            .unwrap();
        out.push((t.to_string(), n));
    }
    out
}

/// The counting triggers (off during the copy's transaction) are on.
async fn assert_triggers_on(pg: &PgLedger) {
    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT tgname::text, tgenabled::text FROM pg_trigger
          WHERE tgname IN ('payment_counts_insert', 'discrepancy_counts_insert',
                           'run_totals_insert') ORDER BY tgname",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(states.len(), 3);
    assert!(states.iter().all(|(_, e)| e == "O"), "{states:?}");
}

async fn assert_empty(pg: &PgLedger) {
    assert_triggers_on(pg).await;
    for (t, n) in target_rows(pg).await {
        assert_eq!(n, 0, "{t} holds {n} rows after a refused copy");
    }
    assert_eq!(pg.run_totals().await.unwrap(), (0, 0));
}

/// Each table's rows as text, times in the SQLite ledger's format: the two stores compared
/// column by column.
async fn rows_as_text(src: &Source, pg: &PgLedger, table: &str, order: &str) {
    let cols: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pg.pool())
    .await
    .unwrap();
    let pg_cols: Vec<String> = cols
        .iter()
        .map(|(c, t)| {
            if t.starts_with("timestamp") {
                format!("to_char(\"{c}\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS text_{c}")
            } else {
                format!("\"{c}\"::text AS text_{c}")
            }
        })
        .collect();
    let sqlite_cols: Vec<String> = cols
        .iter()
        .map(|(c, _)| format!("CAST(\"{c}\" AS TEXT) AS text_{c}"))
        .collect();
    let s_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {table} ORDER BY {order}",
        sqlite_cols.join(", ")
    )))
    .fetch_all(src.sqlite().pool())
    .await
    .unwrap();
    let p_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {table} ORDER BY {order}",
        pg_cols.join(", ")
    )))
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(s_rows.len(), p_rows.len(), "{table}");
    assert!(!s_rows.is_empty(), "{table} is empty in the test ledger");
    for (s, p) in s_rows.iter().zip(&p_rows) {
        for (i, (c, _)) in cols.iter().enumerate() {
            let a: Option<String> = s.get(i);
            let b: Option<String> = p.get(i);
            assert_eq!(a, b, "{table}.{c}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_moves_with_its_id_and_the_ids_continue() {
    let src = Source::new().await;
    fill(&src).await;
    let (url, pg) = target().await;
    let out = src.copy(&["--to", &url, "--batch", "7"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("verified before commit"), "{stdout}");
    assert!(stdout.contains("payments"), "{stdout}");
    assert!(stdout.contains(&url), "{stdout}");

    // Every table, column by column (times as the SQLite ledger writes them, evidence
    // byte for byte).
    for (table, order) in [
        ("payments", "id"),
        ("events", "id"),
        ("runs", "id"),
        ("discrepancies", "id"),
        ("sweep_cursors", "account, window_start, round"),
        ("sweep_schedule", "account"),
        ("account_pauses", "account"),
        ("account_leases", "account"),
    ] {
        rows_as_text(&src, &pg, table, order).await;
    }
    // Through the ledgers' own reads.
    let (l, p) = (&src.ledger, Ledger::from(pg.clone()));
    let now = Utc::now();
    let max: i64 = sqlx::query_scalar("SELECT MAX(id) FROM payments")
        .fetch_one(src.sqlite().pool())
        .await
        .unwrap();
    for id in 1..=max {
        assert_eq!(l.payment(id).await.unwrap(), p.payment(id).await.unwrap());
        assert_eq!(l.events(id).await.unwrap(), p.events(id).await.unwrap());
    }
    assert_eq!(
        l.discrepancies(true).await.unwrap(),
        p.discrepancies(true).await.unwrap()
    );
    assert_eq!(l.stats(now).await.unwrap(), p.stats(now).await.unwrap());
    assert_eq!(l.lanes(now).await.unwrap(), p.lanes(now).await.unwrap());
    assert_eq!(l.run_totals().await.unwrap(), p.run_totals().await.unwrap());
    assert_eq!(
        l.schedule_position("hk").await.unwrap(),
        p.schedule_position("hk").await.unwrap()
    );
    let lanes = p.lanes(now).await.unwrap();
    let hk = lanes.iter().find(|x| x.account == "hk").unwrap();
    assert_eq!((hk.token, hk.holder.as_deref()), (3, None));
    // The stale replica is not copied.
    assert!(target_rows(&pg).await.contains(&("replicas".into(), 0)));
    // Analyzed: the first passes are not planned without statistics.
    let analyzed: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'payments'::regclass")
            .fetch_one(pg.pool())
            .await
            .unwrap();
    assert_eq!(analyzed as i64, max, "payments analyzed after the copy");

    // The ids continue: a new payment, run, event and discrepancy get fresh ids, and are
    // counted.
    assert_triggers_on(&pg).await;
    let before = p.stats(now).await.unwrap();
    let r = p
        .register(&[new_payment("hk", "AFTER-COPY", 5, 0)], now)
        .await
        .unwrap();
    assert_eq!(r.inserted, vec![(0, max + 1)]);
    let runs: i64 = sqlx::query_scalar("SELECT MAX(id) FROM runs")
        .fetch_one(src.sqlite().pool())
        .await
        .unwrap();
    assert_eq!(p.start_run("new", "cli", now).await.unwrap(), runs + 1);
    assert!(
        p.record_notified_unknown("tw", "T1000", "new", &serde_json::json!({}), now)
            .await
            .unwrap()
    );
    // The fence goes on from the copied token.
    let a = p
        .acquire_account("hk", "new-daemon", TTL, 60, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.fence.token, 4);
    let after = p.stats(now).await.unwrap();
    assert_eq!(after.runs, before.runs + 1);
    assert_eq!(after.open_discrepancies, before.open_discrepancies + 1);
    let total = |s: &payrecon::ledger::Stats| s.by_state.iter().map(|c| c.count).sum::<i64>();
    assert_eq!(total(&after), total(&before) + 1);
    assert_eq!(p.events(max + 1).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_holds_a_ledger_is_refused_and_left_as_it_was() {
    let src = Source::new().await;
    fill(&src).await;
    let (url, pg) = target().await;
    pg.register(&[new_payment("hk", "THERE", 9, 0)], Utc::now())
        .await
        .unwrap();
    let before = target_rows(&pg).await;
    let out = src.copy(&["--to", &url]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("not an empty ledger"), "{stderr}");
    assert!(stderr.contains("1 payments"), "{stderr}");
    assert!(stderr.contains("1 events"), "{stderr}");
    assert_eq!(target_rows(&pg).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lease_or_replica_refuses_the_copy_and_names_its_holder() {
    let src = Source::new().await;
    fill(&src).await;
    let (url, pg) = target().await;
    let now = Utc::now();
    let held = src
        .ledger
        .acquire_account("tw", "daemon-on-host-7", TTL, 60, now)
        .await
        .unwrap()
        .unwrap();
    let out = src.copy(&["--to", &url]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("account tw is held by daemon-on-host-7"),
        "{stderr}"
    );
    assert_empty(&pg).await;

    src.ledger.release_account(&held.fence, None).await.unwrap();
    src.ledger
        .replica_seen("replica-b", now, now - TTL)
        .await
        .unwrap();
    let out = src.copy(&["--to", &url]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("daemon replica-b was alive"), "{stderr}");
    assert_empty(&pg).await;

    // Gone: the copy runs.
    src.ledger.replica_gone("replica-b").await.unwrap();
    let out = src.copy(&["--to", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_is_refused_and_never_echoed() {
    let src = Source::new().await;
    for url in [
        "postgres://payrecon:hunter2secret@127.0.0.1:1/db",
        "postgres://payrecon@127.0.0.1:1/db?password=hunter2secret",
    ] {
        let out = src.copy(&["--to", url]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains("carries a password"), "{stderr}");
        assert!(stderr.contains("--password-file"), "{stderr}");
        assert!(!stderr.contains("hunter2secret"), "{stderr}");
        assert!(!stdout.contains("hunter2secret"), "{stdout}");
    }
    let out = src.copy(&["--to", "mysql://x@y/z"]);
    assert_eq!(out.status.code(), Some(64));
    // A password file others can read is refused, naming the file.
    let f = src.dir.path().join("pw");
    std::fs::write(&f, "hunter2secret\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = src.copy(&[
        "--to",
        "postgres://payrecon@127.0.0.1:1/db",
        "--password-file",
        f.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--password-file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_ledger_in_the_config_is_not_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[ledger]\nurl = \"postgres://payrecon@127.0.0.1:1/a\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args([
            "ledger",
            "copy",
            "--to",
            "postgres://payrecon@127.0.0.1:1/b",
        ])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("already PostgreSQL"), "{stderr}");
}

/// A failure after rows went in (a bad value in a table copied late, a row PostgreSQL's
/// constraints refuse): the transaction rolls back and the target stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_copy_leaves_the_target_empty() {
    let src = Source::new().await;
    fill(&src).await;
    let (url, pg) = target().await;
    src.sql("UPDATE account_pauses SET paused_until = 'next tuesday' WHERE account = 'hk'")
        .await;
    let out = src.copy(&["--to", &url, "--batch", "5"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("account_pauses.paused_until") && stderr.contains("next tuesday"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_empty(&pg).await;

    // A duplicate finding PostgreSQL's unique key refuses (SQLite only de-duplicates on write).
    src.sql(&format!(
        "UPDATE account_pauses SET paused_until = '{}'",
        to_db(Utc::now())
    ))
    .await;
    src.sql(
        "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at)
         SELECT payment_id, account, kind, detail, evidence, found_at FROM discrepancies
          WHERE id = 1",
    )
    .await;
    let out = src.copy(&["--to", &url, "--batch", "5"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("discrepancies_once_per_payment"),
        "{stderr}"
    );
    assert_empty(&pg).await;
}

/// The library call on a larger ledger: counts verified, and the rate printed for the record
/// (`cargo test --test ledger_copy -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_ledger_is_copied_in_batches_and_verified() {
    let src = Source::new().await;
    let n: i64 = std::env::var("LEDGER_COPY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let now: DateTime<Utc> = Utc::now();
    src.sql(&format!(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n})
         INSERT INTO payments (account, provider, out_trade_no, amount, currency, state,
                               created_at, registered_at, updated_at, next_check_at)
         SELECT 'a' || (i % 7), 'qfpay', 'O' || i, i, 'HKD',
                CASE i % 3 WHEN 0 THEN 'succeeded' WHEN 1 THEN 'pending' ELSE 'failed' END,
                '{t}', '{t}', '{t}', CASE i % 3 WHEN 1 THEN '{t}' END FROM k",
        t = to_db(now)
    ))
    .await;
    src.sql(&format!(
        "INSERT INTO events (payment_id, at, kind, to_state, evidence)
         SELECT id, '{t}', 'registered', state, '{{\"id\":' || id || ',\"pad\":\"' ||
                hex(randomblob(100)) || '\"}}' FROM payments",
        t = to_db(now)
    ))
    .await;
    let (_url, pg) = target().await;
    let report = payrecon::ledger::copy::copy_to_postgres(
        src.sqlite(),
        &pg,
        &payrecon::ledger::copy::CopyOptions {
            lease: TTL,
            batch_rows: payrecon::ledger::copy::BATCH_ROWS,
            progress: false,
        },
    )
    .await
    .unwrap();
    let rows: i64 = report.rows.iter().map(|(_, n)| n).sum();
    assert_eq!(rows, 2 * n);
    assert!(report.checks.iter().all(|c| c.source == c.target));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.table == "payment_counts" && c.what == "total payments" && c.target == n)
    );
    eprintln!(
        "copied {rows} rows in {:?}: {:.0} rows/s",
        report.elapsed,
        rows as f64 / report.elapsed.as_secs_f64()
    );
}
