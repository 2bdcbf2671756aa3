//! Issue 12 items 1–4 through the binary against the built-in sandbox: what ECPay says after
//! authorization (captures, cancellations, refunds) reaches the ledger; `Unauthorized` and
//! `error_nopay` are waited out and then settled at their horizons; a one-off order is queried
//! without `TradeNo`.

mod ecpay_support;

use std::time::{Duration, Instant};

use chrono::Utc;
use ecpay_support::*;
use payrecon::sandbox::{EcpayAction, EcpayOrder, EcpayStatus};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecpay_capture_cancellation_or_refund_after_authorization_reaches_the_ledger() {
    let e = env("").await;
    let two_days_ago = ago(2 * DAY);
    let cases = [
        (
            EcpayOrder::new("TWREFUND1", 1000).refunded_after(HOUR, DAY, 1000),
            "refunded",
        ),
        (
            EcpayOrder::new("TWREFUND2", 1000).refunded_after(HOUR, DAY, 600),
            "partially_refunded",
        ),
        (
            EcpayOrder::new("TWPART1", 1000).partly_captured_after(HOUR, 400),
            "partially_refunded",
        ),
        (
            EcpayOrder::new("TWCANCEL1", 1000).cancelled_after(HOUR),
            "cancelled",
        ),
        (
            EcpayOrder::new("TWUNDO1", 1000)
                .captured_after(HOUR)
                .then(2 * HOUR, EcpayAction::CaptureCancelled)
                .then(3 * HOUR, EcpayAction::Abandoned),
            "cancelled",
        ),
        (
            EcpayOrder::new("TWPAID1", 1000).captured_after(HOUR),
            "succeeded",
        ),
    ];
    for (order, _) in &cases {
        e.seed(order.clone(), two_days_ago);
    }
    e.run(&["reconcile", "--once"]);
    for (order, want) in &cases {
        let no = &order.merchant_trade_no;
        assert_eq!(e.state(no), *want, "{no}:\n{}", e.show(no));
    }
    // The evidence is the whole answer, close rows included.
    assert!(
        e.show("TWREFUND1").contains("-1000"),
        "{}",
        e.show("TWREFUND1")
    );
    // Nothing about the money was guessed: no amount discrepancy for these coherent answers.
    let d = e.run(&["discrepancies", "list", "--json"]);
    let d: Value = serde_json::from_slice(&d.stdout).unwrap();
    assert_eq!(d.as_array().map(Vec::len), Some(0), "{d}");
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_keeps_the_payment_open_on_a_growing_interval_then_fails_it_at_the_horizon() {
    let e = env("unauthorized_horizon = \"5s\"\nunauthorized_max_interval = \"2s\"").await;
    let created = ago(Duration::from_secs(2));
    e.seed(
        EcpayOrder::new("TWUNAUTH1", 700).status(EcpayStatus::Unauthorized),
        created,
    );
    e.run(&["reconcile", "--once"]);
    assert_eq!(
        e.state("TWUNAUTH1"),
        "in_progress",
        "{}",
        e.show("TWUNAUTH1")
    );
    assert!(e.row("TWUNAUTH1")["next_check_at"].is_string());
    // Past the horizon (5 s after creation) the next answer settles it, as its own event.
    let wait = (created + chrono::Duration::seconds(5) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    e.run(&["reconcile", "--once", "--all"]);
    let shown = e.show("TWUNAUTH1");
    assert_eq!(e.state("TWUNAUTH1"), "failed", "{shown}");
    assert!(shown.contains("in_progress -> failed"), "{shown}");
    assert!(shown.contains("horizon"), "{shown}");
    assert!(shown.contains("pending -> in_progress"), "{shown}");
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_nopay_backs_off_after_the_documented_interval_and_ends_failed_at_its_horizon() {
    let e =
        env("nopay_steady_checks = 1\nnopay_max_interval = \"4s\"\nnopay_horizon = \"20s\"").await;
    let created = ago(Duration::from_secs(1));
    e.seed(EcpayOrder::new("TWNOPAY1", 700).never_answered(), created);
    // A pass every quarter second for 13 s: only the payments due are asked.
    let until = Instant::now() + Duration::from_secs(13);
    while Instant::now() < until {
        e.run(&["reconcile", "--once"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let asked = e.sandbox.stats().lookups(MID, "TWNOPAY1");
    eprintln!("error_nopay: asked {asked} times in 13 s");
    assert_eq!(e.state("TWNOPAY1"), "in_progress");
    // 1 s, 1 s, then 2 s, 4 s, 4 s: at most 6 queries in 13 s (every second would be ~13).
    assert!((3..=6).contains(&asked), "asked {asked} times in 13 s");
    // The horizon is 20 s after creation: far enough past the 13 s of passes that a slow
    // machine's last pass cannot reach it.
    let wait = (created + chrono::Duration::seconds(20) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    e.run(&["reconcile", "--once", "--all"]);
    let shown = e.show("TWNOPAY1");
    assert_eq!(e.state("TWNOPAY1"), "failed", "{shown}");
    assert!(shown.contains("error_nopay"), "{shown}");
    assert!(shown.contains("horizon"), "{shown}");
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_order_is_queried_without_trade_no() {
    let e = env("").await;
    let created = ago(HOUR);
    let trade_no = e
        .sandbox
        .state()
        .insert_ecpay(MID, EcpayOrder::new("TWONEOFF1", 900).at(created))
        .unwrap();
    e.run(&[
        "track",
        "--account",
        "tw",
        "--out-trade-no",
        "TWONEOFF1",
        "--amount",
        "900",
        "--currency",
        "TWD",
        "--trade-no",
        &trade_no,
        "--created-at",
        &created.to_rfc3339(),
    ]);
    e.run(&["reconcile", "--once"]);
    assert_eq!(e.state("TWONEOFF1"), "succeeded");
    assert_eq!(e.row("TWONEOFF1")["provider_ref"], trade_no.as_str());
    assert_eq!(e.sandbox.stats().lookups(MID, "TWONEOFF1"), 1);
    assert_eq!(
        e.sandbox.stats().ecpay_trade_no_sent,
        0,
        "seed 003 reserves TradeNo for recurring authorizations after the first"
    );
    e.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_stays_under_observation_within_its_look_back() {
    // Created an hour ago, authorized; captured and then refunded in full 4 and 6 seconds
    // from now (in sandbox time: an hour and a bit after creation). The ledger first says
    // `succeeded`; the order stays watched, and the refund reaches it.
    let e = env("after_final_look_back = \"2d\"").await;
    let created = ago(HOUR);
    let later = |s: u64| HOUR + Duration::from_secs(s);
    e.seed(
        EcpayOrder::new("TWWATCH1", 900).refunded_after(later(4), later(6), 900),
        created,
    );
    // Authorized long ago, past a 2-day look-back: not watched after it is settled.
    e.seed(
        EcpayOrder::new("TWOLD1", 900).refunded_after(
            3 * DAY + Duration::from_secs(4),
            3 * DAY + Duration::from_secs(6),
            900,
        ),
        ago(3 * DAY),
    );
    e.run(&["reconcile", "--once"]);
    assert_eq!(e.state("TWWATCH1"), "succeeded");
    assert_eq!(e.state("TWOLD1"), "succeeded");
    let watched = e.row("TWWATCH1");
    let next =
        chrono::DateTime::parse_from_rfc3339(watched["next_check_at"].as_str().unwrap()).unwrap();
    let hours = (next.to_utc() - Utc::now()).num_minutes() as f64 / 60.0;
    assert!(
        (5.9..=6.0).contains(&hours),
        "the next look comes on the slow schedule (6 h after the answer): {next}"
    );
    assert!(
        e.row("TWOLD1")["next_check_at"].is_null(),
        "past its look-back"
    );
    // A normal pass does not ask again before that.
    let asked = e.sandbox.stats().lookups(MID, "TWWATCH1");
    e.run(&["reconcile", "--once"]);
    assert_eq!(e.sandbox.stats().lookups(MID, "TWWATCH1"), asked);
    // After the refund, an operator forces the re-check: the refund reaches the ledger.
    tokio::time::sleep(Duration::from_secs(7)).await;
    e.run(&["reconcile", "--once", "--all"]);
    assert_eq!(e.state("TWWATCH1"), "refunded", "{}", e.show("TWWATCH1"));
    assert_eq!(
        e.state("TWOLD1"),
        "succeeded",
        "outside its look-back nothing is asked"
    );
}
