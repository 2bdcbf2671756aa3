//! The QFPay sandbox's reversal, close, refund and payment endpoints driven through payrecon's
//! real QFPay adapter.

mod sandbox_support;

use std::time::Duration;

use chrono::NaiveDateTime;
use payrecon::domain::{Currency, Money, Outcome, PayType, ProviderRef, RecordKind};
use payrecon::gateway::GatewayError;
use payrecon::gateway::qfpay::{
    CallMethod, CancelOutcome, CancelRequest, CancelTarget, PaymentOutcome, PaymentRequest,
};
use payrecon::sandbox::{
    CallKind, DEV_QFPAY_APP_CODE, PAID, QfpayPayment, QfpayRefund, QfpayScript, QfpayTimeline,
};
use sandbox_support::*;

const APP: &str = DEV_QFPAY_APP_CODE;

fn cancel_req(syssn: &str, amount: i64) -> CancelRequest {
    CancelRequest {
        target: CancelTarget::Syssn(ProviderRef::parse(syssn).unwrap()),
        amount_minor: amount,
        txdtm: NaiveDateTime::parse_from_str("2026-11-10 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        udid: None,
    }
}

#[tokio::test]
async fn reversing_an_unpaid_payment_cancels_it_for_good_and_is_counted() {
    let sandbox = frozen_sandbox().await;
    let syssn = sandbox
        .state()
        .insert_qfpay(
            APP,
            QfpayPayment::new("CPM-1", 800, "HKD", "800208")
                .timeline(QfpayTimeline::pending_then(Duration::from_secs(300), PAID)),
        )
        .unwrap();
    let client = dev_qfpay(&sandbox);
    let answer = client.reverse(&cancel_req(&syssn, 800)).await.unwrap();
    let CancelOutcome::Accepted {
        syssn: new,
        orig_syssn,
    } = answer.outcome
    else {
        panic!("{answer:?}");
    };
    assert_ne!(new.as_str(), syssn);
    assert_eq!(orig_syssn.unwrap().as_str(), syssn);

    // Past the time it would have been paid, it stays reversed.
    sandbox.clock().advance(Duration::from_secs(600));
    let obs = lookup(&client, "CPM-1", t0()).await.unwrap();
    assert_eq!(obs.outcome, Outcome::Reversed);
    assert_eq!(obs.evidence["cancel"], "1");
    let view = sandbox.state().qfpay_payment(APP, "CPM-1").unwrap();
    assert_eq!(
        (view.reversal_calls, view.close_calls, view.cancel),
        (1, 0, 1)
    );
    assert!(
        sandbox
            .state()
            .qfpay_cancelled_more_than_once(APP)
            .is_empty()
    );

    // A second reversal is refused (1263) and shows up in the counts.
    let again = client.reverse(&cancel_req(&syssn, 800)).await.unwrap();
    assert_eq!(
        again.outcome,
        CancelOutcome::Refused {
            code: "1263".into()
        }
    );
    assert_eq!(sandbox.state().qfpay_cancelled_more_than_once(APP).len(), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn closing_a_qr_order_by_get_shows_it_closed_with_cancel_2() {
    let sandbox = frozen_sandbox().await;
    let syssn = sandbox
        .state()
        .insert_qfpay(
            APP,
            QfpayPayment::new("MPM-1", 500, "HKD", "800201")
                .timeline(QfpayTimeline::never_completes()),
        )
        .unwrap();
    let client = dev_qfpay(&sandbox).with_close_method(CallMethod::Get);
    let answer = client.close(&cancel_req(&syssn, 500)).await.unwrap();
    assert!(
        matches!(answer.outcome, CancelOutcome::Accepted { .. }),
        "{answer:?}"
    );
    let obs = lookup(&client, "MPM-1", t0()).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::Cancelled, "1142")
    );
    assert_eq!(obs.evidence["cancel"], "2");
    assert_eq!(sandbox.stats().count(CallKind::QfpayClose), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_paid_payment_is_never_reversed_and_a_non_cancellable_one_answers_1297() {
    let sandbox = frozen_sandbox().await;
    let state = sandbox.state();
    let paid = state
        .insert_qfpay(APP, QfpayPayment::new("PAID-1", 900, "HKD", "800208"))
        .unwrap();
    let hk = state
        .insert_qfpay(
            APP,
            QfpayPayment::new("HK-1", 900, "HKD", "801512")
                .timeline(QfpayTimeline::never_completes())
                .not_cancellable(),
        )
        .unwrap();
    let client = dev_qfpay(&sandbox);
    let answer = client.reverse(&cancel_req(&paid, 900)).await.unwrap();
    assert_eq!(
        answer.outcome,
        CancelOutcome::Refused {
            code: "1260".into()
        }
    );
    assert_eq!(
        lookup(&client, "PAID-1", t0()).await.unwrap().outcome,
        Outcome::Succeeded
    );

    let answer = client.reverse(&cancel_req(&hk, 900)).await.unwrap();
    assert_eq!(
        answer.outcome,
        CancelOutcome::NotCancellable {
            code: Some("1297".into())
        }
    );
    assert_eq!(
        lookup(&client, "HK-1", t0()).await.unwrap().outcome,
        Outcome::InProgress
    );
    assert_eq!(state.qfpay_payment(APP, "HK-1").unwrap().reversal_calls, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn refunds_are_their_own_records_and_mark_the_payment_refunded() {
    let sandbox = frozen_sandbox().await;
    let state = sandbox.state();
    let syssn = state
        .insert_qfpay(APP, QfpayPayment::new("SOLD-1", 1000, "HKD", "800101"))
        .unwrap();
    sandbox.clock().advance(Duration::from_secs(60));
    let part = state
        .insert_qfpay_refund(
            APP,
            QfpayRefund {
                payment_out_trade_no: "SOLD-1".into(),
                out_trade_no: "REFUND-1".into(),
                amount_minor: 400,
                at: None,
            },
        )
        .unwrap();
    let client = dev_qfpay(&sandbox);
    assert_eq!(
        lookup(&client, "SOLD-1", t0()).await.unwrap().outcome,
        Outcome::PartiallyRefunded
    );
    let refund = lookup(&client, "REFUND-1", t0()).await.unwrap();
    assert_eq!(
        (refund.kind, refund.outcome),
        (RecordKind::Refund, Outcome::Succeeded)
    );
    assert_eq!(refund.original_ref.unwrap().as_str(), syssn);
    assert_eq!(refund.provider_ref.unwrap().as_str(), part);
    assert_eq!(refund.amount_minor, Some(400));

    // The refund endpoint refuses more than is left, then refunds the rest.
    let too_much = raw_qfpay(
        &sandbox,
        "/trade/v1/refund",
        &[
            ("syssn", &syssn),
            ("out_trade_no", "REFUND-2"),
            ("txamt", "700"),
            ("txdtm", "2026-11-10 10:05:00"),
        ],
    )
    .await;
    assert_eq!(too_much["respcd"], "1272");
    let rest = raw_qfpay(
        &sandbox,
        "/trade/v1/refund",
        &[
            ("syssn", &syssn),
            ("out_trade_no", "REFUND-2"),
            ("txamt", "600"),
            ("txdtm", "2026-11-10 10:05:00"),
        ],
    )
    .await;
    assert_eq!(rest["respcd"], "0000", "{rest}");
    assert_eq!(rest["orig_syssn"], syssn.as_str());
    assert_eq!(
        lookup(&client, "SOLD-1", t0()).await.unwrap().outcome,
        Outcome::Refunded
    );
    assert_eq!(sandbox.stats().count(CallKind::QfpayRefund), 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_created_payment_follows_its_script_including_a_different_amount() {
    let sandbox = frozen_sandbox().await;
    let mut script = QfpayScript::new(QfpayTimeline::pending_then(Duration::from_secs(20), "1205"));
    script.amount_override = Some(999);
    sandbox
        .state()
        .script_qfpay_payment(APP, "WEB-1", script)
        .unwrap();
    let client = dev_qfpay(&sandbox);
    let req = PaymentRequest::new(
        qf_order("WEB-1"),
        Money::new(1000, Currency::parse("HKD").unwrap()).unwrap(),
        PayType::parse("801101").unwrap(),
        NaiveDateTime::parse_from_str("2026-11-10 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
    )
    .unwrap();
    let created = client.create_payment(&req).await.unwrap();
    assert_eq!(created.outcome, PaymentOutcome::Accepted);
    assert!(created.pay_url.is_some());
    assert_eq!(created.syssn.as_ref().unwrap().as_str().len(), 26);
    let obs = lookup(&client, "WEB-1", t0()).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.amount_minor),
        (Outcome::InProgress, Some(999))
    );
    sandbox.clock().advance(Duration::from_secs(20));
    assert_eq!(
        lookup(&client, "WEB-1", t0()).await.unwrap().outcome,
        Outcome::Failed
    );
    // The same order number again is a duplicate (2011), a request error.
    let err = client.create_payment(&req).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Rejected { code, .. } if code == "2011"),
        "{err}"
    );
    sandbox.shutdown().await;
}
