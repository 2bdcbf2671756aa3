//! The rest of the service API through `payrecon run` over HTTP: a check on request,
//! notifications for orders the ledger lacks (recorded once, or registered when the account
//! allows), discrepancies resolved through the API, and readiness.

mod api_support;

use std::time::Duration;

use api_support::*;
use chrono::Utc;
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, EcpayOrder, QfpayPayment,
};
use serde_json::{Value, json};

fn minutes_ago(n: i64) -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(n)
}

/// A signed QFPay payment notification for `no`.
fn qfpay_notice(no: &str, syssn: &str) -> (Vec<u8>, String) {
    let txdtm = hk_local(5);
    let body = json!({
        "notify_type": "payment", "status": "1", "syssn": syssn, "out_trade_no": no,
        "txamt": "700", "txcurrcd": "HKD", "pay_type": "800101", "respcd": "0000",
        "txdtm": txdtm,
    })
    .to_string()
    .into_bytes();
    let sign = qfpay_sign(&body, DEV_QFPAY_CLIENT_KEY);
    (body, sign)
}

fn ecpay_notice(no: &str, trade_no: &str) -> Vec<u8> {
    let trade_date = minutes_ago(3)
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y/%m/%d %H:%M:%S")
        .to_string();
    let data = json!({
        "RtnCode": 1, "RtnMsg": "Success", "MerchantID": DEV_ECPAY_MERCHANT_ID,
        "OrderInfo": {"MerchantTradeNo": no, "TradeNo": trade_no, "TradeAmt": 450,
                      "TradeDate": trade_date, "PaymentType": "Credit", "TradeStatus": "1"},
    });
    ecpay_envelope(
        DEV_ECPAY_MERCHANT_ID,
        &data,
        DEV_ECPAY_HASH_KEY,
        DEV_ECPAY_HASH_IV,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_request_makes_a_later_payment_due_and_its_lane_settles_it_at_once() {
    let (sandbox, dir, port) = prepare("").await;
    sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("C1", 700, "HKD", "800101").at(minutes_ago(10)),
        )
        .unwrap();
    import(
        dir.path(),
        json!({"account": "hk", "out_trade_no": "C1", "amount": 700,
               "currency": "HKD", "created_at": rfc3339(10)}),
    );
    schedule_later(dir.path(), "C1", 3600).await;
    let svc = start(sandbox, dir, port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(svc.payment("hk", "C1").await["state"], "pending");

    let (status, body) = svc.post("/v1/payments/1/check", &json!({})).await;
    assert_eq!(
        (status, &body["status"]),
        (202, &json!("due_now")),
        "{body}"
    );
    let took = svc
        .wait_state("hk", "C1", "succeeded", Duration::from_secs(3))
        .await;
    assert!(
        took < Duration::from_millis(1500),
        "settled only after {took:?}"
    );
    let (status, problem) = svc.post("/v1/payments/1/check", &json!({})).await;
    assert_eq!(status, 409, "{problem}");
    let (status, _) = svc.post("/v1/payments/77/check", &json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_order_the_ledger_lacks_is_recorded_once_and_resolved_through_the_api() {
    let (sandbox, dir, port) = prepare("").await;
    let svc = start(sandbox, dir, port).await;
    let (body, sign) = qfpay_notice("U1", "20261130000000000000000001");
    for _ in 0..3 {
        let (status, text) = svc
            .notify("/notify/qfpay/hk", &[("X-QF-SIGN", &sign)], body.clone())
            .await;
        assert_eq!((status, text.as_str()), (200, "SUCCESS"));
    }
    let (_, list) = svc.get("/v1/payments").await;
    assert!(
        list["payments"].as_array().unwrap().is_empty(),
        "registered: {list}"
    );
    let (status, list) = svc.get("/v1/discrepancies").await;
    assert_eq!(status, 200);
    let found = list["discrepancies"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{list}");
    assert_eq!(found[0]["kind"], "notified_unknown");
    let id = found[0]["id"].as_i64().unwrap();

    let path = format!("/v1/discrepancies/{id}/resolve");
    let (status, _) = svc.post(&path, &json!({"note": " "})).await;
    assert_eq!(status, 422);
    let (status, body) = svc
        .post(&path, &json!({"note": "test order, ignore"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = svc.post(&path, &json!({"note": "again"})).await;
    assert_eq!(status, 404);
    let (_, open) = svc.get("/v1/discrepancies").await;
    assert!(open["discrepancies"].as_array().unwrap().is_empty());
    let (_, all) = svc.get("/v1/discrepancies?include_resolved=true").await;
    conforms(&all, "DiscrepancyList");
    assert_eq!(
        all["discrepancies"][0]["resolution_note"],
        "test order, ignore"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_allows_it_registers_notified_orders_and_a_query_settles_them() {
    let (sandbox, dir, port) = prepare("register_from_notifications = true").await;
    let syssn = sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("R1", 700, "HKD", "800101").at(minutes_ago(5)),
        )
        .unwrap();
    sandbox
        .state()
        .insert_ecpay(
            DEV_ECPAY_MERCHANT_ID,
            EcpayOrder::new("R2", 450)
                .at(minutes_ago(3))
                .trade_no("2611300000000002"),
        )
        .unwrap();
    let svc = start(sandbox, dir, port).await;
    let (body, sign) = qfpay_notice("R1", &syssn);
    let (status, text) = svc
        .notify("/notify/qfpay/hk", &[("X-QF-SIGN", &sign)], body)
        .await;
    assert_eq!((status, text.as_str()), (200, "SUCCESS"), "{}", svc.log());
    let (status, text) = svc
        .notify(
            "/notify/ecpay/tw",
            &[("content-type", "application/json")],
            ecpay_notice("R2", "2611300000000002"),
        )
        .await;
    assert_eq!((status, text.as_str()), (200, "1|OK"));
    svc.wait_state("hk", "R1", "succeeded", Duration::from_secs(3))
        .await;
    // Three minutes old: only the notification lets ECPay be asked before ten.
    svc.wait_state("tw", "R2", "succeeded", Duration::from_secs(4))
        .await;
    let p: Value = svc.payment("tw", "R2").await;
    assert_eq!(p["provider_ref"], "2611300000000002");
    assert_eq!(p["amount"], 450);
    // Registered with its syssn from the notification, so asked by it.
    assert_eq!(svc.sandbox.stats().lookups(DEV_QFPAY_APP_CODE, &syssn), 1);
    let (_, d) = svc.get("/v1/discrepancies").await;
    assert!(d["discrepancies"].as_array().unwrap().is_empty(), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_every_account_is_paused() {
    let (sandbox, dir, port) = prepare("").await;
    // Create the ledger, then pause both accounts for an hour.
    assert!(cli(dir.path(), &["ledger", "stats"]).status.success());
    let until = payrecon::ledger::time::to_db(Utc::now() + chrono::Duration::hours(1));
    let paused = ledger_sql(
        dir.path(),
        &format!(
            "INSERT INTO account_pauses (account, paused_until, reason, updated_at)
             VALUES ('hk', '{until}', 'test', '{until}'), ('tw', '{until}', 'test', '{until}')"
        ),
    )
    .await;
    assert_eq!(paused, 2);
    let svc = start(sandbox, dir, port).await;
    let r = svc.http.get(svc.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    conforms(&body, "Readiness");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("every account is paused"), "{body}");
    assert_eq!(
        svc.http
            .get(svc.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_is_ready() {
    let (sandbox, dir, port) = prepare("").await;
    let svc = start(sandbox, dir, port).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = svc.http.get(svc.url("/readyz")).send().await.unwrap();
        if r.status() == 200 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body, json!({"ready": true, "reasons": []}));
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_the_start_with_a_line_naming_it() {
    let (_sandbox, dir, port) = prepare("").await;
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrecon"))
        .arg("--config")
        .arg(dir.path().join("payrecon.toml"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("api.listen 127.0.0.1:{port}: cannot listen")),
        "{err}"
    );
}
