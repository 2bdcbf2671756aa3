//! `POST /notify/ecpay/{account}`: ECPay's payment result notification (站內付 2.0
//! `ReturnURL`; docs/PROTOCOLS.md §E notifications). The body is the response envelope
//! (`MerchantID`, `RpHeader`, `TransCode`, `TransMsg`, `Data`) as JSON, or the same JSON in a
//! form field `ResultData` (`OrderResultURL`). ECPay signs nothing: a notification is
//! authenticated by its `Data` decrypting with the merchant's HashKey/HashIV into JSON that
//! names the merchant. AES-CBC has no integrity check, so this is weaker than a signature,
//! which is one more reason a notification is never evidence. Answered `1|OK` (ECPay retries
//! otherwise; `1|OK` changes nothing at ECPay).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ApiContext;
use super::notify::{Notice, handle};
use crate::config::{Account, EcpayAccount};
use crate::domain::RecordKind;
use crate::gateway::ecpay::fields;
use crate::gateway::ecpay::{DataKey, ResponseEnvelope};

fn refuse(account: &str, status: StatusCode, why: &str) -> Response {
    tracing::warn!(account, why, "ECPay notification refused");
    (status, format!("0|{why}\n")).into_response()
}

/// The envelope's JSON text: the body itself, or its `ResultData` form field.
fn envelope_text(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    if text.trim_start().starts_with('{') {
        return Ok(text.to_string());
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "ResultData")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| "the body is neither JSON nor a ResultData form".to_string())
}

/// Whether `id` is this merchant (or its platform, for a platform partner's sub-merchant).
fn ours(a: &EcpayAccount, id: &str) -> bool {
    id == a.merchant_id || a.platform_id.as_deref() == Some(id)
}

/// Opens and checks a notification; the error is the status and why.
fn notice(a: &EcpayAccount, body: &[u8]) -> Result<Notice, (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    let unauthenticated = |why: String| (StatusCode::UNAUTHORIZED, why);
    let envelope = ResponseEnvelope::parse(&envelope_text(body).map_err(bad)?)
        .map_err(|e| bad(e.to_string()))?;
    if !ours(a, &envelope.merchant_id) {
        return Err(unauthenticated(format!(
            "MerchantID {:?} is not this account's merchant",
            envelope.merchant_id
        )));
    }
    let key = DataKey::new(
        secrecy::ExposeSecret::expose_secret(&a.hash_key).as_bytes(),
        secrecy::ExposeSecret::expose_secret(&a.hash_iv).as_bytes(),
    )
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let data = match envelope.open(&key) {
        Ok(d) => d,
        Err(crate::gateway::GatewayError::Account { code, .. }) => {
            return Err(bad(format!("the envelope says {code}")));
        }
        Err(_) => {
            return Err(unauthenticated(
                "Data does not decrypt with the merchant's key into JSON".into(),
            ));
        }
    };
    let obj = data
        .as_object()
        .ok_or_else(|| unauthenticated("Data is not a JSON object".into()))?;
    if let Some(inner) = fields::text(obj, "MerchantID")
        && !inner.is_empty()
        && !ours(a, &inner)
    {
        return Err(unauthenticated(format!(
            "Data names merchant {inner:?}, not this account's"
        )));
    }
    let order =
        fields::object(obj, "OrderInfo").ok_or_else(|| bad("Data has no OrderInfo".into()))?;
    let out_trade_no = fields::text(order, "MerchantTradeNo")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("OrderInfo has no MerchantTradeNo".into()))?;
    let trade_no = fields::text(order, "TradeNo").filter(|s| !s.is_empty());
    let mut evidence = Map::new();
    for k in ["RtnCode", "RtnMsg"] {
        if let Some(v) = obj.get(k) {
            evidence.insert(k.into(), v.clone());
        }
    }
    for k in [
        "MerchantTradeNo",
        "TradeNo",
        "TradeAmt",
        "TradeDate",
        "PaymentType",
        "PaymentDate",
        "TradeStatus",
    ] {
        if let Some(v) = order.get(k) {
            evidence.insert(k.into(), v.clone());
        }
    }
    // ECPay writes `yyyy/MM/dd HH:mm:ss` (Taiwan time); intake reads the same with dashes.
    let created_at = fields::text(order, "TradeDate").map(|d| d.replace('/', "-"));
    let registration = [
        ("account", json!(a.name.as_str())),
        ("out_trade_no", json!(out_trade_no)),
        ("trade_no", json!(trade_no)),
        ("amount", json!(fields::integer(order, "TradeAmt"))),
        ("currency", json!("TWD")),
        ("created_at", json!(created_at)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(Notice {
        account: a.name.to_string(),
        kind: RecordKind::Payment,
        out_trade_no,
        provider_ref: trade_no,
        // RtnCode 1: paid. Anything else is a failure the scheduled queries find.
        claims_paid: fields::integer(obj, "RtnCode") == Some(1),
        original: None,
        evidence: Value::Object(evidence),
        registration: Some(registration),
    })
}

/// ECPay's notification for `account`.
#[utoipa::path(post, path = "/notify/ecpay/{account}", tag = "notifications",
    params(("account" = String, Path, description = "The ECPay account it is for")),
    request_body(content = Object, description = "ECPay's envelope JSON (or a ResultData form field holding it)"),
    responses(
        (status = 200, description = "Taken (`1|OK`): the order is checked now", body = String, content_type = "text/html"),
        (status = 400, description = "Malformed (`0|reason`)", body = String, content_type = "text/html"),
        (status = 401, description = "Not this merchant's, or Data does not decrypt (`0|reason`)", body = String, content_type = "text/html"),
        (status = 404, description = "No such ECPay account", body = String, content_type = "text/html"),
    ))]
pub async fn ecpay(
    State(ctx): State<Arc<ApiContext>>,
    Path(account): Path<String>,
    body: Bytes,
) -> Response {
    let Some(Account::Ecpay(a)) = ctx.settings.account(&account) else {
        return refuse(&account, StatusCode::NOT_FOUND, "no such ECPay account");
    };
    let notice = match notice(a, &body) {
        Ok(n) => n,
        Err((status, why)) => return refuse(&account, status, &why),
    };
    match handle(&ctx, notice).await {
        Ok(outcome) => {
            tracing::info!(account, ?outcome, "ECPay notification taken");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "1|OK",
            )
                .into_response()
        }
        Err(e) => super::problem::Problem::ledger(&e).into_response(),
    }
}
