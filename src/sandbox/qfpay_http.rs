//! The QFPay endpoints on the wire (docs/PROTOCOLS.md §Q1.2–1.5): form parameters from the body (or the
//! query string of a GET), `X-QF-APPCODE` + `X-QF-SIGN` verified with the client's own signing
//! code (`1108` on mismatch, answered unsigned), and every other answer signed with
//! `X-QF-SIGN` = MD5(raw body + key) (docs/PROTOCOLS.md §Q1.5, verified 2018 vector).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::Value;

use super::faults::FaultPlan;
use super::qfpay_book::{MerchantBook, error_body};
use super::qfpay_rules;
use super::server::App;
use super::stats::{CallKind, Mishap};
use crate::gateway::qfpay::sign::{self, SignType};

/// `1108`: signature error (also an unknown app code: the key cannot be found).
pub const SIGNATURE_ERROR: &str = "1108";

/// The request's form parameters, sorted by name (byte order) as they are signed.
fn params(method: &Method, uri: &Uri, body: &[u8]) -> BTreeMap<String, String> {
    let raw: &[u8] = if method == Method::GET {
        uri.query().unwrap_or_default().as_bytes()
    } else {
        body
    };
    form_urlencoded::parse(raw).into_owned().collect()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether `X-QF-SIGN` is the signature of these parameters under `key` (hex case ignored).
fn verify(headers: &HeaderMap, params: &BTreeMap<String, String>, key: &SecretString) -> bool {
    let sign_type = match header_text(headers, "x-qf-signtype") {
        Some(t) if t.eq_ignore_ascii_case("sha256") => SignType::Sha256,
        _ => SignType::Md5,
    };
    let pairs: Vec<(&str, String)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    header_text(headers, "x-qf-sign")
        .is_some_and(|given| sign::sign_request(&pairs, key, sign_type).eq_ignore_ascii_case(given))
}

/// Serialises, applies the malformed / bad-signature faults, and signs (when a key is known).
fn answer(app: &App, body: &Value, key: Option<&SecretString>, plan: FaultPlan) -> Response {
    let mut text = body.to_string();
    if plan.malformed {
        app.stats.mishap(Mishap::Malformed);
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        text.clone(),
    )
        .into_response();
    if let Some(key) = key {
        let signed_with = if plan.bad_signature {
            app.stats.mishap(Mishap::BadSignature);
            SecretString::from("not-the-client-key".to_string())
        } else {
            key.clone()
        };
        let sig = sign::response_signature(text.as_bytes(), &signed_with, SignType::Md5);
        if let Ok(v) = HeaderValue::from_str(&sig) {
            response.headers_mut().insert("x-qf-sign", v);
        }
    }
    response
}

/// The shared path of every QFPay endpoint: merchant, gate, signature, then `op`.
async fn serve(
    app: Arc<App>,
    kind: impl FnOnce(&BTreeMap<String, String>) -> CallKind,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    op: impl FnOnce(&App, &str, &BTreeMap<String, String>) -> Value,
) -> Response {
    let params = params(&method, &uri, &body);
    let app_code = header_text(&headers, "x-qf-appcode")
        .unwrap_or_default()
        .to_string();
    let kind = kind(&params);
    let plan = match app.gate(kind, &app_code).await {
        Ok(plan) => plan,
        Err(response) => return response,
    };
    let key = app.qfpay_keys.get(&app_code);
    match key {
        Some(k) if verify(&headers, &params, k) => {
            let out = match qfpay_rules::content_type(&method, &headers) {
                Some(r) => refused(&app, r),
                None => op(&app, &app_code, &params),
            };
            if kind == CallKind::QfpayQueryWindow {
                page_served(&app, &app_code, &params, &out, plan);
            }
            answer(&app, &out, key, plan)
        }
        _ => {
            // Unsigned: the caller evidently does not hold the key on file, and an answer it
            // cannot verify would hide the 1108 behind a signature error.
            app.stats.mishap(Mishap::SignatureRejected);
            let body = error_body(SIGNATURE_ERROR, "签名错误 signature error");
            answer(&app, &body, None, plan)
        }
    }
}

/// Counts a sweep page (a query by time window only) that reaches the client readable: answered
/// with records (`respcd` 0000), not cut in half nor wrongly signed by an injected fault. A page
/// the client could not read may be asked again without that being a repeat.
fn page_served(
    app: &App,
    code: &str,
    params: &BTreeMap<String, String>,
    out: &Value,
    plan: FaultPlan,
) {
    if plan.malformed || plan.bad_signature || out["respcd"] != super::scenario::PAID {
        return;
    }
    let get = |k: &str| params.get(k).map_or("", |v| v.trim());
    let page = get("page").parse().unwrap_or(1);
    app.stats
        .page_served(code, get("start_time"), get("end_time"), page);
}

/// The answer to a request that breaks a documented rule, counted under the rule's name.
fn refused(app: &App, r: qfpay_rules::Refusal) -> Value {
    app.stats.refused(r.rule);
    error_body(r.code, r.message)
}

fn fixed(kind: CallKind) -> impl FnOnce(&BTreeMap<String, String>) -> CallKind {
    move |_| kind
}

/// Runs a state-changing operation on the merchant's book at the sandbox clock's now.
fn on_book(
    app: &App,
    code: &str,
    op: impl FnOnce(&mut MerchantBook, DateTime<Utc>, &AtomicU64) -> Value,
) -> Value {
    let now = app.state.clock().now();
    let seq = &app.state.shared.seq;
    app.state
        .with_qfpay_mut(code, |b| op(b, now, seq))
        .unwrap_or_else(|| error_body(SIGNATURE_ERROR, "unknown app code"))
}

pub(crate) async fn payment(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        app,
        fixed(CallKind::QfpayPayment),
        method,
        uri,
        headers,
        body,
        |app, code, p| match qfpay_rules::payment(p) {
            Some(r) => refused(app, r),
            None => on_book(app, code, |b, now, seq| b.create_payment(p, now, seq)),
        },
    )
    .await
}

pub(crate) async fn query(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = |p: &BTreeMap<String, String>| {
        let has = |k: &str| p.get(k).is_some_and(|v| !v.trim().is_empty());
        if has("syssn") || has("out_trade_no") {
            CallKind::QfpayQueryById
        } else {
            CallKind::QfpayQueryWindow
        }
    };
    if let Some(month) = app.faults().fail_id_lookups_in_month {
        let p = params(&method, &uri, &body);
        let starts_in = p
            .get("start_time")
            .is_some_and(|t| t.trim().starts_with(month.as_str()));
        if kind(&p) == CallKind::QfpayQueryById && starts_in {
            let app_code = header_text(&headers, "x-qf-appcode").unwrap_or_default();
            if let Err(refused) = app.gate(CallKind::QfpayQueryById, app_code).await {
                return refused;
            }
            app.stats.mishap(Mishap::ServerError);
            return (StatusCode::SERVICE_UNAVAILABLE, "<html>503</html>").into_response();
        }
    }
    serve(app, kind, method, uri, headers, body, |app, code, p| {
        let now = app.state.clock().now();
        for list in ["syssn", "out_trade_no"] {
            if let Some(ids) = p.get(list) {
                let ids = ids.split(',').map(str::trim).filter(|s| !s.is_empty());
                app.stats.looked_up(code, ids);
            }
        }
        let (body, n) = app
            .state
            .with_qfpay(code, |b| b.query(p, now))
            .unwrap_or_else(|| (error_body(SIGNATURE_ERROR, "unknown app code"), 0));
        app.stats.records_returned(n);
        body
    })
    .await
}

async fn cancel(
    app: Arc<App>,
    close: bool,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = if close {
        CallKind::QfpayClose
    } else {
        CallKind::QfpayReversal
    };
    let hold = app.faults().cancel_answer_hold;
    let held = app.clone();
    let response = serve(
        app,
        fixed(kind),
        method,
        uri,
        headers,
        body,
        |app, code, p| on_book(app, code, |b, now, seq| b.cancel(p, close, now, seq)),
    )
    .await;
    if !hold.is_zero() {
        // Applied already: only the answer is late (lost, for a client that gave up).
        held.stats.mishap(Mishap::Timeout);
        held.hold(hold).await;
    }
    response
}

pub(crate) async fn reversal(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    cancel(app, false, method, uri, headers, body).await
}

pub(crate) async fn close(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    cancel(app, true, method, uri, headers, body).await
}

pub(crate) async fn refund(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(
        app,
        fixed(CallKind::QfpayRefund),
        method,
        uri,
        headers,
        body,
        |app, code, p| on_book(app, code, |b, now, seq| b.refund(p, now, seq)),
    )
    .await
}
