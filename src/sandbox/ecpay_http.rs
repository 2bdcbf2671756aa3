//! The ECPay `ecpayment` endpoints on the wire (ecpay.md §1): the JSON envelope, the
//! `RqHeader.Timestamp` window, AES `Data` both ways with the adapter's own crypto, and
//! `TransCode` 1 only when the envelope was accepted.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
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
/// `Timestamp`, `Data` that does not decrypt. ECPay documents only "not 1" (ecpay.md §1.3);
/// examples show 0 and 999, and `TransMsg` says which.
pub const TRANS_REFUSED: i64 = 999;

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

async fn serve(app: Arc<App>, kind: CallKind, body: Bytes) -> Response {
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
    if (now_secs - envelope.rq_header.timestamp).abs() > window {
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

pub(crate) async fn credit_detail(State(app): State<Arc<App>>, body: Bytes) -> Response {
    serve(app, CallKind::EcpayCreditDetail, body).await
}

pub(crate) async fn cashier(State(app): State<Arc<App>>, body: Bytes) -> Response {
    serve(app, CallKind::EcpayCashier, body).await
}
