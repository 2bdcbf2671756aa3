//! Regressions found by the second adversarial review of issue 13 (lanes): a cancel whose
//! intent is written leaves at once (its pacer slot is taken before the intent, so the lane
//! cannot lose its account between the two and leave a `reversing` payment whose request was
//! never sent), and a stop request does not wait for a unit's remaining calls and retries.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_qfpay::{FakeQfpay, FakeRecord};
use common::*;
use payrecon::reconcile::{RunScope, Strategy};
use tokio_util::sync::CancellationToken;

/// The lane still holds the account (nobody takes it over), but its heartbeat is held up for a
/// few seconds by another writer of the ledger (a long `import`, a checkpoint ...), so the
/// `LeaseClock` closes the call gate. Found by the review: the intent was written first, then
/// the cancel was withheld at its pacer slot, yet recorded like a sent reversal whose answer
/// was lost and counted in `reversals_sent`, while the once-guard forbade any later reversal.
/// Now the slot is taken before the intent: a written intent means the request left, and the
/// count says exactly how many left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review13b_a_withheld_cancel_is_not_recorded_as_sent_and_does_not_burn_the_once_guard() {
    let (fake, h, engine, pass) = stuck_cpm_pass_in_background().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.payment("C1").await.state != "reversing" {
        assert!(tokio::time::Instant::now() < deadline, "no intent written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another writer holds the ledger's write lock for 4 s: the heartbeat waits (busy_timeout
    // 10 s), nobody can take the account.
    let mut conn = h
        .ledger
        .as_sqlite()
        .unwrap()
        .pool()
        .acquire()
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    drop(conn);
    let summary = pass.await.unwrap().unwrap();
    let holder: Option<String> =
        sqlx::query_scalar("SELECT holder FROM account_leases WHERE account = 'hk'")
            .fetch_one(h.ledger.as_sqlite().unwrap().pool())
            .await
            .unwrap();
    eprintln!(
        "summary: reversals_sent={} fenced_out={:?} lease holder now={holder:?}",
        summary.reversals_sent, summary.fenced_out
    );
    let p = h.payment("C1").await;
    let events = h.ledger.events(p.id).await.unwrap();
    for e in &events {
        eprintln!("event {} {:?}", e.kind, e.message);
    }
    eprintln!(
        "state {} reversals at gateway {}",
        p.state,
        fake.reversals(&syssn(1))
    );
    // The slot was taken before the intent: the cancel left with it, and the count says so.
    assert_eq!(
        summary.reversals_sent,
        fake.reversals(&syssn(1)) as u64,
        "reversals_sent counts exactly the cancels that left"
    );
    // Another pass: the payment is still in progress at the gateway, past its deadline.
    let second = h.pass(&engine).await;
    eprintln!(
        "second pass: reversals_sent={} state {} reversals at gateway {}",
        second.reversals_sent,
        h.payment("C1").await.state,
        fake.reversals(&syssn(1))
    );
    assert!(
        fake.reversals(&syssn(1)) == 1 || h.payment("C1").await.state == "needs_review",
        "a reversal that was never sent left the payment un-reversible and unreviewed \
         (state {}, events {:?})",
        h.payment("C1").await.state,
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>()
    );
}

/// SIGTERM during a unit whose gateway answers 503: the unit's remaining calls are all made,
/// each retried for its whole `retry_for`, before the lane looks at the stop request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review13b_a_stop_request_does_not_wait_for_a_units_retries() {
    let t = minutes_ago(1);
    let records: Vec<FakeRecord> = (0..4)
        .map(|i| FakeRecord::new(&syssn(i), &format!("S{i}"), "800101", 500, &["1143"], t))
        .collect();
    let fake = FakeQfpay::start(records).await;
    fake.state.lock().unwrap().fail_with = Some(503);
    let h = harness_with(
        "concurrency = 1",
        &qfpay_account(&fake.url(), 100, 400, "retry_for = \"3s\""),
    )
    .await;
    let payments: Vec<_> = (0..4)
        .map(|i| qf_payment(&format!("S{i}"), Some(&syssn(i)), "800101", 500, t))
        .collect();
    h.register(&payments).await;
    let engine = Arc::new(h.engine());
    let shutdown = CancellationToken::new();
    let (e, s) = (engine.clone(), shutdown.clone());
    let pass = tokio::spawn(async move {
        let scope = RunScope {
            all: true,
            trigger: "test",
            strategy: Strategy::PerPayment,
            ..RunScope::default()
        };
        e.run_once(&scope, &s).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop = tokio::time::Instant::now();
    shutdown.cancel();
    let summary = pass.await.unwrap().unwrap();
    let took = stop.elapsed();
    eprintln!(
        "stopped after {took:?}; interrupted={} calls made at the gateway {}",
        summary.interrupted,
        fake.query_calls()
    );
    assert!(
        took < Duration::from_secs(4),
        "the lane kept calling for {took:?} after the stop request"
    );
}
