//! Sweep findings are recorded once per subject through the `subject` column (migration 0007),
//! and a ledger upgraded from 0006 keeps both its findings' de-duplication and its counts
//! (migration 0008's trigger-kept tables).

mod common;

use std::time::Duration;

use chrono::Utc;
use common::ledger_at_migration;
use payrecon::domain::{DiscrepancyKind, PaymentId};
use payrecon::ledger::{NewDiscrepancy, SweepDiscrepancy};

fn finding(payment: Option<i64>, kind: DiscrepancyKind, subject: &str) -> SweepDiscrepancy {
    SweepDiscrepancy {
        payment: payment.map(PaymentId),
        subject: subject.to_string(),
        found: NewDiscrepancy {
            kind,
            detail: format!(
                "syssn {subject}: gateway record (0000, HKD 1.00) unknown to the ledger"
            ),
            evidence: serde_json::json!({}),
        },
    }
}

#[tokio::test]
async fn an_upgraded_ledger_reports_each_unknown_record_once_and_counts_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("before-0007.db");
    let pool = ledger_at_migration(&path, 6).await;
    for (no, state) in [("A", "pending"), ("B", "succeeded"), ("C", "succeeded")] {
        sqlx::query(
            "INSERT INTO payments (account, provider, out_trade_no, amount, currency, state,
                                   next_check_at, created_at, registered_at, updated_at)
             VALUES ('hk', 'qfpay', ?1, 100, 'HKD', ?2,
                     CASE ?2 WHEN 'pending' THEN '2026-01-01T00:00:00.000Z' END,
                     't', 't', 't')",
        )
        .bind(no)
        .bind(state)
        .execute(&pool)
        .await
        .unwrap();
    }
    // Findings in the formats the sweeps wrote before 0007: the key only inside `detail`.
    for (kind, detail, resolved) in [
        (
            "missing_in_ledger",
            "syssn 20261101000300029999991234: gateway record (0000, HKD 1.00) unknown to the ledger",
            None,
        ),
        (
            "unreadable_record",
            "a record without a readable syssn or out_trade_no: {\"respcd\":\"0000\"}",
            None,
        ),
        (
            "missing_in_ledger",
            "syssn 555: gateway record (1143, HKD 2.00) unknown to the ledger",
            Some("t"),
        ),
    ] {
        sqlx::query(
            "INSERT INTO discrepancies (account, kind, detail, found_at, resolved_at)
             VALUES ('hk', ?, ?, 't', ?)",
        )
        .bind(kind)
        .bind(detail)
        .bind(resolved)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO runs (owner, trigger, started_at, calls) VALUES ('o', 'cli', 't', 7)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let ledger = payrecon::ledger::open(&path, Duration::from_secs(5))
        .await
        .unwrap();
    let subjects: Vec<Option<String>> =
        sqlx::query_scalar("SELECT subject FROM discrepancies ORDER BY id")
            .fetch_all(ledger.as_sqlite().unwrap().pool())
            .await
            .unwrap();
    assert_eq!(
        subjects,
        [
            Some("20261101000300029999991234".to_string()),
            Some("{\"respcd\":\"0000\"}".to_string()),
            Some("555".to_string()),
        ]
    );
    let stats = ledger.stats(Utc::now()).await.unwrap();
    let by_state: Vec<(String, i64)> = stats
        .by_state
        .iter()
        .map(|c| (c.state.clone(), c.count))
        .collect();
    assert_eq!(
        by_state,
        [("pending".to_string(), 1), ("succeeded".to_string(), 2)]
    );
    assert_eq!(stats.open_discrepancies, 2);
    assert_eq!((stats.runs, stats.gateway_calls), (1, 7));
    assert_eq!(stats.lanes.len(), 1);
    assert_eq!(stats.lanes[0].due, 1);

    let fence = ledger
        .acquire_account("hk", "test", Duration::from_secs(60), 400, Utc::now())
        .await
        .unwrap()
        .unwrap()
        .fence;
    let recorded = ledger
        .record_sweep_discrepancies(
            &fence,
            &[
                // Known before the upgrade (open, and resolved): not again.
                finding(
                    None,
                    DiscrepancyKind::MissingInLedger,
                    "20261101000300029999991234",
                ),
                finding(None, DiscrepancyKind::MissingInLedger, "555"),
                // A key that is part of a recorded one is another record: before 0007 the
                // `instr` search took it for the recorded one and never reported it.
                finding(None, DiscrepancyKind::MissingInLedger, "99991234"),
                // The same key twice in one batch: once.
                finding(None, DiscrepancyKind::MissingInLedger, "777"),
                finding(None, DiscrepancyKind::MissingInLedger, "777"),
                // About a ledger payment: once per payment and kind, whatever the subject.
                finding(Some(1), DiscrepancyKind::MissingAtGateway, "A"),
                finding(Some(1), DiscrepancyKind::MissingAtGateway, "A again"),
                finding(Some(2), DiscrepancyKind::MissingAtGateway, "B"),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(recorded, [2, 3, 5, 7]);
    assert_eq!(
        ledger.stats(Utc::now()).await.unwrap().open_discrepancies,
        6
    );
}
