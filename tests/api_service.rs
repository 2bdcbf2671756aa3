//! Issue 17 acceptance: the service API of `payrecon run`, over real HTTP, against the
//! built-in sandbox. Registering and reading payments, gateway notifications that make a
//! payment due (a query decides; forgeries and replays change nothing), the bearer token,
//! the body limit, and `/metrics` counting what the sandbox counted.

mod api_support;

use std::time::Duration;

use api_support::*;
use chrono::Utc;
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, EcpayOrder, QfpayPayment,
};
use serde_json::{Value, json};

/// The `payrecon_gateway_calls_total` samples of `account`, summed; every line of the text
/// must be a comment, blank, or `name{labels} value` with a number.
fn gateway_calls(metrics: &str, account: &str) -> f64 {
    let mut sum = 0.0;
    for line in metrics.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name == "payrecon_gateway_calls_total"
            && series.contains(&format!("account=\"{account}\""))
        {
            sum += value;
        }
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_registered_through_the_api_is_settled_and_read_through_it() {
    let (sandbox, dir, port) = prepare("").await;
    sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("API1", 1500, "HKD", "800101")
                .at(Utc::now() - chrono::Duration::minutes(3)),
        )
        .unwrap();
    let svc = start(sandbox, dir, port).await;
    let record = json!({
        "account": "hk", "out_trade_no": "API1", "amount": 1500, "currency": "HKD",
        "pay_type": "800101", "created_at": rfc3339(3),
    });
    let (status, body) = svc.post("/v1/payments", &record).await;
    assert_eq!(status, 201, "{body}");
    conforms(&body, "RegisterAnswer");
    assert_eq!(body["payments"][0]["status"], "registered");
    let id = body["payments"][0]["id"].as_i64().unwrap();

    let took = svc
        .wait_state("hk", "API1", "succeeded", Duration::from_secs(5))
        .await;
    assert!(took < Duration::from_secs(3), "settled only after {took:?}");
    let (status, detail) = svc.get(&format!("/v1/payments/{id}")).await;
    assert_eq!(status, 200);
    conforms(&detail, "PaymentDetail");
    assert_eq!(detail["provider_code"], "0000");
    assert!(
        event_kinds(&detail).contains(&"registered".to_string()),
        "{detail}"
    );
    assert!(detail["events"].as_array().unwrap().len() >= 2, "{detail}");

    // Idempotent: the same record again writes nothing.
    let (status, body) = svc.post("/v1/payments", &json!([record])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payments"][0]["status"], "already_present");
    assert_eq!(body["payments"][0]["id"], id);

    let (status, list) = svc.get("/v1/payments?state=succeeded&account=hk").await;
    assert_eq!(status, 200);
    assert_eq!(list["payments"].as_array().unwrap().len(), 1, "{list}");
    conforms(&list, "PaymentList");
    let (_, list) = svc.get("/v1/payments?state=pending").await;
    assert!(list["payments"].as_array().unwrap().is_empty(), "{list}");

    // /metrics is Prometheus text, and its call counter is what the sandbox counted.
    let r = svc.http.get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let counted: u64 = svc
        .sandbox
        .stats()
        .by_merchant
        .get(DEV_QFPAY_APP_CODE)
        .map(|m| m.values().sum())
        .unwrap_or(0);
    assert!(counted >= 1);
    assert_eq!(gateway_calls(&text, "hk"), counted as f64, "{text}");
    assert!(
        text.contains(r#"payrecon_payments{account="hk",state="succeeded"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_write_nothing() {
    let (sandbox, dir, port) = prepare("").await;
    let svc = start(sandbox, dir, port).await;
    let record = json!({
        "account": "hk", "out_trade_no": "T1", "amount": 100, "currency": "HKD",
        "created_at": rfc3339(1),
    });
    for token in [None, Some("wrong"), Some("test-token-0123456789abcde")] {
        let mut req = svc.http.post(svc.url("/v1/payments")).json(&record);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
        assert!(r.headers().contains_key("www-authenticate"));
        let r = svc.http.get(svc.url("/v1/payments")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    // Larger than max_body (4 KiB): 413 before it is read.
    let big: Vec<Value> = (0..60)
        .map(|i| {
            json!({"account": "hk", "out_trade_no": format!("BIG{i}"), "amount": 100,
                        "currency": "HKD", "created_at": rfc3339(1)})
        })
        .collect();
    let (status, _) = svc.post("/v1/payments", &json!(big)).await;
    assert_eq!(status, 413);
    // One bad record among good ones: 422 naming index and field; nothing written.
    let bad = json!([record, {"account": "nope", "out_trade_no": "T2", "amount": -5,
                              "currency": "HKD", "created_at": rfc3339(1)}]);
    let (status, problem) = svc.post("/v1/payments", &bad).await;
    assert_eq!(status, 422, "{problem}");
    conforms(&problem, "Problem");
    let problems = problem["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["index"] == 1 && p["field"] == "account"),
        "{problem}"
    );
    assert!(problems.iter().all(|p| p["index"] == 1), "{problem}");
    // The same order twice in one request, as in one import file.
    let (status, problem) = svc.post("/v1/payments", &json!([record, record])).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["problems"][0]["index"], 1);
    assert_eq!(problem["problems"][0]["field"], "out_trade_no");
    assert!(
        problem["problems"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("first on record 0"),
        "{problem}"
    );
    let (status, _) = svc.post("/v1/payments", &json!("not a record")).await;
    assert_eq!(status, 400);
    let (_, list) = svc.get("/v1/payments").await;
    assert!(list["payments"].as_array().unwrap().is_empty(), "{list}");
    let (status, _) = svc.get("/v1/payments/1").await;
    assert_eq!(status, 404);
}

/// What is wrong, the path, the headers, the body, the status expected.
type QfpayCase<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);

/// The checks before a valid notification: nothing about the payment changed.
async fn unchanged(svc: &Service, account: &str, no: &str, merchant: &str) {
    let p = svc.payment(account, no).await;
    assert_eq!(p["state"], "pending", "{p}");
    assert!(!event_kinds(&p).contains(&"notified".to_string()), "{p}");
    assert_eq!(svc.sandbox.stats().lookups(merchant, no), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_qfpay_notification_settles_the_payment_at_once_and_forgeries_change_nothing() {
    let (sandbox, dir, port) = prepare("").await;
    let syssn = sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("N1", 1500, "HKD", "800101")
                .at(Utc::now() - chrono::Duration::minutes(10)),
        )
        .unwrap();
    import(
        dir.path(),
        json!({"account": "hk", "out_trade_no": "N1", "amount": 1500, "currency": "HKD",
               "pay_type": "800101", "created_at": rfc3339(10)}),
    );
    schedule_later(dir.path(), "N1", 3600).await;
    let svc = start(sandbox, dir, port).await;
    // Let the first pass of the start run (nothing is due).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = json!({
        "notify_type": "payment", "status": "1", "syssn": syssn, "out_trade_no": "N1",
        "txamt": "1500", "txcurrcd": "HKD", "pay_type": "800101", "respcd": "0000",
        "txdtm": "2026-11-30 10:00:00",
    })
    .to_string()
    .into_bytes();
    let sign = qfpay_sign(&body, DEV_QFPAY_CLIENT_KEY);
    let path = "/notify/qfpay/hk";

    let wrong = qfpay_sign(&body, "WRONGKEY00000000000000000000000");
    let cut = body[..body.len() - 5].to_vec();
    let cut_sign = qfpay_sign(&cut, DEV_QFPAY_CLIENT_KEY);
    let cases: Vec<QfpayCase> = vec![
        (
            "wrong key",
            path,
            vec![("X-QF-SIGN", &wrong)],
            body.clone(),
            401,
        ),
        ("no signature", path, vec![], body.clone(), 401),
        (
            "truncated body",
            path,
            vec![("X-QF-SIGN", &sign)],
            cut.clone(),
            401,
        ),
        (
            "truncated and re-signed",
            path,
            vec![("X-QF-SIGN", &cut_sign)],
            cut,
            400,
        ),
        (
            "unknown account",
            "/notify/qfpay/nope",
            vec![("X-QF-SIGN", &sign)],
            body.clone(),
            404,
        ),
        (
            "an ECPay account",
            "/notify/qfpay/tw",
            vec![("X-QF-SIGN", &sign)],
            body.clone(),
            404,
        ),
    ];
    for (what, path, headers, body, want) in cases {
        let (status, text) = svc.notify(path, &headers, body).await;
        assert_eq!(status, want, "{what}: {text}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    unchanged(&svc, "hk", "N1", DEV_QFPAY_APP_CODE).await;

    let (status, text) = svc
        .notify(path, &[("X-QF-SIGN", &sign)], body.clone())
        .await;
    assert_eq!((status, text.as_str()), (200, "SUCCESS"));
    let took = svc
        .wait_state("hk", "N1", "succeeded", Duration::from_secs(3))
        .await;
    assert!(
        took < Duration::from_millis(1500),
        "settled only after {took:?}"
    );
    let asked = svc.sandbox.stats().lookups(DEV_QFPAY_APP_CODE, "N1");
    assert_eq!(asked, 1, "settled by one query");

    // A replay: taken, harmless, no further query and no further event.
    let events = event_kinds(&svc.payment("hk", "N1").await);
    let (status, text) = svc.notify(path, &[("X-QF-SIGN", &sign)], body).await;
    assert_eq!((status, text.as_str()), (200, "SUCCESS"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = svc.payment("hk", "N1").await;
    assert_eq!(p["state"], "succeeded");
    assert_eq!(event_kinds(&p), events);
    assert_eq!(
        event_kinds(&p).iter().filter(|k| *k == "notified").count(),
        1
    );
    assert_eq!(svc.sandbox.stats().lookups(DEV_QFPAY_APP_CODE, "N1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_ecpay_notification_settles_the_order_at_once_and_forgeries_change_nothing() {
    let (sandbox, dir, port) = prepare("").await;
    // Two minutes old: without the notification ECPay is not asked before ten.
    sandbox
        .state()
        .insert_ecpay(
            DEV_ECPAY_MERCHANT_ID,
            EcpayOrder::new("EC1", 900)
                .at(Utc::now() - chrono::Duration::minutes(2))
                .trade_no("2611300000000001"),
        )
        .unwrap();
    import(
        dir.path(),
        json!({"account": "tw", "out_trade_no": "EC1", "amount": 900, "currency": "TWD",
               "created_at": rfc3339(2)}),
    );
    schedule_later(dir.path(), "EC1", 3600).await;
    let svc = start(sandbox, dir, port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let data = |merchant: &str| {
        json!({
            "RtnCode": 1, "RtnMsg": "Success", "MerchantID": merchant,
            "OrderInfo": {"MerchantTradeNo": "EC1", "TradeNo": "2611300000000001",
                          "TradeAmt": 900, "TradeDate": "2026/11/30 10:00:00",
                          "PaymentType": "Credit", "TradeStatus": "1"},
        })
    };
    let ours = data(DEV_ECPAY_MERCHANT_ID);
    let good = ecpay_envelope(
        DEV_ECPAY_MERCHANT_ID,
        &ours,
        DEV_ECPAY_HASH_KEY,
        DEV_ECPAY_HASH_IV,
    );
    let path = "/notify/ecpay/tw";
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "another key",
            path,
            ecpay_envelope(
                DEV_ECPAY_MERCHANT_ID,
                &ours,
                "0123456789abcdef",
                DEV_ECPAY_HASH_IV,
            ),
            401,
        ),
        (
            "another merchant outside",
            path,
            ecpay_envelope("2000132", &ours, DEV_ECPAY_HASH_KEY, DEV_ECPAY_HASH_IV),
            401,
        ),
        (
            "another merchant inside",
            path,
            ecpay_envelope(
                DEV_ECPAY_MERCHANT_ID,
                &data("2000132"),
                DEV_ECPAY_HASH_KEY,
                DEV_ECPAY_HASH_IV,
            ),
            401,
        ),
        ("truncated", path, good[..good.len() - 20].to_vec(), 400),
        ("unknown account", "/notify/ecpay/nope", good.clone(), 404),
        ("a QFPay account", "/notify/ecpay/hk", good.clone(), 404),
    ];
    for (what, path, body, want) in cases {
        let (status, text) = svc
            .notify(path, &[("content-type", "application/json")], body)
            .await;
        assert_eq!(status, want, "{what}: {text}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    unchanged(&svc, "tw", "EC1", DEV_ECPAY_MERCHANT_ID).await;

    let (status, text) = svc
        .notify(path, &[("content-type", "application/json")], good.clone())
        .await;
    assert_eq!((status, text.as_str()), (200, "1|OK"));
    let took = svc
        .wait_state("tw", "EC1", "succeeded", Duration::from_secs(4))
        .await;
    assert!(
        took < Duration::from_millis(2500),
        "settled only after {took:?}"
    );
    assert_eq!(svc.sandbox.stats().lookups(DEV_ECPAY_MERCHANT_ID, "EC1"), 1);

    let events = event_kinds(&svc.payment("tw", "EC1").await);
    let (status, _) = svc
        .notify(path, &[("content-type", "application/json")], good)
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(event_kinds(&svc.payment("tw", "EC1").await), events);
    assert_eq!(svc.sandbox.stats().lookups(DEV_ECPAY_MERCHANT_ID, "EC1"), 1);
}
