//! Reconciliation sweeps of closed QFPay windows (docs/ARCHITECTURE.md §4, "Sweeps"): walk every
//! record of a past window page by page, with a cursor saved after each page so a crash
//! resumes where it stopped; confirm ledger payments; report gateway records the ledger does
//! not know (`missing_in_ledger`) and ledger payments the gateway never had
//! (`missing_at_gateway`).
//!
//! What a page does to the ledger is in `sweep_page`: open payments are made due (the next
//! pass settles them under a lease); payments no pass works on any more (final, or handed to a
//! person) follow what the gateway says through the state machine (`succeeded` → `refunded`,
//! `needs_review` → the gateway's final state), with the record as evidence; refund records
//! are linked to their payment, or registered when the ledger holds the payment.
//!
//! The scheduled sweep has its own cursor (`sweep_schedule`): a manual sweep of a later window
//! never makes it skip the days in between. It reads each closed window twice: when it closes
//! (round `Fresh`, shared with manual sweeps) and again `sweep_look_back` later (round
//! `LookBack`), so refunds and late cancels reach the ledger.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use tokio_util::sync::CancellationToken;

use super::accounts::Gateway;
use super::lane::{LaneWait, NotEntered};
use super::plan;
use super::{ReconcileError, Reconciler};
use crate::domain::{DiscrepancyKind, PaymentId};
use crate::gateway::qfpay::WindowQuery;
use crate::ledger::{
    Fence, NewDiscrepancy, SchedulePosition, SweepCursor, SweepDiscrepancy, SweepRound,
};

/// Payments created this close to a window's edge may have a `sysdtm` on the other side of it,
/// so they are not reported missing.
const EDGE: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub records: u64,
    pub matched: u64,
    pub made_due: u64,
    pub missing_in_ledger: Vec<String>,
    pub missing_at_gateway: Vec<String>,
    pub contradictions: Vec<String>,
    /// Final (or needs-review) payments whose state the gateway's record changed.
    pub updated: Vec<String>,
    /// Refund records of ledger payments that the sweep registered.
    pub refunds_registered: Vec<String>,
    /// Records unknown to the ledger, not reported because the ledger is not the merchant's
    /// complete book (`ledger_is_complete = false`).
    pub unknown_records: u64,
    /// Records without a readable id (reported once each).
    pub unreadable: Vec<String>,
    pub calls: u64,
    pub resumed_pieces: u64,
    pub already_complete_pieces: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0:?} is not a configured QFPay account")]
    NotQfpay(String),
    #[error("the window must be closed: --to {0} is in the future")]
    Open(DateTime<Utc>),
    #[error("--from must be before --to")]
    Empty,
    #[error(
        "account {account} is held by {holder} (another process works it); skipped: the sweep \
         did not start; run it again when that process is done, or raise reconcile.lane_wait"
    )]
    Held { account: String, holder: String },
    #[error("stopped by a signal; run the sweep again to resume where it stopped")]
    Interrupted,
    #[error("sweep stopped on a gateway error (resume by running it again): {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error(transparent)]
    Engine(#[from] ReconcileError),
}

impl From<crate::ledger::LedgerError> for SweepError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        SweepError::Engine(e.into())
    }
}

/// Splits `[from, to)` at calendar months (account time): one cursor per piece.
fn month_pieces(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: chrono::FixedOffset,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let (_, next) = plan::month_bounds(start, tz);
        let end = next.min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// How long the hourly sweep of an account queues behind a pass of the same account (in this
/// process or another) before it gives the hour up; its cursor keeps the place.
const SCHEDULED_SWEEP_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// How long after a window closes before the scheduled sweep reads it (late records settle).
const SETTLE: chrono::Duration = chrono::Duration::hours(1);
/// The longest window one scheduled sweep reads; a long backlog is caught up a day per run.
const MAX_WINDOW: chrono::Duration = chrono::Duration::days(1);

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

impl Reconciler {
    /// The scheduled sweep: for each QFPay account, in its lane (all accounts at once), the
    /// next closed window after the schedule's own cursor (the last day on the first run), then
    /// the next window that has reached the look-back age, re-read for what happened to its
    /// payments since.
    pub async fn sweep_closed_windows(&self, now: DateTime<Utc>, shutdown: &CancellationToken) {
        let closed_until = floor_hour(now - SETTLE);
        let look_back = chrono::Duration::from_std(self.sweep_look_back).unwrap_or_default();
        let sweeps = self
            .accounts
            .iter()
            .filter(|rt| matches!(rt.gateway, Gateway::Qfpay { .. }))
            .map(|rt| async move {
                let account = rt.name.as_str();
                let lane = match self
                    .enter_lane(rt, LaneWait::UpTo(SCHEDULED_SWEEP_WAIT), shutdown)
                    .await
                {
                    Ok(Ok(lane)) => lane,
                    Ok(Err(why)) => {
                        tracing::info!(account, ?why, "account busy; the scheduled sweep resumes at the next tick");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(account, error = %e, "scheduled sweep failed; it resumes at the next tick");
                        return;
                    }
                };
                let result = self
                    .scheduled_sweep(&lane.fence, closed_until, look_back, shutdown)
                    .await;
                lane.leave().await;
                if let Err(e) = result {
                    tracing::warn!(account, error = %e, "scheduled sweep failed; it resumes at the next tick");
                }
            });
        futures::future::join_all(sweeps).await;
    }

    async fn scheduled_sweep(
        &self,
        fence: &Fence,
        closed_until: DateTime<Utc>,
        look_back: chrono::Duration,
        shutdown: &CancellationToken,
    ) -> Result<(), SweepError> {
        let account = fence.account.as_str();
        let mut pos = match self.ledger.schedule_position(account).await? {
            Some(p) => p,
            None => {
                // The first run starts a day back; saved at once, so a failed first sweep is
                // retried from the same place rather than from a later "a day back".
                let start = closed_until - MAX_WINDOW;
                let p = SchedulePosition {
                    swept_until: start,
                    rechecked_from: start,
                };
                self.ledger
                    .save_schedule_position(fence, p, Utc::now())
                    .await?;
                p
            }
        };
        let to = (pos.swept_until + MAX_WINDOW).min(closed_until);
        if pos.swept_until < to {
            self.sweep_round(
                fence,
                pos.swept_until,
                to,
                SweepRound::Fresh,
                false,
                shutdown,
            )
            .await?;
            pos.swept_until = to;
            self.ledger
                .save_schedule_position(fence, pos, Utc::now())
                .await?;
        }
        let due = (closed_until - look_back).min(pos.swept_until);
        let to = (pos.rechecked_from + MAX_WINDOW).min(due);
        if pos.rechecked_from < to {
            self.sweep_round(
                fence,
                pos.rechecked_from,
                to,
                SweepRound::LookBack,
                false,
                shutdown,
            )
            .await?;
            pos.rechecked_from = to;
            self.ledger
                .save_schedule_position(fence, pos, Utc::now())
                .await?;
        }
        Ok(())
    }

    /// Sweeps `[from, to)` of a QFPay account, in its lane: waiting up to `reconcile.lane_wait`
    /// for another process that works the account. Running it again resumes an interrupted
    /// sweep and skips completed month pieces, unless `again` (read them once more from page 1).
    pub async fn sweep(
        &self,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        again: bool,
        shutdown: &CancellationToken,
    ) -> Result<SweepReport, SweepError> {
        if to > Utc::now() {
            return Err(SweepError::Open(to));
        }
        if from >= to {
            return Err(SweepError::Empty);
        }
        let Some(rt) = self
            .accounts
            .iter()
            .find(|r| r.name.as_str() == account && matches!(r.gateway, Gateway::Qfpay { .. }))
        else {
            return Err(SweepError::NotQfpay(account.to_string()));
        };
        let wait = LaneWait::UpTo(self.settings.lane_wait);
        let lane = match self.enter_lane(rt, wait, shutdown).await? {
            Ok(lane) => lane,
            Err(NotEntered::Held(h)) => {
                return Err(SweepError::Held {
                    account: account.to_string(),
                    holder: h.holder,
                });
            }
            Err(NotEntered::Stopping) => return Err(SweepError::Interrupted),
            // `Share` only bounds a daemon among replicas; a one-off sweep has no bound.
            Err(NotEntered::Busy | NotEntered::Share) => {
                return Err(SweepError::Held {
                    account: account.to_string(),
                    holder: "this process".into(),
                });
            }
        };
        let result = self
            .sweep_round(&lane.fence, from, to, SweepRound::Fresh, again, shutdown)
            .await;
        lane.leave().await;
        result
    }

    async fn sweep_round(
        &self,
        fence: &Fence,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        round: SweepRound,
        again: bool,
        shutdown: &CancellationToken,
    ) -> Result<SweepReport, SweepError> {
        let account = fence.account.as_str();
        let Some(Gateway::Qfpay {
            client,
            account: cfg,
        }) = self
            .accounts
            .iter()
            .find(|r| r.name.as_str() == account)
            .map(|r| &r.gateway)
        else {
            return Err(SweepError::NotQfpay(account.to_string()));
        };
        let mut report = SweepReport::default();
        for (start, end) in month_pieces(from, to, cfg.timezone) {
            let cursor = self
                .ledger
                .sweep_cursor(account, start, end, round)
                .await?
                .filter(|c| !(again && c.completed));
            if cursor.is_some_and(|c| c.completed) {
                report.already_complete_pieces += 1;
                continue;
            }
            let mut cursor = cursor.unwrap_or(SweepCursor {
                next_page: 1,
                records_seen: 0,
                completed: false,
            });
            report.resumed_pieces += u64::from(cursor.next_page > 1);
            let mut pager = client
                .sweep(WindowQuery::new(start, end))
                .resume_at(0, cursor.next_page);
            // The ids of ledger payments the gateway showed, to find the missing ones at the end.
            // A resumed sweep re-reads nothing, so it reports missing payments only when it ran
            // from page 1.
            let mut seen: HashSet<i64> = HashSet::new();
            let mut complete_run = cursor.next_page == 1;
            loop {
                // Between pages: the cursor keeps the place for the next run.
                if shutdown.is_cancelled() {
                    return Err(SweepError::Interrupted);
                }
                report.calls += 1;
                let next = match pager.next_page().await {
                    // The lane's gate withholds calls once a stop is requested.
                    Err(crate::gateway::GatewayError::Withheld { .. })
                        if shutdown.is_cancelled() =>
                    {
                        return Err(SweepError::Interrupted);
                    }
                    next => next?,
                };
                let Some(page) = next else {
                    report.calls -= 1;
                    break;
                };
                report.records += page.observations.len() as u64;
                // A record without a readable id matches no payment: report it, and do not
                // call any payment of this piece missing, since it may be that record.
                let unreadable: Vec<SweepDiscrepancy> = page
                    .observations
                    .iter()
                    .filter(|o| o.provider_ref.is_none() && o.out_trade_no.is_none())
                    .map(|o| {
                        let raw: String = o.evidence.to_string().chars().take(300).collect();
                        SweepDiscrepancy {
                            payment: None,
                            found: NewDiscrepancy {
                                kind: DiscrepancyKind::UnreadableRecord,
                                detail: format!(
                                    "a record without a readable syssn or out_trade_no: {raw}"
                                ),
                                evidence: o.evidence.clone(),
                            },
                            subject: raw,
                        }
                    })
                    .collect();
                complete_run &= unreadable.is_empty();
                self.report_once(fence, unreadable, &mut report.unreadable)
                    .await?;
                self.sweep_page(
                    fence,
                    cfg.timezone,
                    cfg.ledger_is_complete,
                    &page.observations,
                    &mut seen,
                    &mut report,
                )
                .await?;
                cursor.next_page = page.page + 1;
                cursor.records_seen += page.observations.len() as u64;
                self.ledger
                    .save_sweep_cursor(fence, start, end, round, cursor, Utc::now())
                    .await?;
                tracing::debug!(
                    account,
                    page = page.page,
                    records = page.observations.len(),
                    "sweep page applied"
                );
            }
            cursor.completed = true;
            self.ledger
                .save_sweep_cursor(fence, start, end, round, cursor, Utc::now())
                .await?;
            if complete_run {
                let missing: Vec<SweepDiscrepancy> = self
                    .ledger
                    .payments_created_in(account, start + EDGE, end - EDGE)
                    .await?
                    .into_iter()
                    .filter(|(id, _)| !seen.contains(id))
                    .map(|(id, out_trade_no)| SweepDiscrepancy {
                        payment: Some(PaymentId(id)),
                        found: NewDiscrepancy {
                            kind: DiscrepancyKind::MissingAtGateway,
                            detail: format!("out_trade_no {out_trade_no}: no gateway record in the closed window {start} – {end}"),
                            evidence: serde_json::json!({}),
                        },
                        subject: out_trade_no,
                    })
                    .collect();
                self.report_once(fence, missing, &mut report.missing_at_gateway)
                    .await?;
            }
        }
        tracing::info!(
            account,
            round = match round {
                SweepRound::Fresh => "fresh",
                SweepRound::LookBack => "look-back",
            },
            records = report.records,
            calls = report.calls,
            updated = report.updated.len(),
            refunds_registered = report.refunds_registered.len(),
            missing_in_ledger = report.missing_in_ledger.len(),
            missing_at_gateway = report.missing_at_gateway.len(),
            "sweep finished"
        );
        Ok(report)
    }

    /// Records the findings not recorded yet (one transaction) and lists their details.
    pub(super) async fn report_once(
        &self,
        fence: &Fence,
        findings: Vec<SweepDiscrepancy>,
        list: &mut Vec<String>,
    ) -> Result<(), SweepError> {
        let recorded = self
            .ledger
            .record_sweep_discrepancies(fence, &findings, Utc::now())
            .await?;
        list.extend(
            recorded
                .into_iter()
                .map(|i| findings[i].found.detail.clone()),
        );
        Ok(())
    }
}
