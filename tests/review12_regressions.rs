//! Regression tests from the adversarial review of issue 12 and the ECPay after-final
//! observation (each failed on the reviewed code). Each states the money-safety rule it checks.

mod common;
mod ecpay_support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::ledger_at_migration;
use ecpay_support::*;
use payrecon::domain::{OutTradeNo, Outcome, Provider};
use payrecon::gateway::ecpay::credit_detail::classify_credit_detail;
use payrecon::sandbox::{EcpayAction, EcpayOrder};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The mapping (src/gateway/ecpay/card_trade.rs), through the public classifier.
// ---------------------------------------------------------------------------------------------

fn order() -> OutTradeNo {
    OutTradeNo::parse("20180914001", Provider::Ecpay).unwrap()
}

/// `(status, amount, close time)` rows; an empty time leaves `DateTime` out.
fn answer(status: &str, amount: i64, cls_amt: i64, rows: &[(&str, i64, &str)]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|(s, a, t)| {
            if t.is_empty() {
                json!({"Status": s, "Amount": a})
            } else {
                json!({"Status": s, "Amount": a, "DateTime": t})
            }
        })
        .collect();
    json!({"RtnMsg": "", "RtnValue": {
        "TradeID": 245678, "Amount": amount, "ClsAmt": cls_amt,
        "AuthTime": "2026/11/20 10:00:00", "Status": status, "CloseData": rows
    }})
}

fn outcome(data: &Value) -> Outcome {
    classify_credit_detail(data, &order(), None)
        .unwrap()
        .outcome
}

/// Seed 003: with close detail the top-level `Status` is 要關帳 / 已關帳 / 操作取消, and
/// docs/PROTOCOLS.md §E5: `E` (取消) "reverts a close to the previous state" — the authorization stands
/// (`N` 放棄 is what drops it). The sandbox's own model (`sandbox/ecpay_close.rs`) answers a
/// capture undone exactly like this: 操作取消, `ClsAmt` 0, rows [要關帳, 已取消]. The mapping
/// calls it `Cancelled` — a final "no money" state that is never re-checked — while the same
/// facts under 已授權 are `Succeeded` ("the authorization stands"; credit_detail_tests.rs
/// `held`). A capture undone says nothing about the authorization being dropped.
#[test]
fn a_capture_undone_is_not_a_cancelled_payment() {
    for status in ["操作取消", "Operation canceled"] {
        let undone = answer(
            status,
            1000,
            0,
            &[
                ("要關帳", 1000, "2026/11/21 10:00:00"),
                ("已取消", 1000, "2026/11/21 11:00:00"),
            ],
        );
        assert_ne!(
            outcome(&undone),
            Outcome::Cancelled,
            "{status}: a capture undone (authorization still standing) taken as cancelled"
        );
    }
}

/// The module's own rule: "an answer whose parts do not fit together is disputed". `ClsAmt` is
/// trusted over the rows (and over the status) without comparing them, so a contradiction
/// becomes a confident money claim. One test per contradiction.
#[test]
fn cls_amt_above_the_close_rows_is_disputed() {
    // ClsAmt says all 1000 closed, the only close row says 600: not a certain full capture.
    let more = answer(
        "已關帳",
        1000,
        1000,
        &[("已關帳", 600, "2026/11/21 20:15:00")],
    );
    assert_eq!(
        outcome(&more),
        Outcome::Unrecognised,
        "ClsAmt 1000 vs rows 600"
    );
}

#[test]
fn cls_amt_below_the_close_rows_is_disputed() {
    // ClsAmt says 600, the rows say 1000 closed and nothing given back: a partial refund of
    // 400 that no row shows.
    let less = answer(
        "已關帳",
        1000,
        600,
        &[("已關帳", 1000, "2026/11/21 20:15:00")],
    );
    assert_eq!(
        outcome(&less),
        Outcome::Unrecognised,
        "ClsAmt 600 vs rows 1000"
    );
}

#[test]
fn cls_amt_of_a_capture_the_rows_undo_is_disputed() {
    // The capture of 400 was undone (操作取消, the latest row cancels it), yet ClsAmt still says
    // 400: reported `partially_refunded` (400 kept) although the rows undo the capture.
    let undone = answer(
        "操作取消",
        1000,
        400,
        &[
            ("要關帳", 400, "2026/11/21 10:00:00"),
            ("操作取消", 400, "2026/11/21 11:00:00"),
        ],
    );
    assert_eq!(
        outcome(&undone),
        Outcome::Unrecognised,
        "undone capture, ClsAmt 400"
    );
}

#[test]
fn cls_amt_under_a_status_without_close_detail_is_disputed() {
    // Seed 003: 已授權 / 已取消 are the statuses "若未有關帳明細交易" (without close detail), so
    // nothing can be closed; ClsAmt 400 contradicts them, yet both become partially_refunded.
    for status in ["已授權", "已取消"] {
        let odd = answer(status, 1000, 400, &[]);
        assert_eq!(
            outcome(&odd),
            Outcome::Unrecognised,
            "{status} with ClsAmt 400"
        );
    }
}

/// Rows are ordered by `DateTime` text and rows without one "sort first". A cancel row has no
/// close time (關帳時間) precisely because nothing was closed; placing it first turns "the
/// latest row undoes the capture" (disputed) into a confident `Succeeded`.
#[test]
fn a_cancel_row_without_a_close_time_is_not_assumed_to_be_the_oldest() {
    let timed = answer(
        "已關帳",
        1000,
        1000,
        &[
            ("已關帳", 1000, "2026/11/21 20:15:00"),
            ("已取消", 1000, "2026/11/22 09:00:00"),
        ],
    );
    assert_eq!(
        outcome(&timed),
        Outcome::Unrecognised,
        "control: with its time"
    );
    let untimed = answer(
        "已關帳",
        1000,
        1000,
        &[
            ("已關帳", 1000, "2026/11/21 20:15:00"),
            ("已取消", 1000, ""),
        ],
    );
    assert_ne!(
        outcome(&untimed),
        Outcome::Succeeded,
        "a cancellation row of unknown time was ignored"
    );
}

/// A partial capture still in flight (要關帳 400 of 1000, nothing closed yet) is reported as
/// `Succeeded` for the full 1000 with no discrepancy.
#[test]
fn a_partial_capture_in_flight_is_not_a_full_success() {
    let partial = answer("要關帳", 1000, 0, &[("要關帳", 400, "2026/11/21 10:00:00")]);
    assert_ne!(outcome(&partial), Outcome::Succeeded);
}

// ---------------------------------------------------------------------------------------------
// Through the binary against the sandbox.
// ---------------------------------------------------------------------------------------------

const S: fn(u64) -> Duration = Duration::from_secs;

/// The sandbox's own timeline: authorized, capture requested, capture undone (E), captured
/// again. payrecon settles the order `cancelled` after the undo (see
/// `a_capture_undone_is_not_a_cancelled_payment`) and, `cancelled` being outside the
/// after-final observation, never asks again: the capture that follows — money kept — never
/// reaches the ledger, even with `reconcile --once --all` inside the look-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recapture_after_an_undone_capture_reaches_the_ledger() {
    let e = env("").await;
    let created = ago(HOUR);
    e.seed(
        EcpayOrder::new("TWREDO1", 1000)
            .then(HOUR - S(30), EcpayAction::CaptureRequested(1000))
            .then(HOUR - S(20), EcpayAction::CaptureCancelled)
            .then(HOUR + S(4), EcpayAction::Captured(1000)),
        created,
    );
    e.run(&["reconcile", "--once"]);
    let first = e.state("TWREDO1");
    let asked = e.sandbox.stats().lookups(MID, "TWREDO1");
    tokio::time::sleep(S(6)).await;
    e.run(&["reconcile", "--once", "--all"]);
    assert_eq!(
        e.state("TWREDO1"),
        "succeeded",
        "after the undo the ledger said {first}; asked {asked} then {} times:\n{}",
        e.sandbox.stats().lookups(MID, "TWREDO1"),
        e.show("TWREDO1")
    );
    e.sandbox.shutdown().await;
}

/// docs/PROTOCOLS.md and domain/patience.rs promise: "If ECPay later shows the order paid after
/// all, that contradicts a final state, which the state machine follows and records as a
/// `final_state_changed` discrepancy." A payment failed at its horizon is never asked again
/// (`failed` is outside `DUE_WHERE`, `keep_watching` skips it), so a late authorization is
/// silently lost — even with `reconcile --once --all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_after_the_nopay_horizon_reaches_the_ledger() {
    let e =
        env("nopay_steady_checks = 0\nnopay_max_interval = \"1s\"\nnopay_horizon = \"4s\"").await;
    let created = ago(S(1));
    e.seed(
        EcpayOrder::new("TWLATE1", 700)
            .nopay_until(S(9), payrecon::sandbox::EcpayStatus::Authorized),
        created,
    );
    // Passes until the horizon settles it.
    let until = std::time::Instant::now() + S(7);
    while std::time::Instant::now() < until && e.state("TWLATE1") != "failed" {
        e.run(&["reconcile", "--once", "--all"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(e.state("TWLATE1"), "failed", "{}", e.show("TWLATE1"));
    // The bank authorizes it (9 s after creation); an operator forces a pass.
    let wait = (created + chrono::Duration::seconds(10) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let asked = e.sandbox.stats().lookups(MID, "TWLATE1");
    e.run(&["reconcile", "--once", "--all"]);
    assert!(
        e.sandbox.stats().lookups(MID, "TWLATE1") > asked || e.state("TWLATE1") != "failed",
        "the authorized order is never asked again and stays failed:\n{}",
        e.show("TWLATE1")
    );
    e.sandbox.shutdown().await;
}

/// `keep_watching` stops at the end of the look-back only when an *answer* arrives: a failed
/// re-check leaves `retry = CallFailed` and a next check ~15 min at most, and the next failure
/// does the same, with no end (`last_resort` ignores final payments too). A paid order whose
/// re-checks keep failing (e.g. `RtnMsg` "error", which is retryable) is queried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_order_is_not_watched_past_its_look_back_when_its_recheck_fails() {
    // Look-back 1 h; the order is 1 h − 6 s old: the look-back ends 6 s from now.
    let e = env("after_final_look_back = \"1h\"").await;
    e.seed(
        EcpayOrder::new("TWEND1", 900).captured_after(S(60)),
        ago(HOUR - S(6)),
    );
    e.run(&["reconcile", "--once"]);
    assert_eq!(e.state("TWEND1"), "succeeded");
    assert!(e.row("TWEND1")["next_check_at"].is_string(), "watched");
    // The gateway answers 5xx from now on; the last check of the look-back fails.
    e.sandbox.set_faults(payrecon::sandbox::Faults {
        scope: payrecon::sandbox::FaultScope::Ecpay,
        server_error_rate: 1.0,
        ..Default::default()
    });
    tokio::time::sleep(S(8)).await;
    let _ = e.try_run(&["reconcile", "--once", "--all"]);
    let row = e.row("TWEND1");
    assert_eq!(row["state"], "succeeded");
    assert!(
        row["next_check_at"].is_null(),
        "past its look-back, still scheduled: {row}\n{}",
        e.show("TWEND1")
    );
    e.sandbox.shutdown().await;
}

/// The `error_nopay` patience is attached to `RetryReason::InProgress` for every ECPay account
/// (`RetrySchedule::default_for(Ecpay).in_progress_patience`), so it also fails Cashier
/// `TradeStatus` "0" (unpaid) at the 2-day horizon. `gateway/ecpay/cashier.rs` says Cashier is
/// for "merchants whose orders are not credit-card detail records" — ATM / CVS / barcode orders
/// (docs/PROTOCOLS.md §E3.2, the ECPay reference's §3.2 `ATMInfo` / `CVSInfo` / `BarcodeInfo`; §3.3: "For ATM/CVS/BARCODE/BNPL, wait
/// for the notification"), which a customer pays days after checkout. Failed at the horizon,
/// never asked again: the payment made after it never reaches the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cashier_order_paid_after_the_nopay_horizon_reaches_the_ledger() {
    let e = env(
        "query_api = \"cashier\"\nnopay_steady_checks = 0\nnopay_max_interval = \"1s\"\nnopay_horizon = \"4s\"",
    )
    .await;
    let created = ago(S(1));
    e.seed(
        EcpayOrder::new("TWATM1", 700)
            .nopay_until(S(9), payrecon::sandbox::EcpayStatus::Authorized),
        created,
    );
    let until = std::time::Instant::now() + S(7);
    while std::time::Instant::now() < until && e.state("TWATM1") != "failed" {
        e.run(&["reconcile", "--once", "--all"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let at_horizon = e.state("TWATM1");
    let wait = (created + chrono::Duration::seconds(10) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    e.run(&["reconcile", "--once", "--all"]);
    assert_eq!(
        e.state("TWATM1"),
        "succeeded",
        "unpaid (TradeStatus 0) was settled {at_horizon} at the horizon; the later payment is lost:\n{}",
        e.show("TWATM1")
    );
    e.sandbox.shutdown().await;
}

/// Discrepancies are recorded once per (payment, kind), "open or resolved"
/// (`ledger/apply.rs` `insert_discrepancy`). Before issue 12 a final payment was rarely looked
/// at again; under the after-final observation a paid ECPay order is re-read for two weeks, so
/// a second contradiction of a final state is normal — and it is silent. Here: succeeded →
/// partially_refunded (capture of 400 requested) → succeeded (that capture undone, 1000
/// captured: `final_state_changed` #1) → cancelled (undone again and abandoned: the money the
/// ledger believed kept is gone) — and no discrepancy says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contradiction_of_a_final_state_under_observation_is_reported() {
    let e = env("").await;
    let created = ago(HOUR);
    e.seed(
        EcpayOrder::new("TWFLIP1", 1000)
            .then(HOUR + S(3), EcpayAction::CaptureRequested(400))
            .then(HOUR + S(6), EcpayAction::CaptureCancelled)
            .then(HOUR + S(6), EcpayAction::CaptureRequested(1000))
            .then(HOUR + S(9), EcpayAction::CaptureCancelled)
            .then(HOUR + S(9), EcpayAction::Abandoned),
        created,
    );
    let mut states = Vec::new();
    for at in [0u64, 4, 7, 10] {
        let wait = (created + chrono::Duration::from_std(HOUR + S(at)).unwrap() - Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        e.run(&["reconcile", "--once", "--all"]);
        states.push(e.state("TWFLIP1"));
    }
    assert_eq!(
        states,
        ["succeeded", "partially_refunded", "succeeded", "cancelled"],
        "{}",
        e.show("TWFLIP1")
    );
    let d = e.run(&["discrepancies", "list", "--json"]);
    let d: Value = serde_json::from_slice(&d.stdout).unwrap();
    let changed = d
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "final_state_changed")
        .count();
    assert_eq!(
        changed, 2,
        "succeeded -> cancelled after an earlier final_state_changed went unreported: {d:#}"
    );
    e.sandbox.shutdown().await;
}

/// docs/PROTOCOLS.md §Q4.1 (the QFPay reference's "Pay types currently documented") lists 806527 (Apple Pay, online), 806708
/// (UnionPay card, offline) and 806808 (AmEx, offline) (the reference's table). They are
/// missing from `DOCUMENTED_PAY_TYPES`, so the sandbox refuses them with 1104 "unknown
/// pay_type" (stricter than its reference) and `pay --pay-type 806527` says "QFPay does not
/// document it", which is false.
#[test]
fn every_pay_type_of_the_reference_table_is_documented() {
    for p in ["806527", "806708", "806808"] {
        assert!(
            payrecon::domain::PayType::parse(p).unwrap().is_documented(),
            "{p} is in docs/PROTOCOLS.md §Q4.1"
        );
    }
}

/// Upgrade: an ECPay order settled `succeeded` by the previous version has `next_check_at`
/// NULL (final rows were never scheduled); migration 0004 puts the orders settled within the
/// default look-back under observation, so a refund inside it reaches the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_settled_before_the_upgrade_are_observed_within_their_look_back() {
    let e = env("").await;
    let created = ago(HOUR);
    // A ledger as the previous version (schema 0003) left it: the order settled, unscheduled.
    let db = e.dir.path().join("l.db");
    let pool = ledger_at_migration(&db, 3).await;
    let t = |d: DateTime<Utc>| payrecon::ledger::time::to_db(d);
    sqlx::query(
        "INSERT INTO payments (account, provider, kind, out_trade_no, amount, currency, state,
                               created_at, registered_at, updated_at)
         VALUES ('tw', 'ecpay', 'payment', 'TWOLDVER1', 1000, 'TWD', 'succeeded', ?1, ?1, ?1)",
    )
    .bind(t(created))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    e.sandbox
        .state()
        .insert_ecpay(
            MID,
            EcpayOrder::new("TWOLDVER1", 1000)
                .refunded_after(HOUR + S(1), HOUR + S(2), 1000)
                .at(created),
        )
        .unwrap();
    tokio::time::sleep(S(3)).await;
    // The upgraded binary's first pass.
    e.run(&["reconcile", "--once"]);
    assert_eq!(
        e.state("TWOLDVER1"),
        "refunded",
        "a refund inside the look-back of an order settled before the upgrade:\n{}",
        e.show("TWOLDVER1")
    );
    e.sandbox.shutdown().await;
}
