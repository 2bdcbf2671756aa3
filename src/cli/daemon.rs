//! `payrecon run`: the daemon (systemd `Type=notify`).

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::open_ledger;
use crate::config::Settings;
use crate::reconcile::Reconciler;

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

pub async fn run(settings: &Settings) -> Result<ExitCode, ExitCode> {
    let ledger = open_ledger(settings).await?;
    let engine = Reconciler::new(ledger.clone(), settings).map_err(|e| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    })?;
    if settings.accounts.is_empty() {
        tracing::warn!("no accounts are configured: the daemon has nothing to reconcile");
    }
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let result = crate::scheduler::run(Arc::new(engine), &settings.schedule, shutdown).await;
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
