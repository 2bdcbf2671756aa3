//! `/healthz` (the process answers), `/readyz` (it can do its job) and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;

use super::ApiContext;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, one line each (empty when ready).
    pub reasons: Vec<String>,
}

/// Alive: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the ledger takes writes, the scheduler runs, the last pass did not fail, and not
/// every account is paused.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; `reasons` says why", body = Readiness),
    ))]
pub async fn readyz(State(ctx): State<Arc<ApiContext>>) -> Response {
    let mut reasons = Vec::new();
    if let Err(e) = ctx.ledger.writable().await {
        reasons.push(format!("the ledger does not take writes: {e}"));
    }
    if !ctx.status.running() {
        reasons.push("the scheduler is not running (starting or stopping)".to_string());
    }
    let failed = ctx.status.failed_in_a_row();
    if failed > 0 {
        reasons.push(format!("the last {failed} reconcile pass(es) failed"));
    }
    let configured: Vec<&str> = ctx
        .settings
        .accounts
        .iter()
        .map(|a| a.name().as_str())
        .collect();
    match ctx.ledger.paused_accounts(Utc::now()).await {
        Ok(paused)
            if !configured.is_empty()
                && configured.iter().all(|a| paused.iter().any(|p| p == a)) =>
        {
            reasons.push(format!("every account is paused ({})", paused.join(", ")));
        }
        Ok(_) => {}
        Err(e) => reasons.push(format!("cannot read account pauses: {e}")),
    }
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, reasons })).into_response()
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Response {
    match crate::metrics::render(&ctx.ledger, Utc::now()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => super::problem::Problem::ledger(&e).into_response(),
    }
}
