//! The reconcile pass (docs/ARCHITECTURE.md §4): claim due payments, plan gateway calls, call,
//! decide with the pure state machine, apply in batched transactions, and reverse as a last
//! resort. Cron, the CLI and tests all go through [`Reconciler::run_once`].

mod accounts;
mod decisions;
mod ecpay_pass;
mod matching;
pub mod plan;
mod qfpay_pass;
mod reversal;
pub mod sweep;
mod sweep_page;
pub mod update;
mod window_sweep;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ReconcileSettings, Settings};
use crate::domain::{LastResortPolicy, Provider};
use crate::gateway::GatewayError;
use crate::ledger::{ClaimScope, Claimed, Ledger, LedgerError, PaymentUpdate, RunCounters};
use accounts::{AccountRuntime, Gateway};
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
    /// The pass stopped early (shutdown requested); unprocessed leases were released.
    pub interrupted: bool,
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

/// Everything one pass's helpers need.
#[derive(Debug)]
pub(crate) struct PassContext<'a> {
    pub ledger: &'a Ledger,
    pub owner: &'a str,
    pub run_id: Option<i64>,
    pub now: DateTime<Utc>,
    pub strategy: Strategy,
    pub concurrency: usize,
    /// Whether a chunk may sweep its own windows: only when the pass had no window phase
    /// (`--dry-run`); otherwise every window worth sweeping was swept (or abandoned as too
    /// large) before the chunks, and sweeping it again per chunk would repeat pages.
    pub chunk_sweeps: bool,
}

impl PassContext<'_> {
    /// A jitter sample for retry delays.
    pub fn jitter(&self) -> f64 {
        rand::random::<f64>()
    }
}

/// The reconcile engine for one process. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Reconciler {
    ledger: Ledger,
    accounts: Vec<AccountRuntime>,
    policy: LastResortPolicy,
    settings: ReconcileSettings,
    /// How old a closed window is when the scheduled sweep reads it again.
    sweep_look_back: std::time::Duration,
    /// Lease owner id: unique per process.
    owner: String,
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
            owner: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
        })
    }

    /// The timezone of a configured QFPay account.
    pub(crate) fn qfpay_timezone(&self, account: &str) -> Option<chrono::FixedOffset> {
        self.accounts.iter().find_map(|r| match &r.gateway {
            Gateway::Qfpay { account: a, .. } if r.name.as_str() == account => Some(a.timezone),
            _ => None,
        })
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// One pass over due payments. Stops between chunks when `shutdown` is cancelled (the
    /// chunk in flight is finished and applied; nothing else is claimed).
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
        let mut summary = RunSummary {
            run_id,
            ..RunSummary::default()
        };
        let result = self.passes(scope, run_id, shutdown, &mut summary).await;
        if !scope.dry_run {
            // Whatever happened, leave no lease of ours behind.
            let released = self.ledger.release_leases(&self.owner).await?;
            if released > 0 {
                tracing::info!(released, "released leases of unprocessed payments");
            }
        }
        let status = match (&result, summary.interrupted) {
            (Err(_), _) => "failed",
            (Ok(()), true) => "interrupted",
            (Ok(()), false) => "completed",
        };
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

    async fn passes(
        &self,
        scope: &RunScope,
        run_id: Option<i64>,
        shutdown: &CancellationToken,
        summary: &mut RunSummary,
    ) -> Result<(), ReconcileError> {
        let claim_scope = ClaimScope {
            account: scope.account.clone(),
            provider: scope.provider,
            ignore_schedule: scope.all,
            run_id,
        };
        // Dense windows first, swept page by page across the whole backlog; then the rest in
        // id-ordered chunks (skipping what the sweeps decided).
        if scope.strategy == Strategy::Planned && !scope.dry_run {
            window_sweep::sweep_dense_windows(self, scope, &claim_scope, run_id, shutdown, summary)
                .await?;
        }
        let mut after = 0;
        loop {
            if shutdown.is_cancelled() {
                summary.interrupted = true;
                return Ok(());
            }
            let now = Utc::now();
            let chunk = if scope.dry_run {
                self.ledger
                    .peek_due(&claim_scope, after, self.settings.chunk_size, now)
                    .await?
            } else {
                self.ledger
                    .claim(
                        &self.owner,
                        &claim_scope,
                        after,
                        self.settings.chunk_size,
                        now,
                        self.settings.lease,
                    )
                    .await?
            };
            let Some(last) = chunk.last() else {
                return Ok(());
            };
            after = last.id.0;
            summary.counters.claimed += chunk.len() as u64;
            let ctx = PassContext {
                ledger: &self.ledger,
                owner: &self.owner,
                run_id,
                now,
                strategy: scope.strategy,
                concurrency: self.settings.concurrency as usize,
                chunk_sweeps: scope.dry_run,
            };
            let updates = self.process_chunk(&ctx, scope, &chunk, summary).await?;
            self.commit(&ctx, scope, &updates, summary).await?;
        }
    }

    /// Calls the gateways for one claimed chunk and decides every payment in it.
    async fn process_chunk(
        &self,
        ctx: &PassContext<'_>,
        scope: &RunScope,
        chunk: &[Claimed],
        summary: &mut RunSummary,
    ) -> Result<Vec<PaymentUpdate>, ReconcileError> {
        let mut by_account: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, c) in chunk.iter().enumerate() {
            by_account.entry(c.account.as_str()).or_default().push(i);
        }
        let mut updates = Vec::with_capacity(chunk.len());
        for (account, members) in by_account {
            let Some(rt) = self.accounts.iter().find(|r| r.name.as_str() == account) else {
                // A payment of an account no longer configured: leave it for later, say so.
                tracing::warn!(
                    account,
                    payments = members.len(),
                    "payments of an unconfigured account are skipped"
                );
                updates.extend(
                    members.iter().map(|&i| {
                        update::postpone(&chunk[i], ctx.now + chrono::Duration::hours(1))
                    }),
                );
                continue;
            };
            let (answers, postponed, calls) = match &rt.gateway {
                Gateway::Qfpay { client, account } => {
                    let (a, c) =
                        qfpay_pass::check(ctx, client, account.batch_size, chunk, &members).await;
                    (a, Vec::new(), c)
                }
                Gateway::Ecpay { client, account } => {
                    ecpay_pass::check(ctx, client, account, chunk, &members).await
                }
            };
            summary.counters.calls += calls;
            updates.extend(
                self.decide(ctx, scope, rt, chunk, answers, postponed, summary)
                    .await?,
            );
        }
        Ok(updates)
    }
}
