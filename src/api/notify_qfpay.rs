//! `POST /notify/qfpay/{account}`: QFPay's asynchronous notification (docs/PROTOCOLS.md
//! §Q5.2). Authenticated by `X-QF-SIGN` = upper(hex(MD5(raw body + the account's key))) over
//! the exact bytes received (re-serialised JSON would not match); answered `SUCCESS` with 200,
//! which stops QFPay's retries. QFPay notifies successful payments and refunds only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::ApiContext;
use super::notify::{Notice, handle};
use crate::config::{Account, QfpayAccount};
use crate::domain::RecordKind;
use crate::gateway::qfpay::SignType;
use crate::gateway::qfpay::sign::response_signature;

/// A refusal: the status, and the reason logged and sent back as plain text.
fn refuse(account: &str, status: StatusCode, why: &str) -> Response {
    tracing::warn!(account, why, "QFPay notification refused");
    (status, format!("{why}\n")).into_response()
}

/// Whether `given` is the body's signature with the account's key: MD5, or SHA-256 when the
/// account signs with it or the notification says so (QFPay does not document which a
/// SHA-256 merchant receives). Compared in constant time.
fn signed(body: &[u8], given: &str, sign_type_header: Option<&str>, a: &QfpayAccount) -> bool {
    let sha = a.sign_type == crate::config::SignType::Sha256
        || sign_type_header.is_some_and(|t| t.trim().eq_ignore_ascii_case("sha256"));
    let given = given.trim().to_ascii_uppercase();
    let mut types = vec![SignType::Md5];
    if sha {
        types.push(SignType::Sha256);
    }
    types.into_iter().any(|t| {
        let expected = response_signature(body, &a.client_key, t).to_ascii_uppercase();
        expected.as_bytes().ct_eq(given.as_bytes()).into()
    })
}

fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The notice a signed body gives, or the status and why it is refused.
fn notice(account: &QfpayAccount, body: &[u8]) -> Result<Notice, (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("the body is not a JSON object".into()))?;
    // An agent's sub-merchants share one URL and one key: an account with an `mchid` takes
    // only notifications that name it.
    if let Some(ours) = &account.mchid
        && text(obj, "mchid").as_ref() != Some(ours)
    {
        return Err((
            StatusCode::UNAUTHORIZED,
            format!(
                "mchid {:?} is not this account's",
                text(obj, "mchid").unwrap_or_default()
            ),
        ));
    }
    let notify_type = text(obj, "notify_type");
    let kind = match notify_type.as_deref() {
        Some("refund") => RecordKind::Refund,
        _ => RecordKind::Payment,
    };
    // QFPay notifies successful payments and refunds only (`status` "1"); S6 also lists
    // `close`, an Odoo test mocks `cancel`: those, and anything new, change nothing here.
    let claims_paid = matches!(notify_type.as_deref(), Some("payment" | "refund") | None)
        && text(obj, "status").is_none_or(|s| s == "1");
    let out_trade_no =
        text(obj, "out_trade_no").ok_or_else(|| bad("out_trade_no is missing".into()))?;
    let syssn = text(obj, "syssn");
    let kept = [
        "notify_type",
        "status",
        "mchid",
        "syssn",
        "out_trade_no",
        "orig_syssn",
        "orig_out_trade_no",
        "pay_type",
        "txamt",
        "txcurrcd",
        "txdtm",
        "sysdtm",
        "respcd",
        "cancel",
    ];
    let evidence: Map<String, Value> = kept
        .iter()
        .filter_map(|k| obj.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let registration = (kind == RecordKind::Payment).then(|| {
        let amount = text(obj, "txamt")
            .and_then(|t| t.parse::<i64>().ok())
            .map_or(Value::Null, |n| json!(n));
        [
            ("account", json!(account.name.as_str())),
            ("out_trade_no", json!(out_trade_no)),
            ("syssn", json!(syssn)),
            ("pay_type", json!(text(obj, "pay_type"))),
            ("amount", amount),
            ("currency", json!(text(obj, "txcurrcd"))),
            ("created_at", json!(text(obj, "txdtm"))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    });
    let original = (kind == RecordKind::Refund)
        .then(|| (text(obj, "orig_out_trade_no"), text(obj, "orig_syssn")));
    Ok(Notice {
        account: account.name.to_string(),
        kind,
        out_trade_no,
        provider_ref: syssn,
        claims_paid,
        original,
        evidence: Value::Object(evidence),
        registration,
    })
}

/// QFPay's notification for `account`.
#[utoipa::path(post, path = "/notify/qfpay/{account}", tag = "notifications",
    params(("account" = String, Path, description = "The QFPay account it is for")),
    request_body(content = Object, description = "QFPay's notification JSON, signed in X-QF-SIGN"),
    responses(
        (status = 200, description = "Taken (`SUCCESS`): the payment is checked now", body = String, content_type = "text/plain"),
        (status = 400, description = "Malformed", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong X-QF-SIGN, or another mchid's", body = String, content_type = "text/plain"),
        (status = 404, description = "No such QFPay account", body = String, content_type = "text/plain"),
    ))]
pub async fn qfpay(
    State(ctx): State<Arc<ApiContext>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(Account::Qfpay(a)) = ctx.settings.account(&account) else {
        return refuse(&account, StatusCode::NOT_FOUND, "no such QFPay account");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(given) = header("x-qf-sign") else {
        return refuse(&account, StatusCode::UNAUTHORIZED, "X-QF-SIGN is missing");
    };
    if !signed(&body, given, header("x-qf-signtype"), a) {
        return refuse(
            &account,
            StatusCode::UNAUTHORIZED,
            "X-QF-SIGN does not match the body",
        );
    }
    let notice = match notice(a, &body) {
        Ok(n) => n,
        Err((status, why)) => return refuse(&account, status, &why),
    };
    match handle(&ctx, notice).await {
        Ok(outcome) => {
            tracing::info!(account, ?outcome, "QFPay notification taken");
            (StatusCode::OK, "SUCCESS").into_response()
        }
        Err(e) => super::problem::Problem::ledger(&e).into_response(),
    }
}
