//! `/v1/payments`: registering payments (the `import` format and validation, as JSON), reading
//! them with their history, listing them in keyset pages, and asking for a check now.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiContext;
use super::extract::{ApiPath, ApiQuery};
use super::problem::{FieldProblem, Problem};
use crate::domain::{PaymentState, RecordKind};
use crate::intake::{BatchCheck, RecordFields};
use crate::ledger::{CheckRequested, EventRow, PaymentPage, PaymentRow};

/// One payment to register: the columns of `payrecon import` (docs/ARCHITECTURE.md §5).
/// Times are `YYYY-MM-DD hh:mm:ss` in the account's timezone or RFC 3339.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the body for OpenAPI only: the handler validates the raw fields
// as `import` does (a test keeps the two field lists equal).
pub struct IntakeRecord {
    /// A configured account name.
    account: String,
    /// `payment` (default) or `refund`.
    kind: Option<String>,
    /// The merchant's order number (QFPay out_trade_no, ECPay MerchantTradeNo).
    out_trade_no: String,
    /// QFPay's transaction number, when known.
    syssn: Option<String>,
    /// ECPay's TradeNo, when known.
    trade_no: Option<String>,
    /// QFPay pay type (e.g. 800008), when known.
    pay_type: Option<String>,
    /// Integer minor units (TWD and JPY have none).
    #[schema(value_type = i64)]
    amount: Value,
    currency: String,
    created_at: String,
    expires_at: Option<String>,
    /// Whole minutes (5–120) after `created_at`; not with `expires_at`.
    expired_time: Option<i64>,
}

/// What happened to one record of a registration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub index: usize,
    pub id: i64,
    /// `registered`, or `already_present` (same key and details: nothing written).
    pub status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegisterAnswer {
    pub payments: Vec<Registered>,
}

/// A payment with its whole history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentDetail {
    #[serde(flatten)]
    pub payment: PaymentRow,
    pub events: Vec<EventRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentList {
    pub payments: Vec<PaymentRow>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only payments in this state.
    pub state: Option<String>,
    /// Only payments of this account.
    pub account: Option<String>,
    /// Payments after this one (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KindQuery {
    /// `payment` (default) or `refund`.
    pub kind: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckAnswer {
    /// `due_now` (scheduled later before), or `already_due`.
    pub status: &'static str,
}

/// The records of a body: one object or an array of objects.
fn records(body: &[u8]) -> Result<Vec<RecordFields>, Problem> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(Problem::bad_request("the array holds no payment"));
        }
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(Problem::bad_request(
                "the body must be a payment object or an array of them",
            ));
        }
    };
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Value::Object(map) => out.push(map.into_iter().collect()),
            _ => problems.push(FieldProblem {
                index,
                field: "(record)".into(),
                reason: "is not a JSON object".into(),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Problem::invalid(problems))
    }
}

/// Registers one payment or a batch, all or nothing; idempotent on (account, kind,
/// out_trade_no). New payments are due at once and their lanes are woken.
#[utoipa::path(post, path = "/v1/payments", tag = "payments",
    request_body(content = Vec<IntakeRecord>, description = "One payment object or an array of them"),
    responses(
        (status = 201, description = "At least one payment was registered", body = RegisterAnswer),
        (status = 200, description = "All were already registered with the same details", body = RegisterAnswer),
        (status = 400, description = "Not JSON, or not objects", body = Problem),
        (status = 413, description = "The body is larger than `api.max_body`"),
        (status = 422, description = "Invalid records or conflicts with the ledger; nothing written", body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn register(State(ctx): State<Arc<ApiContext>>, body: Bytes) -> Response {
    let recs = match records(&body) {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let now = Utc::now();
    let mut problems = Vec::new();
    let mut batch = Vec::new();
    let mut check = BatchCheck::new(&ctx.settings, now, "record");
    for (index, rec) in recs.iter().enumerate() {
        match check.check(index, rec) {
            Ok(p) => batch.push(p),
            Err(errs) => problems.extend(errs.into_iter().map(|e| FieldProblem {
                index: e.line,
                field: e.field,
                reason: e.reason,
            })),
        }
    }
    if !problems.is_empty() {
        return Problem::invalid(problems).into_response();
    }
    let report = match ctx.ledger.register(&batch, now).await {
        Ok(r) => r,
        Err(e) => return Problem::ledger(&e).into_response(),
    };
    if !report.conflicts.is_empty() {
        let problems = report
            .conflicts
            .into_iter()
            .map(|(index, reason)| FieldProblem {
                index,
                field: "out_trade_no".into(),
                reason,
            })
            .collect();
        return Problem::invalid(problems).into_response();
    }
    let mut payments: Vec<Registered> = report
        .inserted
        .iter()
        .map(|&(index, id)| Registered {
            index,
            id,
            status: "registered",
        })
        .chain(
            report
                .already_present
                .iter()
                .map(|&(index, id)| Registered {
                    index,
                    id,
                    status: "already_present",
                }),
        )
        .collect();
    payments.sort_by_key(|r| r.index);
    let mut woken = std::collections::BTreeSet::new();
    for &(index, _) in &report.inserted {
        woken.insert(batch[index].account.as_str());
    }
    for account in woken {
        ctx.waker.wake(account);
    }
    tracing::info!(
        registered = report.inserted.len(),
        already_present = report.already_present.len(),
        "payments registered through the API"
    );
    let status = if report.inserted.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(RegisterAnswer { payments })).into_response()
}

async fn detail(ctx: &ApiContext, payment: PaymentRow) -> Response {
    match ctx.ledger.events(payment.id).await {
        Ok(events) => Json(PaymentDetail { payment, events }).into_response(),
        Err(e) => Problem::ledger(&e).into_response(),
    }
}

/// A payment by its ledger id, with its state, last gateway code, next check and history.
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = i64, Path, description = "Ledger id")),
    responses(
        (status = 200, body = PaymentDetail),
        (status = 404, description = "No payment has that id", body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn get_payment(
    State(ctx): State<Arc<ApiContext>>,
    ApiPath(id): ApiPath<i64>,
) -> Response {
    match ctx.ledger.payment(id).await {
        Ok(Some(p)) => detail(&ctx, p).await,
        Ok(None) => Problem::not_found(format!("no payment has id {id}")).into_response(),
        Err(e) => Problem::ledger(&e).into_response(),
    }
}

/// A payment by its account and order number (`kind=refund` for a refund's own number).
#[utoipa::path(get, path = "/v1/accounts/{account}/payments/{out_trade_no}", tag = "payments",
    params(
        ("account" = String, Path, description = "Account name"),
        ("out_trade_no" = String, Path, description = "The merchant's order number"),
        KindQuery,
    ),
    responses(
        (status = 200, body = PaymentDetail),
        (status = 400, description = "Unknown kind", body = Problem),
        (status = 404, description = "The account has no such order", body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn get_by_order(
    State(ctx): State<Arc<ApiContext>>,
    ApiPath((account, out_trade_no)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<KindQuery>,
) -> Response {
    let kind = match q.kind.as_deref().unwrap_or("payment").parse::<RecordKind>() {
        Ok(k) => k,
        Err(_) => return Problem::bad_request("kind: must be payment or refund").into_response(),
    };
    match ctx
        .ledger
        .find_notified(&account, kind, &out_trade_no, None)
        .await
    {
        Ok(Some(id)) => match ctx.ledger.payment(id).await {
            Ok(Some(p)) => detail(&ctx, p).await,
            Ok(None) => Problem::not_found("the payment is gone").into_response(),
            Err(e) => Problem::ledger(&e).into_response(),
        },
        Ok(None) => Problem::not_found(format!(
            "account {account} has no {} with order number {out_trade_no}",
            kind.as_str()
        ))
        .into_response(),
        Err(e) => Problem::ledger(&e).into_response(),
    }
}

/// Payments in the order of their creation (`created_at`, then id), a page at a time.
#[utoipa::path(get, path = "/v1/payments", tag = "payments",
    params(ListQuery),
    responses(
        (status = 200, body = PaymentList),
        (status = 400, description = "Unknown state, or `after` names no payment", body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(ctx): State<Arc<ApiContext>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Response {
    let state = match q.state.as_deref().map(str::parse::<PaymentState>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Problem::bad_request(format!("state: {e}")).into_response(),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, crate::ledger::MAX_PAGE);
    // A page starts after a payment; one that does not exist would start the walk over.
    let after = q.after.unwrap_or(0);
    if after != 0 {
        match ctx.ledger.payment(after).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Problem::bad_request(format!("after: no payment has id {after}"))
                    .into_response();
            }
            Err(e) => return Problem::ledger(&e).into_response(),
        }
    }
    let page = PaymentPage {
        state,
        account: q.account,
        after,
        limit,
    };
    match ctx.ledger.payments_page(&page).await {
        Ok(payments) => {
            let next_after = (payments.len() == limit as usize)
                .then(|| payments.last().map(|p| p.id))
                .flatten();
            Json(PaymentList {
                payments,
                next_after,
            })
            .into_response()
        }
        Err(e) => Problem::ledger(&e).into_response(),
    }
}

/// Makes the payment due now: its lane asks the gateway at once (the answer, not this
/// request, decides its state).
#[utoipa::path(post, path = "/v1/payments/{id}/check", tag = "payments",
    params(("id" = i64, Path, description = "Ledger id")),
    responses(
        (status = 202, description = "Its lane checks it now", body = CheckAnswer),
        (status = 404, description = "No payment has that id", body = Problem),
        (status = 409, description = "Final and no longer observed: nothing to check", body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn check(State(ctx): State<Arc<ApiContext>>, ApiPath(id): ApiPath<i64>) -> Response {
    let status = match ctx.ledger.request_check(id, Utc::now()).await {
        Ok(CheckRequested::DueNow { account }) => {
            ctx.waker.wake(&account);
            "due_now"
        }
        Ok(CheckRequested::AlreadyDue { account }) => {
            ctx.waker.wake(&account);
            "already_due"
        }
        Ok(CheckRequested::Unknown) => {
            return Problem::not_found(format!("no payment has id {id}")).into_response();
        }
        Ok(CheckRequested::Final { state }) => {
            return Problem::new(
                StatusCode::CONFLICT,
                format!("payment {id} is {state} and no longer observed: nothing to check"),
            )
            .into_response();
        }
        Err(e) => return Problem::ledger(&e).into_response(),
    };
    (StatusCode::ACCEPTED, Json(CheckAnswer { status })).into_response()
}
