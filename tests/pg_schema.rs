//! The PostgreSQL ledger's schema keeps the SQLite ledger's promises (issue 18): migrations
//! apply to an empty database and again harmlessly; events are append-only; the state check and
//! the unique keys hold; a finding is recorded once, also by two writers at once; the counts
//! follow every write. Needs a server: `bash tests/run.sh`.

mod pg_support;

use std::time::Duration;

use pg_support::fresh_ledger;
use sqlx::PgPool;

async fn exec(pool: &PgPool, sql: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
        .map(|d| d.rows_affected())
}

const PAYMENT: &str = "INSERT INTO payments (account, provider, out_trade_no, amount, currency,
                       created_at, registered_at, updated_at)
                       VALUES ('hk', 'qfpay', 'O1', 100, 'HKD', now(), now(), now())";

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_harmlessly() {
    let (pool, url) = fresh_ledger().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for t in [
        "account_leases",
        "account_pauses",
        "discrepancies",
        "discrepancy_counts",
        "events",
        "payment_counts",
        "payments",
        "run_totals",
        "runs",
        "sweep_cursors",
        "sweep_schedule",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "missing table {t}: {tables:?}"
        );
    }
    pool.close().await;
    let again = payrecon::ledger::pg::connect(&url, Duration::from_secs(10))
        .await
        .unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&again)
        .await
        .unwrap();
    assert_eq!(
        applied as usize,
        payrecon::ledger::pg::MIGRATOR.iter().count()
    );
}

#[tokio::test]
async fn events_are_append_only_and_states_and_keys_are_checked() {
    let (pool, _) = fresh_ledger().await;
    exec(&pool, PAYMENT).await.unwrap();
    exec(
        &pool,
        "INSERT INTO events (payment_id, at, kind) VALUES (1, now(), 'registered')",
    )
    .await
    .unwrap();
    for refused in [
        "UPDATE events SET kind = 'x'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let e = exec(&pool, refused).await.unwrap_err().to_string();
        assert!(e.contains("events are append-only"), "{refused}: {e}");
    }
    let e = exec(&pool, "UPDATE payments SET state = 'paid'")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("check constraint"), "{e}");
    let e = exec(&pool, PAYMENT).await.unwrap_err().to_string();
    assert!(e.contains("duplicate key"), "{e}");
    for bad in ["amount = 0", "currency = 'HK'", "provider = 'paypal'"] {
        let e = exec(&pool, &format!("UPDATE payments SET {bad}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("check constraint"), "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_finding_is_recorded_once_even_by_two_writers_at_once() {
    let (pool, _) = fresh_ledger().await;
    exec(&pool, PAYMENT).await.unwrap();
    let per_payment = "INSERT INTO discrepancies (payment_id, account, kind, detail, found_at)
                       VALUES (1, 'hk', 'amount_mismatch', 'gateway 90', now())
                       ON CONFLICT DO NOTHING";
    let per_subject = "INSERT INTO discrepancies (account, kind, detail, subject, found_at)
                       VALUES ('hk', 'missing_in_ledger', 'record S1', 'S1', now())
                       ON CONFLICT DO NOTHING";
    for sql in [per_payment, per_subject] {
        let (a, b) = tokio::join!(exec(&pool, sql), exec(&pool, sql));
        assert_eq!(a.unwrap() + b.unwrap(), 1, "{sql}");
    }
    // Another detail about the same payment, another subject: new findings.
    exec(&pool, &per_payment.replace("gateway 90", "gateway 80"))
        .await
        .unwrap();
    exec(&pool, &per_subject.replace("'S1'", "'S2'"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM discrepancies")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 4);
}

#[tokio::test]
async fn the_counts_follow_every_write() {
    let (pool, _) = fresh_ledger().await;
    exec(&pool, PAYMENT).await.unwrap();
    exec(&pool, &PAYMENT.replace("'O1'", "'O2'")).await.unwrap();
    exec(
        &pool,
        "UPDATE payments SET state = 'succeeded' WHERE id = 1",
    )
    .await
    .unwrap();
    // A write that does not change the state leaves the counts alone.
    exec(&pool, "UPDATE payments SET attempts = attempts + 1")
        .await
        .unwrap();
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, n FROM payment_counts WHERE account = 'hk' ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        counts,
        [("pending".to_string(), 1), ("succeeded".to_string(), 1)]
    );
    exec(
        &pool,
        "INSERT INTO discrepancies (account, kind, detail, subject, found_at)
         VALUES ('hk', 'missing_in_ledger', 'd', 'S1', now()), ('hk', 'missing_in_ledger', 'd', 'S2', now())",
    )
    .await
    .unwrap();
    exec(
        &pool,
        "UPDATE discrepancies SET resolved_at = now() WHERE subject = 'S1'",
    )
    .await
    .unwrap();
    let open: i64 = sqlx::query_scalar("SELECT open FROM discrepancy_counts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 1);
    exec(
        &pool,
        "INSERT INTO runs (owner, trigger, started_at, calls) VALUES ('a', 'cron', now(), 3)",
    )
    .await
    .unwrap();
    exec(&pool, "UPDATE runs SET calls = 5").await.unwrap();
    let totals: (i64, i64) = sqlx::query_as("SELECT runs, calls FROM run_totals WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(totals, (1, 5));
}

#[tokio::test]
async fn times_are_written_at_the_sqlite_ledgers_millisecond_precision() {
    use chrono::{TimeZone, Utc};
    use payrecon::domain::{AccountName, Currency, Money, OutTradeNo, Provider, RecordKind};
    let (pool, url) = fresh_ledger().await;
    pool.close().await;
    let l = payrecon::ledger::pg::PgLedger::open(&url, Duration::from_secs(10))
        .await
        .unwrap();
    // 12:00:00.123456789: microseconds PostgreSQL would keep, the SQLite ledger would not.
    let t = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
        + chrono::Duration::nanoseconds(123_456_789);
    let p = payrecon::ledger::NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse("T1", Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(100, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: t,
        expires_at: Some(t),
    };
    l.register(&[p], t).await.unwrap();
    l.acquire_account("hk", "A", Duration::from_secs(30), 400, t)
        .await
        .unwrap()
        .expect("free");
    let stored: Vec<chrono::DateTime<Utc>> = sqlx::query_scalar(
        "SELECT created_at FROM payments UNION ALL SELECT expires_at FROM payments
         UNION ALL SELECT next_check_at FROM payments UNION ALL SELECT at FROM events
         UNION ALL SELECT heartbeat_at FROM account_leases",
    )
    .fetch_all(l.pool())
    .await
    .unwrap();
    let expected =
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap() + chrono::Duration::milliseconds(123);
    assert_eq!(stored[..4], vec![expected; 4]);
    // The lease's time is moved onto the server's clock (by the moment the statement took to
    // arrive), and rounded all the same.
    let beat = stored[4];
    assert_eq!(beat.timestamp_subsec_nanos() % 1_000_000, 0, "{beat}");
    assert!(
        beat >= expected && beat - expected < chrono::Duration::seconds(1),
        "{beat}"
    );
}

/// The grants docs/OPERATIONS.md gives the role replicas run as: no superuser, no DDL.
const APP_GRANTS: &str = "GRANT USAGE ON SCHEMA public TO {role};
     GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
     GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}";

/// A login role of its own (roles are the server's, not the database's), and the URL that
/// connects to `database_url`'s database as it.
async fn app_role(admin: &PgPool, database_url: &str) -> (String, String) {
    let db = url::Url::parse(database_url).unwrap().path()[1..].to_string();
    let role = format!("{db}_app");
    exec(
        admin,
        &format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"),
    )
    .await
    .unwrap();
    exec(admin, &format!("GRANT CONNECT ON DATABASE {db} TO {role}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(database_url).unwrap();
    url.set_username(&role).unwrap();
    (role, url.to_string())
}

#[tokio::test]
async fn replicas_run_as_a_role_without_ddl_on_a_migrated_ledger() {
    let (owner, url) = fresh_ledger().await;
    let (role, app_url) = app_role(&owner, &url).await;
    for grant in APP_GRANTS.replace("{role}", &role).split(';') {
        exec(&owner, grant).await.unwrap();
    }
    let l = payrecon::ledger::pg::PgLedger::open(&app_url, Duration::from_secs(10))
        .await
        .expect("a current schema is only read: no DDL, so no right to create is needed");
    let now = chrono::Utc::now();
    let lease = l
        .acquire_account("hk", "replica-1", Duration::from_secs(30), 400, now)
        .await
        .unwrap()
        .expect("free");
    assert!(
        l.renew_account(&lease.fence, Duration::from_secs(30), now)
            .await
            .unwrap()
    );
    assert_eq!(
        l.replica_seen("replica-1", now, now).await.unwrap(),
        ["replica-1"]
    );
    l.replica_gone("replica-1").await.unwrap();
    // The role may not change the schema, nor empty the history.
    let pool = l.pool();
    let refused = exec(pool, "CREATE TABLE sneaky (x int)").await.unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    let refused = exec(pool, "TRUNCATE events").await.unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_schema_that_is_behind_is_refused_with_what_to_run_when_the_role_may_not_migrate() {
    let url = pg_support::fresh_database().await;
    let admin = PgPool::connect(&url).await.unwrap();
    let (_role, app_url) = app_role(&admin, &url).await;
    let err = payrecon::ledger::pg::PgLedger::open(&app_url, Duration::from_secs(10))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("its schema is at migration none")
            && err.contains("run `payrecon migrate` with the URL of the role that owns the schema"),
        "{err}"
    );
    // The owner migrates it (what `payrecon migrate` does), and then the role may run.
    payrecon::ledger::pg::PgLedger::open(&url, Duration::from_secs(10))
        .await
        .unwrap();
}

/// A server that cannot be reached is named with what the network answered: the pool retries
/// a refused connection until its timeout and by itself says only "pool timed out".
#[test]
fn an_unreachable_server_is_reported_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("payrecon.toml");
    std::fs::write(
        &config,
        "[ledger]\nurl = \"postgres://payrecon@127.0.0.1:1/payrecon\"\nbusy_timeout = \"1s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrecon"))
        .arg("--config")
        .arg(&config)
        .args(["ledger", "stats"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ledger postgres://payrecon@127.0.0.1:1/payrecon")
            && err.contains("Connection refused"),
        "{err}"
    );
}
