//! `/healthz` (the process answers), `/readyz` (it can do its job) and `/metrics`. Neither of
//! the last two needs a token, so each computes its answer at most once a second
//! ([`Cached`]) however often it is asked: a flood of requests cannot take the ledger's write
//! lock (`/readyz` probes it) or its connections away from the lanes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;

use super::ApiContext;

/// How long a computed `/readyz` or `/metrics` answer is served again.
const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// An answer computed at most once per [`FRESH_FOR`]; concurrent askers wait for the one
/// computation in flight.
#[derive(Debug)]
pub struct Cached<T>(tokio::sync::Mutex<Option<(std::time::Instant, T)>>);

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self(tokio::sync::Mutex::new(None))
    }
}

impl<T: Clone> Cached<T> {
    async fn get(&self, compute: impl std::future::Future<Output = T>) -> T {
        let mut held = self.0.lock().await;
        if let Some((at, value)) = held.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return value.clone();
        }
        let value = compute.await;
        *held = Some((std::time::Instant::now(), value.clone()));
        value
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    let readiness = ctx.cache.readiness.get(readiness(&ctx)).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

async fn readiness(ctx: &ApiContext) -> Readiness {
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
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Response {
    let rendered = ctx
        .cache
        .metrics
        .get(async {
            crate::metrics::render(&ctx.ledger, Utc::now())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    match rendered {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            super::problem::Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the ledger could not be read; see the daemon's log",
            )
            .into_response()
        }
    }
}

/// The answers `/readyz` and `/metrics` serve again within [`FRESH_FOR`].
#[derive(Debug, Default)]
pub struct HealthCache {
    readiness: Cached<Readiness>,
    metrics: Cached<Result<String, String>>,
}
