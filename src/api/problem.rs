//! Error answers as RFC 9457 problem details (`application/problem+json`): a title, the HTTP
//! status, a detail a person can act on, and for rejected intake every problem with the
//! record's index and field.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One thing wrong with one record of a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The record's position in the request (0 for a single object).
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Intake: every problem found; nothing was written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<FieldProblem>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            problems: Vec::new(),
        }
    }

    /// 422: records that cannot be taken as they are.
    pub fn invalid(problems: Vec<FieldProblem>) -> Self {
        Self {
            problems,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the request has invalid records; nothing was written",
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 500 for a ledger failure: the cause is logged, the answer says only that it failed.
    pub fn ledger(e: &crate::ledger::LedgerError) -> Self {
        tracing::error!(error = %e, "API request failed on the ledger");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the ledger could not be read or written; see the daemon's log",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, axum::Json(self)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}
