//! Window sweeps against a scripted QFPay: confirmation, both kinds of missing records,
//! contradictions, idempotent re-runs.

mod common;

use common::fake_qfpay::{FakeQfpay, FakeRecord};
use common::*;

#[tokio::test]
async fn a_sweep_reports_what_each_side_is_missing_and_never_twice() {
    let to = chrono::Utc::now() - chrono::Duration::hours(1);
    let from = to - chrono::Duration::hours(2);
    let mid = from + chrono::Duration::hours(1);
    let mut records: Vec<FakeRecord> = (0..120)
        .map(|i| {
            FakeRecord::new(
                &format!("2026112200010002000000{i:04}"),
                &format!("OK{i}"),
                "800101",
                100,
                &["0000"],
                mid,
            )
        })
        .collect();
    records.push(FakeRecord::new(
        "20261122000100020000009001",
        "OPEN1",
        "800101",
        100,
        &["0000"],
        mid,
    ));
    records.push(FakeRecord::new(
        "20261122000100020000009002",
        "AMT1",
        "800101",
        999,
        &["0000"],
        mid,
    ));
    records.push(FakeRecord::new(
        "20261122000100020000009003",
        "GHOST",
        "800101",
        100,
        &["0000"],
        mid,
    ));
    let fake = FakeQfpay::start(records).await;
    // This merchant registers every payment: a record the ledger lacks is a discrepancy.
    let h = harness(
        &fake.url(),
        "http://127.0.0.1:9",
        "ledger_is_complete = true",
    )
    .await;
    let mut ledger: Vec<_> = (0..120)
        .map(|i| {
            qf_payment(
                &format!("OK{i}"),
                Some(&format!("2026112200010002000000{i:04}")),
                "800101",
                100,
                mid,
            )
        })
        .collect();
    ledger.push(qf_payment(
        "OPEN1",
        Some("20261122000100020000009001"),
        "800101",
        100,
        mid,
    ));
    ledger.push(qf_payment(
        "AMT1",
        Some("20261122000100020000009002"),
        "800101",
        100,
        mid,
    ));
    ledger.push(qf_payment("LOST1", None, "800101", 100, mid));
    h.register(&ledger).await;
    h.execute("UPDATE payments SET state = 'succeeded', next_check_at = NULL WHERE out_trade_no <> 'OPEN1' AND out_trade_no <> 'LOST1'")
        .await;
    h.execute("UPDATE payments SET next_check_at = '2999-01-01T00:00:00.000Z' WHERE out_trade_no = 'OPEN1'")
        .await;

    let engine = h.engine();
    let r = engine
        .sweep(
            "hk",
            from,
            to,
            false,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.records, 123);
    assert_eq!(r.calls, 2, "123 records: a full page and a short one");
    assert_eq!(r.matched, 122);
    assert_eq!(r.made_due, 1);
    assert_eq!(r.missing_in_ledger.len(), 1);
    assert!(r.missing_in_ledger[0].contains("20261122000100020000009003"));
    assert_eq!(r.missing_at_gateway.len(), 1);
    assert!(r.missing_at_gateway[0].contains("LOST1"));
    assert_eq!(r.contradictions.len(), 1);
    assert!(r.contradictions[0].contains("amount_mismatch AMT1"));
    // The open payment is due now, for the next pass to settle under a lease.
    let open = h.payment("OPEN1").await;
    assert!(open.next_check_at.unwrap().as_str() < "2999");
    assert_eq!(open.state, "pending", "a sweep changes no state itself");

    let again = engine
        .sweep(
            "hk",
            from,
            to,
            false,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!((again.calls, again.already_complete_pieces), (0, 1));
    let open_discrepancies = h.ledger.discrepancies(false).await.unwrap();
    assert_eq!(open_discrepancies.len(), 3);

    let err = engine
        .sweep(
            "hk",
            from,
            chrono::Utc::now() + chrono::Duration::hours(1),
            false,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be closed"));
    let err = engine
        .sweep(
            "tw",
            from,
            to,
            false,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a configured QFPay account"));
}

#[tokio::test]
async fn the_scheduled_sweep_keeps_its_own_cursor_and_re_reads_windows_after_the_look_back() {
    use chrono::{DurationRound, TimeDelta};
    let fake = FakeQfpay::start(Vec::new()).await;
    let mut h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    h.settings.schedule.sweep_look_back = std::time::Duration::from_secs(6 * 3600);
    let engine = h.engine();
    let now = chrono::Utc::now();
    let hour = |t: chrono::DateTime<chrono::Utc>| {
        (t - TimeDelta::hours(1))
            .duration_trunc(TimeDelta::hours(1))
            .unwrap()
    };
    // A first scheduled run a day and a bit ago reads the day before it.
    let first = now - TimeDelta::hours(30);
    engine
        .sweep_closed_windows(first, &tokio_util::sync::CancellationToken::new())
        .await;
    let c0 = hour(first);
    // An operator sweeps a later window by hand.
    engine
        .sweep(
            "hk",
            c0 + TimeDelta::hours(2),
            now - TimeDelta::hours(2),
            false,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    // The schedule goes on from its own cursor, not from the end of the manual sweep, and
    // re-reads the first day once it is older than the look-back.
    engine
        .sweep_closed_windows(now, &tokio_util::sync::CancellationToken::new())
        .await;
    let rows: Vec<(chrono::DateTime<chrono::Utc>, i64)> = h
        .fetch_all("SELECT window_start, round FROM sweep_cursors WHERE completed_at IS NOT NULL")
        .await;
    assert!(
        rows.contains(&(c0, 0)),
        "the days after the schedule's cursor are read: {rows:?}"
    );
    assert!(
        rows.contains(&(c0 - TimeDelta::days(1), 1)),
        "the first day is read again after the look-back: {rows:?}"
    );
}
