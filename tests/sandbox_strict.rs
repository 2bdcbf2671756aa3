//! Issue 12 item 6: the sandbox refuses what the protocol references say the gateways refuse,
//! with their codes (docs/SANDBOX.md lists each rule and its source), by hand-made requests
//! the adapters would never send.

mod sandbox_support;

use md5::{Digest, Md5};
use payrecon::gateway::ecpay::{
    DataKey, RequestEnvelope, ResponseEnvelope, decrypt_json, encrypt_json,
};
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, EcpayOrder, QfpayPayment, QfpayTimeline, TRANS_REFUSED,
};
use sandbox_support::*;
use serde_json::{Value, json};

/// A signed QFPay request with the given Content-Type; the answer's JSON.
async fn qfpay(
    sandbox: &payrecon::sandbox::SandboxHandle,
    path: &str,
    content_type: &str,
    params: &[(&str, &str)],
) -> Value {
    let mut sorted = params.to_vec();
    sorted.sort();
    let signed: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let sign = hex::encode_upper(Md5::digest(
        format!("{}{DEV_QFPAY_CLIENT_KEY}", signed.join("&")).as_bytes(),
    ));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(sorted)
        .finish();
    let url = format!(
        "{}{path}",
        sandbox.base_url().as_str().trim_end_matches('/')
    );
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("X-QF-APPCODE", DEV_QFPAY_APP_CODE)
        .header("X-QF-SIGN", sign)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Request parameters, the code expected, the rule's name in the stats.
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);

fn payment<'a>(pay_type: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("txamt", "1500"),
        ("txcurrcd", "HKD"),
        ("pay_type", pay_type),
        ("out_trade_no", "STRICT1"),
        ("txdtm", "2026-11-10 10:00:00"),
    ];
    for (k, v) in extra {
        p.retain(|(key, _)| key != k);
        p.push((k, v));
    }
    p
}

#[tokio::test]
async fn qfpay_refuses_what_its_documents_refuse_with_their_codes() {
    let sandbox = frozen_sandbox().await;
    let long_name = "x".repeat(300);
    let cases: Vec<Case> = vec![
        (payment("800108", &[]), "1104", "qfpay_auth_code"),
        (payment("999999", &[]), "1104", "qfpay_pay_type"),
        (
            payment("801512", &[("txcurrcd", "XXX")]),
            "1104",
            "qfpay_currency",
        ),
        (
            payment("801512", &[("expired_time", "999")]),
            "1104",
            "qfpay_expired_time",
        ),
        (
            payment("801512", &[("goods_name", long_name.as_str())]),
            "1104",
            "qfpay_goods_name",
        ),
    ];
    for (params, code, rule) in &cases {
        let answer = qfpay(&sandbox, "/trade/v1/payment", FORM, params).await;
        assert_eq!(answer["respcd"], *code, "{rule}: {answer}");
    }
    // The same valid request with a JSON Content-Type: malformed request.
    let answer = qfpay(
        &sandbox,
        "/trade/v1/payment",
        "application/json",
        &payment("801512", &[]),
    )
    .await;
    assert_eq!(answer["respcd"], "1103", "{answer}");
    // Well-formed: accepted (so the refusals above are about their one broken rule).
    let ok = qfpay(&sandbox, "/trade/v1/payment", FORM, &payment("801512", &[])).await;
    assert_eq!(ok["respcd"], "0000", "{ok}");
    let stats = sandbox.stats();
    for (_, _, rule) in &cases {
        assert_eq!(
            stats.refused.get(*rule),
            Some(&1),
            "{rule}: {:?}",
            stats.refused
        );
    }
    assert_eq!(stats.refused.get("qfpay_content_type"), Some(&1));

    // A reversal must name the original amount.
    sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("STUCK1", 1000, "HKD", "800108")
                .at(t0())
                .timeline(QfpayTimeline::never_completes()),
        )
        .unwrap();
    let reverse = |amount| {
        vec![
            ("out_trade_no", "STUCK1"),
            ("txamt", amount),
            ("txdtm", "2026-11-10 10:00:00"),
        ]
    };
    let wrong = qfpay(&sandbox, "/trade/v1/reversal", FORM, &reverse("999")).await;
    assert_eq!(wrong["respcd"], "1266", "{wrong}");
    let right = qfpay(&sandbox, "/trade/v1/reversal", FORM, &reverse("1000")).await;
    assert_eq!(right["respcd"], "0000", "{right}");
    sandbox.shutdown().await;
}

fn key() -> DataKey {
    DataKey::new(DEV_ECPAY_HASH_KEY.as_bytes(), DEV_ECPAY_HASH_IV.as_bytes()).unwrap()
}

/// An ECPay CreditDetail request: outer MerchantID, timestamp offset from the sandbox's now,
/// plaintext Data, Content-Type. The envelope answer and its decrypted Data (if any).
async fn ecpay(
    sandbox: &payrecon::sandbox::SandboxHandle,
    outer: &str,
    offset_secs: i64,
    data: Value,
    content_type: &str,
) -> (ResponseEnvelope, Option<Value>) {
    let ts = sandbox.clock().now().timestamp() + offset_secs;
    let envelope = RequestEnvelope::new(outer, ts, encrypt_json(&data, &key()));
    let url = format!(
        "{}/1.0.0/CreditDetail/QueryTrade",
        sandbox.base_url().as_str().trim_end_matches('/')
    );
    let text = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(envelope.to_json())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer = ResponseEnvelope::parse(&text).unwrap();
    let data = (answer.trans_code == 1).then(|| decrypt_json(&answer.data, &key()).unwrap());
    (answer, data)
}

#[tokio::test]
async fn ecpay_refuses_what_its_documents_refuse() {
    let sandbox = frozen_sandbox().await;
    let mid = DEV_ECPAY_MERCHANT_ID;
    sandbox
        .state()
        .insert_ecpay(mid, EcpayOrder::new("TWSTRICT1", 500).at(t0()))
        .unwrap();
    let good = json!({"PlatformID": "", "MerchantID": mid, "MerchantTradeNo": "TWSTRICT1"});
    let json_type = "application/json";

    let (env, data) = ecpay(&sandbox, mid, 0, good.clone(), json_type).await;
    assert_eq!(env.trans_code, 1);
    assert_eq!(
        data.unwrap()["RtnMsg"],
        "",
        "the well-formed query is answered"
    );

    let (env, _) = ecpay(&sandbox, mid, 0, good.clone(), "text/plain").await;
    assert_eq!(env.trans_code, TRANS_REFUSED, "Content-Type");
    assert!(env.trans_msg.contains("Content-Type"), "{}", env.trans_msg);

    // 9 minutes ahead: beyond the 2 minutes the official SDK's own +120 s shows.
    let (env, _) = ecpay(&sandbox, mid, 9 * 60, good.clone(), json_type).await;
    assert_eq!(env.trans_code, TRANS_REFUSED, "future Timestamp");
    let (env, _) = ecpay(&sandbox, mid, 120, good.clone(), json_type).await;
    assert_eq!(env.trans_code, 1, "+120 s is accepted");
    let (env, _) = ecpay(&sandbox, mid, -9 * 60, good.clone(), json_type).await;
    assert_eq!(
        env.trans_code, 1,
        "9 minutes late is inside the 10-minute window"
    );

    let other_platform =
        json!({"PlatformID": "3003008", "MerchantID": mid, "MerchantTradeNo": "TWSTRICT1"});
    let (_, data) = ecpay(&sandbox, mid, 0, other_platform, json_type).await;
    assert_eq!(
        data.unwrap()["RtnMsg"],
        "error",
        "PlatformID != outer MerchantID"
    );

    let no_order = json!({"PlatformID": "", "MerchantID": mid});
    let (_, data) = ecpay(&sandbox, mid, 0, no_order, json_type).await;
    assert_eq!(
        data.unwrap()["RtnMsg"],
        "error",
        "MerchantTradeNo is required"
    );

    // TradeNo does not hide a one-off order (it selects recurring authorizations).
    let with_trade_no = json!({"PlatformID": "", "MerchantID": mid,
        "MerchantTradeNo": "TWSTRICT1", "TradeNo": "9999999999999999"});
    let (_, data) = ecpay(&sandbox, mid, 0, with_trade_no, json_type).await;
    assert_eq!(data.unwrap()["RtnValue"]["Amount"], 500);
    let stats = sandbox.stats();
    assert_eq!(stats.ecpay_trade_no_sent, 1);
    assert_eq!(stats.refused.get("ecpay_platform_id"), Some(&1));
    assert_eq!(stats.refused.get("ecpay_merchant_trade_no"), Some(&1));
    assert_eq!(stats.refused.get("ecpay_content_type"), Some(&1));
    sandbox.shutdown().await;
}
