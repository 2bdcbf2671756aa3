//! The plans of per-item statements (issue 16): each is checked with `EXPLAIN QUERY PLAN`
//! against a migrated ledger and must not read a whole table. The statements not yet covered
//! are listed in docs/PERFORMANCE.md ("Statements whose cost grows with the ledger").

use std::time::Duration;

use sqlx::Row;

use super::apply::INSERT_PAYMENT_DISCREPANCY;
use super::claim::COUNT_CREATED_BETWEEN;
use super::sweeps::{PAYMENT_DISCREPANCY_EXISTS, PAYMENTS_CREATED_IN};

async fn plan(ledger: &super::Ledger, sql: &str) -> Vec<String> {
    sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .fetch_all(ledger.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

#[tokio::test]
async fn per_item_statements_search_an_index_instead_of_scanning_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = super::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    for (name, sql, index) in [
        (
            "count_created_between",
            COUNT_CREATED_BETWEEN,
            "payments_by_created",
        ),
        (
            "payments_created_in",
            PAYMENTS_CREATED_IN,
            "payments_by_created",
        ),
        (
            "discrepancy_exists (a payment's)",
            PAYMENT_DISCREPANCY_EXISTS,
            "discrepancies_by_payment",
        ),
        (
            "insert_discrepancy's de-duplication",
            INSERT_PAYMENT_DISCREPANCY,
            "discrepancies_by_payment",
        ),
    ] {
        let steps = plan(&ledger, sql).await;
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
