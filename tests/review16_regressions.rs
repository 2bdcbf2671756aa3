//! Regressions found by the adversarial review of issue 16 (hot-path indexes, group commits of
//! dense-window pages, one-statement apply).

mod common;

use std::time::Duration;

use common::fake_qfpay::{FakeQfpay, FakeRecord};
use common::*;
use payrecon::reconcile::{ReconcileError, RunScope, RunSummary};
use tokio_util::sync::CancellationToken;

/// A QFPay account `hk` with `n` due payments that all settled at the gateway within one
/// half hour: a dense window (`n / 100 + 1` pages instead of `n / 4` id lookups), so the pass
/// sweeps it and its writer commits pages while the reader fetches the next ones. `extra`
/// gateway records (`(syssn, out_trade_no, i)`, at the time of payment `i`) come first.
async fn dense_window(n: usize, extra: &[(&str, &str, usize)]) -> (FakeQfpay, Harness) {
    let t0 = minutes_ago(60);
    let at = |i: usize| t0 + chrono::Duration::milliseconds(i as i64 * 500);
    // The fake lists a window in this order: the extra records come first.
    let records =
        extra
            .iter()
            .map(|&(sys, no, i)| FakeRecord::new(sys, no, "800101", 700, &["0000"], at(i)))
            .chain((0..n).map(|i| {
                FakeRecord::new(&syssn(i), &format!("D{i}"), "800101", 700, &["0000"], at(i))
            }))
            .collect();
    let fake = FakeQfpay::start(records).await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    let payments: Vec<_> = (0..n)
        .map(|i| qf_payment(&format!("D{i}"), Some(&syssn(i)), "800101", 700, at(i)))
        .collect();
    h.register(&payments).await;
    (fake, h)
}

async fn pass_within(
    h: &Harness,
    limit: Duration,
) -> Result<Result<RunSummary, ReconcileError>, tokio::time::error::Elapsed> {
    let engine = h.engine();
    let scope = RunScope {
        all: true,
        trigger: "test",
        ..RunScope::default()
    };
    tokio::time::timeout(limit, engine.run_once(&scope, &CancellationToken::new())).await
}

/// A write of the dense-window phase fails (here a trigger stands in for a full disk or a
/// locked file). Before issue 16 the lane ended with the error at once (OPERATIONS.md §7: "the
/// pass stopped on a ledger error ... the next tick tries again", and after
/// `max_failed_passes` the daemon restarts). In the review's build the writer returned, but the
/// page channel's receiver lived on (borrowed by the writer's future, dropped only after the
/// `join!`), so the reader fetched pages until the channel was full and then waited in `send`
/// forever: the pass never ended, the lane slot stayed busy, and the heartbeat kept renewing
/// the account lease, so no process could work the account again. The writer now closes the
/// channel and stops the reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review16_a_failed_dense_window_write_ends_the_pass_instead_of_hanging_it() {
    let (fake, h) = dense_window(2000, &[]).await;
    sqlx::query(
        "CREATE TRIGGER boom BEFORE UPDATE OF state ON payments
         BEGIN SELECT RAISE(ABORT, 'database or disk is full (simulated)'); END",
    )
    .execute(h.ledger.as_sqlite().unwrap().pool())
    .await
    .unwrap();
    let outcome = pass_within(&h, Duration::from_secs(30)).await;
    let calls = fake.query_calls();
    let Ok(result) = outcome else {
        panic!(
            "the pass hangs after a failed dense-window write ({calls} window pages fetched, \
             the last one stuck in the channel); the account lease is still held: {:?}",
            h.ledger.lanes(chrono::Utc::now()).await.unwrap()[0].holder
        );
    };
    let err = result.expect_err("the write failed: the pass must fail");
    assert!(err.to_string().contains("simulated"), "{err}");
}

/// The same with the lease lost: the first page's commit succeeds and, inside it, another
/// process takes the account over (a trigger stands in for the takeover of a process that
/// stalled past its lease). The next commit is refused (`fenced out`); before issue 16 the lane
/// stopped there and the pass reported the account in `fenced_out`. In the review's build the
/// reader went on calling the gateway for the new holder's account (the writer's error did not
/// stop the read-ahead) and then hung in `send`, so the pass never ended; the writer now stops
/// the reader and its calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review16_a_dense_window_lane_fenced_out_stops_and_reports_it() {
    let (fake, h) = dense_window(2000, &[]).await;
    sqlx::query(
        "CREATE TRIGGER takeover AFTER UPDATE OF state ON payments
         BEGIN
             UPDATE account_leases
                SET holder = 'another-host:1:thief', token = token + 1,
                    heartbeat_at = '9999-01-01T00:00:00.000Z',
                    expires_at = '9999-01-01T00:00:00.000Z'
              WHERE account = NEW.account AND holder IS NOT 'another-host:1:thief';
         END",
    )
    .execute(h.ledger.as_sqlite().unwrap().pool())
    .await
    .unwrap();
    let outcome = pass_within(&h, Duration::from_secs(30)).await;
    let calls = fake.query_calls();
    let Ok(result) = outcome else {
        panic!(
            "the pass hangs after its dense-window lane was fenced out ({calls} window pages \
             fetched, several of them after the account was taken over)"
        );
    };
    let summary = result.unwrap();
    assert_eq!(summary.fenced_out, ["hk"]);
}

/// Found by the review of issue 16, older than it: a page record that names a due payment's
/// order number under another syssn (another payment that reused the number) left that payment
/// "to the id lookups of the units", but wrote it as decided by this pass, so the units skipped
/// it, and so did the later page holding its own record. A window dense at every pass would
/// never settle it. Now it is left untouched, and its own record on a later page settles it.
#[tokio::test]
async fn review16_a_payment_whose_order_number_another_record_reused_is_still_settled() {
    let reused = syssn(9_999);
    // On the first page; D250's own record is on the third.
    let (_fake, h) = dense_window(300, &[(&reused, "D250", 5)]).await;
    let summary = h.pass(&h.engine()).await;
    assert!(summary.counters.calls < 20, "a dense window: {summary:?}");
    let p = h.payment("D250").await;
    assert_eq!(p.state, "succeeded", "{p:?}");
    assert_eq!(h.payment("D5").await.state, "succeeded");
}
