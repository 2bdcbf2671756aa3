//! `payrecon run`: the daemon (systemd `Type=notify`).

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::open_ledger;
use crate::api::ApiContext;
use crate::config::Settings;
use crate::reconcile::Reconciler;
use crate::scheduler::{DaemonStatus, Waker};

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        token.cancel();
    });
}

/// How long the API waits for requests in flight once the daemon has stopped.
const API_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run(settings: &Settings) -> Result<ExitCode, ExitCode> {
    let ledger = open_ledger(settings).await?;
    let engine = Reconciler::new(ledger.clone(), settings).map_err(|e| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    })?;
    if settings.accounts.is_empty() {
        tracing::warn!("no accounts are configured: the daemon has nothing to reconcile");
    }
    let (waker, wakes) = Waker::channel();
    let status = Arc::new(DaemonStatus::default());
    // Bound before the daemon reports ready: a port that cannot be had fails the start.
    let api_stop = CancellationToken::new();
    let api = match &settings.api {
        None => None,
        Some(api) => {
            let listener = crate::api::bind(api).await.map_err(|e| {
                error_line!("payrecon: {e}");
                match e.source.kind() {
                    // The address is wrong for this host: a restart cannot fix it.
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::AddrNotAvailable => {
                        ExitCode::from(crate::config::EX_CONFIG)
                    }
                    _ => ExitCode::FAILURE,
                }
            })?;
            crate::metrics::install();
            let ctx = ApiContext::new(
                ledger.clone(),
                Arc::new(settings.clone()),
                api,
                waker,
                status.clone(),
            );
            let app = crate::api::router(Arc::new(ctx), api);
            Some(tokio::spawn(crate::api::serve(
                listener,
                app,
                api_stop.clone(),
            )))
        }
    };
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let result = crate::scheduler::run(
        Arc::new(engine),
        &settings.schedule,
        shutdown,
        wakes,
        status,
    )
    .await;
    api_stop.cancel();
    if let Some(mut served) = api
        && tokio::time::timeout(API_GRACE, &mut served).await.is_err()
    {
        served.abort();
        tracing::warn!("API requests still in flight at exit were cut off");
    }
    ledger.close().await;
    result.map(|()| ExitCode::SUCCESS).map_err(|e| {
        error_line!("payrecon: {e}");
        match e {
            // Temporary: a restart (once space returns) may well succeed.
            crate::scheduler::DaemonError::LedgerFailing { .. } => {
                ExitCode::from(super::EX_TEMPFAIL)
            }
            _ => ExitCode::FAILURE,
        }
    })
}
