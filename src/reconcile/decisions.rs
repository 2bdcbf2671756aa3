//! What a pass does with the answers it got: decisions through the state machine, the last
//! resort for payments still undetermined past their deadline, account pauses, and writing
//! each delivery.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::accounts::{AccountRuntime, Gateway};
use super::{
    Answer, PassContext, ReconcileError, Reconciler, RunScope, RunSummary, reversal, update,
};
use crate::domain::{
    CancelRoute, DiscrepancyKind, ECPAY_AFTER_FINAL, LastResort, OpenPayment, PaymentState,
    RecordKind, RetryReason, last_resort,
};
use crate::gateway::{ErrorClass, GatewayError};
use crate::ledger::{Claimed, NewEvent, PaymentUpdate, WriteGuard};
use crate::metrics::{self, Reversal};

/// ECPay: a settled order stays under observation within the account's
/// `after_final_look_back` (captures, cancellations and refunds after authorization come days
/// later, a payment failed at its `error_nopay`/`Unauthorized` horizon may still be paid, and
/// ECPay has no sweep), on the slow `ECPAY_AFTER_FINAL` schedule; `reconcile --once --all`
/// checks them now. At the end of the look-back the watch ends, whatever the last call did.
fn keep_watching(
    rt: &AccountRuntime,
    c: &Claimed,
    mut u: PaymentUpdate,
    at: DateTime<Utc>,
) -> PaymentUpdate {
    let Gateway::Ecpay { account, .. } = &rt.gateway else {
        return u;
    };
    if !matches!(
        u.state,
        PaymentState::Succeeded | PaymentState::PartiallyRefunded | PaymentState::Failed
    ) {
        return u;
    }
    let end = c.created_at
        + chrono::Duration::from_std(account.after_final_look_back).unwrap_or_default();
    if at >= end {
        u.retry = None;
        u.next_check_at = None;
        return u;
    }
    if u.retry.is_some() {
        // A failed call on a watched order keeps its own, sooner retry, within the look-back.
        u.next_check_at = u.next_check_at.map(|t| t.min(end));
        return u;
    }
    let repeats = match c.retry_reason {
        Some(RetryReason::AfterFinal) => c.retry_repeats.saturating_add(1),
        _ => 0,
    };
    let delay = chrono::Duration::from_std(ECPAY_AFTER_FINAL.delay(repeats, 0.5))
        .unwrap_or(chrono::Duration::days(3));
    u.retry = Some((RetryReason::AfterFinal, repeats));
    u.next_check_at = Some((at + delay).min(end));
    u
}

/// Says so at error priority when a payment is handed to a person or the gateway contradicts
/// the money the ledger believed in: these are the alerts an operator acts on.
fn alert(c: &Claimed, u: &PaymentUpdate) {
    if u.state == PaymentState::NeedsReview && c.state != PaymentState::NeedsReview {
        let why = u
            .events
            .last()
            .and_then(|e| e.message.as_deref())
            .unwrap_or_default();
        tracing::error!(payment = c.id.0, account = %c.account, out_trade_no = %c.out_trade_no, why, "payment needs review");
    }
    for d in &u.discrepancies {
        if matches!(
            d.kind,
            DiscrepancyKind::PaidDespiteReversal | DiscrepancyKind::UnrecognisedPaidRecord
        ) {
            tracing::error!(payment = c.id.0, account = %c.account, out_trade_no = %c.out_trade_no, kind = d.kind.as_str(), detail = %d.detail, "money alert");
        }
    }
}

impl Reconciler {
    /// Turns one account's answers into updates: decisions, last resorts, and a pause of the
    /// account when an answer says the account itself is in trouble.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn decide(
        &self,
        ctx: &PassContext<'_>,
        scope: &RunScope,
        rt: &AccountRuntime,
        chunk: &[Claimed],
        answers: HashMap<usize, Answer>,
        postponed: Vec<(usize, DateTime<Utc>)>,
        summary: &mut RunSummary,
    ) -> Result<Vec<PaymentUpdate>, ReconcileError> {
        let mut updates = Vec::with_capacity(answers.len() + postponed.len());
        for (i, until) in postponed {
            updates.push(update::postpone(&chunk[i], until));
        }
        let mut account_error: Option<Arc<GatewayError>> = None;
        for (i, answer) in answers {
            let c = &chunk[i];
            let at = answer.at;
            let (u, at) = match &answer.said {
                Ok(obs) => (
                    update::from_observation(c, obs, &rt.schedule, at, ctx.jitter()),
                    at,
                ),
                Err(e) => {
                    summary.counters.errors += 1;
                    if matches!(e.class(), ErrorClass::Account | ErrorClass::RateLimited) {
                        account_error.get_or_insert_with(|| e.clone());
                    }
                    (
                        update::from_call_error(c, e, &rt.schedule, at, ctx.jitter()),
                        at,
                    )
                }
            };
            let u = self.last_resort(ctx, scope, rt, c, u, at, summary).await;
            let u = keep_watching(rt, c, u, at);
            alert(c, &u);
            updates.push(u);
        }
        if let Some(e) = account_error {
            self.pause(ctx, scope, rt, &e, summary).await?;
        }
        Ok(updates)
    }

    /// Counts a delivery's updates into the summary and applies them (not in a dry run).
    pub(crate) async fn commit(
        &self,
        ctx: &PassContext<'_>,
        scope: &RunScope,
        updates: &[PaymentUpdate],
        summary: &mut RunSummary,
    ) -> Result<(), ReconcileError> {
        // Counted only once written: a delivery whose commit fails (a full disk, a lane fenced
        // out) must not show in the run's counters.
        let applied = if scope.dry_run {
            None
        } else {
            Some(
                self.ledger
                    .apply(WriteGuard::Lane(ctx.fence), ctx.run_id, updates, Utc::now())
                    .await?,
            )
        };
        let written = |u: &&PaymentUpdate| applied.as_ref().is_none_or(|a| a.contains(&u.id));
        for u in updates.iter().filter(written) {
            *summary
                .decided
                .entry(u.state.as_str().to_string())
                .or_default() += 1;
            if u.state.is_final() {
                summary.counters.finalized += 1;
            }
            if u.checked {
                summary.counters.checked += 1;
            }
            // A dry run writes nothing, so confirms nothing.
            if !scope.dry_run
                && u.events.iter().any(|e| {
                    e.from_state == Some(PaymentState::Reversing)
                        && e.to_state == Some(PaymentState::Reversed)
                })
            {
                metrics::reversal(&ctx.fence.account, Reversal::Confirmed);
            }
        }
        tracing::debug!(account = %ctx.fence.account, payments = updates.len(), "pass updates committed");
        Ok(())
    }

    /// Applies the last-resort policy to a payment still open after this pass's answer, which
    /// arrived at `at`.
    #[allow(clippy::too_many_arguments)]
    async fn last_resort(
        &self,
        ctx: &PassContext<'_>,
        scope: &RunScope,
        rt: &AccountRuntime,
        c: &Claimed,
        u: PaymentUpdate,
        at: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> PaymentUpdate {
        if u.state.is_final() {
            return u;
        }
        let (client, route) = match &rt.gateway {
            Gateway::Qfpay { client, account } if c.kind == RecordKind::Payment => (
                Some(client),
                Some(
                    c.pay_type
                        .as_ref()
                        .map_or(CancelRoute::NotCancellable, |p| account.cancel_route(p)),
                ),
            ),
            _ => (None, None),
        };
        let facts = OpenPayment {
            state: u.state,
            pay_type: c.pay_type.as_ref(),
            route,
            created_at: c.created_at,
            registered_at: c.registered_at,
            expires_at: c.expires_at,
            reversal_requested: c.reversal_requested_at.is_some(),
            notified_paid: c.notified_at.is_some(),
        };
        match last_resort(&facts, &self.policy, at) {
            LastResort::Wait => u,
            LastResort::NeedsReview(why) => update::to_review(u, why, at),
            LastResort::WouldReverse(r) => {
                let mut u = u;
                u.events.push(NewEvent {
                    at,
                    kind: "reversal_dry_run",
                    from_state: Some(u.state),
                    to_state: Some(u.state),
                    provider_code: None,
                    message: Some(format!("reversal.mode = dry-run: would send a {r} now")),
                    evidence: serde_json::json!({}),
                });
                tracing::info!(payment = c.id.0, route = %r, "dry-run: would reverse");
                u
            }
            LastResort::Reverse(_) if scope.dry_run => {
                tracing::info!(payment = c.id.0, "--dry-run: would reverse");
                u
            }
            LastResort::Reverse(r) => {
                let Some(client) = client else { return u };
                if !ctx.may_call() || ctx.shutdown.is_cancelled() {
                    // The lane may have lost the account, or a stop was requested (a last
                    // resort costs several paced calls): the next pass decides.
                    return u;
                }
                let (u, calls, sent) = reversal::reverse(ctx, client, &rt.schedule, c, r, u).await;
                summary.counters.calls += calls;
                summary.reversals_sent += u64::from(sent);
                u
            }
        }
    }

    /// Keeps the engine away from an account after an account-level error or a rate limit.
    async fn pause(
        &self,
        ctx: &PassContext<'_>,
        scope: &RunScope,
        rt: &AccountRuntime,
        e: &GatewayError,
        summary: &mut RunSummary,
    ) -> Result<(), ReconcileError> {
        let wait = match (e, &rt.gateway) {
            (
                GatewayError::RateLimited {
                    retry_after: Some(d),
                    ..
                },
                _,
            ) => *d,
            (GatewayError::RateLimited { .. }, Gateway::Ecpay { account, .. }) => {
                account.pause_after_403
            }
            (GatewayError::RateLimited { .. }, Gateway::Qfpay { .. }) => {
                std::time::Duration::from_secs(60)
            }
            _ => std::time::Duration::from_secs(15 * 60),
        };
        // The wait runs from when the error arrived, not from the chunk's start (`ctx.now`):
        // a chunk of many calls can take minutes, and a pause counted from its start would end
        // before it was even logged.
        let now = ctx.now.max(chrono::Utc::now());
        let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
        let shown = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if e.class() == ErrorClass::Account {
            tracing::error!(account = %rt.name, error = %e, until = %shown, "account error: pausing the account; an operator must check its credentials or merchant status");
        } else {
            tracing::warn!(account = %rt.name, error = %e, until = %shown, "rate limited: pausing the account");
        }
        summary.paused_accounts.push(rt.name.to_string());
        if !scope.dry_run {
            self.ledger
                .pause_account(ctx.fence, until, &e.to_string(), now)
                .await?;
        }
        Ok(())
    }
}
