//! When to ask the gateway again: a schedule that is data, per gateway and per reason,
//! overridable per account. The defaults cite the gateway docs they come from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Patience, Provider};

/// Why a payment is still open after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryReason {
    /// The gateway says the payment is still being paid (QFPay 1143/1145, ECPay `error_nopay`).
    InProgress,
    /// The gateway has no record yet.
    NotFound,
    /// The answer could not be classified.
    Unrecognised,
    /// The call failed (transport, timeout, 5xx, 429, signature): no evidence was gathered.
    CallFailed,
    /// We sent a reversal/close and wait for the query to confirm it.
    AwaitingReversal,
    /// Settled, but still watched for what happens after (ECPay captures, cancellations and
    /// refunds after authorization), within the account's `after_final_look_back`.
    AfterFinal,
    /// The bank has not completed authorization (ECPay `Unauthorized`): failed or pending.
    Unauthorized,
}

/// `initial × factor^n`, capped at `max`, optionally with ±20 % jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryRule {
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    pub factor: f64,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    pub jitter: bool,
}

impl RetryRule {
    pub const fn fixed(every: Duration) -> Self {
        Self {
            initial: every,
            factor: 1.0,
            max: every,
            jitter: false,
        }
    }

    /// Delay before the next check after `repeats` consecutive checks with the same reason
    /// (0 for the first). `jitter_unit` is a sample from `[0, 1)` supplied by the caller, so
    /// this stays a pure function.
    pub fn delay(&self, repeats: u32, jitter_unit: f64) -> Duration {
        let exp = self.factor.max(1.0).powi(repeats.min(64) as i32);
        let raw = self.initial.as_secs_f64() * exp;
        let capped = raw.min(self.max.as_secs_f64());
        let jittered = if self.jitter {
            capped * (0.8 + 0.4 * jitter_unit.clamp(0.0, 1.0))
        } else {
            capped
        };
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

/// One rule per reason.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetrySchedule {
    pub in_progress: RetryRule,
    pub not_found: RetryRule,
    pub unrecognised: RetryRule,
    pub call_failed: RetryRule,
    pub awaiting_reversal: RetryRule,
    /// `error_nopay` (ECPay's in-progress answer), waited out and settled at a horizon
    /// (see [`Patience`]). `None`: `in_progress` applies for as long as the payment is open.
    pub in_progress_patience: Option<Patience>,
    /// `Unauthorized`, waited out and settled at a horizon. `None`: `unrecognised` applies.
    pub unauthorized: Option<Patience>,
}

/// ECPay: "if the bank has not answered, RtnMsg is error_nopay; query again after another 10
/// minutes" (seed 003, docs/PROTOCOLS.md §E3.1).
pub const ECPAY_NOPAY_INTERVAL: Duration = Duration::from_secs(600);
/// QFPay: wait 3–5 seconds between queries of an in-progress payment (docs/PROTOCOLS.md §Q6).
pub const QFPAY_IN_PROGRESS_INTERVAL: Duration = Duration::from_secs(4);

/// ECPay paid orders inside their look-back: 6 hours after the answer, doubling, at most 3
/// days apart: 6 checks in the default 14 days (docs/PERFORMANCE.md).
pub const ECPAY_AFTER_FINAL: RetryRule = RetryRule {
    initial: Duration::from_secs(6 * 3600),
    factor: 2.0,
    max: Duration::from_secs(3 * 86_400),
    jitter: false,
};

/// QFPay `reversing`: 4 s, doubling, at most 10 minutes apart.
pub const QFPAY_AWAITING_REVERSAL: RetryRule = RetryRule {
    initial: QFPAY_IN_PROGRESS_INTERVAL,
    factor: 2.0,
    max: Duration::from_secs(600),
    jitter: false,
};

/// ECPay `error_nopay`: the documented 10 minutes for the first hour of checks, then doubling
/// to 6 hours, settled 2 days after creation (docs/PROTOCOLS.md has the arithmetic).
pub const ECPAY_NOPAY_PATIENCE: Patience = Patience {
    steady_checks: 5,
    rule: RetryRule {
        initial: ECPAY_NOPAY_INTERVAL,
        factor: 2.0,
        max: Duration::from_secs(6 * 3600),
        jitter: false,
    },
    horizon: Duration::from_secs(2 * 86_400),
};

/// ECPay `Unauthorized`: a bank still deciding decides within hours, so 10 minutes doubling to
/// 2 hours, settled 1 day after creation.
pub const ECPAY_UNAUTHORIZED_PATIENCE: Patience = Patience {
    steady_checks: 0,
    rule: RetryRule {
        initial: ECPAY_NOPAY_INTERVAL,
        factor: 2.0,
        max: Duration::from_secs(2 * 3600),
        jitter: false,
    },
    horizon: Duration::from_secs(86_400),
};

impl RetrySchedule {
    pub fn default_for(provider: Provider) -> Self {
        let call_failed = RetryRule {
            initial: Duration::from_secs(10),
            factor: 2.0,
            max: Duration::from_secs(15 * 60),
            jitter: true,
        };
        let unrecognised = RetryRule {
            initial: Duration::from_secs(60),
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter: true,
        };
        match provider {
            Provider::Qfpay => Self {
                // Poll in-progress payments every few seconds, slowing gently to a ceiling of
                // 30 s: a CPM payment becomes a reversal candidate after 2 minutes anyway.
                in_progress: RetryRule {
                    initial: QFPAY_IN_PROGRESS_INTERVAL,
                    factor: 1.25,
                    max: Duration::from_secs(30),
                    jitter: false,
                },
                not_found: RetryRule {
                    initial: Duration::from_secs(10),
                    factor: 2.0,
                    max: Duration::from_secs(30 * 60),
                    jitter: true,
                },
                unrecognised,
                call_failed,
                // A sent reversal is confirmed by the query: soon at first (most settle within
                // seconds), then backing off to every 10 minutes, so stuck reversals cannot
                // eat the merchant's 400 calls a minute: at the ceiling each costs 0.1 call a
                // minute (docs/RELIABILITY.md: ~400 stuck reversals use 10 % of the limit).
                awaiting_reversal: QFPAY_AWAITING_REVERSAL,
                in_progress_patience: None,
                unauthorized: None,
            },
            Provider::Ecpay => Self {
                in_progress: RetryRule::fixed(ECPAY_NOPAY_INTERVAL),
                not_found: RetryRule {
                    initial: ECPAY_NOPAY_INTERVAL,
                    factor: 2.0,
                    max: Duration::from_secs(3600),
                    jitter: false,
                },
                unrecognised,
                call_failed,
                awaiting_reversal: RetryRule::fixed(ECPAY_NOPAY_INTERVAL),
                in_progress_patience: Some(ECPAY_NOPAY_PATIENCE),
                unauthorized: Some(ECPAY_UNAUTHORIZED_PATIENCE),
            },
        }
    }

    pub fn rule(&self, reason: RetryReason) -> &RetryRule {
        match reason {
            RetryReason::InProgress => &self.in_progress,
            RetryReason::NotFound => &self.not_found,
            RetryReason::Unrecognised => &self.unrecognised,
            RetryReason::CallFailed => &self.call_failed,
            RetryReason::AwaitingReversal => &self.awaiting_reversal,
            RetryReason::AfterFinal => &ECPAY_AFTER_FINAL,
            RetryReason::Unauthorized => self
                .unauthorized
                .as_ref()
                .map_or(&self.unrecognised, |p| &p.rule),
        }
    }

    /// The patience for answers of `reason` that are waited out, if any.
    pub fn patience(&self, reason: RetryReason) -> Option<&Patience> {
        match reason {
            RetryReason::InProgress => self.in_progress_patience.as_ref(),
            RetryReason::Unauthorized => self.unauthorized.as_ref(),
            _ => None,
        }
    }

    pub fn delay(&self, reason: RetryReason, repeats: u32, jitter_unit: f64) -> Duration {
        match self.patience(reason) {
            Some(p) => p.delay(repeats, jitter_unit),
            None => self.rule(reason).delay(repeats, jitter_unit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecpay_nopay_is_exactly_ten_minutes_for_the_first_hour_then_backs_off_to_hours() {
        let s = RetrySchedule::default_for(Provider::Ecpay);
        for n in 0..6 {
            assert_eq!(
                s.delay(RetryReason::InProgress, n, 0.99),
                Duration::from_secs(600)
            );
        }
        assert_eq!(
            s.delay(RetryReason::InProgress, 6, 0.99),
            Duration::from_secs(1200)
        );
        assert_eq!(
            s.delay(RetryReason::InProgress, 50, 0.99),
            Duration::from_secs(6 * 3600)
        );
    }

    #[test]
    fn ecpay_unauthorized_grows_from_ten_minutes_to_two_hours() {
        let s = RetrySchedule::default_for(Provider::Ecpay);
        let minutes: Vec<u64> = (0..6)
            .map(|n| s.delay(RetryReason::Unauthorized, n, 0.5).as_secs() / 60)
            .collect();
        assert_eq!(minutes, [10, 20, 40, 80, 120, 120]);
    }

    #[test]
    fn qfpay_in_progress_starts_at_a_few_seconds_and_is_capped() {
        let s = RetrySchedule::default_for(Provider::Qfpay);
        assert_eq!(
            s.delay(RetryReason::InProgress, 0, 0.5),
            Duration::from_secs(4)
        );
        assert_eq!(
            s.delay(RetryReason::InProgress, 1, 0.5),
            Duration::from_secs(5)
        );
        assert_eq!(
            s.delay(RetryReason::InProgress, 40, 0.5),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_stuck_qfpay_reversal_is_asked_less_and_less_often_down_to_every_ten_minutes() {
        let s = RetrySchedule::default_for(Provider::Qfpay);
        let d = |n| s.delay(RetryReason::AwaitingReversal, n, 0.5).as_secs();
        assert_eq!([d(0), d(1), d(2), d(3)], [4, 8, 16, 32]);
        assert_eq!(d(8), 600);
        assert_eq!(d(500), 600);
        // Over the 3-day give-up horizon: a few hundred queries, not 64,800 (every 4 s).
        let mut total = 0.0;
        let mut calls = 0;
        while total < 3.0 * 86400.0 {
            total += s
                .delay(RetryReason::AwaitingReversal, calls, 0.5)
                .as_secs_f64();
            calls += 1;
        }
        assert!(calls < 450, "{calls}");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let rule = RetrySchedule::default_for(Provider::Qfpay).call_failed;
        let lo = rule.delay(0, 0.0);
        let hi = rule.delay(0, 1.0);
        assert_eq!(lo, Duration::from_secs(8));
        assert_eq!(hi, Duration::from_secs(12));
        assert_eq!(rule.delay(1000, 0.5), Duration::from_secs(900));
    }
}
