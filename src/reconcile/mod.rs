//! The reconcile pass (docs/ARCHITECTURE.md §4): one lane per merchant account (`lane`: a lane
//! works one account under its lease), all lanes at once; each lane plans gateway calls, calls,
//! decides with the pure state machine, applies each answer as it arrives, and reverses as a
//! last resort. Cron, the CLI and tests all go through [`Reconciler::run_once`].

mod accounts;
mod decisions;
mod ecpay_pass;
mod lane;
mod matching;
pub mod plan;
mod qfpay_pass;
mod reversal;
mod share;
pub mod sweep;
mod sweep_page;
pub mod update;
mod window_sweep;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ReconcileSettings, Settings};
use crate::domain::{LastResortPolicy, Provider};
use crate::gateway::GatewayError;
use crate::ledger::{Fence, Ledger, LedgerError, RunCounters};
pub use lane::{LaneWait, heartbeat_interval};
pub use plan::Strategy;

/// What one gateway call told us about one payment, and when the answer arrived: every next
/// check and every event is timed from the answer, not from when the payment was claimed (an
/// answer late in a long chunk would otherwise be re-asked too early).
#[derive(Debug)]
pub(crate) struct Answer {
    /// An observation, or the error of a call that produced no evidence.
    pub said: Result<crate::domain::Observation, Arc<GatewayError>>,
    pub at: DateTime<Utc>,
}

impl Answer {
    pub fn seen(obs: crate::domain::Observation, at: DateTime<Utc>) -> Self {
        Self { said: Ok(obs), at }
    }

    pub fn failed(e: Arc<GatewayError>, at: DateTime<Utc>) -> Self {
        Self { said: Err(e), at }
    }
}

/// What one answered call tells the lane: answers for some members of the unit, or members to
/// look at again later (with when). The lane decides and writes each delivery in one
/// transaction as soon as it arrives.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    pub answers: HashMap<usize, Answer>,
    pub postponed: Vec<(usize, DateTime<Utc>)>,
}

impl Delivery {
    pub fn answers(answers: HashMap<usize, Answer>) -> Self {
        Self {
            answers,
            postponed: Vec::new(),
        }
    }
}

/// Where the gateway passes send their deliveries.
pub(crate) type Sink = tokio::sync::mpsc::UnboundedSender<Delivery>;

/// Which payments a pass works on, and how.
#[derive(Debug, Clone, Default)]
pub struct RunScope {
    pub account: Option<String>,
    pub provider: Option<Provider>,
    /// Ignore `next_check_at`: every open payment is due, and every settled one still under
    /// observation (CLI `--all`).
    pub all: bool,
    /// Ask the gateways but write nothing and reverse nothing.
    pub dry_run: bool,
    pub strategy: Strategy,
    /// Who started it: `cron`, `cli`, `demo` …
    pub trigger: &'static str,
    /// How long to wait for an account another process (or this one) is working:
    /// `None` skips it at once (the daemon's ticks), `Some(d)` waits up to `d`.
    pub lane_wait: Option<Duration>,
}

/// An account a pass did not work because another process held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedAccount {
    pub account: String,
    pub holder: String,
}

/// The outcome of a pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub run_id: Option<i64>,
    pub counters: RunCounters,
    /// State counts after this pass's decisions (`dry_run`: what would be written).
    pub decided: std::collections::BTreeMap<String, u64>,
    pub reversals_sent: u64,
    pub paused_accounts: Vec<String>,
    /// Accounts another process held for longer than the pass would wait.
    pub skipped_accounts: Vec<SkippedAccount>,
    /// Accounts whose lease another process took while this pass stalled: their lanes stopped
    /// and wrote nothing more.
    pub fenced_out: Vec<String>,
    /// The pass stopped early (shutdown requested) between units.
    pub interrupted: bool,
}

impl RunSummary {
    /// Adds a lane's summary to the pass's.
    pub(crate) fn merge(&mut self, o: RunSummary) {
        self.counters.add(o.counters);
        for (k, v) in o.decided {
            *self.decided.entry(k).or_default() += v;
        }
        self.reversals_sent += o.reversals_sent;
        self.paused_accounts.extend(o.paused_accounts);
        self.skipped_accounts.extend(o.skipped_accounts);
        self.fenced_out.extend(o.fenced_out);
        self.interrupted |= o.interrupted;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot build gateway clients: {0}")]
    Gateway(#[from] GatewayError),
    #[error("no configured account is named {0:?}")]
    UnknownAccount(String),
}

/// Everything one unit's helpers need.
#[derive(Debug, Clone)]
pub(crate) struct PassContext<'a> {
    pub ledger: &'a Ledger,
    /// The lane's lease: every write presents it.
    pub fence: &'a Fence,
    pub run_id: Option<i64>,
    pub now: DateTime<Utc>,
    pub strategy: Strategy,
    pub concurrency: usize,
    /// Whether a unit may sweep its own windows: only when the pass had no window phase
    /// (`--dry-run`); otherwise every window worth sweeping was swept (or abandoned as too
    /// large) before the units, and sweeping it again per unit would repeat pages.
    pub unit_sweeps: bool,
    /// Cancelled when the lane must make no more calls (its lease is lost, or a write failed).
    pub stop: tokio_util::sync::CancellationToken,
    /// Until when the lease is surely the lane's.
    pub lease: lane::LeaseClock,
    /// Stop requested: the unit in flight is finished, but no last resort is started.
    pub shutdown: CancellationToken,
    /// This process's fair share of the lanes, and the lane's place in it.
    pub share: (&'a share::LaneShare, &'a share::ShareSlot),
}

impl PassContext<'_> {
    /// Whether another gateway call may be started: no stop was requested and the lane still
    /// surely holds the account. (Answers of calls already made are still written.)
    pub fn may_call(&self) -> bool {
        !self.stop.is_cancelled() && !self.shutdown.is_cancelled() && self.lease.may_call()
    }

    /// Whether the lane must leave the account to another replica: this process holds more
    /// lanes than its share (`reconcile::share`). Asked between units and between the pages
    /// of a window, so a long window sweep does not keep a lane past its share either.
    pub fn over_share(&self) -> bool {
        let (share, slot) = self.share;
        slot.given_back() || share.yield_if_over(slot)
    }

    /// A jitter sample for retry delays.
    pub fn jitter(&self) -> f64 {
        rand::random::<f64>()
    }
}

/// A unique id for this process as a lease holder: host, pid and a random tag.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The reconcile engine for one process. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Reconciler {
    ledger: Ledger,
    accounts: Vec<accounts::AccountRuntime>,
    policy: LastResortPolicy,
    settings: ReconcileSettings,
    /// How old a closed window is when the scheduled sweep reads it again.
    sweep_look_back: std::time::Duration,
    /// Lease holder id: unique per process.
    owner: String,
    /// The bound on the lanes this process holds at once (a daemon among replicas).
    share: share::LaneShare,
}

impl Reconciler {
    pub fn new(ledger: Ledger, settings: &Settings) -> Result<Self, ReconcileError> {
        Ok(Self {
            ledger,
            accounts: accounts::build(settings)?,
            policy: LastResortPolicy {
                mode: settings.reversal.mode,
                cpm_in_progress_limit: settings.reversal.cpm_in_progress_limit,
                default_expiry: settings.reversal.default_expiry,
                expiry_grace: settings.reversal.expiry_grace,
                give_up_after: settings.reconcile.give_up_after,
            },
            settings: settings.reconcile.clone(),
            sweep_look_back: settings.schedule.sweep_look_back,
            owner: holder_id(),
            share: share::LaneShare::default(),
        })
    }

    /// Takes this process's fair share of the lanes among `live` replicas (sorted holder
    /// ids, `reconcile::share`); logged when it changes.
    pub fn set_share(&self, live: &[String]) {
        let (limit, offset) = share::fair_share(live, &self.owner, self.accounts.len());
        if self.share.limit() != Some(limit) {
            tracing::info!(
                replicas = live.len().max(1),
                accounts = self.accounts.len(),
                lanes = limit,
                "this replica's fair share: at most {limit} lanes at once"
            );
        }
        self.share.set(limit, offset);
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Whether `account`'s lane is working now in this process; `None` for an account that
    /// is not configured.
    pub fn lane_busy(&self, account: &str) -> Option<bool> {
        self.accounts
            .iter()
            .find(|rt| rt.name.as_str() == account)
            .map(|rt| rt.lane.is_busy())
    }

    /// This process's lease holder id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The account lease's time-to-live.
    pub fn lease(&self) -> std::time::Duration {
        self.settings.lease
    }

    /// One pass: every account in scope worked by its own lane, all at once. A lane stops
    /// between units when `shutdown` is cancelled (the unit in flight is finished and applied).
    /// A daemon tick (`lane_wait: None`) whose lanes are all busy writes no run.
    #[tracing::instrument(skip_all, fields(trigger = scope.trigger, dry_run = scope.dry_run))]
    pub async fn run_once(
        &self,
        scope: &RunScope,
        shutdown: &CancellationToken,
    ) -> Result<RunSummary, ReconcileError> {
        if let Some(a) = &scope.account
            && !self.accounts.iter().any(|r| r.name.as_str() == a)
        {
            return Err(ReconcileError::UnknownAccount(a.clone()));
        }
        // Its own slice first (`reconcile::share`): a replica keeps its merchants.
        let lanes: Vec<_> = self
            .share
            .rotated(self.accounts.iter().collect())
            .into_iter()
            .filter(|rt| scope.account.as_ref().is_none_or(|a| rt.name.as_str() == a))
            .filter(|rt| scope.provider.is_none_or(|p| rt.provider() == p))
            .collect();
        if scope.lane_wait.is_none() && lanes.iter().all(|rt| rt.lane.is_busy()) {
            return Ok(RunSummary::default());
        }
        let _timer = crate::metrics::time_pass(scope.trigger);
        let started = Utc::now();
        let run_id = if scope.dry_run {
            None
        } else {
            Some(
                self.ledger
                    .start_run(&self.owner, scope.trigger, started)
                    .await?,
            )
        };
        let wait = scope.lane_wait.map_or(LaneWait::Skip, LaneWait::UpTo);
        let results = futures::future::join_all(
            lanes
                .iter()
                .map(|rt| self.run_lane(rt, scope, run_id, wait, shutdown)),
        )
        .await;
        let mut summary = RunSummary {
            run_id,
            ..RunSummary::default()
        };
        let mut result = Ok(());
        for r in results {
            match r {
                Ok(s) => summary.merge(s),
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        let status = match (&result, summary.interrupted) {
            (Err(_), _) => "failed",
            (Ok(()), true) => "interrupted",
            (Ok(()), false) => "completed",
        };
        crate::metrics::pass_finished(scope.trigger, status);
        if let Some(id) = run_id {
            let message = result.as_ref().err().map(ToString::to_string);
            self.ledger
                .finish_run(id, status, summary.counters, message.as_deref(), Utc::now())
                .await?;
        }
        result?;
        tracing::info!(
            claimed = summary.counters.claimed,
            finalized = summary.counters.finalized,
            calls = summary.counters.calls,
            errors = summary.counters.errors,
            "reconcile pass {status}"
        );
        Ok(summary)
    }
}
