//! The last resort, executed (architecture.md §4 step 6): query once more; if the payment is
//! still undeterminable, commit the intent (`reversing`) *before* calling reversal/close; read
//! the answer; then poll the query until the gateway shows it cancelled.

use super::PassContext;
use super::update;
use crate::domain::{CancelRoute, Observation, Outcome, PaymentState, RetryReason, RetrySchedule};
use crate::gateway::qfpay::{
    CancelOutcome, CancelRequest, CancelTarget, IdLookup, OrderLookup, QfpayClient,
};
use crate::ledger::{Claimed, NewEvent, PaymentUpdate};

/// A fresh single query of `c`; `None` when the call failed (no evidence: do not reverse).
async fn fresh_query(client: &QfpayClient, c: &Claimed) -> (Option<Observation>, u64) {
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
    for b in &batches {
        match client.query_batch(b).await {
            Ok(observations) => {
                let mine = observations.into_iter().find(|o| {
                    o.kind == c.kind
                        && o.outcome != Outcome::NotFound
                        && (o.provider_ref.is_some() && o.provider_ref == c.provider_ref
                            || o.out_trade_no.as_ref() == Some(&c.out_trade_no))
                });
                if mine.is_some() {
                    found = mine;
                }
            }
            Err(e) => {
                tracing::warn!(payment = c.id.0, error = %e, "fresh query before reversal failed; not reversing now");
                return (None, calls);
            }
        }
    }
    let obs = found.unwrap_or_else(|| {
        let mut o = Observation::new(c.kind, Outcome::NotFound, "not_found");
        o.out_trade_no = Some(c.out_trade_no.clone());
        o
    });
    (Some(obs), calls)
}

fn event(
    kind: &'static str,
    to: PaymentState,
    code: Option<String>,
    message: String,
    evidence: serde_json::Value,
) -> NewEvent {
    NewEvent {
        kind,
        from_state: Some(PaymentState::Reversing),
        to_state: Some(to),
        provider_code: code,
        message: Some(message),
        evidence,
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
    let (obs, mut calls) = fresh_query(client, c).await;
    let Some(obs) = obs else {
        return (current, calls, false);
    };
    let fresh = update::from_observation(c, &obs, schedule, ctx.now, ctx.jitter());
    if fresh.state.is_final() {
        // The payment settled meanwhile: adopt it, never reverse.
        return (fresh, calls, false);
    }
    let intent = NewEvent {
        kind: "reversal_intent",
        from_state: Some(c.state),
        to_state: Some(PaymentState::Reversing),
        provider_code: Some(obs.provider_code.clone()),
        message: Some(format!(
            "last resort: {route:?} after a fresh query still said {:?}",
            obs.outcome
        )),
        evidence: obs.evidence.clone(),
    };
    match ctx
        .ledger
        .mark_reversing(ctx.owner, ctx.run_id, c.id, &intent, ctx.now)
        .await
    {
        Ok(true) => {}
        Ok(false) => return (fresh, calls, false),
        Err(e) => {
            tracing::error!(payment = c.id.0, error = %e, "cannot record the reversal intent; not reversing");
            return (fresh, calls, false);
        }
    }
    let txdtm = client.local_time(c.created_at);
    let request = CancelRequest {
        target: match &c.provider_ref {
            Some(r) => CancelTarget::Syssn(r.clone()),
            None => CancelTarget::OutTradeNo(c.out_trade_no.clone()),
        },
        amount_minor: c.amount_minor,
        txdtm,
        udid: None,
    };
    calls += 1;
    let mut u = PaymentUpdate {
        state: PaymentState::Reversing,
        retry: Some((RetryReason::AwaitingReversal, 0)),
        next_check_at: Some(
            ctx.now
                + chrono::Duration::from_std(schedule.awaiting_reversal.initial)
                    .unwrap_or_default(),
        ),
        provider_code: Some(obs.provider_code.clone()),
        ..fresh
    };
    u.events.clear();
    tracing::warn!(payment = c.id.0, out_trade_no = %c.out_trade_no, ?route, "sending a last-resort reversal");
    match client.cancel(route, &request).await {
        Ok(answer) => {
            let ev = |kind, to, msg: String| {
                event(
                    kind,
                    to,
                    Some(answer.code.clone()),
                    msg,
                    answer.evidence.clone(),
                )
            };
            match &answer.outcome {
                CancelOutcome::Accepted { syssn, .. } => {
                    u.events.push(ev(
                        "reversal_accepted",
                        PaymentState::Reversing,
                        format!("accepted as {syssn}; confirming by query"),
                    ));
                }
                CancelOutcome::InProgress => {
                    u.events.push(ev(
                        "reversal_in_progress",
                        PaymentState::Reversing,
                        "still in progress; polling the query".into(),
                    ));
                }
                CancelOutcome::NotCancellable { .. } | CancelOutcome::Refused { .. } => {
                    u.events.push(ev(
                        "reversal_refused",
                        PaymentState::NeedsReview,
                        format!("gateway refused: {:?}", answer.outcome),
                    ));
                    tracing::error!(payment = c.id.0, code = %answer.code, "the gateway refused a last-resort reversal; a person must decide");
                    u = update::to_review(u, "reversal refused by the gateway");
                }
            }
        }
        Err(e) => {
            // Unknown whether it arrived: poll the query; never send it again.
            u.events.push(event(
                "reversal_call_failed",
                PaymentState::Reversing,
                None,
                e.to_string(),
                serde_json::json!({}),
            ));
        }
    }
    (u, calls, true)
}
