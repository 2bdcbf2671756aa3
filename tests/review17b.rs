//! Second review of issue 17 (branch review17b): notifications against the lane, the last
//! resort, the check request and the keyset pages.

mod money_safety_support;

use std::time::Duration;

use chrono::Utc;
use money_safety_support::*;
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, PaymentId, PaymentState, Provider, RecordKind,
    RetryReason,
};
use payrecon::ledger::{self, ClaimScope, DuePosition, PaymentPage, PaymentUpdate, WriteGuard};
use payrecon::sandbox::{
    DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE, EcpayOrder, Faults, QfpayPayment, QfpayTimeline,
};

async fn open(w: &World) -> ledger::Ledger {
    open_configured(&w.config).await
}

/// What `POST /notify/...` does for a payment the ledger holds (`notify::mark`).
async fn notify(w: &World, out_trade_no: &str) {
    let id = w.payment(out_trade_no).await.id;
    let l = open(w).await;
    l.notified_paid(
        id,
        "gateway notification: paid (not evidence: a query decides)",
        &serde_json::json!({"out_trade_no": out_trade_no, "status": "1"}),
        Utc::now(),
    )
    .await
    .unwrap();
    l.close().await;
}

/// ARCHITECTURE §7: "The last resort never reverses a payment with `notified_at`". The lane
/// decides that from the row it read at the start of the unit (`Claimed::notified_at`), and
/// `mark_reversing` does not look at `notified_at`. A notification that arrives while the
/// unit's query and the last resort's fresh query are in flight (seconds; minutes for a
/// backlogged lane waiting for pacer slots) is taken (`SUCCESS`, so QFPay stops retrying),
/// and the payment QFPay just told us (signed) is paid is reversed anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_lands_during_the_last_resort_queries_stops_the_reversal() {
    let faults = Faults {
        // Below the client's 1 s request timeout: every answer comes, 700 ms late.
        latency: Duration::from_millis(700),
        ..Faults::none()
    };
    let w = World::start(|_| {}, faults, "", "").await;
    let created = Utc::now() - chrono::Duration::hours(1);
    w.sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("RACE1", 900, "HKD", "800108")
                .at(created)
                .timeline(QfpayTimeline::never_completes()),
        )
        .unwrap();
    w.track_qfpay("RACE1", 900, "800108", None, created);
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&w.config)
        .args(["reconcile", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The unit's query has reached the gateway: the lane read the row (not notified) before.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.sandbox.stats().lookups(DEV_QFPAY_APP_CODE, "RACE1") == 0 {
        assert!(std::time::Instant::now() < deadline, "no query came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // QFPay's notification: the customer has paid (the query lags).
    notify(&w, "RACE1").await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let p = w.payment("RACE1").await;
    let kinds = w.event_kinds("RACE1").await;
    assert!(
        kinds.iter().any(|k| k == "notified"),
        "the notification was taken: {kinds:?}"
    );
    assert_eq!(
        w.cancels("RACE1"),
        0,
        "a payment notified as paid was reversed ({}): {kinds:?}",
        p.state
    );
    // The next pass reads the notification: past its deadline, a person looks.
    w.reconcile(&[]);
    assert_eq!(w.payment("RACE1").await.state, "needs_review");
    assert_eq!(w.cancels("RACE1"), 0);
}

/// §7: a paid notification for a payment the ledger holds as failed is a
/// `notified_after_final` discrepancy, a money alert. The same contradiction in the other
/// order (notified while open, then the verified query says failed) is recorded nowhere: the
/// payment goes `failed` silently, and a later notification is a "replay" that writes nothing.
/// QFPay notifies successful payments only, signed: a failure after one is exactly what a
/// person must look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_notified_as_paid_that_the_query_then_fails_is_flagged() {
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    let created = Utc::now() - chrono::Duration::minutes(5);
    w.sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("NFAIL1", 900, "HKD", "800101")
                .at(created)
                .timeline(QfpayTimeline::failed("1205")),
        )
        .unwrap();
    w.track_qfpay("NFAIL1", 900, "800101", None, created);
    notify(&w, "NFAIL1").await;
    w.reconcile(&[]);
    let p = w.payment("NFAIL1").await;
    // The signed notification and the query disagree: a person decides (this assertion was
    // "failed" in the review's version; the fix hands the payment to review instead).
    assert_eq!(p.state, "needs_review");
    // The same notification, as QFPay retries it or as it would come after the failure.
    notify(&w, "NFAIL1").await;
    let d = w.discrepancies().await;
    assert!(
        d.iter().any(|(_, p, _)| p.as_deref() == Some("NFAIL1")),
        "QFPay notified NFAIL1 as paid, the ledger holds it failed, and no discrepancy says so: {d:?}"
    );
}

/// The ECPay variant: a notified order whose queries keep saying `error_nopay` is failed at
/// its horizon (`settle_at_horizon`) without a word, where a QFPay one goes to `needs_review`
/// ("the gateway notified it as paid but its queries do not confirm it").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_ecpay_order_failed_at_its_nopay_horizon_is_flagged() {
    let w = World::start(|_| {}, Faults::none(), "", "").await;
    // Past the 2-day error_nopay horizon, before the 3-day give-up.
    let created = Utc::now() - chrono::Duration::hours(60);
    w.sandbox
        .state()
        .insert_ecpay(
            DEV_ECPAY_MERCHANT_ID,
            EcpayOrder::new("ENF1", 700).at(created).never_answered(),
        )
        .unwrap();
    w.ok(&[
        "track",
        "--account",
        EC,
        "--out-trade-no",
        "ENF1",
        "--amount",
        "700",
        "--currency",
        "TWD",
        "--created-at",
        &rfc3339(created),
    ]);
    notify(&w, "ENF1").await;
    w.reconcile(&[]);
    let p = w.payment("ENF1").await;
    let d = w.discrepancies().await;
    assert!(
        p.state == "needs_review" || d.iter().any(|(_, p, _)| p.as_deref() == Some("ENF1")),
        "ECPay notified ENF1 as paid; it is now {} with no discrepancy: {d:?}",
        p.state
    );
}

fn hk_payment(no: &str, created_at: chrono::DateTime<Utc>) -> ledger::NewPayment {
    ledger::NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(500, Currency::parse("HKD").unwrap()).unwrap(),
        created_at,
        expires_at: None,
    }
}

/// §7: `POST /v1/payments/{id}/check` "makes an open or still-observed payment due now in the
/// same way" as a notification, whose in-flight arrival `apply` keeps. A check requested while
/// the lane's query is in flight is answered 202 ("its lane checks it now") and then
/// overwritten by the answer of a query sent before it: the lane asks again only at the
/// answer's schedule (QFPay not found: its backoff; ECPay error_nopay: 10 minutes).
#[tokio::test]
async fn a_check_requested_while_the_lane_queries_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let t0 = Utc::now();
    l.register(&[hk_payment("CHK1", t0)], t0).await.unwrap();
    let fence = l
        .acquire_account("hk", "lane", Duration::from_secs(60), 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let (unit, _) = l
        .due_unit(&ClaimScope::account("hk"), &DuePosition::default(), 10, t0)
        .await
        .unwrap();
    let id = unit[0].id;
    // The payment is scheduled for later when the lane's unit is read... (its previous answer)
    let later = t0 + chrono::Duration::minutes(10);
    sqlx::query("UPDATE payments SET next_check_at = ? WHERE id = ?")
        .bind(ledger::time::to_db(later))
        .bind(id.0)
        .execute(l.as_sqlite().unwrap().pool())
        .await
        .unwrap();
    // ...the operator asks for a check while the lane's query is in flight...
    let t1 = t0 + chrono::Duration::milliseconds(200);
    let asked = l.request_check(id.0, t1).await.unwrap();
    assert!(
        matches!(asked, ledger::CheckRequested::DueNow { .. }),
        "{asked:?}"
    );
    // ...and the answer of the query sent before the request arrives.
    let t2 = t0 + chrono::Duration::milliseconds(400);
    let update = PaymentUpdate {
        id: PaymentId(id.0),
        state: PaymentState::Pending,
        provider_code: Some("1136".into()),
        provider_ref: None,
        checked: true,
        retry: Some((RetryReason::NotFound, 0)),
        next_check_at: Some(t2 + chrono::Duration::minutes(10)),
        in_progress_since: None,
        seen_nudged_at: unit[0].nudged_at,
        events: Vec::new(),
        discrepancies: Vec::new(),
    };
    l.apply(WriteGuard::Lane(&fence), None, &[update], t2)
        .await
        .unwrap();
    let next = l
        .payment(id.0)
        .await
        .unwrap()
        .unwrap()
        .next_check_at
        .unwrap();
    assert!(
        next <= ledger::time::to_db(t2),
        "the check requested during the query was lost: next check {next}"
    );
}

/// `GET /v1/payments?after=` with an id no payment has (a typo, a page token of another
/// ledger, a payment of a restored backup) silently starts over from the first payment
/// (`COALESCE(..., '')`), so a client walking pages meets every payment again, or loops.
#[tokio::test]
async fn a_page_after_an_unknown_id_does_not_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let batch: Vec<_> = (0..3)
        .map(|i| hk_payment(&format!("PG{i}"), t0 + chrono::Duration::minutes(i)))
        .collect();
    l.register(&batch, Utc::now()).await.unwrap();
    let page = l
        .payments_page(&PaymentPage {
            after: 999_999,
            limit: 10,
            ..PaymentPage::default()
        })
        .await
        .unwrap();
    let ids: Vec<i64> = page.iter().map(|p| p.id).collect();
    assert!(
        ids.is_empty(),
        "after=999999 (no such payment) served the first page again: {ids:?}"
    );
}
