//! The plans of the hot path's statements (issue 16): each is checked with `EXPLAIN QUERY
//! PLAN` against a migrated ledger and must reach `payments`, `discrepancies` and `events`
//! through an index (O(log n) per item), never by reading the whole table. The one exception
//! is listed below with its reason.

use std::time::Duration;

use sqlx::Row;

use super::account_lease::{DUE_INDEX, lanes_sql};
use super::apply::{APPLY_UPDATES, INSERT_PAYMENT_DISCREPANCY};
use super::claim::{
    COUNT_CREATED_BETWEEN, REAP_EXPIRED_HOLDS, due_for_keys_sql, due_unit_sql, for_each_due_sql,
};
use super::gauges::{OLDEST_OPEN_BY_ACCOUNT, OPEN_DISCREPANCIES, PAYMENTS_BY_STATE};
use super::nudge::{FIND_BY_ORDER, FIND_BY_REF};
use super::pages::{discrepancies_page_sql, payments_page_sql};
use super::queries::oldest_open_sql;
use super::sweeps::{
    KNOWN_PAYMENTS, PAYMENTS_CREATED_IN, RECORD_PAYMENT_FINDING, RECORD_RECORD_FINDING,
    REFUNDED_TOTAL,
};

async fn plan(ledger: &super::SqliteLedger, sql: &str) -> Vec<String> {
    sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .fetch_all(ledger.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

/// `(name, statement, an index its plan must name)`.
fn hot_statements() -> Vec<(&'static str, String, &'static str)> {
    let s = |x: &str| x.to_string();
    vec![
        // A lane's units and window planning.
        ("due_unit", due_unit_sql(false), "payments_due_by_account"),
        (
            "for_each_due",
            for_each_due_sql(false),
            "payments_due_by_account",
        ),
        // `--all` walks the account's payments by id from the unit's position.
        ("due_unit --all", due_unit_sql(true), "payments_by_account"),
        ("due_for_keys", due_for_keys_sql(false), "payments_by_ref"),
        (
            "due_for_keys --all",
            due_for_keys_sql(true),
            "payments_by_ref",
        ),
        // Applying answers.
        ("apply", s(APPLY_UPDATES), "INTEGER PRIMARY KEY"),
        (
            "a payment's discrepancy, once per finding",
            s(INSERT_PAYMENT_DISCREPANCY),
            "discrepancies_by_payment",
        ),
        // Sweep matching and findings.
        ("known_payments", s(KNOWN_PAYMENTS), "payments_by_ref"),
        ("refunded_total", s(REFUNDED_TOTAL), "payments_by_original"),
        (
            "a sweep finding about a payment, once",
            s(RECORD_PAYMENT_FINDING),
            "discrepancies_by_payment",
        ),
        (
            "a sweep finding about an unknown record, once",
            s(RECORD_RECORD_FINDING),
            "discrepancies_by_subject",
        ),
        // Planning counts.
        (
            "count_created_between",
            s(COUNT_CREATED_BETWEEN),
            "payments_by_created",
        ),
        (
            "payments_created_in",
            s(PAYMENTS_CREATED_IN),
            "payments_by_created",
        ),
        // The reaper of every daemon tick.
        (
            "reap_expired_leases",
            s(REAP_EXPIRED_HOLDS),
            "payments_held",
        ),
        // Stats: counts come from the trigger-kept tables; the due backlog of each account is
        // an index range (O(due), the backlog itself) and the oldest open payment a seek.
        (
            "stats: lanes",
            lanes_sql(DUE_INDEX),
            "payments_due_by_account",
        ),
        (
            "stats: oldest open",
            oldest_open_sql(),
            "payments_by_account_state",
        ),
        // The API: keyset pages and the payment a notification names.
        (
            "payments page of an account",
            payments_page_sql(false),
            // A range from the page's start, not a walk of the account's payments.
            "payments_by_created (account=? AND created_at>?)",
        ),
        (
            "payments page of an account in a state",
            payments_page_sql(true),
            "payments_by_account_state (account=? AND state=? AND created_at>?)",
        ),
        (
            "discrepancies page",
            discrepancies_page_sql(false, true),
            "INTEGER PRIMARY KEY",
        ),
        (
            "discrepancies page of an account",
            discrepancies_page_sql(true, true),
            "discrepancies_by_account",
        ),
        (
            "open discrepancies page of an account",
            discrepancies_page_sql(true, false),
            "discrepancies_open",
        ),
        (
            "notified payment by gateway id",
            s(FIND_BY_REF),
            "payments_by_ref",
        ),
        (
            "notified payment by order number",
            s(FIND_BY_ORDER),
            "sqlite_autoindex_payments_1",
        ),
        // Metrics, at every scrape: the same, per account.
        (
            "metrics: oldest open per account",
            s(OLDEST_OPEN_BY_ACCOUNT),
            "payments_by_account_state",
        ),
    ]
}

#[tokio::test]
async fn hot_path_statements_search_an_index_instead_of_scanning_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = super::open_sqlite(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    for (name, sql, index) in hot_statements() {
        let steps = plan(&ledger, &sql).await;
        for table in ["payments", "discrepancies", "events"] {
            assert!(
                !steps
                    .iter()
                    .any(|s| s.starts_with(&format!("SCAN {table}"))),
                "{name} scans {table}: {steps:?}"
            );
        }
        assert!(
            steps.iter().any(|s| s.contains(index)),
            "{name} does not use {index}: {steps:?}"
        );
    }
}

/// The metrics' counts read the trigger-kept tables only (a row per account and state or
/// kind), never the tables they count.
#[tokio::test]
async fn metrics_counts_read_only_the_trigger_kept_tables() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = super::open_sqlite(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    for (sql, table) in [
        (PAYMENTS_BY_STATE, "payment_counts"),
        (OPEN_DISCREPANCIES, "discrepancy_counts"),
    ] {
        let steps = plan(&ledger, sql).await;
        assert!(steps.iter().any(|s| s.contains(table)), "{sql}: {steps:?}");
        assert!(
            !steps.iter().any(|s| ["payments", "discrepancies", "events"]
                .iter()
                .any(|t| s.contains(t))),
            "{sql}: {steps:?}"
        );
    }
}

/// The stats' counts are the trigger-kept tables, and they agree with the rows.
#[tokio::test]
async fn trigger_kept_counts_follow_inserts_updates_and_resolutions() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = super::open_sqlite(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let pool = ledger.pool();
    for (no, state) in [("A", "pending"), ("B", "pending"), ("C", "succeeded")] {
        sqlx::query(
            "INSERT INTO payments (account, provider, out_trade_no, amount, currency, state,
                                   created_at, registered_at, updated_at)
             VALUES ('hk', 'qfpay', ?, 100, 'HKD', ?, 't', 't', 't')",
        )
        .bind(no)
        .bind(state)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE payments SET state = 'failed' WHERE out_trade_no = 'A'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE payments SET attempts = 3 WHERE out_trade_no = 'B'")
        .execute(pool)
        .await
        .unwrap();
    for kind in ["missing_in_ledger", "missing_in_ledger", "amount_mismatch"] {
        sqlx::query(
            "INSERT INTO discrepancies (account, kind, detail, found_at) VALUES ('hk', ?, 'd', 't')",
        )
        .bind(kind)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE discrepancies SET resolved_at = 't' WHERE id = 1")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO runs (owner, trigger, started_at, calls) VALUES ('o', 'cli', 't', 4)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE runs SET calls = 9")
        .execute(pool)
        .await
        .unwrap();

    let counted: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, n FROM payment_counts WHERE n > 0 ORDER BY state")
            .fetch_all(pool)
            .await
            .unwrap();
    let real: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM payments GROUP BY state ORDER BY state")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(counted, real);
    assert_eq!(
        counted,
        [
            ("failed".into(), 1),
            ("pending".into(), 1),
            ("succeeded".into(), 1)
        ]
    );
    let stats = ledger.stats(chrono::Utc::now()).await.unwrap();
    assert_eq!(stats.open_discrepancies, 2);
    assert_eq!((stats.runs, stats.gateway_calls), (1, 9));
    assert_eq!(
        stats.oldest_open.map(|p| p.out_trade_no),
        Some("B".to_string())
    );
}
