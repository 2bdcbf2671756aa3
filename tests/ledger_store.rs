//! The ledger schema enforces what the code promises: known states only, one row per order,
//! an append-only history.

use std::time::Duration;

use chrono::Utc;
use payrecon::domain::{AccountName, Currency, Money, OutTradeNo, Provider, RecordKind};
use payrecon::ledger::{self, NewPayment};

fn payment(no: &str, amount: i64) -> NewPayment {
    NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(amount, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: Utc::now(),
        expires_at: None,
    }
}

#[tokio::test]
async fn migrations_apply_to_an_empty_file_and_again_harmlessly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/ledger.db");
    let l = ledger::open(&path, Duration::from_secs(5)).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(l.pool())
            .await
            .unwrap();
    for t in [
        "account_pauses",
        "discrepancies",
        "events",
        "payments",
        "runs",
        "sweep_cursors",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "missing table {t}: {tables:?}"
        );
    }
    let (journal, fk): (String, i64) = (
        sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(l.pool())
            .await
            .unwrap(),
        sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(l.pool())
            .await
            .unwrap(),
    );
    assert_eq!((journal.as_str(), fk), ("wal", 1));
    l.close().await;
    ledger::open(&path, Duration::from_secs(5))
        .await
        .unwrap()
        .close()
        .await;
}

#[tokio::test]
async fn unknown_states_are_refused_by_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    l.register(&[payment("A1", 100)], Utc::now()).await.unwrap();
    let err = sqlx::query("UPDATE payments SET state = 'paid'")
        .execute(l.pool())
        .await;
    assert!(
        err.is_err(),
        "the CHECK constraint must refuse an unknown state"
    );
}

#[tokio::test]
async fn the_event_history_cannot_be_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    l.register(&[payment("A1", 100)], Utc::now()).await.unwrap();
    assert!(
        sqlx::query("UPDATE events SET kind = 'x'")
            .execute(l.pool())
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM events")
            .execute(l.pool())
            .await
            .is_err()
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(l.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_conflicting_row_rolls_back_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    l.register(&[payment("A1", 100)], Utc::now()).await.unwrap();
    let report = l
        .register(&[payment("A2", 100), payment("A1", 999)], Utc::now())
        .await
        .unwrap();
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].0, 1);
    assert!(report.inserted.is_empty());
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments")
        .fetch_one(l.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "A2 must not be written when A1 conflicts");
}
