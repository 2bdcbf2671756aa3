//! The reconcile engine against scripted gateways (mockito) and a temp ledger: the acceptance
//! cases of the engine issue.

mod common;

use common::fake_ecpay::FakeEcpay;
use common::fake_qfpay::{FakeQfpay, FakeRecord};
use common::*;
use payrecon::ledger::ClaimScope;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_qfpay_payment_goes_from_1143_twice_to_0000() {
    let t = minutes_ago(1);
    let fake = FakeQfpay::start(vec![FakeRecord::new(
        &syssn(1),
        "P1",
        "800101",
        1000,
        &["1143", "1143", "0000"],
        t,
    )])
    .await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    h.register(&[qf_payment("P1", Some(&syssn(1)), "800101", 1000, t)])
        .await;
    let engine = h.engine();
    for expected in ["in_progress", "in_progress", "succeeded"] {
        h.pass(&engine).await;
        assert_eq!(h.payment("P1").await.state, expected);
    }
    let p = h.payment("P1").await;
    assert_eq!(
        (p.provider_code.as_deref(), p.attempts, p.next_check_at),
        (Some("0000"), 3, None)
    );
    assert_eq!(fake.query_calls(), 3);
    let kinds = h.event_kinds("P1").await;
    assert_eq!(kinds, ["registered", "observed", "observed", "observed"]);
}

#[tokio::test]
async fn ten_payments_are_resolved_in_ceil_ten_over_batch_calls() {
    let t = minutes_ago(1);
    let records = (0..10)
        .map(|i| FakeRecord::new(&syssn(i), &format!("B{i}"), "800101", 500, &["0000"], t))
        .collect();
    let fake = FakeQfpay::start(records).await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    let payments: Vec<_> = (0..10)
        .map(|i| qf_payment(&format!("B{i}"), Some(&syssn(i)), "800101", 500, t))
        .collect();
    h.register(&payments).await;
    // A busy window: 1,000 settled payments make a sweep (⌊1250/100⌋+1 = 13 pages) dearer
    // than 3 id lookups.
    let settled: Vec<_> = (0..1000)
        .map(|i| qf_payment(&format!("Z{i}"), None, "800101", 500, t))
        .collect();
    h.register(&settled).await;
    h.execute("UPDATE payments SET state = 'succeeded', next_check_at = NULL WHERE out_trade_no LIKE 'Z%'")
        .await;
    let summary = h.pass(&h.engine()).await;
    assert_eq!(fake.query_calls(), 3, "⌈10/4⌉ batched lookups");
    assert_eq!(summary.counters.calls, 3);
    assert_eq!(summary.counters.finalized, 10);
}

#[tokio::test]
async fn a_dense_window_is_resolved_by_a_sweep_in_ceil_records_over_100_calls() {
    let t0 = minutes_ago(120);
    let at = |i: usize| t0 + chrono::Duration::seconds(i as i64 * 10);
    // 250 gateway records, 240 of them due in the ledger (10 the merchant never recorded).
    let records = (0..250)
        .map(|i| FakeRecord::new(&syssn(i), &format!("D{i}"), "800101", 700, &["0000"], at(i)))
        .collect();
    let fake = FakeQfpay::start(records).await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    let payments: Vec<_> = (0..240)
        .map(|i| qf_payment(&format!("D{i}"), Some(&syssn(i)), "800101", 700, at(i)))
        .collect();
    h.register(&payments).await;
    let summary = h.pass(&h.engine()).await;
    assert_eq!(summary.counters.finalized, 240);
    // ⌈240/4⌉ = 60 id lookups, or one window of 250 records: pages of 100, 100, 50.
    let queries = fake.state.lock().unwrap().queries.clone();
    assert_eq!(queries, ["window"; 3]);
    assert_eq!(summary.counters.calls, 3);
}

#[tokio::test]
async fn ecpay_nopay_is_asked_again_exactly_one_interval_later_then_authorized() {
    let t = minutes_ago(20);
    let fake = FakeEcpay::start(&[("EC1", &["error_nopay", "已授權"])]).await;
    let h = harness("http://127.0.0.1:9", &fake.server.url(), "").await;
    h.register(&[ec_payment("EC1", 1200, t)]).await;
    let engine = h.engine();
    h.pass(&engine).await;
    let p = h.payment("EC1").await;
    assert_eq!(
        (p.state.as_str(), p.provider_code.as_deref()),
        ("in_progress", Some("error_nopay"))
    );
    // Timed from the answer (its event), not from the claim or the write.
    let answered = h.ledger.events(p.id).await.unwrap().pop().unwrap();
    assert_eq!(answered.kind, "observed");
    let answered = chrono::DateTime::parse_from_rfc3339(&answered.at).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(p.next_check_at.as_deref().unwrap()).unwrap();
    assert_eq!(
        next - answered,
        chrono::Duration::minutes(10),
        "exactly the nopay interval"
    );
    // Not due yet: a normal (scheduled) pass does not call.
    let scope = payrecon::reconcile::RunScope {
        trigger: "test",
        ..Default::default()
    };
    engine
        .run_once(&scope, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(fake.calls("EC1"), 1);
    h.pass(&engine).await;
    assert_eq!(h.payment("EC1").await.state, "succeeded");
    assert_eq!(fake.calls("EC1"), 2);
}

#[tokio::test]
async fn an_ecpay_order_is_not_queried_within_ten_minutes_of_creation() {
    let fake = FakeEcpay::start(&[("EC2", &["已授權"])]).await;
    let h = harness("http://127.0.0.1:9", &fake.server.url(), "").await;
    h.register(&[ec_payment("EC2", 1200, minutes_ago(3))]).await;
    h.pass(&h.engine()).await;
    assert_eq!(fake.calls("EC2"), 0);
    let p = h.payment("EC2").await;
    assert_eq!(p.state, "pending");
    let next = chrono::DateTime::parse_from_rfc3339(p.next_check_at.as_deref().unwrap()).unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(&p.created_at).unwrap();
    assert_eq!(next - created, chrono::Duration::minutes(10));
}

#[tokio::test]
async fn a_stuck_cpm_payment_is_reversed_once_and_confirmed() {
    let t = minutes_ago(5);
    let fake = FakeQfpay::start(vec![FakeRecord::new(
        &syssn(1),
        "C1",
        "800108",
        900,
        &["1143"],
        t,
    )])
    .await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    h.register(&[qf_payment("C1", Some(&syssn(1)), "800108", 900, t)])
        .await;
    let engine = h.engine();
    let s = h.pass(&engine).await;
    assert_eq!(s.reversals_sent, 1);
    assert_eq!(h.payment("C1").await.state, "reversing");
    h.pass(&engine).await;
    assert_eq!(h.payment("C1").await.state, "reversed");
    h.pass(&engine).await;
    assert_eq!(fake.reversals(&syssn(1)), 1, "never twice");
    let kinds = h.event_kinds("C1").await;
    assert_eq!(
        kinds,
        [
            "registered",
            // The pass's own answer and the fresh query before the intent: both kept.
            "observed",
            "observed",
            "reversal_intent",
            "reversal_accepted",
            "observed"
        ]
    );
}

#[tokio::test]
async fn after_a_crash_between_intent_and_call_the_engine_queries_and_never_sends_again() {
    let t = minutes_ago(5);
    let fake = FakeQfpay::start(vec![FakeRecord::new(
        &syssn(1),
        "C2",
        "800108",
        900,
        &["1143"],
        t,
    )])
    .await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    h.register(&[qf_payment("C2", Some(&syssn(1)), "800108", 900, t)])
        .await;
    // A lane takes the account, writes its intent, and dies before calling (its lease expires
    // at once).
    let now = chrono::Utc::now();
    let (claimed, _) = h
        .ledger
        .due_unit(&ClaimScope::account("hk"), &Default::default(), 10, now)
        .await
        .unwrap();
    let fence = h
        .ledger
        .acquire_account(
            claimed[0].account.as_str(),
            "crashed",
            std::time::Duration::ZERO,
            400,
            now,
        )
        .await
        .unwrap()
        .expect("a free account")
        .fence;
    let intent = payrecon::ledger::NewEvent {
        at: now,
        kind: "reversal_intent",
        from_state: None,
        to_state: None,
        provider_code: None,
        message: None,
        evidence: serde_json::json!({}),
    };
    assert!(
        h.ledger
            .mark_reversing(&fence, None, claimed[0].id, &[intent], now)
            .await
            .unwrap()
    );
    let engine = h.engine();
    for _ in 0..3 {
        h.pass(&engine).await;
    }
    assert_eq!(
        fake.reversals(&syssn(1)),
        0,
        "the engine re-queries instead of re-sending"
    );
    assert_eq!(fake.query_calls(), 3);
    assert_eq!(h.payment("C2").await.state, "reversing");
}

#[tokio::test]
async fn a_paid_payment_is_never_reversed_even_if_it_settles_just_before_the_last_resort() {
    let t = minutes_ago(5);
    let fake = FakeQfpay::start(vec![
        FakeRecord::new(&syssn(1), "S1", "800108", 900, &["0000"], t),
        FakeRecord::new(&syssn(2), "S2", "800108", 900, &["1143", "0000"], t),
    ])
    .await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    h.register(&[
        qf_payment("S1", Some(&syssn(1)), "800108", 900, t),
        qf_payment("S2", Some(&syssn(2)), "800108", 900, t),
    ])
    .await;
    let s = h.pass(&h.engine()).await;
    assert_eq!(s.reversals_sent, 0);
    assert_eq!(h.payment("S1").await.state, "succeeded");
    // S2 was 1143 in the batch, then 0000 in the fresh query before the reversal: adopted.
    assert_eq!(h.payment("S2").await.state, "succeeded");
    assert_eq!(
        (fake.reversals(&syssn(1)), fake.reversals(&syssn(2))),
        (0, 0)
    );
}

#[tokio::test]
async fn a_stuck_hong_kong_pay_type_goes_to_review_without_a_reversal() {
    let t = minutes_ago(5);
    let fake = FakeQfpay::start(vec![FakeRecord::new(
        &syssn(1),
        "HK1",
        "801008",
        900,
        &["1143"],
        t,
    )])
    .await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    h.register(&[qf_payment("HK1", Some(&syssn(1)), "801008", 900, t)])
        .await;
    h.pass(&h.engine()).await;
    assert_eq!(h.payment("HK1").await.state, "needs_review");
    assert_eq!(fake.reversals(&syssn(1)), 0);
}

#[tokio::test]
async fn a_5xx_storm_changes_no_state() {
    let t = minutes_ago(5);
    let fake = FakeQfpay::start(vec![FakeRecord::new(
        &syssn(1),
        "X1",
        "800108",
        900,
        &["0000"],
        t,
    )])
    .await;
    fake.state.lock().unwrap().fail_with = Some(503);
    let h = harness(&fake.url(), "http://127.0.0.1:9", "retry_for = \"300ms\"").await;
    h.register(&[
        qf_payment("X1", Some(&syssn(1)), "800108", 900, t),
        qf_payment("X2", None, "800101", 900, t),
    ])
    .await;
    let engine = h.engine();
    for _ in 0..2 {
        let s = h.pass(&engine).await;
        assert!(s.counters.errors >= 2, "every failed call is counted");
        assert_eq!(s.reversals_sent, 0);
    }
    for no in ["X1", "X2"] {
        let p = h.payment(no).await;
        assert_eq!((p.state.as_str(), p.attempts), ("pending", 0), "{no}");
        assert!(
            h.event_kinds(no)
                .await
                .iter()
                .skip(1)
                .all(|k| k == "call_failed")
        );
    }
    assert_eq!(fake.reversals(&syssn(1)), 0);
}

#[tokio::test]
async fn two_concurrent_passes_never_ask_twice_about_one_payment() {
    let t = minutes_ago(1);
    let n = 120;
    let records = (0..n)
        .map(|i| FakeRecord::new(&syssn(i), &format!("K{i}"), "800101", 300, &["0000"], t))
        .collect();
    let fake = FakeQfpay::start(records).await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    let payments: Vec<_> = (0..n)
        .map(|i| qf_payment(&format!("K{i}"), Some(&syssn(i)), "800101", 300, t))
        .collect();
    h.register(&payments).await;
    let (a, b) = (h.engine(), h.engine());
    let scope = payrecon::reconcile::RunScope {
        all: true,
        strategy: payrecon::reconcile::Strategy::PerPayment,
        trigger: "test",
        ..Default::default()
    };
    let token = CancellationToken::new();
    let (ra, rb) = tokio::join!(a.run_once(&scope, &token), b.run_once(&scope, &token));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.counters.finalized + rb.counters.finalized, n as u64);
    let queries = fake.state.lock().unwrap().queries.clone();
    let mut asked: Vec<&String> = queries.iter().collect();
    asked.sort();
    asked.dedup();
    assert_eq!(
        asked.len(),
        queries.len(),
        "a payment was asked about twice"
    );
    assert_eq!(queries.len(), n);
}

#[tokio::test]
async fn a_sweep_that_finds_more_records_than_estimated_gives_way_to_id_lookups() {
    let t = minutes_ago(30);
    // The ledger knows 10 payments; the gateway holds 2,010 records in the same window, so the
    // estimate (12 records: one page) is wrong by two hundred pages.
    let mut records: Vec<FakeRecord> = (0..10)
        .map(|i| FakeRecord::new(&syssn(i), &format!("E{i}"), "800101", 500, &["0000"], t))
        .collect();
    records.extend(
        (10..2010)
            .map(|i| FakeRecord::new(&syssn(i), &format!("X{i}"), "800101", 500, &["0000"], t)),
    );
    let fake = FakeQfpay::start(records).await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    let payments: Vec<_> = (0..10)
        .map(|i| qf_payment(&format!("E{i}"), Some(&syssn(i)), "800101", 500, t))
        .collect();
    h.register(&payments).await;
    let summary = h.pass(&h.engine()).await;
    assert_eq!(summary.counters.finalized, 10);
    // At most as many pages as the id lookups would cost (⌈10/4⌉ = 3), then the lookups.
    assert!(fake.query_calls() <= 6, "{} calls", fake.query_calls());
}

/// A lane keeps the pace of the previous holder's last call (`next_call_at`), but that time is
/// of the previous holder's clock: one that ran 45 s ahead (another replica's host) must not
/// keep the lane waiting 45 s without a heartbeat, past its own lease clock. At most one pacer
/// interval is waited.
#[tokio::test]
async fn a_pace_handed_over_from_a_clock_far_ahead_is_waited_one_interval_at_most() {
    let t = minutes_ago(1);
    let fake = FakeQfpay::start(vec![FakeRecord::new(
        &syssn(1),
        "P1",
        "800101",
        1000,
        &["0000"],
        t,
    )])
    .await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    h.register(&[qf_payment("P1", Some(&syssn(1)), "800101", 1000, t)])
        .await;
    let ahead = payrecon::ledger::time::to_db(chrono::Utc::now() + chrono::Duration::seconds(45));
    h.execute(&format!(
        "INSERT INTO account_leases (account, holder, token, next_call_at)
         VALUES ('hk', NULL, 3, '{ahead}')"
    ))
    .await;
    let engine = h.engine();
    let started = std::time::Instant::now();
    h.pass(&engine).await;
    let took = started.elapsed();
    assert_eq!(h.payment("P1").await.state, "succeeded");
    assert!(
        took < std::time::Duration::from_secs(10),
        "the pass took {took:?}"
    );
}
