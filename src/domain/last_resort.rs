//! The last-resort policy (docs/ARCHITECTURE.md §Q4 step 6–7): when an undeterminable payment should
//! be reversed/closed at the gateway, handed to a person, or simply asked about again.
//! Pure: the engine supplies the facts and the clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{CancelRoute, PayMode, PayType, PaymentState};

/// `reversal.mode` in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalMode {
    /// Reverse/close undeterminable payments past their threshold.
    Auto,
    /// Record what would be reversed; call nothing.
    DryRun,
    /// Never reverse.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastResortPolicy {
    pub mode: ReversalMode,
    /// QFPay: a payment still 1143/1145 after more than 2 minutes should be cancelled
    /// (docs/PROTOCOLS.md §Q6, QFPay 2018 JP).
    pub cpm_in_progress_limit: Duration,
    /// QFPay `expired_time` default: 30 minutes (docs/PROTOCOLS.md §Q6).
    pub default_expiry: Duration,
    pub expiry_grace: Duration,
    /// An open payment registered longer ago than this goes to `needs_review`.
    pub give_up_after: Duration,
}

/// What the facts of one payment call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastResort {
    /// Keep asking on the normal schedule.
    Wait,
    /// Past the point where it could complete and cancellable: reverse/close it (after a fresh
    /// query).
    Reverse(CancelRoute),
    /// Would reverse, but the mode is dry-run: record that, call nothing.
    WouldReverse(CancelRoute),
    /// Automation cannot settle it: a person must decide.
    NeedsReview(&'static str),
}

/// The facts [`last_resort`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct OpenPayment<'a> {
    pub state: PaymentState,
    pub pay_type: Option<&'a PayType>,
    /// The account's route for this pay type (`None`: not a QFPay payment, never reversed).
    pub route: Option<CancelRoute>,
    pub created_at: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reversal_requested: bool,
    /// The gateway notified it as paid (authenticated, but not evidence: the query decides
    /// the state). Reason enough never to reverse it: a person looks instead.
    pub notified_paid: bool,
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// The point after which the payment can no longer complete on its own.
fn completion_deadline(p: &OpenPayment<'_>, policy: &LastResortPolicy) -> Option<DateTime<Utc>> {
    let pay_type = p.pay_type?;
    Some(match pay_type.mode() {
        // The customer's code was scanned when the payment was created: a CPM payment still
        // undetermined that long after creation is past hope (QFPay 2018 JP: "after more than 2 minutes").
        PayMode::Cpm => after(p.created_at, policy.cpm_in_progress_limit),
        PayMode::Expiring => after(
            p.expires_at
                .unwrap_or_else(|| after(p.created_at, policy.default_expiry)),
            policy.expiry_grace,
        ),
    })
}

/// Decides the last resort for a payment that is still open after this pass's answer.
pub fn last_resort(
    p: &OpenPayment<'_>,
    policy: &LastResortPolicy,
    now: DateTime<Utc>,
) -> LastResort {
    if p.state.is_final() {
        return LastResort::Wait;
    }
    if now >= after(p.registered_at, policy.give_up_after) {
        return LastResort::NeedsReview("still open after the give-up horizon");
    }
    // A reversal was requested once: only the query may settle it now, never a second call.
    if p.reversal_requested || p.state == PaymentState::Reversing {
        return LastResort::Wait;
    }
    let Some(route) = p.route else {
        return LastResort::Wait;
    };
    match completion_deadline(p, policy) {
        Some(deadline) if now >= deadline => match (route, policy.mode) {
            (CancelRoute::NotCancellable, _) => {
                LastResort::NeedsReview("undeterminable past its deadline and not cancellable")
            }
            (_, ReversalMode::Off) => LastResort::Wait,
            _ if p.notified_paid => LastResort::NeedsReview(
                "the gateway notified it as paid but its queries do not confirm it; not reversed",
            ),
            (r, ReversalMode::Auto) => LastResort::Reverse(r),
            (r, ReversalMode::DryRun) => LastResort::WouldReverse(r),
        },
        _ => LastResort::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy(mode: ReversalMode) -> LastResortPolicy {
        LastResortPolicy {
            mode,
            cpm_in_progress_limit: Duration::from_secs(120),
            default_expiry: Duration::from_secs(1800),
            expiry_grace: Duration::from_secs(300),
            give_up_after: Duration::from_secs(86400),
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
    }

    fn open<'a>(pay_type: &'a PayType, route: CancelRoute) -> OpenPayment<'a> {
        OpenPayment {
            state: PaymentState::InProgress,
            pay_type: Some(pay_type),
            route: Some(route),
            created_at: t0(),
            registered_at: t0(),
            expires_at: None,
            reversal_requested: false,
            notified_paid: false,
        }
    }

    fn secs(n: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(n)
    }

    #[test]
    fn a_cpm_payment_becomes_a_candidate_two_minutes_after_creation() {
        let cpm = PayType::parse("800108").unwrap();
        let p = open(&cpm, CancelRoute::Reversal);
        let auto = policy(ReversalMode::Auto);
        assert_eq!(last_resort(&p, &auto, secs(119)), LastResort::Wait);
        assert_eq!(
            last_resort(&p, &auto, secs(120)),
            LastResort::Reverse(CancelRoute::Reversal)
        );
        assert_eq!(
            last_resort(&p, &policy(ReversalMode::DryRun), secs(120)),
            LastResort::WouldReverse(CancelRoute::Reversal)
        );
        assert_eq!(
            last_resort(&p, &policy(ReversalMode::Off), secs(120)),
            LastResort::Wait
        );
    }

    #[test]
    fn a_qr_payment_waits_for_its_expiry_plus_grace() {
        let mpm = PayType::parse("800201").unwrap();
        let mut p = open(&mpm, CancelRoute::Close);
        let auto = policy(ReversalMode::Auto);
        assert_eq!(last_resort(&p, &auto, secs(1800 + 299)), LastResort::Wait);
        assert_eq!(
            last_resort(&p, &auto, secs(2100)),
            LastResort::Reverse(CancelRoute::Close)
        );
        p.expires_at = Some(secs(600));
        assert_eq!(
            last_resort(&p, &auto, secs(900)),
            LastResort::Reverse(CancelRoute::Close)
        );
    }

    #[test]
    fn a_non_cancellable_payment_past_its_deadline_needs_review() {
        let hk = PayType::parse("801008").unwrap();
        let p = open(&hk, CancelRoute::NotCancellable);
        assert!(matches!(
            last_resort(&p, &policy(ReversalMode::Auto), secs(121)),
            LastResort::NeedsReview(_)
        ));
    }

    #[test]
    fn a_payment_never_gets_a_second_reversal() {
        let cpm = PayType::parse("800108").unwrap();
        let mut p = open(&cpm, CancelRoute::Reversal);
        p.reversal_requested = true;
        assert_eq!(
            last_resort(&p, &policy(ReversalMode::Auto), secs(600)),
            LastResort::Wait
        );
        p.reversal_requested = false;
        p.state = PaymentState::Reversing;
        assert_eq!(
            last_resort(&p, &policy(ReversalMode::Auto), secs(600)),
            LastResort::Wait
        );
    }

    #[test]
    fn a_payment_the_gateway_notified_as_paid_is_never_reversed() {
        let cpm = PayType::parse("800108").unwrap();
        let mut p = open(&cpm, CancelRoute::Reversal);
        p.notified_paid = true;
        for mode in [ReversalMode::Auto, ReversalMode::DryRun] {
            assert_eq!(last_resort(&p, &policy(mode), secs(119)), LastResort::Wait);
            assert!(matches!(
                last_resort(&p, &policy(mode), secs(120)),
                LastResort::NeedsReview(_)
            ));
        }
    }

    #[test]
    fn everything_open_goes_to_review_at_the_horizon() {
        let cpm = PayType::parse("800108").unwrap();
        let mut p = open(&cpm, CancelRoute::Reversal);
        p.state = PaymentState::Reversing;
        assert!(matches!(
            last_resort(&p, &policy(ReversalMode::Auto), secs(86400)),
            LastResort::NeedsReview(_)
        ));
        // ECPay payments have no route and are never reversed, but still give up.
        p.route = None;
        p.state = PaymentState::Pending;
        assert_eq!(
            last_resort(&p, &policy(ReversalMode::Auto), secs(3600)),
            LastResort::Wait
        );
    }
}
