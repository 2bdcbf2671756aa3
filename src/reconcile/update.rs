//! Turning one gateway answer about one claimed payment into a ledger update: the state
//! machine's decision, the next check time from the retry schedule, the event with its
//! evidence, and any discrepancies. Pure.

use chrono::{DateTime, Utc};

use crate::domain::{
    DiscrepancyKind, LedgerView, Observation, Outcome, PaymentState, RetryReason, RetrySchedule,
    decide,
};
use crate::gateway::GatewayError;
use crate::ledger::{Claimed, NewDiscrepancy, NewEvent, PaymentUpdate};

fn next_retry(c: &Claimed, reason: RetryReason) -> (RetryReason, u32) {
    let repeats = if c.retry_reason == Some(reason) {
        c.retry_repeats.saturating_add(1)
    } else {
        0
    };
    (reason, repeats)
}

fn schedule_at(
    schedule: &RetrySchedule,
    retry: (RetryReason, u32),
    now: DateTime<Utc>,
    jitter: f64,
) -> DateTime<Utc> {
    let d = schedule.delay(retry.0, retry.1, jitter);
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1))
}

fn discrepancy_detail(
    kind: DiscrepancyKind,
    c: &Claimed,
    obs: &Observation,
    next: PaymentState,
) -> String {
    let what = match kind {
        DiscrepancyKind::AmountMismatch => format!(
            "gateway amount {} differs from the ledger's {}",
            crate::domain::format_money(obs.amount_minor.unwrap_or_default(), c.currency.as_str()),
            crate::domain::format_money(c.amount_minor, c.currency.as_str())
        ),
        DiscrepancyKind::CurrencyMismatch => format!(
            "gateway currency {} differs from the ledger's {}",
            obs.currency.map(|x| x.to_string()).unwrap_or_default(),
            c.currency
        ),
        DiscrepancyKind::FinalStateChanged => format!(
            "final state {} contradicted by the gateway ({}): now {next}",
            c.state, obs.provider_code
        ),
        DiscrepancyKind::GatewayReopened => format!(
            "gateway reports in progress ({}) for a payment the ledger holds as {}",
            obs.provider_code, c.state
        ),
        DiscrepancyKind::PaidDespiteReversal => format!(
            "a reversal/close was requested, but the gateway shows the payment paid and not \
             cancelled ({}): the customer was charged",
            obs.provider_code
        ),
        DiscrepancyKind::UnrecognisedPaidRecord => format!(
            "the gateway record says {} (money moved) but is otherwise not understood; \
             the ledger holds {}",
            obs.provider_code, c.state
        ),
        DiscrepancyKind::MissingInLedger
        | DiscrepancyKind::MissingAtGateway
        | DiscrepancyKind::UnreadableRecord
        | DiscrepancyKind::NotifiedUnknown
        | DiscrepancyKind::NotifiedAfterFinal => kind.as_str().to_string(),
    };
    format!("{} {}: {what}", c.account, c.out_trade_no)
}

/// After a reversal/close was sent, how many queries in a row must still show the payment
/// paid and not cancelled before payrecon concludes the reversal did not take effect: an
/// accepted reversal may not be visible yet in the next read (docs/PROTOCOLS.md §Q2.4), and a lagging
/// read must not make a reversed payment `succeeded` with a "customer was charged" alert.
/// (A refusal followed by such a read concludes at once: the gateway said it cancelled
/// nothing.)
pub const PAID_READS_TO_CONCLUDE: u32 = 3;

/// The update for a gateway answer about `c` that arrived at `now`.
pub fn from_observation(
    c: &Claimed,
    obs: &Observation,
    schedule: &RetrySchedule,
    now: DateTime<Utc>,
    jitter: f64,
) -> PaymentUpdate {
    let mut d = decide(
        LedgerView {
            state: c.state,
            amount_minor: c.amount_minor,
            currency: c.currency,
        },
        obs,
    );
    let reads = match c.retry_reason {
        Some(RetryReason::AwaitingReversal) => c.retry_repeats.saturating_add(1),
        _ => 1,
    };
    if c.state == PaymentState::Reversing
        && obs.outcome == Outcome::Succeeded
        && reads < PAID_READS_TO_CONCLUDE
    {
        d.next = PaymentState::Reversing;
        d.retry = Some(RetryReason::AwaitingReversal);
        d.discrepancies
            .retain(|k| *k != DiscrepancyKind::PaidDespiteReversal);
    }
    let retry = d.retry.map(|r| next_retry(c, r));
    let discrepancies = d
        .discrepancies
        .iter()
        .map(|&kind| NewDiscrepancy {
            kind,
            detail: discrepancy_detail(kind, c, obs, d.next),
            evidence: obs.evidence.clone(),
        })
        .collect();
    let u = PaymentUpdate {
        id: c.id,
        state: d.next,
        provider_code: Some(obs.provider_code.clone()),
        provider_ref: obs
            .provider_ref
            .clone()
            .filter(|_| c.provider_ref.is_none()),
        checked: true,
        retry,
        next_check_at: retry.map(|r| schedule_at(schedule, r, now, jitter)),
        in_progress_since: (obs.outcome == Outcome::InProgress).then_some(now),
        seen_nudged_at: c.nudged_at,
        events: vec![NewEvent {
            at: now,
            kind: "observed",
            from_state: Some(c.state),
            to_state: Some(d.next),
            provider_code: Some(obs.provider_code.clone()),
            message: Some(format!("gateway says {}", obs.outcome)),
            evidence: obs.evidence.clone(),
        }],
        discrepancies,
    };
    let u = match retry.and_then(|(reason, _)| schedule.patience(reason)) {
        Some(p) if p.is_over(c.created_at, now) => settle_at_horizon(u, p, obs),
        _ => u,
    };
    notified_yet_failed(c, obs, u, now)
}

/// A payment the gateway notified as paid is not failed on a query's word alone: the two
/// disagree, so a person decides (`needs_review`, and a `notified_after_final` discrepancy
/// holding the answer). Either may be the wrong one: a lagging or another sub-merchant's query,
/// or a forged notification.
fn notified_yet_failed(
    c: &Claimed,
    obs: &Observation,
    u: PaymentUpdate,
    now: DateTime<Utc>,
) -> PaymentUpdate {
    if c.notified_at.is_none() || c.state.is_final() || u.state != PaymentState::Failed {
        return u;
    }
    let mut u = to_review(
        u,
        "the gateway notified it as paid, but its query says it failed",
        now,
    );
    u.discrepancies.push(NewDiscrepancy {
        kind: DiscrepancyKind::NotifiedAfterFinal,
        detail: format!(
            "{} {}: the gateway notified it as paid, but its query says it failed ({})",
            c.account, c.out_trade_no, obs.provider_code
        ),
        evidence: obs.evidence.clone(),
    });
    u
}

/// An answer that may mean "never", still given at its horizon: the payment is failed on it
/// (domain `Patience` says why), and the observation's event says so.
fn settle_at_horizon(
    mut u: PaymentUpdate,
    p: &crate::domain::Patience,
    obs: &Observation,
) -> PaymentUpdate {
    u.state = PaymentState::Failed;
    u.retry = None;
    u.next_check_at = None;
    if let Some(e) = u.events.first_mut() {
        e.to_state = Some(PaymentState::Failed);
        e.message = Some(format!(
            "gateway says {} ({}) {} after creation, its horizon: failed",
            obs.outcome,
            obs.provider_code,
            humantime::format_duration(p.horizon)
        ));
    }
    u
}

/// The update for a call that produced no evidence (failed at `now`): nothing changes but the
/// next check time.
pub fn from_call_error(
    c: &Claimed,
    err: &GatewayError,
    schedule: &RetrySchedule,
    now: DateTime<Utc>,
    jitter: f64,
) -> PaymentUpdate {
    // A payment awaiting its reversal's confirmation keeps backing off on that schedule: a
    // failed query must not send it back to asking every few seconds.
    let reason = match c.state {
        PaymentState::Reversing => RetryReason::AwaitingReversal,
        _ => RetryReason::CallFailed,
    };
    let retry = next_retry(c, reason);
    PaymentUpdate {
        id: c.id,
        state: c.state,
        provider_code: None,
        provider_ref: None,
        checked: false,
        retry: Some(retry),
        next_check_at: Some(schedule_at(schedule, retry, now, jitter)),
        in_progress_since: None,
        seen_nudged_at: c.nudged_at,
        events: vec![NewEvent {
            at: now,
            kind: "call_failed",
            from_state: Some(c.state),
            to_state: Some(c.state),
            provider_code: None,
            message: Some(err.to_string()),
            evidence: serde_json::json!({}),
        }],
        discrepancies: Vec::new(),
    }
}

/// The update that leaves `c` untouched except for a later check (e.g. ECPay's "not before 10
/// minutes after creation", or a paused account).
pub fn postpone(c: &Claimed, until: DateTime<Utc>) -> PaymentUpdate {
    PaymentUpdate {
        id: c.id,
        state: c.state,
        provider_code: None,
        provider_ref: None,
        checked: false,
        retry: c.retry_reason.map(|r| (r, c.retry_repeats)),
        next_check_at: Some(until),
        in_progress_since: None,
        seen_nudged_at: c.nudged_at,
        events: Vec::new(),
        discrepancies: Vec::new(),
    }
}

/// Hands `u` (already decided for this pass) to a person instead of checking it again; the
/// decision is made at `at`.
pub fn to_review(mut u: PaymentUpdate, why: &str, at: DateTime<Utc>) -> PaymentUpdate {
    let from = u.state;
    u.state = PaymentState::NeedsReview;
    u.retry = None;
    u.next_check_at = None;
    u.events.push(NewEvent {
        at,
        kind: "needs_review",
        from_state: Some(from),
        to_state: Some(PaymentState::NeedsReview),
        provider_code: None,
        message: Some(why.to_string()),
        evidence: serde_json::json!({}),
    });
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;
    use chrono::TimeZone;

    fn claimed(state: PaymentState, provider: Provider) -> Claimed {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        Claimed {
            state,
            ..Claimed::sample(provider, t)
        }
    }

    #[test]
    fn an_ecpay_nopay_answer_is_checked_again_exactly_one_interval_later() {
        let c = claimed(PaymentState::Pending, Provider::Ecpay);
        let now = c.created_at + chrono::Duration::minutes(10);
        let obs = Observation::new(RecordKind::Payment, Outcome::InProgress, "error_nopay");
        let u = from_observation(
            &c,
            &obs,
            &RetrySchedule::default_for(Provider::Ecpay),
            now,
            0.7,
        );
        assert_eq!(u.state, PaymentState::InProgress);
        assert_eq!(u.next_check_at, Some(now + chrono::Duration::minutes(10)));
        assert_eq!(u.in_progress_since, Some(now));
        assert_eq!(u.events[0].provider_code.as_deref(), Some("error_nopay"));
    }

    #[test]
    fn error_nopay_and_unauthorized_are_settled_as_failed_at_their_horizon() {
        let s = RetrySchedule::default_for(Provider::Ecpay);
        for (code, outcome, horizon) in [
            (
                "error_nopay",
                Outcome::InProgress,
                chrono::Duration::days(2),
            ),
            (
                "Unauthorized",
                Outcome::Unauthorized,
                chrono::Duration::days(1),
            ),
        ] {
            let c = claimed(PaymentState::InProgress, Provider::Ecpay);
            let obs = Observation::new(RecordKind::Payment, outcome, code);
            let before = from_observation(
                &c,
                &obs,
                &s,
                c.created_at + horizon - chrono::Duration::seconds(1),
                0.5,
            );
            assert_eq!(before.state, PaymentState::InProgress, "{code}");
            assert_eq!(before.events[0].to_state, Some(PaymentState::InProgress));
            let at = from_observation(&c, &obs, &s, c.created_at + horizon, 0.5);
            assert_eq!(at.state, PaymentState::Failed, "{code}");
            assert_eq!((at.retry, at.next_check_at), (None, None));
            let kinds: Vec<_> = at.events.iter().map(|e| (e.kind, e.to_state)).collect();
            assert_eq!(kinds, [("observed", Some(PaymentState::Failed))], "{code}");
            assert!(at.events[0].message.as_ref().unwrap().contains("horizon"));
        }
        // QFPay in progress has no horizon of its own.
        let q = claimed(PaymentState::InProgress, Provider::Qfpay);
        let obs = Observation::new(RecordKind::Payment, Outcome::InProgress, "1143");
        let u = from_observation(
            &q,
            &obs,
            &RetrySchedule::default_for(Provider::Qfpay),
            q.created_at + chrono::Duration::days(30),
            0.5,
        );
        assert_eq!(u.state, PaymentState::InProgress);
    }

    #[test]
    fn repeated_reasons_count_up_and_a_new_reason_starts_over() {
        let mut c = claimed(PaymentState::InProgress, Provider::Qfpay);
        c.retry_reason = Some(RetryReason::InProgress);
        c.retry_repeats = 3;
        let s = RetrySchedule::default_for(Provider::Qfpay);
        let ip = Observation::new(RecordKind::Payment, Outcome::InProgress, "1143");
        assert_eq!(
            from_observation(&c, &ip, &s, c.created_at, 0.5).retry,
            Some((RetryReason::InProgress, 4))
        );
        let nf = Observation::new(RecordKind::Payment, Outcome::NotFound, "1136");
        assert_eq!(
            from_observation(&c, &nf, &s, c.created_at, 0.5).retry,
            Some((RetryReason::NotFound, 0))
        );
    }

    #[test]
    fn a_failed_call_changes_nothing_but_the_next_check() {
        let c = claimed(PaymentState::InProgress, Provider::Qfpay);
        let err = GatewayError::HttpStatus {
            gateway: "qfpay",
            status: 503,
        };
        let u = from_call_error(
            &c,
            &err,
            &RetrySchedule::default_for(Provider::Qfpay),
            c.created_at,
            0.5,
        );
        assert_eq!(u.state, PaymentState::InProgress);
        assert!(u.provider_code.is_none() && !u.checked);
        assert_eq!(u.events[0].kind, "call_failed");
        assert!(u.next_check_at.unwrap() > c.created_at);
    }

    #[test]
    fn a_failed_query_of_a_reversing_payment_keeps_its_backoff() {
        let mut c = claimed(PaymentState::Reversing, Provider::Qfpay);
        c.retry_reason = Some(RetryReason::AwaitingReversal);
        c.retry_repeats = 6;
        let err = GatewayError::HttpStatus {
            gateway: "qfpay",
            status: 503,
        };
        let s = RetrySchedule::default_for(Provider::Qfpay);
        let u = from_call_error(&c, &err, &s, c.created_at, 0.5);
        assert_eq!(u.retry, Some((RetryReason::AwaitingReversal, 7)));
        assert_eq!(
            u.next_check_at,
            Some(c.created_at + chrono::Duration::seconds(512))
        );
    }

    #[test]
    fn an_amount_mismatch_is_recorded_with_both_amounts() {
        let c = claimed(PaymentState::Pending, Provider::Qfpay);
        let mut obs = Observation::new(RecordKind::Payment, Outcome::Succeeded, "0000");
        obs.amount_minor = Some(900);
        let u = from_observation(
            &c,
            &obs,
            &RetrySchedule::default_for(Provider::Qfpay),
            c.created_at,
            0.5,
        );
        assert_eq!(u.state, PaymentState::Succeeded);
        assert_eq!(u.next_check_at, None);
        assert_eq!(u.discrepancies.len(), 1);
        assert!(
            u.discrepancies[0]
                .detail
                .contains("gateway amount 9.00 HKD")
                && u.discrepancies[0].detail.contains("the ledger's 10.00 HKD")
        );
    }
}
