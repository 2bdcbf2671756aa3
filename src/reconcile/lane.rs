//! **A lane works one account.** Each configured merchant account has its own lane: its own
//! task in a pass, its own gateway client (pacer, pause, retry state) and its own lease in the
//! ledger (`account_leases`), so a slow, paused or failing account never delays another, and
//! only one process works an account at a time: the lane's pacer *is* the merchant's rate
//! limit across every process sharing the ledger (docs/ARCHITECTURE.md §4, "Lanes").
//!
//! A lane:
//! 1. enters: the account's in-process slot (a reconcile pass and a sweep of the same account
//!    take turns), then the account lease, waiting for another process's lease up to a bound
//!    or skipping the account with a line naming the holder;
//! 2. keeps a heartbeat task renewing the lease every third of its time-to-live; a renewal that
//!    finds the lease taken (this process stalled past it) stops the lane's calls at once;
//! 3. works in small units (what it can finish well within one heartbeat interval at its pace)
//!    and applies each answer in one transaction as it arrives, fenced by the lease's token;
//! 4. leaves: stops the heartbeat and releases the lease, also after an error.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use super::accounts::{AccountRuntime, Gateway};
use super::share::ShareSlot;
use super::{
    Delivery, PassContext, ReconcileError, Reconciler, RunScope, RunSummary, SkippedAccount,
    Strategy, window_sweep,
};
use crate::gateway::transport::{CallGate, Pacer};
use crate::ledger::{AccountHolder, ClaimScope, DuePosition, Fence, Ledger, LedgerError};

/// How long a lane waits for an account that is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneWait {
    /// Skip it at once: the daemon's next tick tries again.
    Skip,
    /// Wait up to this long (one-off passes and sweeps), then skip it with a line naming the
    /// holder.
    UpTo(Duration),
}

/// The in-process half of a lane: a pass and a sweep of the same account take turns.
#[derive(Debug, Clone, Default)]
pub(crate) struct LaneSlot(Arc<Mutex<()>>);

impl LaneSlot {
    /// Whether a pass or a sweep of this process is working the account right now.
    pub fn is_busy(&self) -> bool {
        self.0.try_lock().is_err()
    }
}

/// Why a lane did not start.
#[derive(Debug)]
pub(crate) enum NotEntered {
    /// This process is working the account already (the daemon's previous pass or its sweep).
    Busy,
    /// Another process holds the account's lease.
    Held(AccountHolder),
    /// Shutdown was requested while waiting.
    Stopping,
    /// This replica holds its fair share of the lanes already (`reconcile::share`).
    Share,
}

/// Until when the lane's lease is surely its own, by this process's monotonic clock: the
/// moment before its last successful renewal was sent plus the lease's time-to-live. A process
/// that was stalled (SIGSTOP, a paused VM) wakes up past it and makes no further call, even
/// before its heartbeat finds the lease taken: a call then could break the merchant's rate
/// limit that the new holder now keeps. Monotonic, so a wall clock stepped back (NTP, an
/// operator fixing the skew a replica warned of) cannot stretch it past the ledger's expiry.
#[derive(Debug, Clone)]
pub(crate) struct LeaseClock {
    valid_until: Arc<std::sync::Mutex<std::time::Instant>>,
    /// Calls stop this long before the lease would run out (one heartbeat interval: a live
    /// lane renews long before).
    margin: Duration,
}

impl LeaseClock {
    fn new(renewed: std::time::Instant, ttl: Duration) -> Self {
        let clock = Self {
            valid_until: Arc::new(std::sync::Mutex::new(renewed)),
            margin: heartbeat_interval(ttl),
        };
        clock.renewed(renewed, ttl);
        clock
    }

    fn renewed(&self, sent: std::time::Instant, ttl: Duration) {
        let mut v = self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *v = sent + ttl;
    }

    /// Whether the lane may still make a call.
    pub fn may_call(&self) -> bool {
        let v = *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::time::Instant::now() + self.margin < v
    }
}

/// An entered lane: the fence its writes present, and the heartbeat keeping it.
#[derive(Debug)]
pub(crate) struct Lane {
    pub fence: Fence,
    /// Cancelled when the heartbeat finds the lease taken by another process: stop calling.
    pub lost: CancellationToken,
    pub clock: LeaseClock,
    pacer: Pacer,
    stop_heartbeat: CancellationToken,
    heartbeat: tokio::task::JoinHandle<()>,
    ledger: Ledger,
    /// The lane's place in this process's fair share of the lanes.
    pub share: ShareSlot,
    _slot: OwnedMutexGuard<()>,
}

/// The lease's time-to-live and the heartbeat's interval.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(200))
}

/// Calls per minute the lane allows itself for the account: its client's pacer.
pub(crate) fn pace_per_minute(rt: &AccountRuntime) -> u32 {
    match &rt.gateway {
        Gateway::Qfpay { account, .. } => account
            .rate_per_minute
            .min(account.rate_per_second.saturating_mul(60)),
        Gateway::Ecpay { account, .. } => account.rate_per_minute,
    }
}

/// How many due payments one unit takes: the calls the lane makes in half a heartbeat
/// interval at its pace (at least one call), times the payments a call asks about, at most
/// `chunk_size`. Small units keep a stop request's wait short and memory at one unit.
pub(crate) fn unit_size(rt: &AccountRuntime, ttl: Duration, chunk_size: u32) -> u32 {
    let half = heartbeat_interval(ttl).as_secs_f64() / 2.0;
    let calls = (f64::from(pace_per_minute(rt)) * half / 60.0)
        .floor()
        .max(1.0) as u32;
    let per_call = match &rt.gateway {
        Gateway::Qfpay { account, .. } => account.batch_size.max(1),
        Gateway::Ecpay { .. } => 1,
    };
    calls.saturating_mul(per_call).clamp(1, chunk_size.max(1))
}

impl Reconciler {
    /// Enters `rt`'s lane: its in-process slot, then its account lease.
    pub(crate) async fn enter_lane(
        &self,
        rt: &AccountRuntime,
        wait: LaneWait,
        shutdown: &CancellationToken,
    ) -> Result<Result<Lane, NotEntered>, LedgerError> {
        let deadline = match wait {
            LaneWait::Skip => tokio::time::Instant::now(),
            LaneWait::UpTo(d) => tokio::time::Instant::now() + d,
        };
        let slot = match rt.lane.0.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) if wait == LaneWait::Skip => return Ok(Err(NotEntered::Busy)),
            Err(_) => tokio::select! {
                g = rt.lane.0.clone().lock_owned() => g,
                _ = tokio::time::sleep_until(deadline) => return Ok(Err(NotEntered::Busy)),
                _ = shutdown.cancelled() => return Ok(Err(NotEntered::Stopping)),
            },
        };
        let index = self
            .accounts
            .iter()
            .position(|a| a.name == rt.name)
            .unwrap_or_default();
        let ttl = self.settings.lease;
        let pace = pace_per_minute(rt);
        let retry = Duration::from_millis(500).min(heartbeat_interval(ttl));
        // A place in this replica's share is held only while the lease is tried or held, never
        // while waiting for another process's lease (a scheduled sweep waits up to 30 minutes):
        // a waiting lane would keep this replica's own slice unworked.
        let (acquired, sent, share) = loop {
            // One try at a time in this process (`LaneShare::take_turn`): a pass starts all its
            // lanes at once, its own slice first, and a try that finds its account held gives
            // its place back before the next account is tried, so a slice another replica holds
            // does not use up the places a free account further on needs.
            let attempt = {
                let _turn = self.share.take_turn().await;
                match self.share.reserve(index, self.accounts.len()) {
                    None => None,
                    Some(share) => {
                        let sent = std::time::Instant::now();
                        let answer = self
                            .ledger
                            .acquire_account(rt.name.as_str(), &self.owner, ttl, pace, Utc::now())
                            .await?;
                        Some((answer, sent, share))
                    }
                }
            };
            let waited = match attempt {
                Some((Ok(acquired), sent, share)) => break (acquired, sent, share),
                // Its place goes back now, not after the wait below.
                Some((Err(holder), _, share)) => {
                    drop(share);
                    NotEntered::Held(holder)
                }
                None => NotEntered::Share,
            };
            if tokio::time::Instant::now() >= deadline {
                return Ok(Err(waited));
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.cancelled() => return Ok(Err(NotEntered::Stopping)),
            }
        };
        let fence = acquired.fence;
        tracing::debug!(account = %rt.name, token = fence.token, "lane entered");
        // Keep the pace of the previous holder's last call (another process's pacer). A holder
        // whose lease ran out left no such time: its last call may have left up to one lease
        // margin before the expiry, so wait one interval, whatever the margin. The time handed
        // over is the previous holder's clock: at most one interval is waited, so a replica
        // whose clock ran ahead cannot keep this lane idle (and unrenewed) for the difference.
        let handed_over = acquired
            .next_call_at
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .unwrap_or_default()
            .min(rt.pacer().interval());
        let wait = if acquired.taken_over {
            handed_over.max(rt.pacer().interval())
        } else {
            handed_over
        };
        if !wait.is_zero() {
            rt.pacer()
                .not_before(tokio::time::Instant::now() + wait)
                .await;
        }
        let clock = LeaseClock::new(sent, ttl);
        let lost = CancellationToken::new();
        // Every call of the account's client, queued or retried, passes this once its pacer
        // slot has come: none leaves once the lane may have lost the account.
        let gate = {
            let (clock, lost, stop) = (clock.clone(), lost.clone(), shutdown.clone());
            CallGate::new(move || !lost.is_cancelled() && clock.may_call() && !stop.is_cancelled())
        };
        rt.pacer().set_gate(Some(gate));
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = tokio::spawn(beat(
            self.ledger.clone(),
            fence.clone(),
            ttl,
            clock.clone(),
            lost.clone(),
            stop_heartbeat.clone(),
        ));
        Ok(Ok(Lane {
            fence,
            lost,
            clock,
            pacer: rt.pacer().clone(),
            stop_heartbeat,
            heartbeat,
            ledger: self.ledger.clone(),
            share,
            _slot: slot,
        }))
    }

    /// Enters the lane and works it; a lane that cannot be entered is reported in the summary.
    pub(crate) async fn run_lane(
        &self,
        rt: &AccountRuntime,
        scope: &RunScope,
        run_id: Option<i64>,
        wait: LaneWait,
        shutdown: &CancellationToken,
    ) -> Result<RunSummary, ReconcileError> {
        let mut summary = RunSummary::default();
        let lane = match self.enter_lane(rt, wait, shutdown).await? {
            Ok(lane) => lane,
            Err(why) => {
                note_not_entered(rt.name.as_str(), why, wait, &mut summary);
                return Ok(summary);
            }
        };
        let result = self
            .work_lane(&lane, rt, scope, run_id, shutdown, &mut summary)
            .await;
        lane.leave().await;
        match result {
            Err(ReconcileError::Ledger(e @ LedgerError::FencedOut { .. })) => {
                tracing::warn!(account = %rt.name, error = %e, "lane stopped: fenced out");
                summary.fenced_out.push(rt.name.to_string());
                Ok(summary)
            }
            other => other.map(|()| summary),
        }
    }

    /// Works the lane's account: dense windows first (QFPay), then units of due payments in the
    /// order of their next check until none is left, the lease is lost, or shutdown is requested between units.
    async fn work_lane(
        &self,
        lane: &Lane,
        rt: &AccountRuntime,
        scope: &RunScope,
        run_id: Option<i64>,
        shutdown: &CancellationToken,
        summary: &mut RunSummary,
    ) -> Result<(), ReconcileError> {
        let claim_scope = ClaimScope {
            account: rt.name.to_string(),
            ignore_schedule: scope.all,
            run_id,
        };
        let ctx = |now| PassContext {
            ledger: &self.ledger,
            fence: &lane.fence,
            run_id,
            now,
            strategy: scope.strategy,
            concurrency: self.settings.concurrency as usize,
            unit_sweeps: scope.dry_run,
            stop: lane.lost.clone(),
            lease: lane.clock.clone(),
            shutdown: shutdown.clone(),
            share: (&self.share, &lane.share),
        };
        if scope.strategy == Strategy::Planned
            && !scope.dry_run
            && matches!(rt.gateway, Gateway::Qfpay { .. })
        {
            window_sweep::sweep_dense_windows(
                self,
                &ctx(Utc::now()),
                rt,
                scope,
                &claim_scope,
                shutdown,
                summary,
            )
            .await?;
        }
        let unit = unit_size(rt, self.settings.lease, self.settings.chunk_size);
        let mut position = DuePosition::default();
        loop {
            if shutdown.is_cancelled() {
                summary.interrupted = true;
                return Ok(());
            }
            if lane.lost.is_cancelled() {
                return Err(LedgerError::FencedOut {
                    account: lane.fence.account.clone(),
                    token: lane.fence.token,
                }
                .into());
            }
            if ctx(Utc::now()).over_share() {
                tracing::info!(account = %rt.name, "this replica holds more than its fair share of the lanes; the account is left to another replica");
                return Ok(());
            }
            if !lane.clock.may_call() {
                // Not renewed in time (a stall, a ledger that refused the heartbeat): this lane
                // no longer surely holds the account, though nobody may have taken it.
                tracing::warn!(account = %rt.name, "the account lease could not be renewed in time; the lane stops and its payments wait for the next pass");
                return Ok(());
            }
            let now = Utc::now();
            let (due, next) = self
                .ledger
                .due_unit(&claim_scope, &position, unit, now)
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            position = next;
            summary.counters.claimed += due.len() as u64;
            let _timer = crate::metrics::time_unit(&rt.name);
            self.work_unit(&ctx(now), scope, rt, &due, summary).await?;
        }
    }

    /// Asks the gateway about one unit and applies each answer as it arrives: the calls run
    /// while earlier answers are decided and written.
    async fn work_unit(
        &self,
        ctx: &PassContext<'_>,
        scope: &RunScope,
        rt: &AccountRuntime,
        unit: &[crate::ledger::Claimed],
        summary: &mut RunSummary,
    ) -> Result<(), ReconcileError> {
        let members: Vec<usize> = (0..unit.len()).collect();
        let (sink, mut answers) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
        // A failed write stops the calls too: their answers could not be written.
        let stop = ctx.stop.child_token();
        let calling = PassContext {
            stop: stop.clone(),
            ..ctx.clone()
        };
        let ask = async {
            match &rt.gateway {
                Gateway::Qfpay { client, account } => {
                    super::qfpay_pass::check(
                        &calling,
                        client,
                        account.batch_size,
                        unit,
                        &members,
                        sink,
                    )
                    .await
                }
                Gateway::Ecpay { client, account } => {
                    super::ecpay_pass::check(&calling, client, account, unit, &members, sink).await
                }
            }
        };
        // The deliveries waiting when the writer is free are decided and committed together:
        // a gateway that answers faster than the disk syncs costs one sync for several
        // answers. Answers that come one at a time are written one at a time, as they come.
        let apply = async {
            let mut calls_in_decisions = RunSummary::default();
            while let Some(first) = answers.recv().await {
                let mut group = vec![first];
                while group.len() < DELIVERIES_PER_COMMIT {
                    match answers.try_recv() {
                        Ok(d) => group.push(d),
                        Err(_) => break,
                    }
                }
                let written = async {
                    let mut updates = Vec::new();
                    for d in group {
                        updates.extend(
                            self.decide(
                                ctx,
                                scope,
                                rt,
                                unit,
                                d.answers,
                                d.postponed,
                                &mut calls_in_decisions,
                            )
                            .await?,
                        );
                    }
                    self.commit(ctx, scope, &updates, &mut calls_in_decisions)
                        .await
                }
                .await;
                if let Err(e) = written {
                    stop.cancel();
                    return (calls_in_decisions, Err(e));
                }
            }
            (calls_in_decisions, Ok(()))
        };
        let (calls, (decided, written)) = tokio::join!(ask, apply);
        summary.counters.calls += calls;
        summary.merge(decided);
        written
    }
}

/// Deliveries (answers of a unit) decided and committed in one transaction at most. Each
/// member of a unit is in one delivery only, so a group never decides a payment twice.
const DELIVERIES_PER_COMMIT: usize = 64;

fn note_not_entered(account: &str, why: NotEntered, wait: LaneWait, summary: &mut RunSummary) {
    match why {
        NotEntered::Busy => {
            tracing::debug!(
                account,
                "this process is working the account already; skipped"
            )
        }
        NotEntered::Stopping => summary.interrupted = true,
        NotEntered::Share => tracing::debug!(
            account,
            "this replica holds its fair share of the lanes; left to another replica"
        ),
        NotEntered::Held(h) => {
            let heartbeat_at = h.heartbeat_at.as_deref().unwrap_or("-");
            let line = format!(
                "account {account} is held by {} (another process works it); skipped",
                h.holder
            );
            // The daemon meets other replicas' lanes at every tick (its next tick tries again):
            // that is how replicas share, not a warning. A one-off pass that waited and still
            // did not get the account tells its operator.
            if wait == LaneWait::Skip {
                tracing::info!(account, holder = %h.holder, heartbeat_at, "{line}");
            } else {
                tracing::warn!(account, holder = %h.holder, heartbeat_at, "{line}");
            }
            summary.skipped_accounts.push(SkippedAccount {
                account: account.to_string(),
                holder: h.holder,
            });
        }
    }
}

impl Lane {
    /// Stops the heartbeat and gives the account back, with the pacer's next slot for the
    /// next holder.
    pub(crate) async fn leave(self) {
        self.pacer.set_gate(None);
        self.stop_heartbeat.cancel();
        let _ = self.heartbeat.await;
        let next_call_at = self.pacer.next_slot().await.map(|slot| {
            let ahead = slot.saturating_duration_since(tokio::time::Instant::now());
            Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default()
        });
        match self.ledger.release_account(&self.fence, next_call_at).await {
            Ok(_) => tracing::debug!(account = %self.fence.account, "lane left"),
            Err(e) => {
                tracing::warn!(account = %self.fence.account, error = %e, "cannot release the account lease; it expires on its own")
            }
        }
    }
}

/// How soon a failed renewal is tried again, until one succeeds: a row or file lock held a
/// moment too long should not cost a lane a third of its lease.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// Renews the lease every third of its time-to-live until stopped. A renewal that finds the
/// lease no longer ours cancels `lost`; a failed renewal (a full disk, a locked file or row) is
/// retried every `RENEW_RETRY` (said once at WARN): if none succeeds before the lease expires,
/// another process may take the account, and the fence refuses this lane's writes.
async fn beat(
    ledger: Ledger,
    fence: Fence,
    ttl: Duration,
    clock: LeaseClock,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(heartbeat_interval(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failed = false;
    loop {
        let retry = tokio::time::sleep(RENEW_RETRY.min(heartbeat_interval(ttl)));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = retry, if failed => {}
        }
        let sent = std::time::Instant::now();
        match ledger.renew_account(&fence, ttl, Utc::now()).await {
            Ok(true) => {
                clock.renewed(sent, ttl);
                failed = false;
            }
            Ok(false) => {
                tracing::warn!(account = %fence.account, token = fence.token, "fenced out: the account's lease was taken by another process while this one was stalled; stopping the lane");
                lost.cancel();
                return;
            }
            Err(e) if failed => {
                tracing::debug!(account = %fence.account, error = %e, "cannot renew the account lease; retrying")
            }
            Err(e) => {
                tracing::warn!(account = %fence.account, error = %e, "cannot renew the account lease; retrying every second until it is renewed");
                failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renewal that fails (here: another connection holds SQLite's write lock past
    /// `busy_timeout`) is tried again a second later, not a whole beat later: with a 9 s lease
    /// (a beat every 3 s) the lease is renewed about 4.3 s in, well before the next beat at 6 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_renewal_is_tried_again_a_second_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let ledger = crate::ledger::open(&path, Duration::from_millis(300))
            .await
            .unwrap();
        let ttl = Duration::from_secs(9);
        let started = std::time::Instant::now();
        let taken = Utc::now();
        let fence = ledger
            .acquire_account("hk", "me", ttl, 400, taken)
            .await
            .unwrap()
            .expect("free")
            .fence;
        let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
        let clock = LeaseClock::new(started, ttl);
        let heartbeat = tokio::spawn(beat(
            ledger.clone(),
            fence,
            ttl,
            clock.clone(),
            lost.clone(),
            stop.clone(),
        ));
        // The write lock from 2.0 s to 3.6 s: the beat at 3 s fails after 300 ms.
        let pool = ledger.as_sqlite().unwrap().pool().clone();
        tokio::time::sleep_until((started + Duration::from_millis(2_000)).into()).await;
        let mut locker = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *locker)
            .await
            .unwrap();
        tokio::time::sleep_until((started + Duration::from_millis(3_600)).into()).await;
        sqlx::query("ROLLBACK").execute(&mut *locker).await.unwrap();
        drop(locker);
        tokio::time::sleep_until((started + Duration::from_millis(5_200)).into()).await;
        let beat_at = ledger.lanes(Utc::now()).await.unwrap()[0]
            .heartbeat_at
            .as_deref()
            .and_then(crate::ledger::time::from_db)
            .unwrap();
        stop.cancel();
        heartbeat.await.unwrap();
        assert!(!lost.is_cancelled());
        assert!(
            beat_at - taken >= chrono::Duration::milliseconds(3_600),
            "renewed {} ms after the lease was taken: the failed renewal was not tried again \
             before the next beat",
            (beat_at - taken).num_milliseconds()
        );
        assert!(clock.may_call());
    }
}
