//! Money safety through the binary against the built-in sandbox (issue 11, docs/RELIABILITY.md):
//! a `0000` is never reversed whatever else the record says; a reversal or close is sent at
//! most once, and its lost or refused answer is settled by the query; answers are timed by
//! their arrival.

mod money_safety_support;

use std::time::Duration;

use chrono::Utc;
use money_safety_support::*;
use payrecon::sandbox::{
    CancelBehaviour, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE, EcpayOrder, Faults, QfpayPayment,
    QfpayTimeline,
};
use serde_json::json;

fn seed(w: &World, p: QfpayPayment) -> String {
    w.sandbox
        .state()
        .insert_qfpay(DEV_QFPAY_APP_CODE, p)
        .unwrap()
}

/// A customer-presented-code payment created an hour ago: a reversal candidate if undetermined.
fn stuck_cpm(no: &str) -> QfpayPayment {
    QfpayPayment::new(no, 900, "HKD", "800108").at(Utc::now() - chrono::Duration::hours(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0000_record_is_never_reversed_whatever_else_it_says() {
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    let created = Utc::now() - chrono::Duration::hours(1);
    // Money moved (0000) but the record is odd: a flag outside 0–5, an order type in capitals.
    seed(&w, stuck_cpm("ODD-CANCEL").field("cancel", json!("6")));
    seed(
        &w,
        stuck_cpm("ODD-TYPE").field("order_type", json!("PAYMENT")),
    );
    // A field that cannot be decoded, but the id and the 0000 can be read: money moved.
    seed(&w, stuck_cpm("ODD-ARRAY").field("cancel", json!(["0"])));
    // The id itself cannot be read: the answer is malformed (a failed call), not "absent".
    seed(
        &w,
        stuck_cpm("ODD-OBJECT").field("out_trade_no", json!({"v": "ODD-OBJECT"})),
    );
    for no in ["ODD-CANCEL", "ODD-TYPE", "ODD-ARRAY", "ODD-OBJECT"] {
        w.track_qfpay(no, 900, "800108", None, created);
    }
    w.reconcile(&[]);
    w.reconcile(&["--all"]);

    for no in ["ODD-CANCEL", "ODD-TYPE", "ODD-ARRAY", "ODD-OBJECT"] {
        assert_eq!(w.cancels(no), 0, "{no}: no reversal or close was sent");
        let kinds = w.event_kinds(no).await;
        assert!(
            !kinds.iter().any(|k| k == "reversal_intent"),
            "{no}: {kinds:?}"
        );
    }
    for no in ["ODD-CANCEL", "ODD-TYPE", "ODD-ARRAY"] {
        let p = w.payment(no).await;
        assert_eq!(p.state, "needs_review", "{no}");
        let events = w.events(no).await;
        let observed = events.iter().find(|e| e.kind == "observed").unwrap();
        assert_eq!(observed.provider_code.as_deref(), Some("0000"));
        assert_eq!(
            observed.evidence["out_trade_no"], no,
            "the raw record is the evidence"
        );
    }
    let d = w.discrepancies().await;
    for no in ["ODD-CANCEL", "ODD-TYPE", "ODD-ARRAY"] {
        assert!(
            d.iter()
                .any(|(k, p, _)| k == "unrecognised_paid_record" && p.as_deref() == Some(no)),
            "{no}: {d:?}"
        );
    }
    for no in ["ODD-OBJECT"] {
        let p = w.payment(no).await;
        assert_eq!(
            p.state, "pending",
            "{no}: a malformed answer changes no state"
        );
        let kinds = w.event_kinds(no).await;
        assert!(
            kinds
                .iter()
                .all(|k| k == "registered" || k == "call_failed"),
            "{no}: {kinds:?}"
        );
        assert!(kinds.iter().any(|k| k == "call_failed"), "{no}: {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_whose_answer_is_lost_is_sent_once_and_settled_by_the_query() {
    // The gateway applies (or refuses) every cancel but answers 2 s later; the client gives up
    // after 1 s and would retry transport errors for 5 s.
    let faults = Faults {
        cancel_answer_hold: Duration::from_secs(2),
        ..Faults::none()
    };
    let w = World::start(|_| {}, faults, "retry_for = \"5s\"", "").await;
    let created = Utc::now() - chrono::Duration::hours(1);
    seed(
        &w,
        stuck_cpm("LOST-1").timeline(QfpayTimeline::never_completes()),
    );
    // The customer's payment wins the race: the refusal is lost too, and the record says paid.
    seed(
        &w,
        stuck_cpm("LOST-PAID")
            .timeline(QfpayTimeline::never_completes())
            .cancel_behaviour(CancelBehaviour::PaidFirst),
    );
    for no in ["LOST-1", "LOST-PAID"] {
        w.track_qfpay(no, 900, "800108", None, created);
    }
    w.reconcile(&[]);
    for no in ["LOST-1", "LOST-PAID"] {
        assert_eq!(w.cancels(no), 1, "{no}: sent once");
        assert_eq!(w.payment(no).await.state, "reversing", "{no}");
        assert_eq!(
            w.event_kinds(no).await,
            [
                "registered",
                "observed",
                "observed",
                "reversal_intent",
                "reversal_call_failed"
            ],
            "{no}: the pass's own answer and the fresh query are both kept"
        );
    }
    // Later passes query; none sends again. A record that still says paid and not cancelled is
    // believed only at the third read after the request (an accepted reversal may lag).
    w.reconcile(&["--all"]);
    assert_eq!(
        w.payment("LOST-PAID").await.state,
        "reversing",
        "one read is not enough"
    );
    w.reconcile(&["--all"]);
    w.reconcile(&["--all"]);
    assert_eq!(w.cancels("LOST-1"), 1);
    assert_eq!(w.cancels("LOST-PAID"), 1);
    assert_eq!(w.payment("LOST-1").await.state, "reversed");
    assert_eq!(w.payment("LOST-PAID").await.state, "succeeded");
    let d = w.discrepancies().await;
    assert!(
        d.iter()
            .any(|(k, p, _)| k == "paid_despite_reversal" && p.as_deref() == Some("LOST-PAID")),
        "{d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reversal_is_checked_by_a_query_before_a_person_is_asked() {
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    let created = Utc::now() - chrono::Duration::hours(1);
    let cases = [
        ("REF-DONE", CancelBehaviour::AlreadyCancelled, "reversed"),
        ("REF-PAID", CancelBehaviour::PaidFirst, "succeeded"),
        ("REF-NO", CancelBehaviour::NotCancellable, "needs_review"),
    ];
    for (no, behaviour, _) in cases {
        seed(
            &w,
            stuck_cpm(no)
                .timeline(QfpayTimeline::never_completes())
                .cancel_behaviour(behaviour),
        );
        w.track_qfpay(no, 900, "800108", None, created);
    }
    w.reconcile(&[]);
    for (no, _, state) in cases {
        assert_eq!(w.payment(no).await.state, state, "{no}");
        assert_eq!(w.cancels(no), 1, "{no}");
        let kinds = w.event_kinds(no).await;
        let refused = kinds.iter().position(|k| k == "reversal_refused").unwrap();
        assert_eq!(
            kinds[refused + 1],
            "observed",
            "{no}: checked by a query: {kinds:?}"
        );
    }
    w.reconcile(&["--all"]);
    for (no, _, _) in cases {
        assert_eq!(w.cancels(no), 1, "{no}: never twice");
    }
    let d = w.discrepancies().await;
    assert!(
        d.iter()
            .any(|(k, p, _)| k == "paid_despite_reversal" && p.as_deref() == Some("REF-PAID")),
        "{d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reversal_names_the_gateway_record_amount_and_time() {
    // The ledger says 900 and "now"; the gateway's record says 950 at its own txdtm. The
    // reversal must send the record's values (the gateway compares them with the original).
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    let created = Utc::now() - chrono::Duration::hours(1);
    let txdtm = (created - chrono::Duration::minutes(3))
        .with_timezone(&hk())
        .naive_local();
    let mut p = QfpayPayment::new("AMT-1", 950, "HKD", "800108")
        .at(created)
        .timeline(QfpayTimeline::never_completes());
    p.txdtm = Some(txdtm);
    seed(&w, p);
    w.track_qfpay("AMT-1", 900, "800108", None, created);
    w.reconcile(&[]);
    let events = w.events("AMT-1").await;
    let accepted = events
        .iter()
        .find(|e| e.kind == "reversal_accepted")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(accepted.evidence["txamt"], "950");
    assert_eq!(
        accepted.evidence["txdtm"],
        txdtm.format("%Y-%m-%d %H:%M:%S").to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_with_one_failed_month_is_a_failed_call_not_a_missing_payment() {
    // An order created in the first minutes of a month is looked up in both months (its
    // `sysdtm` may fall in either). The earlier month's call fails; the later one answers
    // without it. That is no evidence of absence, and absence would be a reversal trigger.
    let now = Utc::now();
    let local = now.with_timezone(&hk()).naive_local();
    use chrono::Datelike;
    let first = chrono::NaiveDate::from_ymd_opt(local.year(), local.month(), 1).unwrap();
    let month_start = first.and_hms_opt(0, 1, 0).unwrap();
    let created = month_start.and_local_timezone(hk()).unwrap().to_utc();
    let previous = first.pred_opt().unwrap().format("%Y-%m").to_string();
    let faults = Faults {
        fail_id_lookups_in_month: Some(previous),
        ..Faults::none()
    };
    let w = World::start(|_| {}, faults, "", "").await;
    // The gateway has no record in the later month (it is in neither, but only one answered).
    w.track_qfpay("EDGE-1", 900, "800108", None, created);
    w.reconcile(&[]);
    let p = w.payment("EDGE-1").await;
    assert_eq!(p.state, "pending");
    let kinds = w.event_kinds("EDGE-1").await;
    assert_eq!(
        kinds,
        ["registered", "call_failed"],
        "not 'not found', never a reversal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_next_check_is_timed_from_its_own_answer() {
    // Six ECPay orders answered `error_nopay` one by one at 30 calls a minute (2 s apart): the
    // last answer arrives ~10 s after the claim. Each is asked again exactly `nopay_interval`
    // after its own answer.
    let w = World::start(
        |_| {},
        Faults::none(),
        "",
        "rate_per_minute = 30\nnopay_interval = \"30s\"",
    )
    .await;
    let created = Utc::now() - chrono::Duration::minutes(30);
    for i in 0..6 {
        let no = format!("NOPAY{i}");
        w.sandbox
            .state()
            .insert_ecpay(
                DEV_ECPAY_MERCHANT_ID,
                EcpayOrder::new(&no, 500).at(created).never_answered(),
            )
            .unwrap();
        w.ok(&[
            "track",
            "--account",
            EC,
            "--out-trade-no",
            &no,
            "--amount",
            "500",
            "--currency",
            "TWD",
            "--created-at",
            &rfc3339(created),
        ]);
    }
    w.reconcile(&[]);
    let mut answered = Vec::new();
    for i in 0..6 {
        let no = format!("NOPAY{i}");
        let p = w.payment(&no).await;
        assert_eq!(p.provider_code.as_deref(), Some("error_nopay"));
        let e = w.events(&no).await.pop().unwrap();
        assert_eq!(e.kind, "observed");
        let at = chrono::DateTime::parse_from_rfc3339(&e.at).unwrap();
        let next =
            chrono::DateTime::parse_from_rfc3339(p.next_check_at.as_deref().unwrap()).unwrap();
        assert_eq!(next - at, chrono::Duration::seconds(30), "{no}");
        answered.push(at);
    }
    let spread = *answered.iter().max().unwrap() - *answered.iter().min().unwrap();
    assert!(
        spread >= chrono::Duration::seconds(8),
        "the answers arrived over ~10 s, and each event says when: {spread}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_method_get_sends_the_close_as_a_get_once() {
    // The close method is an account setting: the docs conflict (GET in 2024–2026, POST in
    // 2016/2018), so an operator who learns which one the host accepts can say so.
    let created = Utc::now() - chrono::Duration::hours(2);
    let local = created
        .with_timezone(&hk())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut server = mockito::Server::new_async().await;
    let record = json!({"respcd": "0000", "page": "1", "page_size": "100", "data": [{
        "syssn": "20261129000300020000000077", "out_trade_no": "QR-1", "order_type": "payment",
        "pay_type": "800201", "txamt": "500", "txcurrcd": "HKD", "respcd": "1143",
        "cancel": "0", "sysdtm": local, "txdtm": local}]});
    // Signed as QFPay signs answers: payrecon cancels only after a signed answer.
    let record = record.to_string();
    let query = server
        .mock("POST", "/trade/v1/query")
        .with_header("x-qf-sign", &signed(&record))
        .with_body(&record)
        .expect_at_least(1)
        .create_async()
        .await;
    let get = server
        .mock("GET", mockito::Matcher::Regex("^/trade/v1/close".into()))
        .match_query(mockito::Matcher::Regex("txamt=500".into()))
        .with_body(r#"{"respcd":"0000","syssn":"20261129000300020000000078","orig_syssn":"20261129000300020000000077"}"#)
        .expect(1)
        .create_async()
        .await;
    let post = server
        .mock("POST", "/trade/v1/close")
        .expect(0)
        .create_async()
        .await;
    let gateway = Scripted::new(&server.url(), "close_method = \"get\"");
    gateway.track("QR-1", 500, "800201", created);
    gateway.ok(&["reconcile", "--once"]);
    query.assert_async().await;
    get.assert_async().await;
    post.assert_async().await;
}

/// `payrecon sweep` of the window `[from, to)`, its printed report.
fn sweep(w: &World, from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>, again: bool) -> String {
    let (from, to) = (rfc3339(from), rfc3339(to));
    let mut args = vec!["sweep", "--account", QF, "--from", &from, "--to", &to];
    if again {
        args.push("--again");
    }
    String::from_utf8_lossy(&w.ok(&args).stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_and_later_settlements_at_the_gateway_reach_the_ledger_through_a_sweep() {
    let now = Utc::now();
    let w = World::start(
        |c| c.clock = payrecon::sandbox::SandboxClock::frozen(now),
        Faults::none(),
        "",
        "",
    )
    .await;
    let created = now - chrono::Duration::hours(3);
    let mut syssn = std::collections::HashMap::new();
    for no in ["PAID-FULL", "PAID-PART", "PAID-KEEP"] {
        let s = seed(&w, QfpayPayment::new(no, 1000, "HKD", "800101").at(created));
        w.track_qfpay(no, 1000, "800101", Some(&s), created);
        syssn.insert(no, s);
    }
    // Paid before the swept window: only its refund record is in the window.
    let before = now - chrono::Duration::hours(6);
    let s = seed(
        &w,
        QfpayPayment::new("PAID-EARLY", 800, "HKD", "800101").at(before),
    );
    w.track_qfpay("PAID-EARLY", 800, "800101", Some(&s), before);
    syssn.insert("PAID-EARLY", s);
    // A Hong Kong wallet payment, not cancellable, stuck past its deadline: to a person. The
    // gateway settles it later.
    seed(
        &w,
        QfpayPayment::new("HK-LATE", 700, "HKD", "801008")
            .at(created)
            .timeline(QfpayTimeline::pending_then(
                Duration::from_secs(3 * 3600 + 60),
                "0000",
            )),
    );
    w.track_qfpay("HK-LATE", 700, "801008", None, created);
    // Records the merchant never registered (it registers only what it is unsure of).
    for i in 0..3 {
        seed(
            &w,
            QfpayPayment::new(&format!("OTHER{i}"), 300, "HKD", "800101").at(created),
        );
    }
    w.reconcile(&[]);
    for no in ["PAID-FULL", "PAID-PART", "PAID-KEEP"] {
        assert_eq!(w.payment(no).await.state, "succeeded");
    }
    assert_eq!(w.payment("HK-LATE").await.state, "needs_review");

    // Days later (here: an hour of sandbox time): refunds, and the wallet payment settles.
    w.sandbox.clock().advance(Duration::from_secs(120));
    for (no, refund, amount) in [
        ("PAID-FULL", "RF-1", 1000),
        ("PAID-PART", "RF-2", 400),
        ("PAID-EARLY", "RF-3", 800),
    ] {
        w.sandbox
            .state()
            .insert_qfpay_refund(
                DEV_QFPAY_APP_CODE,
                payrecon::sandbox::QfpayRefund {
                    payment_out_trade_no: no.into(),
                    out_trade_no: refund.into(),
                    amount_minor: amount,
                    at: Some(now - chrono::Duration::hours(2)),
                },
            )
            .unwrap();
    }
    let printed = sweep(
        &w,
        now - chrono::Duration::hours(4),
        now - chrono::Duration::hours(1),
        false,
    );

    assert_eq!(w.payment("PAID-FULL").await.state, "refunded", "{printed}");
    assert_eq!(
        w.payment("PAID-PART").await.state,
        "partially_refunded",
        "{printed}"
    );
    assert_eq!(w.payment("PAID-KEEP").await.state, "succeeded");
    assert_eq!(w.payment("HK-LATE").await.state, "succeeded", "{printed}");
    // Followed from its refund record alone (its own record is outside the window).
    assert_eq!(w.payment("PAID-EARLY").await.state, "refunded", "{printed}");
    let ev = w.events("PAID-EARLY").await.pop().unwrap();
    assert_eq!(ev.evidence["refunded_total"], 800, "{ev:?}");
    let ev = w.events("PAID-FULL").await.pop().unwrap();
    assert_eq!(
        (ev.kind.as_str(), ev.to_state.as_deref()),
        ("observed", Some("refunded"))
    );
    assert!(
        ev.evidence.is_object() && ev.evidence != json!({}),
        "{ev:?}"
    );
    let late = w.events("HK-LATE").await.pop().unwrap();
    assert_eq!(
        late.evidence["respcd"], "0000",
        "the record is the evidence"
    );
    // The refunds are in the ledger, linked to their payments.
    for (refund, original) in [
        ("RF-1", "PAID-FULL"),
        ("RF-2", "PAID-PART"),
        ("RF-3", "PAID-EARLY"),
    ] {
        let r = w.payment(refund).await;
        assert_eq!(r.kind, "refund");
        assert_eq!(r.state, "succeeded");
        assert_eq!(r.original_ref.as_deref(), Some(syssn[original].as_str()));
    }
    // Not the complete book: the records it never registered are counted, not reported.
    assert!(
        printed.contains("3 gateway records are not in the ledger"),
        "{printed}"
    );
    let d = w.discrepancies().await;
    assert!(!d.iter().any(|(k, ..)| k == "missing_in_ledger"), "{d:?}");

    // Reading the window again changes nothing more.
    let again = sweep(
        &w,
        now - chrono::Duration::hours(4),
        now - chrono::Duration::hours(1),
        true,
    );
    assert!(
        again.contains(
            "updated (payments the ledger held as settled whose gateway record says more): 0"
        ),
        "{again}"
    );
    assert!(
        again.contains("refunds registered (gateway refunds of ledger payments): 0"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_serves_smaller_pages_is_paged_to_the_end() {
    // 120 records in the window, pages of 50 echoed as page_size 50: three pages, not one.
    let w = World::start(
        |c| c.qfpay_merchants[0].max_page_size = Some(50),
        Faults::none(),
        "",
        "",
    )
    .await;
    let now = Utc::now();
    let created = now - chrono::Duration::hours(3);
    for i in 0..120 {
        let no = format!("PG{i:03}");
        let s = seed(
            &w,
            QfpayPayment::new(&no, 100, "HKD", "800101").at(created + chrono::Duration::seconds(i)),
        );
        if i % 2 == 0 {
            w.track_qfpay(
                &no,
                100,
                "800101",
                Some(&s),
                created + chrono::Duration::seconds(i),
            );
        }
    }
    let printed = sweep(
        &w,
        now - chrono::Duration::hours(4),
        now - chrono::Duration::hours(1),
        false,
    );
    assert!(
        printed.contains("120 gateway records in 3 calls"),
        "{printed}"
    );
    assert!(
        printed.contains("missing at gateway (registered payments the gateway never had): 0"),
        "{printed}"
    );
    assert!(
        printed.contains("60 gateway records are not in the ledger"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_registered_with_a_long_expiry_is_not_closed_while_still_payable() {
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    let created = Utc::now() - chrono::Duration::minutes(45);
    for no in ["QR-LONG", "QR-FILE", "QR-DEFAULT"] {
        seed(
            &w,
            QfpayPayment::new(no, 500, "HKD", "800201")
                .at(created)
                .timeline(QfpayTimeline::never_completes()),
        );
    }
    // Created 45 minutes ago with a 60-minute expiry: still payable.
    w.ok(&[
        "track",
        "--account",
        QF,
        "--out-trade-no",
        "QR-LONG",
        "--amount",
        "500",
        "--currency",
        "HKD",
        "--pay-type",
        "800201",
        "--created-at",
        &rfc3339(created),
        "--expired-time",
        "60",
    ]);
    let file = w.dir.path().join("orders.jsonl");
    let expires = rfc3339(created + chrono::Duration::minutes(90));
    std::fs::write(
        &file,
        json!({"account": QF, "out_trade_no": "QR-FILE", "pay_type": "800201", "amount": 500,
               "currency": "HKD", "created_at": rfc3339(created), "expires_at": expires})
        .to_string(),
    )
    .unwrap();
    w.ok(&["import", file.to_str().unwrap()]);
    // No expiry given: QFPay's default 30 minutes (+ grace) has passed.
    w.track_qfpay("QR-DEFAULT", 500, "800201", None, created);
    w.reconcile(&[]);
    assert_eq!(w.cancels("QR-LONG"), 0, "still payable for 15 minutes");
    assert_eq!(w.cancels("QR-FILE"), 0, "still payable for 45 minutes");
    assert_eq!(w.payment("QR-LONG").await.state, "in_progress");
    assert_eq!(w.cancels("QR-DEFAULT"), 1, "the default expiry has passed");

    // Bad expiries are refused with the field named, and nothing is written.
    for (flags, field) in [
        (vec!["--expired-time", "999"], "--expired-time"),
        (vec!["--expires-at", "soon"], "--expires-at"),
    ] {
        let mut args = vec![
            "track",
            "--account",
            QF,
            "--out-trade-no",
            "QR-BAD",
            "--amount",
            "500",
            "--currency",
            "HKD",
            "--pay-type",
            "800201",
        ];
        args.extend(flags);
        let out = w.run(&args);
        assert_eq!(out.status.code(), Some(65));
        assert!(String::from_utf8_lossy(&out.stderr).contains(field));
    }
    let out = w.run(&[
        "track",
        "--account",
        EC,
        "--out-trade-no",
        "ECX1",
        "--amount",
        "500",
        "--currency",
        "TWD",
        "--expired-time",
        "30",
    ]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "ECPay orders have no expiry here"
    );
}
