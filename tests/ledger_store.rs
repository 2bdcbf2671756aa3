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
            .fetch_all(l.as_sqlite().unwrap().pool())
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
            .fetch_one(l.as_sqlite().unwrap().pool())
            .await
            .unwrap(),
        sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(l.as_sqlite().unwrap().pool())
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
        .execute(l.as_sqlite().unwrap().pool())
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
            .execute(l.as_sqlite().unwrap().pool())
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM events")
            .execute(l.as_sqlite().unwrap().pool())
            .await
            .is_err()
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(l.as_sqlite().unwrap().pool())
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
        .fetch_one(l.as_sqlite().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "A2 must not be written when A1 conflicts");
}

/// One answer's updates are written by one statement (issue 16); what each payment ends with
/// is what the updates said, in their order, with every event and its evidence byte for byte.
#[tokio::test]
async fn a_batch_of_updates_writes_each_payment_its_events_and_evidence_as_given() {
    use payrecon::domain::{PaymentId, PaymentState, ProviderRef};
    use payrecon::ledger::{NewEvent, PaymentUpdate, WriteGuard};
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let now = Utc::now();
    let ids: Vec<PaymentId> = l
        .register(
            &[payment("A", 100), payment("B", 200), payment("C", 300)],
            now,
        )
        .await
        .unwrap()
        .inserted
        .into_iter()
        .map(|(_, id)| PaymentId(id))
        .collect();
    let fence = l
        .acquire_account("hk", "t", Duration::from_secs(60), 400, now)
        .await
        .unwrap()
        .unwrap()
        .fence;
    // Evidence whose text a JSON round trip would change: a float written as 1.0, an integer
    // beyond 2^53, escapes and non-ASCII text.
    let evidence: serde_json::Value = serde_json::from_str(
        r#"{"amt":1.0,"big":123456789012345678901,"s":"quote \" tab \t 中文"}"#,
    )
    .unwrap();
    let event = |kind: &'static str, to: PaymentState| NewEvent {
        at: now,
        kind,
        from_state: Some(PaymentState::Pending),
        to_state: Some(to),
        provider_code: Some("0000".into()),
        message: Some(format!("{kind} message")),
        evidence: evidence.clone(),
    };
    let update = |id, state, events| PaymentUpdate {
        id,
        state,
        provider_code: Some("0000".into()),
        provider_ref: Some(ProviderRef::from_trusted("SYS-1".into())),
        checked: true,
        retry: None,
        next_check_at: None,
        in_progress_since: None,
        seen_nudged_at: None,
        events,
        discrepancies: Vec::new(),
    };
    let written = l
        .apply(
            WriteGuard::Lane(&fence),
            None,
            &[
                update(
                    ids[0],
                    PaymentState::InProgress,
                    vec![event("observed", PaymentState::InProgress)],
                ),
                update(
                    ids[1],
                    PaymentState::Failed,
                    vec![event("observed", PaymentState::Failed)],
                ),
                // The same payment again: written after the first, as it came.
                update(
                    ids[0],
                    PaymentState::Succeeded,
                    vec![event("settled", PaymentState::Succeeded)],
                ),
                // A final payment never opens again: refused, and its event not written.
                update(
                    ids[1],
                    PaymentState::Pending,
                    vec![event("reopened", PaymentState::Pending)],
                ),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    let rows: Vec<(String, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT out_trade_no, state, attempts, provider_ref FROM payments ORDER BY id",
    )
    .fetch_all(l.as_sqlite().unwrap().pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("A".into(), "succeeded".into(), 2, Some("SYS-1".into())),
            ("B".into(), "failed".into(), 1, Some("SYS-1".into())),
            ("C".into(), "pending".into(), 0, None),
        ]
    );
    let events: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT payment_id, kind, evidence FROM events WHERE kind <> 'registered' ORDER BY id",
    )
    .fetch_all(l.as_sqlite().unwrap().pool())
    .await
    .unwrap();
    let text = evidence.to_string();
    assert_eq!(
        events,
        [
            (ids[0].0, "observed".to_string(), text.clone()),
            (ids[1].0, "observed".to_string(), text.clone()),
            (ids[0].0, "settled".to_string(), text),
        ]
    );
}
