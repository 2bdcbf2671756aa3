//! Regressions found by the adversarial review of issue 13 (lanes): a cancel queued for its
//! pacer slot must not leave a lane whose account another process took over, and a sweep
//! stops at a page boundary when a stop is requested.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::fake_qfpay::{FakeQfpay, FakeRecord};
use common::*;
use tokio_util::sync::CancellationToken;

/// Process A's lane decides on the last resort and waits for its cancel's pacer slot (taken
/// before the intent is written, since the second review). Meanwhile A stalls past its lease
/// (simulated: the lease runs out in the ledger) and process B takes the account over. Found
/// by the first review: the cancel still left A, a reversal that B (which may already have
/// seen the payment paid and recorded it `succeeded`) knew nothing about. Now A's heartbeat
/// finds the lease taken, the gate withholds the slot, and A writes no intent and sends
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review13_no_cancel_leaves_a_lane_whose_account_was_taken_over() {
    let (fake, h, _engine, pass) = stuck_cpm_pass_in_background().await;
    // The pass's query, then the fresh query before the last resort: the cancel's slot is
    // 3 s after that one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fake.query_calls() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no fresh query");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stalls past its lease; B takes the account over.
    h.execute(
        "UPDATE account_leases SET expires_at = '2000-01-01T00:00:00.000Z' WHERE account = 'hk'",
    )
    .await;
    let b = h
        .ledger
        .acquire_account("hk", "B", Duration::from_secs(60), 20, Utc::now())
        .await
        .unwrap()
        .expect("A's lease ran out");
    let summary = pass.await.unwrap().unwrap();
    assert!(b.fence.token >= 2);
    assert_eq!(summary.fenced_out, ["hk"], "A's lane stops, fenced out");
    assert_eq!(
        fake.reversals(&syssn(1)),
        0,
        "a cancel was sent after another process took the account over"
    );
    assert_ne!(
        h.payment("C1").await.state,
        "reversing",
        "no intent was written for a cancel that could not leave"
    );
}

/// SIGTERM: the scheduled sweep should stop at a page boundary. A shutdown already requested
/// before the sweep enters its lane does not stop it either: every page of the window is
/// fetched.
#[tokio::test]
async fn review13_the_scheduled_sweep_stops_when_shutdown_is_requested() {
    let now = Utc::now();
    // 350 records in the window the first scheduled sweep reads (the day before the last
    // settled hour): 4 pages of 100.
    let base = now - chrono::Duration::hours(5);
    let records = (0..350)
        .map(|i| {
            FakeRecord::new(
                &syssn(i),
                &format!("S{i}"),
                "800101",
                500,
                &["0000"],
                base - chrono::Duration::seconds(i as i64 * 30),
            )
        })
        .collect();
    let fake = FakeQfpay::start(records).await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    let engine = h.engine();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    engine.sweep_closed_windows(now, &shutdown).await;
    let calls = fake.query_calls();
    assert!(
        calls <= 1,
        "the sweep fetched {calls} pages after shutdown was requested"
    );
}
