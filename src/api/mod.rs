//! The daemon's HTTP listener (`[api]`, off unless configured; docs/ARCHITECTURE.md §8):
//!
//! - `/v1/…`: registering payments, reading them with their history, keyset lists, asking for
//!   a check now, discrepancies. Every request needs the bearer token of `api.token_file`.
//! - `/notify/qfpay/{account}`, `/notify/ecpay/{account}`: the gateways' notifications,
//!   authenticated the gateway's way; never evidence, they only make a payment due now.
//! - `/healthz`, `/readyz`, `/metrics`: no token (they hold no payment data beyond counts).
//!
//! Bodies larger than `api.max_body` are refused with 413 and requests slower than
//! `api.request_timeout` with 408. The OpenAPI description is generated from the handlers
//! ([`openapi`]); `docs/openapi.json` is that output, kept equal by a test.

mod auth;
mod discrepancies;
mod extract;
mod health;
mod notify;
mod notify_ecpay;
mod notify_qfpay;
mod payments;
mod problem;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{ApiSettings, Settings};
use crate::ledger::Ledger;
use crate::scheduler::{DaemonStatus, Waker};

pub use payments::IntakeRecord;

/// What every handler shares.
#[derive(Debug)]
pub struct ApiContext {
    pub ledger: Ledger,
    pub settings: Arc<Settings>,
    pub waker: Waker,
    pub status: Arc<DaemonStatus>,
    token: SecretString,
    cache: health::HealthCache,
}

impl ApiContext {
    pub fn new(
        ledger: Ledger,
        settings: Arc<Settings>,
        api: &ApiSettings,
        waker: Waker,
        status: Arc<DaemonStatus>,
    ) -> Self {
        Self {
            ledger,
            settings,
            waker,
            status,
            token: api.token.clone(),
            cache: health::HealthCache::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payrecon",
        description = "Intake and read API of the payrecon daemon, the gateways' notification \
                       endpoints, health and metrics. `/v1` needs `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerToken),
    tags(
        (name = "payments", description = "Register, read, list and check payments"),
        (name = "discrepancies", description = "What a person must look at"),
        (name = "notifications", description = "Gateway notifications: never evidence, a query decides"),
        (name = "health", description = "Liveness, readiness, Prometheus metrics"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` scheme the `/v1` operations name.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

type Routes = Router<Arc<ApiContext>>;

/// The `/v1` routes, the others, and the OpenAPI description of both.
fn parts() -> (Routes, Routes, utoipa::openapi::OpenApi) {
    let (v1, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(payments::register, payments::list))
        .routes(routes!(payments::get_payment))
        .routes(routes!(payments::get_by_order))
        .routes(routes!(payments::check))
        .routes(routes!(discrepancies::list))
        .routes(routes!(discrepancies::resolve))
        .split_for_parts();
    let (open, open_doc) = OpenApiRouter::default()
        .routes(routes!(notify_qfpay::qfpay))
        .routes(routes!(notify_ecpay::ecpay))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .split_for_parts();
    doc.merge(open_doc);
    (v1, open, doc)
}

/// The OpenAPI description of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().2
}

/// [`openapi`] as the text `docs/openapi.json` holds (pretty, with a final newline).
pub fn openapi_json() -> String {
    let mut text = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The whole service: routes (the token guarding `/v1`), body limit, timeout.
pub fn router(ctx: Arc<ApiContext>, api: &ApiSettings) -> Router {
    let (v1, open, _) = parts();
    v1.route_layer(axum::middleware::from_fn_with_state(
        ctx.clone(),
        auth::require_token,
    ))
    .merge(open)
    .fallback(|| async { problem::Problem::not_found("no such route (see docs/openapi.json)") })
    .layer(DefaultBodyLimit::disable())
    .layer(RequestBodyLimitLayer::new(api.max_body))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        api.request_timeout,
    ))
    .with_state(ctx)
}

#[cfg(test)]
mod tests;

/// Why the API did not start.
#[derive(Debug, thiserror::Error)]
#[error("api.listen {addr}: cannot listen: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds the listener (before the daemon reports ready, so a taken port fails the start).
pub async fn bind(api: &ApiSettings) -> Result<TcpListener, BindError> {
    TcpListener::bind(api.listen)
        .await
        .map_err(|source| BindError {
            addr: api.listen,
            source,
        })
}

/// Serves until `shutdown`, then lets requests in flight finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "API listening");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "API server failed");
    }
}
