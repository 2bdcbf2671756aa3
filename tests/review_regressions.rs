//! Regression tests from the adversarial review of issue 11's first cut (each failed on it):
//! the behaviour the money-safety rules require, through the binary against the sandbox or a
//! scripted gateway.

mod money_safety_support;

use chrono::{DateTime, Duration, Utc};
use money_safety_support::*;
use payrecon::sandbox::{DEV_QFPAY_APP_CODE, Faults, QfpayPayment, QfpayRefund, QfpayTimeline};
use serde_json::json;

fn seed(w: &World, p: QfpayPayment) -> String {
    w.sandbox
        .state()
        .insert_qfpay(DEV_QFPAY_APP_CODE, p)
        .unwrap()
}

fn refund(w: &World, payment: &str, no: &str, amount: i64, at: DateTime<Utc>) {
    w.sandbox
        .state()
        .insert_qfpay_refund(
            DEV_QFPAY_APP_CODE,
            QfpayRefund {
                payment_out_trade_no: payment.into(),
                out_trade_no: no.into(),
                amount_minor: amount,
                at: Some(at),
            },
        )
        .unwrap();
}

fn sweep(w: &World, from: DateTime<Utc>, to: DateTime<Utc>, again: bool) -> String {
    let (from, to) = (rfc3339(from), rfc3339(to));
    let mut args = vec!["sweep", "--account", QF, "--from", &from, "--to", &to];
    if again {
        args.push("--again");
    }
    String::from_utf8_lossy(&w.ok(&args).stdout).into_owned()
}

async fn sql(w: &World, q: &str) {
    let ledger = open_configured(&w.config).await;
    let q = || sqlx::AssertSqlSafe(q.to_string());
    match &ledger {
        payrecon::ledger::Ledger::Sqlite(l) => sqlx::query(q()).execute(l.pool()).await.map(drop),
        payrecon::ledger::Ledger::Postgres(l) => sqlx::query(q()).execute(l.pool()).await.map(drop),
    }
    .unwrap();
    ledger.close().await;
}

async fn frozen_world(extra: &str) -> (World, DateTime<Utc>) {
    let now = Utc::now();
    let w = World::start(
        |c| c.clock = payrecon::sandbox::SandboxClock::frozen(now),
        Faults::none(),
        extra,
        "",
    )
    .await;
    (w, now)
}

/// F1. A gateway record that carries a ledger payment's `out_trade_no` but another `syssn`
/// (another payment that reused the number: `Matcher` in a pass rejects exactly this) is
/// applied by the sweep to the ledger payment: a paid, `succeeded` payment becomes `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_sweep_applies_a_record_of_another_syssn_to_a_final_payment() {
    let (w, now) = frozen_world("").await;
    let created = now - Duration::hours(3);
    let s = seed(
        &w,
        QfpayPayment::new("REUSED-1", 1000, "HKD", "800101").at(created),
    );
    w.track_qfpay("REUSED-1", 1000, "800101", Some(&s), created);
    w.reconcile(&[]);
    assert_eq!(w.payment("REUSED-1").await.state, "succeeded");
    // Another record (its own syssn) that shows the same order number, and failed.
    seed(
        &w,
        QfpayPayment::new("OTHER-Q", 1000, "HKD", "800101")
            .at(now - Duration::hours(2))
            .timeline(QfpayTimeline::failed("1205"))
            .field("out_trade_no", json!("REUSED-1")),
    );
    let printed = sweep(
        &w,
        now - Duration::hours(4),
        now - Duration::hours(1),
        false,
    );
    let p = w.payment("REUSED-1").await;
    assert_eq!(
        p.state, "succeeded",
        "a record with another syssn is not this payment: {printed}"
    );
}

/// F2. QFPay `cancel` 1 means "CPM reversed *or refunded*" (docs/PROTOCOLS.md §Q2.4). A refunded CPM
/// payment: the first read turns `succeeded` into `refunded` (decide maps Reversed on
/// Succeeded to Refunded). Reading the same unchanged record again (the scheduled look-back
/// round, or `sweep --again`) turns `refunded` into `cancelled` with a final_state_changed
/// discrepancy: decide(Refunded, Reversed) falls to final_state_of(Reversed) = Cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_second_read_of_the_same_record_turns_refunded_into_cancelled() {
    let (w, now) = frozen_world("").await;
    let created = now - Duration::hours(3);
    let s = seed(
        &w,
        QfpayPayment::new("CPM-RF", 1000, "HKD", "800108")
            .at(created)
            .field("cancel", json!("1")),
    );
    refund(&w, "CPM-RF", "CPM-RF-R1", 1000, now - Duration::hours(2));
    w.track_qfpay("CPM-RF", 1000, "800108", Some(&s), created);
    // The ledger learned `succeeded` before the refund (as a pass would have).
    sql(
        &w,
        "UPDATE payments SET state = 'succeeded', next_check_at = NULL, provider_code = '0000'
         WHERE out_trade_no = 'CPM-RF'",
    )
    .await;
    let first = sweep(
        &w,
        now - Duration::hours(4),
        now - Duration::hours(1),
        false,
    );
    assert_eq!(w.payment("CPM-RF").await.state, "refunded", "{first}");
    let again = sweep(&w, now - Duration::hours(4), now - Duration::hours(1), true);
    assert_eq!(
        w.payment("CPM-RF").await.state,
        "refunded",
        "the same record read twice must not change the state again: {again}"
    );
    let d = w.discrepancies().await;
    assert!(!d.iter().any(|(k, ..)| k == "final_state_changed"), "{d:?}");
}

/// F3. A payment fully refunded by two partial refunds whose own record still carries
/// `cancel` 5: the refund rows make it `refunded`; the look-back re-read of the payment's
/// window regresses it to `partially_refunded` (Refunded + PartiallyRefunded is not in
/// `is_lifecycle`, so the state follows the record and a final_state_changed is recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_look_back_regresses_refunded_to_partially_refunded() {
    let (w, now) = frozen_world("").await;
    let created = now - Duration::minutes(210);
    let s = seed(
        &w,
        QfpayPayment::new("MPM-PART", 1000, "HKD", "800101")
            .at(created)
            .field("cancel", json!("5")),
    );
    w.track_qfpay("MPM-PART", 1000, "800101", Some(&s), created);
    w.reconcile(&[]);
    refund(&w, "MPM-PART", "MP-R1", 600, now - Duration::minutes(100));
    refund(&w, "MPM-PART", "MP-R2", 400, now - Duration::minutes(90));
    let w1 = (now - Duration::hours(4), now - Duration::minutes(150));
    let w2 = (now - Duration::minutes(150), now - Duration::hours(1));
    sweep(&w, w1.0, w1.1, false); // the payment's window, when it closes
    sweep(&w, w2.0, w2.1, false); // the refunds' window
    assert_eq!(w.payment("MPM-PART").await.state, "refunded");
    let again = sweep(&w, w1.0, w1.1, true); // the look-back round of the payment's window
    assert_eq!(
        w.payment("MPM-PART").await.state,
        "refunded",
        "a final state learned from the refund records regressed: {again}"
    );
}

/// F4. One record that cannot be decoded (here: an unrelated record the merchant never
/// registered, with an array `pay_type`) makes the whole page an error; a sweep stops there,
/// every time. The scheduled sweep retries the same window forever (position not saved; its
/// look-back round is never reached because the fresh round returns the error with `?`), so
/// no later refund or settlement reaches the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_one_undecodable_foreign_record_stops_sweeps_for_good() {
    let (w, now) = frozen_world("").await;
    let created = now - Duration::hours(3);
    let s = seed(
        &w,
        QfpayPayment::new("PAID-R", 1000, "HKD", "800101").at(created),
    );
    w.track_qfpay("PAID-R", 1000, "800101", Some(&s), created);
    w.reconcile(&[]);
    refund(
        &w,
        "PAID-R",
        "PAID-R-R1",
        1000,
        now - Duration::minutes(110),
    );
    seed(
        &w,
        QfpayPayment::new("ALIEN", 300, "HKD", "800101")
            .at(now - Duration::minutes(150))
            .field("pay_type", json!(["800101"])),
    );
    let (from, to) = (
        rfc3339(now - Duration::hours(4)),
        rfc3339(now - Duration::hours(1)),
    );
    for _ in 0..2 {
        let out = w.run(&["sweep", "--account", QF, "--from", &from, "--to", &to]);
        assert!(
            out.status.success(),
            "the sweep cannot get past one odd record of someone else's payment: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(w.payment("PAID-R").await.state, "refunded");
}

/// F5. A paid (`0000`) record that carries the payment's own id but reads as another kind (a
/// legacy record without `order_type` that has an `origssn`: `kind_of` calls it a refund).
/// The pass treats it as "a record carries the id" (`carried` → Unrecognised, no NotFound),
/// but `reversal::fresh_query` filters records by `o.kind == c.kind`, finds nothing, builds a
/// `NotFound`, and `permits_cancel` lets the reversal go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_0000_record_of_another_kind_is_reversed_by_the_fresh_query() {
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    let created = Utc::now() - Duration::hours(1);
    seed(
        &w,
        QfpayPayment::new("LEGACY-1", 900, "HKD", "800108")
            .at(created)
            .field("order_type", json!(""))
            .field("origssn", json!("20200101000100020000000001")),
    );
    w.track_qfpay("LEGACY-1", 900, "800108", None, created);
    w.reconcile(&[]);
    let kinds = w.event_kinds("LEGACY-1").await;
    assert_eq!(
        w.cancels("LEGACY-1"),
        0,
        "a record with respcd 0000 carrying the payment's id was answered by a reversal: {kinds:?}"
    );
}

/// F6. Issue 11: only "a genuine NotFound (the gateway answered, **validly signed**, and no
/// record carries the payment's ids)" may lead to a reversal. With the default
/// `require_response_signature = false`, an answer with no `X-QF-SIGN` at all (a proxy, a
/// stub, the wrong host) that lists no records is a NotFound, and the reversal goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_an_unsigned_empty_answer_is_enough_to_reverse() {
    let created = Utc::now() - Duration::hours(1);
    let mut server = mockito::Server::new_async().await;
    let query = server
        .mock("POST", "/trade/v1/query")
        .with_body(r#"{"respcd":"0000","page":"1","page_size":"100","data":[]}"#)
        .expect_at_least(1)
        .create_async()
        .await;
    let reversal = server
        .mock("POST", "/trade/v1/reversal")
        .with_body(r#"{"respcd":"0000","syssn":"20261129000300020000000078"}"#)
        .expect(0)
        .create_async()
        .await;
    let gateway = Scripted::new(&server.url(), "");
    gateway.track("UNSIGNED-1", 500, "800108", created);
    gateway.ok(&["reconcile", "--once"]);
    query.assert_async().await;
    reversal.assert_async().await;
}

/// F7. The undecodable record of one payment fails the whole id batch it is in: its
/// batch-mates (here a plainly paid payment) get `call_failed` on every pass, stay open, and
/// are handed to a person at the give-up horizon, although the gateway answered for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_one_undecodable_record_blocks_its_batch_mates() {
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    let created = Utc::now() - Duration::minutes(10);
    let a = seed(
        &w,
        QfpayPayment::new("POISON-A", 500, "HKD", "800101")
            .at(created)
            .field("pay_type", json!(["800101"])),
    );
    let b = seed(
        &w,
        QfpayPayment::new("PLAIN-B", 500, "HKD", "800101").at(created),
    );
    w.track_qfpay("POISON-A", 500, "800101", Some(&a), created);
    w.track_qfpay("PLAIN-B", 500, "800101", Some(&b), created);
    w.reconcile(&[]);
    w.reconcile(&["--all"]);
    let kinds = w.event_kinds("PLAIN-B").await;
    assert_eq!(
        w.payment("PLAIN-B").await.state,
        "succeeded",
        "the gateway answered for PLAIN-B: {kinds:?}"
    );
}

/// F8 (design risk). The gateway *accepted* the reversal (`0000`), and the next query still
/// shows the record before the reversal is visible (`0000`, `cancel` 0). `decide(Reversing,
/// Succeeded)` makes the payment final `succeeded` with a "customer was charged" alert at once;
/// final payments are never queried again, so when the record turns `cancel` 1 the ledger keeps
/// saying "charged" (until some sweep happens to read it). The old rule (keep polling a `0000`
/// while reversing, docs/PROTOCOLS.md §Q2.4) at least for an accepted reversal is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_an_accepted_reversal_is_overruled_by_one_lagging_read() {
    let created = Utc::now() - Duration::hours(1);
    let local = created
        .with_timezone(&hk())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let rec = |respcd: &str, cancel: &str| {
        json!({"respcd": "0000", "page": "1", "page_size": "100", "data": [{
            "syssn": "20261129000300020000000091", "out_trade_no": "LAG-1",
            "order_type": "payment", "pay_type": "800108", "txamt": "500", "txcurrcd": "HKD",
            "respcd": respcd, "cancel": cancel, "sysdtm": local, "txdtm": local}]})
        .to_string()
    };
    // Signed as QFPay signs answers: payrecon cancels only after a signed answer.
    let signed = |body: String| {
        let sign = signed(&body);
        (body, sign)
    };
    let mut server = mockito::Server::new_async().await;
    // The pass and the fresh query before the reversal: still in progress.
    let (body, sign) = signed(rec("1143", "0"));
    server
        .mock("POST", "/trade/v1/query")
        .with_header("x-qf-sign", &sign)
        .with_body(body)
        .expect(2)
        .create_async()
        .await;
    // One read right after the accepted reversal, before it is visible.
    let (body, sign) = signed(rec("0000", "0"));
    server
        .mock("POST", "/trade/v1/query")
        .with_header("x-qf-sign", &sign)
        .with_body(body)
        .expect(1)
        .create_async()
        .await;
    // From then on the gateway shows it reversed.
    let (body, sign) = signed(rec("0000", "1"));
    server
        .mock("POST", "/trade/v1/query")
        .with_header("x-qf-sign", &sign)
        .with_body(body)
        .create_async()
        .await;
    server
        .mock("POST", "/trade/v1/reversal")
        .with_body(
            r#"{"respcd":"0000","syssn":"20261129000300020000000092","orig_syssn":"20261129000300020000000091"}"#,
        )
        .expect(1)
        .create_async()
        .await;
    let gateway = Scripted::new(&server.url(), "");
    gateway.track("LAG-1", 500, "800108", created);
    gateway.ok(&["reconcile", "--once"]);
    gateway.ok(&["reconcile", "--once", "--all"]);
    gateway.ok(&["reconcile", "--once", "--all"]);
    let ledger = gateway.ledger().await;
    let p = ledger.find_payments("LAG-1").await.unwrap().remove(0);
    let events: Vec<String> = ledger
        .events(p.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}→{:?}", e.kind, e.to_state))
        .collect();
    assert_eq!(
        p.state, "reversed",
        "the gateway accepted the reversal and now shows it reversed: {events:?}"
    );
}
