//! The daemon: tokio-cron-scheduler jobs that trigger reconcile passes, window sweeps and
//! lease clean-up,
//! systemd readiness and watchdog notifications, and an orderly shutdown.
//!
//! The jobs hold no logic: each calls [`Reconciler::run_once`] like the CLI does. A job never
//! overlaps itself (the scheduler itself has no such guard, see shared/reference/crates.md
//! §1.2): a tick that finds the previous pass still running is skipped. On shutdown no new pass
//! starts, the pass in flight finishes its current chunk (bounded by a timeout), its leases are
//! released, and the process exits 0.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sd_notify::NotifyState;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

use crate::config::ScheduleSettings;
use crate::reconcile::{Reconciler, RunScope};

/// How long shutdown waits for the pass in flight before leaving its leases to expire.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
}

/// Runs a pass unless one is already running. The mutex is the single-flight guard.
async fn guarded_pass(engine: &Reconciler, guard: &Mutex<()>, shutdown: &CancellationToken) {
    let Ok(_running) = guard.try_lock() else {
        tracing::debug!("previous reconcile pass still running; skipping this tick");
        return;
    };
    if shutdown.is_cancelled() {
        return;
    }
    let scope = RunScope {
        trigger: "cron",
        ..RunScope::default()
    };
    if let Err(e) = engine.run_once(&scope, shutdown).await {
        tracing::error!(error = %e, "reconcile pass failed");
    }
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(
    engine: Arc<Reconciler>,
    schedule: &ScheduleSettings,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let mut sched = JobScheduler::new().await?;
    let pass_guard = Arc::new(Mutex::new(()));

    let (e, g, s) = (engine.clone(), pass_guard.clone(), shutdown.clone());
    sched
        .add(Job::new_async(schedule.reconcile.as_str(), move |_, _| {
            let (e, g, s) = (e.clone(), g.clone(), s.clone());
            Box::pin(async move { guarded_pass(&e, &g, &s).await })
        })?)
        .await?;

    let (e, g) = (engine.clone(), Arc::new(Mutex::new(())));
    sched
        .add(Job::new_async(schedule.sweep.as_str(), move |_, _| {
            let (e, g) = (e.clone(), g.clone());
            Box::pin(async move {
                let Ok(_running) = g.try_lock() else {
                    tracing::debug!("previous sweep still running; skipping this tick");
                    return;
                };
                e.sweep_closed_windows(Utc::now()).await;
            })
        })?)
        .await?;

    // Leases expire on their own; this only tidies rows a crashed pass left marked.
    let e = engine.clone();
    sched
        .add(Job::new_async("0 * * * * *", move |_, _| {
            let e = e.clone();
            Box::pin(async move {
                match e.ledger().reap_expired_leases(Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(leases = n, "cleared expired leases of an earlier pass")
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot clear expired leases"),
                }
            })
        })?)
        .await?;

    sched.start().await?;
    tracing::info!(reconcile = %schedule.reconcile, "payrecon daemon started");
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("reconciling on schedule"),
    ]);

    // A first pass right away, so a restart does not wait for the next tick.
    {
        let (e, g, s) = (engine.clone(), pass_guard.clone(), shutdown.clone());
        tokio::spawn(async move { guarded_pass(&e, &g, &s).await });
    }

    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ping.tick() => if watchdog.is_some() { notify(&[NotifyState::Watchdog]) },
        }
    }

    tracing::info!("shutting down: no new passes; waiting for the one in flight");
    notify(&[NotifyState::Stopping]);
    sched.shutdown().await?;
    match tokio::time::timeout(SHUTDOWN_GRACE, pass_guard.lock()).await {
        Ok(_) => tracing::info!("payrecon daemon stopped"),
        Err(_) => {
            tracing::warn!("the pass in flight did not finish in time; its leases will expire")
        }
    }
    if let Err(e) = engine.ledger().release_leases(engine.owner()).await {
        tracing::warn!(error = %e, "cannot release leases at shutdown; they will expire");
    }
    Ok(())
}
