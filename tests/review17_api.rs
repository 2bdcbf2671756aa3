//! Review of issue 17 (branch review17): failures found by attacking the API and the
//! notification endpoints through `payrecon run`, against the built-in sandbox. Each test
//! states what it expects; on the reviewed commit they fail (see the review report).

mod api_support;

use std::time::Duration;

use api_support::*;
use chrono::Utc;
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, EcpayOrder, QfpayPayment, QfpayTimeline,
};
use serde_json::{Value, json};

/// Adds `lines` to the `hk` (QFPay) account only of a prepared config.
fn qfpay_account_keys(dir: &std::path::Path, lines: &str) {
    let path = dir.join("payrecon.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let anchor = format!("client_key = \"{DEV_QFPAY_CLIENT_KEY}\"\n");
    assert!(text.contains(&anchor));
    let text = text.replacen(&anchor, &format!("{anchor}{lines}\n"), 1);
    std::fs::write(&path, text).unwrap();
}

fn ecpay_notification(no: &str, trade_no: &str, amount: i64) -> Vec<u8> {
    let data = json!({
        "RtnCode": 1, "RtnMsg": "Success", "MerchantID": DEV_ECPAY_MERCHANT_ID,
        "OrderInfo": {"MerchantTradeNo": no, "TradeNo": trade_no,
                      "TradeAmt": amount, "TradeDate": "2026/11/30 10:00:00",
                      "PaymentType": "Credit", "TradeStatus": "1"},
    });
    ecpay_envelope(
        DEV_ECPAY_MERCHANT_ID,
        &data,
        DEV_ECPAY_HASH_KEY,
        DEV_ECPAY_HASH_IV,
    )
}

async fn notify_ecpay(svc: &Service, body: Vec<u8>) {
    let (status, text) = svc
        .notify(
            "/notify/ecpay/tw",
            &[("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!((status, text.as_str()), (200, "1|OK"));
}

async fn notify_qfpay(svc: &Service, body: &Value) -> (u16, String) {
    let body = body.to_string().into_bytes();
    let sign = qfpay_sign(&body, DEV_QFPAY_CLIENT_KEY);
    svc.notify("/notify/qfpay/hk", &[("X-QF-SIGN", &sign)], body)
        .await
}

/// ECPay: after `error_nopay` the order must not be asked again for 10 minutes (seed 003;
/// ECPay answers callers that ask too often with 403 and a 30-minute pause of the whole
/// account). A replayed notification (ECPay's notifications carry no nonce; anyone who saw
/// one can send it again) must not buy a query each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_ecpay_notifications_do_not_force_a_query_each_inside_the_nopay_interval() {
    let (sandbox, dir, port) = prepare("").await;
    sandbox
        .state()
        .insert_ecpay(
            DEV_ECPAY_MERCHANT_ID,
            EcpayOrder::new("RP1", 900)
                .at(Utc::now() - chrono::Duration::minutes(2))
                .trade_no("2611300000000011")
                .never_answered(),
        )
        .unwrap();
    import(
        dir.path(),
        json!({"account": "tw", "out_trade_no": "RP1", "amount": 900, "currency": "TWD",
               "created_at": rfc3339(2)}),
    );
    schedule_later(dir.path(), "RP1", 3600).await;
    let svc = start(sandbox, dir, port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = ecpay_notification("RP1", "2611300000000011", 900);
    notify_ecpay(&svc, body.clone()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while svc.sandbox.stats().lookups(DEV_ECPAY_MERCHANT_ID, "RP1") < 1 {
        assert!(std::time::Instant::now() < deadline, "{}", svc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the answer (error_nopay: next check in 10 minutes) be written.
    tokio::time::sleep(Duration::from_millis(700)).await;
    // ECPay's default pace is 30 calls a minute: one replay per pacer interval.
    for _ in 0..4 {
        notify_ecpay(&svc, body.clone()).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let asked = svc.sandbox.stats().lookups(DEV_ECPAY_MERCHANT_ID, "RP1");
    assert_eq!(
        asked,
        1,
        "4 replays of one notification cost {} more ECPay queries inside the 10-minute \
         error_nopay interval",
        asked - 1
    );
}

/// QFPay notifies successful payments only (reference §5.2), signed with the merchant's key.
/// A payment QFPay has told us (signed) is paid must never get a last-resort reversal, even
/// when the query still lags behind (1143): a notification is no evidence to settle a state,
/// but it is reason enough not to do the one irreversible thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_qfpay_notified_as_paid_gets_no_last_resort_reversal() {
    let (sandbox, dir, port) = prepare("").await;
    let syssn = sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("LR1", 1500, "HKD", "800108")
                .at(Utc::now() - chrono::Duration::minutes(5))
                .timeline(QfpayTimeline::never_completes()),
        )
        .unwrap();
    import(
        dir.path(),
        json!({"account": "hk", "out_trade_no": "LR1", "amount": 1500, "currency": "HKD",
               "pay_type": "800108", "created_at": rfc3339(5)}),
    );
    schedule_later(dir.path(), "LR1", 3600).await;
    let svc = start(sandbox, dir, port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, text) = notify_qfpay(
        &svc,
        &json!({"notify_type": "payment", "status": "1", "syssn": syssn,
                "out_trade_no": "LR1", "txamt": "1500", "txcurrcd": "HKD",
                "pay_type": "800108", "respcd": "0000"}),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "SUCCESS"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = svc
        .sandbox
        .state()
        .qfpay_payment(DEV_QFPAY_APP_CODE, "LR1")
        .unwrap();
    let p = svc.payment("hk", "LR1").await;
    assert_eq!(
        view.reversal_calls + view.close_calls,
        0,
        "a payment QFPay notified as paid was reversed; ledger: {p}"
    );
}

/// ECPay has no sweep, and "a payment failed at its error_nopay horizon may still be paid"
/// (decisions.rs). When ECPay then notifies the payment, the ledger's `failed` is exactly what
/// a notification is for: the order must be queried (once; a replay then costs nothing), not
/// answered `1|OK` and forgotten until the slow after-final watch (days) or never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecpay_notification_for_an_order_the_ledger_holds_as_failed_is_checked() {
    let (sandbox, dir, port) = prepare("").await;
    sandbox
        .state()
        .insert_ecpay(
            DEV_ECPAY_MERCHANT_ID,
            EcpayOrder::new("FL1", 700)
                .at(Utc::now() - chrono::Duration::days(3))
                .trade_no("2611300000000021"),
        )
        .unwrap();
    import(
        dir.path(),
        json!({"account": "tw", "out_trade_no": "FL1", "amount": 700, "currency": "TWD",
               "created_at": (Utc::now() - chrono::Duration::days(3)).to_rfc3339()}),
    );
    // As the error_nopay horizon leaves it: failed, watched on the slow after-final schedule.
    let later = payrecon::ledger::time::to_db(Utc::now() + chrono::Duration::days(2));
    ledger_sql(
        dir.path(),
        &format!(
            "UPDATE payments SET state = 'failed', provider_code = 'error_nopay',
                    retry_reason = 'after_final', next_check_at = '{later}'
              WHERE out_trade_no = 'FL1'"
        ),
    )
    .await;
    let svc = start(sandbox, dir, port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    notify_ecpay(&svc, ecpay_notification("FL1", "2611300000000021", 700)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = svc.payment("tw", "FL1").await;
    assert_eq!(
        svc.sandbox.stats().lookups(DEV_ECPAY_MERCHANT_ID, "FL1"),
        1,
        "ECPay notified a payment the ledger holds as failed; it was not checked: {p}"
    );
}

/// An agent's sub-merchants share one notification URL and one key (reference §5.2), and each
/// notification names its `mchid`. A notification for another sub-merchant must not be taken
/// as this account's (registered under it, or nudging its order of the same number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qfpay_notification_for_another_mchid_is_not_registered_under_this_account() {
    let (sandbox, dir, port) = prepare("").await;
    qfpay_account_keys(
        dir.path(),
        "mchid = \"MCHAAAA\"\nregister_from_notifications = true",
    );
    let svc = start(sandbox, dir, port).await;
    let (status, text) = notify_qfpay(
        &svc,
        &json!({"notify_type": "payment", "status": "1", "mchid": "MCHBBBB",
                "syssn": "20261130000200020061752999", "out_trade_no": "SUB1",
                "txamt": "1500", "txcurrcd": "HKD", "pay_type": "800101",
                "respcd": "0000", "txdtm": hk_local(5)}),
    )
    .await;
    // One that names no mchid at all is not this account's either.
    let (no_mchid, _) = notify_qfpay(
        &svc,
        &json!({"notify_type": "payment", "status": "1",
                "syssn": "20261130000200020061752998", "out_trade_no": "SUB2",
                "txamt": "1500", "txcurrcd": "HKD", "pay_type": "800101",
                "respcd": "0000", "txdtm": hk_local(5)}),
    )
    .await;
    assert_eq!(no_mchid, 401);
    let (got, body) = svc.get("/v1/accounts/hk/payments/SUB1").await;
    assert_eq!(
        got, 404,
        "sub-merchant MCHBBBB's order was registered under account hk (mchid MCHAAAA); \
         notification answered {status} {text:?}; payment: {body}"
    );
}

/// A refund notification (QFPay notifies every successful refund) for a payment the ledger
/// holds is not "an order the ledger does not hold": it must not open a `notified_unknown`
/// discrepancy for a person to resolve on every refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_notification_for_a_held_payment_is_not_a_notified_unknown_discrepancy() {
    let (sandbox, dir, port) = prepare("").await;
    let syssn = sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("RF1", 1500, "HKD", "800101")
                .at(Utc::now() - chrono::Duration::minutes(3)),
        )
        .unwrap();
    import(
        dir.path(),
        json!({"account": "hk", "out_trade_no": "RF1", "amount": 1500, "currency": "HKD",
               "pay_type": "800101", "created_at": rfc3339(3)}),
    );
    let svc = start(sandbox, dir, port).await;
    svc.wait_state("hk", "RF1", "succeeded", Duration::from_secs(5))
        .await;
    let (status, text) = notify_qfpay(
        &svc,
        &json!({"notify_type": "refund", "status": "1",
                "syssn": "20261130000300020061750001", "out_trade_no": "RF1-R1",
                "orig_syssn": syssn, "orig_out_trade_no": "RF1",
                "txamt": "500", "txcurrcd": "HKD", "pay_type": "800101", "respcd": "0000"}),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "SUCCESS"));
    let (_, list) = svc.get("/v1/discrepancies").await;
    let unknown: Vec<&Value> = list["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "notified_unknown")
        .collect();
    assert!(
        unknown.is_empty(),
        "a refund of payment RF1 (held, succeeded) became {unknown:?}"
    );
}

/// Errors are problem details (`application/problem+json`) on every `/v1` path, also when
/// axum's extractors refuse the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_query_and_path_parameters_are_problem_json() {
    let (sandbox, dir, port) = prepare("").await;
    let svc = start(sandbox, dir, port).await;
    for path in [
        "/v1/payments?limit=-1",
        "/v1/payments?after=abc",
        "/v1/payments/abc",
        "/v1/discrepancies?include_resolved=yes",
    ] {
        let r = svc
            .http
            .get(svc.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert_eq!(status, 400, "{path}");
        assert_eq!(ct, "application/problem+json", "{path}: {status} {ct}");
    }
}

/// QFPay sends notifications for successful payments only. An order registered from one
/// (`register_from_notifications`) that the query does not find (another sub-merchant's
/// order on a shared agent URL, a query that lags, a month the lookup misses) is "no record" to
/// the last resort, and past its CPM deadline it is reversed: payrecon cancels a payment the
/// gateway told it (signed) had been paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_registered_from_a_success_notification_is_never_reversed() {
    let (sandbox, dir, port) = prepare("").await;
    qfpay_account_keys(dir.path(), "register_from_notifications = true");
    let svc = start(sandbox, dir, port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, text) = notify_qfpay(
        &svc,
        &json!({"notify_type": "payment", "status": "1",
                "syssn": "20261130000200020061753001", "out_trade_no": "REG1",
                "txamt": "1500", "txcurrcd": "HKD", "pay_type": "800108",
                "respcd": "0000", "txdtm": hk_local(5)}),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "SUCCESS"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = svc.sandbox.stats();
    let cancels = stats.merchant_count(
        DEV_QFPAY_APP_CODE,
        payrecon::sandbox::CallKind::QfpayReversal,
    ) + stats
        .merchant_count(DEV_QFPAY_APP_CODE, payrecon::sandbox::CallKind::QfpayClose);
    let p = svc.payment("hk", "REG1").await;
    assert_eq!(
        cancels, 0,
        "payrecon sent a reversal/close for an order QFPay notified as paid: {p}"
    );
}
