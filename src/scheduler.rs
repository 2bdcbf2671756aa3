//! The daemon: tokio-cron-scheduler jobs that trigger reconcile passes, window sweeps and
//! lease clean-up,
//! systemd readiness and watchdog notifications, and an orderly shutdown.
//!
//! The jobs hold no logic: each calls [`Reconciler::run_once`] like the CLI does. Every tick
//! starts the lanes that are idle: an account whose lane is still working since an earlier
//! tick (a long ECPay backlog at its pace) is skipped, and never holds the others back. On
//! shutdown no new pass starts, each lane in flight finishes its current unit (bounded by a
//! timeout), its account lease is released, and the process exits 0.
//!
//! A wake (the API's intake, `check`, a gateway notification: [`Waker`]) starts the named
//! account's lane at once when it is idle; a lane that is working meets the payment in a later
//! unit of its walk, and is started once more when it is free (a payment it decided earlier in
//! the same pass is not met again in that pass).
//!
//! Two host failures end the daemon instead (the same orderly stop, then an error): the ledger
//! path no longer naming the file the daemon opened (checked before every pass), and
//! `schedule.max_failed_passes` passes in a row failing. A single failed pass (a full disk that
//! is freed soon) only waits for the next tick.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use sd_notify::NotifyState;
use tokio::sync::{Mutex, mpsc};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ScheduleSettings;
use crate::ledger::LedgerError;
use crate::reconcile::{Reconciler, RunScope};

/// How long shutdown waits for the lanes in flight before leaving their leases to expire.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    #[error("{0}; stopping so that a restart opens the file the path names now")]
    LedgerReplaced(#[source] LedgerError),
    #[error(
        "{passes} reconcile passes in a row failed (last: {last}); stopping so that the \
         service manager restarts payrecon and the failure is seen"
    )]
    LedgerFailing { passes: u32, last: String },
}

/// What the daemon tells its health endpoint (`/readyz`).
#[derive(Debug, Default)]
pub struct DaemonStatus {
    running: AtomicBool,
    failed_in_a_row: AtomicU32,
}

impl DaemonStatus {
    /// Whether the scheduler runs (started, not stopping).
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Reconcile passes that failed in a row, up to now (0 once one succeeds).
    pub fn failed_in_a_row(&self) -> u32 {
        self.failed_in_a_row.load(Ordering::Relaxed)
    }
}

/// Asks the daemon to work an account's lane now. Cheap to clone; a wake after the daemon
/// stopped is dropped.
#[derive(Debug, Clone)]
pub struct Waker(mpsc::UnboundedSender<String>);

impl Waker {
    /// The waker and the receiving end the daemon's [`run`] takes.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    pub fn wake(&self, account: &str) {
        let _ = self.0.send(account.to_string());
    }
}

/// How often a wake for a busy lane asks again whether it is free.
const BUSY_LANE_RECHECK: Duration = Duration::from_millis(200);

/// What the reconcile job shares across ticks: the passes in flight, the count of passes that
/// failed in a row, and the way to tell the main loop that the daemon must end.
#[derive(Debug)]
struct PassJob {
    engine: Arc<Reconciler>,
    in_flight: TaskTracker,
    status: Arc<DaemonStatus>,
    max_failed_passes: u32,
    fatal: mpsc::UnboundedSender<DaemonError>,
}

impl PassJob {
    /// Starts a pass of the idle lanes (of `account` only, when given) in the background
    /// (tracked, so shutdown can wait).
    fn start(self: &Arc<Self>, account: Option<String>, shutdown: &CancellationToken) {
        let (job, shutdown) = (self.clone(), shutdown.clone());
        self.in_flight
            .spawn(async move { job.tick(account, &shutdown).await });
    }

    /// Runs a pass of the lanes not already working (each lane is its own single-flight guard).
    async fn tick(&self, account: Option<String>, shutdown: &CancellationToken) {
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(e) = self.engine.ledger().check_file() {
            tracing::error!(error = %e, "the ledger file was moved or deleted; stopping");
            let _ = self.fatal.send(DaemonError::LedgerReplaced(e));
            return;
        }
        let scope = RunScope {
            trigger: if account.is_some() { "wake" } else { "cron" },
            account,
            lane_wait: None,
            ..RunScope::default()
        };
        let failed_in_a_row = &self.status.failed_in_a_row;
        match self.engine.run_once(&scope, shutdown).await {
            Ok(_) => failed_in_a_row.store(0, Ordering::Relaxed),
            Err(e) => {
                let passes = failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(error = %e, failed_in_a_row = passes, "reconcile pass failed");
                if passes >= self.max_failed_passes {
                    let _ = self.fatal.send(DaemonError::LedgerFailing {
                        passes,
                        last: e.to_string(),
                    });
                }
            }
        }
    }
}

/// Starts the lanes that wakes name: at once when idle; a busy one when it is free.
async fn serve_wakes(
    passes: Arc<PassJob>,
    mut wakes: mpsc::UnboundedReceiver<String>,
    shutdown: CancellationToken,
) {
    let mut waiting = BTreeSet::new();
    let mut recheck = tokio::time::interval(BUSY_LANE_RECHECK);
    // After an idle spell the missed ticks are not made up in a burst.
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            woken = wakes.recv() => match woken {
                Some(account) => { waiting.insert(account); }
                None => return,
            },
            _ = recheck.tick(), if !waiting.is_empty() => {}
        }
        while let Ok(account) = wakes.try_recv() {
            waiting.insert(account);
        }
        waiting.retain(|account| match passes.engine.lane_busy(account) {
            Some(false) => {
                passes.start(Some(account.clone()), &shutdown);
                false
            }
            Some(true) => true,
            None => {
                tracing::warn!(account, "wake for an account that is not configured");
                false
            }
        });
    }
}

/// How many leases a replica's row stays live without a beat. A beat is due every third of a
/// lease; counting a busy replica whose beat waited for a connection as gone would give the
/// others its share, and one of them could take every lane (seen once in the replica test
/// with a window of one lease). A replica that died keeps counting this long; its leases
/// expire after one lease all the same.
const LIVE_FOR_LEASES: i32 = 3;

/// How long after its first beat a daemon beats again before its first pass.
const STARTUP_SECOND_BEAT: Duration = Duration::from_millis(500);

/// Records this daemon as alive and takes its fair share of the lanes among the replicas
/// seen within `LIVE_FOR_LEASES` leases (`reconcile::share`).
async fn beat_replica(engine: &Reconciler) {
    let now = Utc::now();
    let lease = chrono::Duration::from_std(engine.lease()).unwrap_or(chrono::Duration::minutes(1));
    match engine
        .ledger()
        .replica_seen(engine.owner(), now, now - lease * LIVE_FOR_LEASES)
        .await
    {
        Ok(live) => engine.set_share(&live),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record this replica as alive; its share of the lanes stays as it was")
        }
    }
}

/// [`beat_replica`] every third of the lease until shutdown.
async fn keep_beating(engine: Arc<Reconciler>, shutdown: CancellationToken) {
    let period = crate::reconcile::heartbeat_interval(engine.lease());
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = beat.tick() => beat_replica(&engine).await,
        }
    }
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Runs the daemon until `shutdown` is cancelled; `wakes` start lanes between ticks, and
/// `status` says how it runs.
pub async fn run(
    engine: Arc<Reconciler>,
    schedule: &ScheduleSettings,
    shutdown: CancellationToken,
    wakes: mpsc::UnboundedReceiver<String>,
    status: Arc<DaemonStatus>,
) -> Result<(), DaemonError> {
    let mut sched = JobScheduler::new().await?;
    let (fatal_tx, mut fatal) = mpsc::unbounded_channel();
    let passes = Arc::new(PassJob {
        engine: engine.clone(),
        in_flight: TaskTracker::new(),
        status: status.clone(),
        max_failed_passes: schedule.max_failed_passes,
        fatal: fatal_tx,
    });

    let (p, s) = (passes.clone(), shutdown.clone());
    sched
        .add(Job::new_async(schedule.reconcile.as_str(), move |_, _| {
            p.start(None, &s);
            Box::pin(async {})
        })?)
        .await?;

    let (e, g, t, s) = (
        engine.clone(),
        Arc::new(Mutex::new(())),
        passes.in_flight.clone(),
        shutdown.clone(),
    );
    sched
        .add(Job::new_async(schedule.sweep.as_str(), move |_, _| {
            let (e, g, s) = (e.clone(), g.clone(), s.clone());
            // Tracked like the passes: shutdown waits for a sweep in flight too.
            t.spawn(async move {
                let Ok(_running) = g.try_lock() else {
                    tracing::debug!("previous sweep still running; skipping this tick");
                    return;
                };
                e.sweep_closed_windows(Utc::now(), &s).await;
            });
            Box::pin(async {})
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
    let waking = tokio::spawn(serve_wakes(passes.clone(), wakes, shutdown.clone()));
    status.running.store(true, Ordering::Relaxed);
    tracing::info!(reconcile = %schedule.reconcile, "payrecon daemon started");
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("reconciling on schedule"),
    ]);

    // The share before the first pass: a replica that starts beside others does not take
    // every lane first.
    beat_replica(&engine).await;
    // Replicas started together (a fleet restart) each see only themselves at their first
    // beat, and the first to pass would take every lane and keep the excess until a later beat
    // gets through its busy pool. A second beat a moment later sees the others.
    tokio::time::sleep(STARTUP_SECOND_BEAT).await;
    beat_replica(&engine).await;
    let beating = tokio::spawn(keep_beating(engine.clone(), shutdown.clone()));
    // A first pass right away, so a restart does not wait for the next tick.
    passes.start(None, &shutdown);

    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            Some(why) = fatal.recv() => break Some(why),
            _ = ping.tick() => if watchdog.is_some() { notify(&[NotifyState::Watchdog]) },
        }
    };

    tracing::info!("shutting down: no new passes; waiting for the lanes in flight");
    notify(&[NotifyState::Stopping]);
    status.running.store(false, Ordering::Relaxed);
    // Stops the lanes in flight between units when the daemon ends on its own.
    shutdown.cancel();
    let _ = waking.await;
    let _ = beating.await;
    sched.shutdown().await?;
    passes.in_flight.close();
    match tokio::time::timeout(SHUTDOWN_GRACE, passes.in_flight.wait()).await {
        Ok(()) => tracing::info!("payrecon daemon stopped"),
        Err(_) => {
            tracing::warn!("a lane in flight did not finish in time; its account lease will expire")
        }
    }
    if let Err(e) = engine.ledger().release_leases(engine.owner()).await {
        tracing::warn!(error = %e, "cannot release leases at shutdown; they will expire");
    }
    if let Err(e) = engine.ledger().replica_gone(engine.owner()).await {
        tracing::warn!(error = %e, "cannot remove this replica's row; the others count it until it is one lease old");
    }
    match ended {
        None => Ok(()),
        Some(why) => Err(why),
    }
}
