//! Starting, serving and stopping the sandbox: the router, the steps every call goes through
//! (count → rate limit → latency → injected timeout or 5xx → handler), and the handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::clock::SandboxClock;
use super::config::SandboxConfig;
use super::faults::{FaultPlan, Faults};
use super::limits::{Limiter, RateLimits};
use super::state::SandboxState;
use super::stats::{CallKind, Mishap, Stats, StatsSnapshot};
use super::{ecpay_http, qfpay_http};
use crate::gateway::ecpay::{CryptoError, DataKey};

/// Why the sandbox did not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "refusing to listen on {0}: the sandbox accepts published test keys and must stay on \
         loopback (127.0.0.1 or ::1); set allow_non_loopback (--allow-non-loopback) to force it"
    )]
    NonLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ECPay merchant {merchant}: {source}")]
    EcpayKey {
        merchant: String,
        source: CryptoError,
    },
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct App {
    pub state: SandboxState,
    pub stats: Stats,
    limiter: Limiter,
    pub rate_limits: RwLock<RateLimits>,
    pub faults: RwLock<Faults>,
    qfpay_calls: AtomicU64,
    ecpay_calls: AtomicU64,
    pub qfpay_keys: HashMap<String, SecretString>,
    pub ecpay_keys: HashMap<String, DataKey>,
    pub timestamp_window: Duration,
    shutdown: CancellationToken,
}

fn get_lock<T: Clone>(l: &RwLock<T>) -> T {
    l.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn set_lock<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(std::sync::PoisonError::into_inner) = v;
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

impl App {
    /// The steps before a handler. `Err` is the whole answer (429/403, 503, 504).
    pub(crate) async fn gate(&self, kind: CallKind, merchant: &str) -> Result<FaultPlan, Response> {
        self.stats.call(kind, merchant);
        let qfpay = kind.is_qfpay();
        let limits = get_lock(&self.rate_limits);
        let windows: Vec<(Duration, u32)> = if qfpay {
            [
                limits.qfpay_per_second.map(|n| (Duration::from_secs(1), n)),
                limits
                    .qfpay_per_minute
                    .map(|n| (Duration::from_secs(60), n)),
            ]
            .into_iter()
            .flatten()
            .collect()
        } else {
            limits
                .ecpay_per_minute
                .map(|n| (Duration::from_secs(60), n))
                .into_iter()
                .collect()
        };
        if let Err(wait) = self
            .limiter
            .admit(qfpay, merchant, &windows, Instant::now())
        {
            if qfpay {
                self.stats.mishap(Mishap::RateLimited429);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut r = plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    "<html>429 Too Many Requests</html>",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                return Err(r);
            }
            self.stats.mishap(Mishap::RateLimited403);
            return Err(plain(StatusCode::FORBIDDEN, "<html>403 Forbidden</html>"));
        }
        let counter = if qfpay {
            &self.qfpay_calls
        } else {
            &self.ecpay_calls
        };
        let plan = get_lock(&self.faults).plan(counter.fetch_add(1, Ordering::Relaxed), qfpay);
        if !plan.delay.is_zero() {
            self.hold(plan.delay).await;
        }
        if plan.timeout {
            self.stats.mishap(Mishap::Timeout);
            self.hold(get_lock(&self.faults).timeout_hold).await;
            return Err(plain(
                StatusCode::GATEWAY_TIMEOUT,
                "<html>504 Gateway Timeout</html>",
            ));
        }
        if plan.server_error {
            self.stats.mishap(Mishap::ServerError);
            return Err(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "<html>503 Service Unavailable</html>",
            ));
        }
        Ok(plan)
    }

    /// The fault configuration in force.
    pub(crate) fn faults(&self) -> Faults {
        get_lock(&self.faults)
    }

    /// Sleeps, but no longer than until shutdown.
    pub(crate) async fn hold(&self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// Starts sandboxes.
#[derive(Debug)]
pub struct Sandbox;

impl Sandbox {
    /// Binds (loopback only unless forced), then serves in a background task until
    /// [`SandboxHandle::shutdown`]. Seed the state before or after starting.
    pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
        let state = SandboxState::new(&config);
        Self::start_with_state(config, state).await
    }

    /// As [`Sandbox::start`], serving a state built (and perhaps seeded) beforehand with
    /// [`SandboxState::new`] from the same config.
    pub async fn start_with_state(
        config: SandboxConfig,
        state: SandboxState,
    ) -> Result<SandboxHandle, SandboxError> {
        if !config.listen.ip().is_loopback() && !config.allow_non_loopback {
            return Err(SandboxError::NonLoopback(config.listen));
        }
        let mut ecpay_keys = HashMap::new();
        for m in &config.ecpay_merchants {
            let key = DataKey::new(
                m.hash_key.expose_secret().as_bytes(),
                m.hash_iv.expose_secret().as_bytes(),
            )
            .map_err(|source| SandboxError::EcpayKey {
                merchant: m.merchant_id.clone(),
                source,
            })?;
            ecpay_keys.insert(m.merchant_id.clone(), key);
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: config.listen,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let app = Arc::new(App {
            state: state.clone(),
            stats: Stats::default(),
            limiter: Limiter::default(),
            rate_limits: RwLock::new(config.rate_limits),
            faults: RwLock::new(config.faults.clone()),
            qfpay_calls: AtomicU64::new(0),
            ecpay_calls: AtomicU64::new(0),
            qfpay_keys: config
                .qfpay_merchants
                .iter()
                .map(|m| (m.app_code.clone(), m.client_key.clone()))
                .collect(),
            ecpay_keys,
            timestamp_window: config.ecpay_timestamp_window,
            shutdown: shutdown.clone(),
        });
        let router = Router::new()
            .route("/trade/v1/payment", post(qfpay_http::payment))
            .route("/trade/v1/query", post(qfpay_http::query))
            .route(
                "/trade/v1/reversal",
                get(qfpay_http::reversal).post(qfpay_http::reversal),
            )
            .route(
                "/trade/v1/close",
                get(qfpay_http::close).post(qfpay_http::close),
            )
            .route("/trade/v1/refund", post(qfpay_http::refund))
            .route(
                "/1.0.0/CreditDetail/QueryTrade",
                post(ecpay_http::credit_detail),
            )
            .route("/1.0.0/Cashier/QueryTrade", post(ecpay_http::cashier))
            .route("/sandbox/stats", get(stats_json))
            .with_state(app.clone());
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the sandbox server stopped with an error");
            }
        });
        tracing::info!(%addr, "sandbox gateways listening");
        Ok(SandboxHandle {
            addr,
            app,
            shutdown,
            task,
        })
    }
}

async fn stats_json(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    let body = serde_json::to_string(&app.stats.snapshot()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A running sandbox. Dropping it does not stop the server; call [`SandboxHandle::shutdown`].
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    app: Arc<App>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SandboxHandle {
    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: the `base_url` for both gateways' accounts.
    pub fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("a socket address is a valid host")
    }

    /// The seeded state (shared with the server).
    pub fn state(&self) -> &SandboxState {
        &self.app.state
    }

    /// The scenario clock (shared with the server).
    pub fn clock(&self) -> &SandboxClock {
        self.app.state.clock()
    }

    /// The call counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.app.stats.snapshot()
    }

    pub fn reset_stats(&self) {
        self.app.stats.reset();
    }

    /// Replaces the fault configuration for the following calls.
    pub fn set_faults(&self, faults: Faults) {
        set_lock(&self.app.faults, faults);
    }

    /// Replaces the rate limits for the following calls.
    pub fn set_rate_limits(&self, limits: RateLimits) {
        set_lock(&self.app.rate_limits, limits);
    }

    /// Stops accepting, releases held (timed-out) requests, waits for the server task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the sandbox server task ended abnormally");
        }
    }
}
