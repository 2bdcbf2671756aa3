//! `/v1/discrepancies`: what payrecon found that a person must look at, and resolving it with
//! a note.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::extract::{ApiPath, ApiQuery};
use super::problem::{FieldProblem, Problem};
use crate::ledger::{DiscrepancyPage, DiscrepancyRow};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiscrepancyQuery {
    /// Only this account's.
    pub account: Option<String>,
    /// Resolved ones too (default: open only).
    pub include_resolved: Option<bool>,
    /// Discrepancies with a higher id (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiscrepancyList {
    pub discrepancies: Vec<DiscrepancyRow>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Resolution {
    /// What was done about it (kept with the discrepancy).
    pub note: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resolved {
    pub id: i64,
    pub resolved: bool,
}

/// Discrepancies in id order, a page at a time.
#[utoipa::path(get, path = "/v1/discrepancies", tag = "discrepancies",
    params(DiscrepancyQuery),
    responses((status = 200, body = DiscrepancyList)),
    security(("bearer" = [])))]
pub async fn list(
    State(ctx): State<Arc<ApiContext>>,
    ApiQuery(q): ApiQuery<DiscrepancyQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, crate::ledger::MAX_PAGE);
    let page = DiscrepancyPage {
        account: q.account,
        include_resolved: q.include_resolved.unwrap_or(false),
        after: q.after.unwrap_or(0),
        limit,
    };
    match ctx.ledger.discrepancies_page(&page).await {
        Ok(discrepancies) => {
            let next_after = (discrepancies.len() == limit as usize)
                .then(|| discrepancies.last().map(|d| d.id))
                .flatten();
            Json(DiscrepancyList {
                discrepancies,
                next_after,
            })
            .into_response()
        }
        Err(e) => Problem::ledger(&e).into_response(),
    }
}

/// Marks an open discrepancy resolved, with a note saying what was done.
#[utoipa::path(post, path = "/v1/discrepancies/{id}/resolve", tag = "discrepancies",
    params(("id" = i64, Path, description = "Discrepancy id")),
    request_body = Resolution,
    responses(
        (status = 200, body = Resolved),
        (status = 404, description = "No open discrepancy has that id", body = Problem),
        (status = 422, description = "No note, or an empty one", body = Problem),
    ),
    security(("bearer" = [])))]
pub async fn resolve(
    State(ctx): State<Arc<ApiContext>>,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
) -> Response {
    let note = match serde_json::from_slice::<Resolution>(&body) {
        Ok(r) if !r.note.trim().is_empty() => r.note,
        _ => {
            return Problem::invalid(vec![FieldProblem {
                index: 0,
                field: "note".into(),
                reason: "required: a JSON object with a non-empty \"note\"".into(),
            }])
            .into_response();
        }
    };
    match ctx.ledger.resolve_discrepancy(id, &note, Utc::now()).await {
        Ok(true) => Json(Resolved { id, resolved: true }).into_response(),
        Ok(false) => Problem::not_found(format!("no open discrepancy has id {id}")).into_response(),
        Err(e) => Problem::ledger(&e).into_response(),
    }
}
