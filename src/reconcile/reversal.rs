//! The last resort, executed (architecture notes, "last resort"): query once more; only if that
//! fresh answer says the payment is still being paid, or genuinely has no record, commit the
//! intent (`reversing`) *before* calling reversal/close; send the request **once**; read the
//! answer; then let queries settle it.
//!
//! The rules this file keeps (docs/RELIABILITY.md):
//! - a record that says `0000`, whatever else it says, is never reversed
//!   ([`Outcome::permits_cancel`]);
//! - a reversal or close leaves payrecon at most once per payment, ever: the intent row is the
//!   guard across restarts, and the client never retries the request;
//! - a lost answer (timeout, 5xx, malformed, bad signature) leaves the payment `reversing`, and
//!   the query settles it; a refusal is checked by a query before a person is asked.

use chrono::{DateTime, NaiveDateTime, Utc};

use super::PassContext;
use super::matching::foreign_record;
use super::update;
use crate::domain::{CancelRoute, Observation, Outcome, PaymentState, RetryReason, RetrySchedule};
use crate::gateway::qfpay::{
    CancelOutcome, CancelRequest, CancelTarget, IdLookup, OrderLookup, QfpayClient, TIME_FORMAT,
};
use crate::ledger::{Claimed, NewEvent, PaymentUpdate};
use crate::metrics::{self, Reversal};

/// A fresh single query of `c` and when its answer arrived; `None` when any call of it failed
/// (no evidence: do not reverse). A payment near a month edge is asked in both months: a
/// failure in one of them is a failed query, never "not found". The answers must be signed
/// by the gateway (`X-QF-SIGN` present and valid): an unsigned answer (a proxy, a stub, the
/// wrong host) is no licence to cancel.
async fn fresh_query(
    client: &QfpayClient,
    c: &Claimed,
) -> (Option<(Observation, DateTime<Utc>)>, u64) {
    let client = client.requiring_signatures();
    let lookup = match &c.provider_ref {
        Some(r) => IdLookup::Syssn(vec![r.clone()]),
        None => IdLookup::OutTradeNo(vec![OrderLookup {
            out_trade_no: c.out_trade_no.clone(),
            created_at: Some(c.created_at),
        }]),
    };
    let batches = client.plan(&lookup);
    let calls = batches.len() as u64;
    let mut found = None;
    let mut foreign = None;
    for b in &batches {
        match client.query_batch(b).await {
            Ok(observations) => {
                for o in observations
                    .into_iter()
                    .filter(|o| o.outcome != Outcome::NotFound)
                {
                    let carries = o.provider_ref.is_some() && o.provider_ref == c.provider_ref
                        || o.out_trade_no.as_ref() == Some(&c.out_trade_no);
                    if !carries {
                        continue;
                    }
                    if o.kind == c.kind {
                        found = Some(o);
                    } else {
                        foreign = Some(o);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(payment = c.id.0, error = %e, "fresh query before or after a reversal failed");
                return (None, calls);
            }
        }
    }
    let obs = found
        .or_else(|| foreign.map(|o| foreign_record(c.kind, o)))
        .unwrap_or_else(|| {
            let mut o = Observation::new(c.kind, Outcome::NotFound, "not_found");
            o.out_trade_no = Some(c.out_trade_no.clone());
            o.provider_ref = c.provider_ref.clone();
            o
        });
    (Some((obs, Utc::now())), calls)
}

fn event(
    at: DateTime<Utc>,
    kind: &'static str,
    code: Option<String>,
    message: String,
    evidence: serde_json::Value,
) -> NewEvent {
    NewEvent {
        at,
        kind,
        from_state: Some(PaymentState::Reversing),
        to_state: Some(PaymentState::Reversing),
        provider_code: code,
        message: Some(message),
        evidence,
    }
}

/// `later`, carrying the events and discrepancies of `earlier` first: the pass's own
/// observation is history too, even when a fresh query follows in the same pass.
fn after(earlier: PaymentUpdate, mut later: PaymentUpdate) -> PaymentUpdate {
    let mut events = earlier.events;
    events.append(&mut later.events);
    later.events = events;
    let mut discrepancies = earlier.discrepancies;
    discrepancies.append(&mut later.discrepancies);
    later.discrepancies = discrepancies;
    later.provider_ref = later.provider_ref.or(earlier.provider_ref);
    later
}

/// What the cancel request names: the gateway's own record when the fresh query returned it
/// (its `syssn`, `txamt` and `txdtm`), else what the ledger knows.
fn cancel_request(client: &QfpayClient, c: &Claimed, fresh: &Observation) -> CancelRequest {
    let syssn = fresh
        .provider_ref
        .clone()
        .or_else(|| c.provider_ref.clone());
    let txdtm = fresh
        .merchant_time
        .as_deref()
        .and_then(|t| NaiveDateTime::parse_from_str(t, TIME_FORMAT).ok())
        .unwrap_or_else(|| client.local_time(c.created_at));
    CancelRequest {
        target: match syssn {
            Some(r) => CancelTarget::Syssn(r),
            None => CancelTarget::OutTradeNo(c.out_trade_no.clone()),
        },
        amount_minor: fresh.amount_minor.unwrap_or(c.amount_minor),
        txdtm,
        udid: None,
    }
}

/// Reverses or closes `c` as a last resort. `current` is this pass's update for it (still
/// open). Returns the update to apply instead, the calls spent, and whether a reversal/close
/// was sent.
pub(crate) async fn reverse(
    ctx: &PassContext<'_>,
    client: &QfpayClient,
    schedule: &RetrySchedule,
    c: &Claimed,
    route: CancelRoute,
    current: PaymentUpdate,
) -> (PaymentUpdate, u64, bool) {
    let (answer, mut calls) = fresh_query(client, c).await;
    let Some((obs, at)) = answer else {
        return (current, calls, false);
    };
    let fresh = update::from_observation(c, &obs, schedule, at, ctx.jitter());
    if !obs.outcome.permits_cancel() {
        // Settled meanwhile (adopt it), or an answer that is no licence to cancel: above all
        // any `0000`, which the state machine hands to a person when it is not understood.
        return (after(current, fresh), calls, false);
    }
    let intent = NewEvent {
        at,
        kind: "reversal_intent",
        from_state: Some(fresh.state),
        to_state: Some(PaymentState::Reversing),
        provider_code: Some(obs.provider_code.clone()),
        message: Some(format!(
            "last resort: {route} after a fresh query still said {}",
            obs.outcome
        )),
        evidence: obs.evidence.clone(),
    };
    // The cancel's pacer slot first: once the intent is written the request leaves at once,
    // with no wait in which the lane could lose its account (a cancel withheld after its
    // intent would leave the payment `reversing` for a request never sent).
    let Some(slot) = client.reserve_slot().await else {
        tracing::warn!(
            payment = c.id.0,
            "not reversing: the account's lane may no longer be this process's"
        );
        return (after(current, fresh), calls, false);
    };
    // The history up to the intent is written with it, in one transaction, before the call.
    let mut history = after(current, fresh);
    history.events.push(intent);
    match ctx
        .ledger
        .mark_reversing(ctx.fence, ctx.run_id, c.id, &history.events, at)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            history.events.pop();
            return (history, calls, false);
        }
        Err(e @ crate::ledger::LedgerError::FencedOut { .. }) => {
            tracing::warn!(payment = c.id.0, error = %e, "not reversing: the account's lane is no longer this process's");
            history.events.pop();
            return (history, calls, false);
        }
        Err(e) => {
            tracing::error!(payment = c.id.0, error = %e, "cannot record the reversal intent; not reversing");
            history.events.pop();
            return (history, calls, false);
        }
    }
    let request = cancel_request(client, c, &obs);
    calls += 1;
    let mut u = PaymentUpdate {
        state: PaymentState::Reversing,
        retry: Some((RetryReason::AwaitingReversal, 0)),
        next_check_at: Some(at + delay(schedule, 0)),
        provider_code: Some(obs.provider_code.clone()),
        // Written with the intent already; discrepancies are written with the update.
        events: Vec::new(),
        ..history
    };
    tracing::warn!(payment = c.id.0, out_trade_no = %c.out_trade_no, %route, "sending a last-resort reversal");
    metrics::reversal(c.account.as_str(), Reversal::Sent);
    let sent = client.cancel_in_slot(slot, route, &request).await;
    let answered_at = Utc::now();
    u.next_check_at = Some(answered_at + delay(schedule, 0));
    match sent {
        Ok(answer) => {
            let ev = |kind, msg: String| {
                event(
                    answered_at,
                    kind,
                    Some(answer.code.clone()),
                    msg,
                    answer.evidence.clone(),
                )
            };
            match &answer.outcome {
                CancelOutcome::Accepted { syssn, .. } => {
                    u.events.push(ev(
                        "reversal_accepted",
                        format!("accepted as {syssn}; confirming by query"),
                    ));
                }
                CancelOutcome::InProgress => {
                    u.events.push(ev(
                        "reversal_in_progress",
                        "still in progress; polling the query".into(),
                    ));
                }
                CancelOutcome::NotCancellable { .. } | CancelOutcome::Refused { .. } => {
                    metrics::reversal(c.account.as_str(), Reversal::Refused);
                    u.events.push(ev(
                        "reversal_refused",
                        format!(
                            "gateway refused: {}; checking the payment by a query",
                            answer.outcome
                        ),
                    ));
                    let (checked, more) = check_refusal(ctx, client, schedule, c, u).await;
                    calls += more;
                    u = checked;
                }
            }
        }
        Err(e) => {
            // Unknown whether it arrived: the query settles it; it is never sent again.
            u.events.push(event(
                answered_at,
                "reversal_call_failed",
                None,
                format!("{e}; the answer is lost, the query will tell"),
                serde_json::json!({}),
            ));
        }
    }
    (u, calls, true)
}

fn delay(schedule: &RetrySchedule, repeats: u32) -> chrono::Duration {
    chrono::Duration::from_std(schedule.delay(RetryReason::AwaitingReversal, repeats, 0.5))
        .unwrap_or_default()
}

/// After a refusal: what does the payment look like now? An "already cancelled" refusal whose
/// record shows the cancel is `reversed`; a record paid and not cancelled is `succeeded` with
/// a discrepancy; anything still open goes to a person. A failed check query leaves it
/// `reversing`, for the next queries to settle.
async fn check_refusal(
    ctx: &PassContext<'_>,
    client: &QfpayClient,
    schedule: &RetrySchedule,
    c: &Claimed,
    refused: PaymentUpdate,
) -> (PaymentUpdate, u64) {
    let (answer, calls) = fresh_query(client, c).await;
    let Some((obs, at)) = answer else {
        return (refused, calls);
    };
    let reversing = Claimed {
        state: PaymentState::Reversing,
        retry_reason: Some(RetryReason::AwaitingReversal),
        // The refusal says nothing was cancelled: a paid record concludes at once.
        retry_repeats: update::PAID_READS_TO_CONCLUDE,
        provider_ref: c.provider_ref.clone().or(refused.provider_ref.clone()),
        ..c.clone()
    };
    let checked = after(
        refused,
        update::from_observation(&reversing, &obs, schedule, at, ctx.jitter()),
    );
    if checked.state.is_final() {
        return (checked, calls);
    }
    (
        update::to_review(
            checked,
            "the gateway refused the reversal and the payment is still not cancelled",
            at,
        ),
        calls,
    )
}
