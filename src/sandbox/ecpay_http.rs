//! The ECPay `ecpayment` endpoints on the wire (docs/PROTOCOLS.md §E1.1–E1.4): the JSON envelope, the
//! `RqHeader.Timestamp` window, AES `Data` both ways with the adapter's own crypto, and
//! `TransCode` 1 only when the envelope was accepted.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::faults::FaultPlan;
use super::server::App;
use super::stats::{CallKind, Mishap};
use crate::gateway::ecpay::envelope::RpHeader;
use crate::gateway::ecpay::{
    DataKey, RequestEnvelope, ResponseEnvelope, decrypt_json, encrypt_json,
};

/// `TransCode` of every refused envelope: unreadable JSON, unknown outer `MerchantID`, stale
/// `Timestamp`, `Data` that does not decrypt. ECPay documents only "not 1" (docs/PROTOCOLS.md §E1.3);
/// examples show 0 and 999, and `TransMsg` says which.
pub const TRANS_REFUSED: i64 = 999;

/// How far ahead of the gateway's clock a `RqHeader.Timestamp` may be. The documents give only
/// the 10 minutes a request may be late (seed 003, docs/PROTOCOLS.md §E1.2); the official Node SDK sends
/// `now + 120 s`, so that much is accepted, and no more is shown to be.
pub const TIMESTAMP_FUTURE_LEEWAY: Duration = Duration::from_secs(120);

/// `Content-Type: application/json` (seed 003, docs/PROTOCOLS.md §E1.1), parameters such as `charset`
/// allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The `Data` rules (seed 003 and docs/PROTOCOLS.md §E1.1, §E3.1): `MerchantTradeNo` is required,
/// String(20); a `PlatformID`, when sent, must equal the outer `MerchantID`. `Err` names the
/// rule broken (the answer is ECPay's "資料檢核失敗" → `RtnMsg` `error`).
fn check_data(data: &Value, outer: &str) -> Result<(), &'static str> {
    match data.get("MerchantTradeNo").and_then(Value::as_str) {
        Some(no) if !no.is_empty() && no.chars().count() <= 20 => {}
        _ => return Err("ecpay_merchant_trade_no"),
    }
    match data.get("PlatformID").and_then(Value::as_str) {
        Some(p) if !p.is_empty() && p != outer => Err("ecpay_platform_id"),
        _ => Ok(()),
    }
}

fn json_response(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

fn refused(merchant_id: &str, now: i64, message: &str) -> Response {
    json_response(
        ResponseEnvelope {
            merchant_id: merchant_id.to_string(),
            rp_header: RpHeader { timestamp: now },
            trans_code: TRANS_REFUSED,
            trans_msg: message.to_string(),
            data: String::new(),
        }
        .to_json(),
    )
}

fn answer(
    app: &App,
    merchant_id: &str,
    now: i64,
    data: &Value,
    key: &DataKey,
    plan: FaultPlan,
) -> Response {
    let data = if plan.bad_signature {
        app.stats.mishap(Mishap::BadSignature);
        let wrong = DataKey::new(b"0123456789abcdef", b"fedcba9876543210")
            .expect("16-byte literals are a valid key");
        encrypt_json(data, &wrong)
    } else {
        encrypt_json(data, key)
    };
    let mut text = ResponseEnvelope {
        merchant_id: merchant_id.to_string(),
        rp_header: RpHeader { timestamp: now },
        trans_code: 1,
        trans_msg: "Success".to_string(),
        data,
    }
    .to_json();
    if plan.malformed {
        app.stats.mishap(Mishap::Malformed);
        text.truncate(text.len() / 2); // the envelope is ASCII
    }
    json_response(text)
}

async fn serve(app: Arc<App>, kind: CallKind, headers: HeaderMap, body: Bytes) -> Response {
    let now = app.state.clock().now();
    let now_secs = now.timestamp();
    let envelope = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| RequestEnvelope::parse(text).ok());
    let merchant = envelope
        .as_ref()
        .map(|e| e.merchant_id.clone())
        .unwrap_or_default();
    let plan = match app.gate(kind, &merchant).await {
        Ok(plan) => plan,
        Err(response) => return response,
    };
    if !is_json(&headers) {
        app.stats.refused("ecpay_content_type");
        return refused(
            &merchant,
            now_secs,
            "Parameter Error: Content-Type must be application/json",
        );
    }
    let Some(envelope) = envelope else {
        return refused(
            "",
            now_secs,
            "Parameter Error: the body is not the JSON envelope",
        );
    };
    let Some(key) = app.ecpay_keys.get(&merchant) else {
        return refused(&merchant, now_secs, "MerchantID Error: no such merchant");
    };
    let window = i64::try_from(app.timestamp_window.as_secs()).unwrap_or(i64::MAX);
    let leeway = i64::try_from(TIMESTAMP_FUTURE_LEEWAY.as_secs()).unwrap_or(0);
    let late = now_secs - envelope.rq_header.timestamp;
    if late > window || -late > leeway {
        app.stats.mishap(Mishap::StaleTimestamp);
        return refused(
            &merchant,
            now_secs,
            "Timestamp Error: the request has expired",
        );
    }
    let Ok(data) = decrypt_json(&envelope.data, key) else {
        return refused(&merchant, now_secs, "Data Error: Data does not decrypt");
    };
    if let Err(rule) = check_data(&data, &merchant) {
        app.stats.refused(rule);
        let out = match kind {
            CallKind::EcpayCashier => json!({"RtnCode": 0, "RtnMsg": "error"}),
            _ => json!({"RtnMsg": "error", "RtnValue": {}}),
        };
        return answer(&app, &merchant, now_secs, &out, key, plan);
    }
    if kind == CallKind::EcpayCreditDetail
        && data
            .get("TradeNo")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    {
        app.stats.trade_no_sent();
    }
    // The merchant inside Data (a platform's sub-merchant may differ from the outer one).
    let inner = data
        .get("MerchantID")
        .and_then(Value::as_str)
        .unwrap_or(&merchant)
        .to_string();
    if let Some(no) = data.get("MerchantTradeNo").and_then(Value::as_str) {
        app.stats.looked_up(&inner, [no]);
    }
    let out = app.state.with_ecpay(&inner, |book| match kind {
        CallKind::EcpayCashier => book.cashier(&inner, &data, now),
        _ => book.credit_detail(&data, now),
    });
    let out = out.unwrap_or_else(|| match kind {
        CallKind::EcpayCashier => json!({"RtnCode": 0, "RtnMsg": "error_Stop"}),
        _ => json!({"RtnMsg": "error_Stop", "RtnValue": {}}),
    });
    answer(&app, &merchant, now_secs, &out, key, plan)
}

pub(crate) async fn credit_detail(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(app, CallKind::EcpayCreditDetail, headers, body).await
}

pub(crate) async fn cashier(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(app, CallKind::EcpayCashier, headers, body).await
}
