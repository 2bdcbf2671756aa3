//! Fault injection, seeded and deterministic: the n-th call to a gateway gets the same faults for
//! the same seed, whatever else happens. Rates are probabilities in `[0, 1]`; `1.0` hits every
//! call, `0.0` none.
//!
//! What each fault does to the answer, and what the adapters make of it:
//!
//! | fault | answer | adapter error class |
//! |---|---|---|
//! | `latency` (+ `latency_jitter`) | the normal answer, later | none (slower) |
//! | `server_error_rate` | HTTP 503 with an HTML body | `HttpStatus` → retryable |
//! | `timeout_rate` | nothing for `timeout_hold`, then HTTP 504 | `Transport` (client timeout) → retryable |
//! | `malformed_rate` | the answer's JSON cut in half (QFPay: signed as sent) | `Malformed` → retryable |
//! | `bad_signature_rate` | QFPay: a wrong `X-QF-SIGN`; ECPay: `Data` under another key | `BadSignature` / `Malformed` → retryable |
//! | `cancel_answer_hold` | QFPay reversal/close **applied**, its answer held this long (past the client's timeout) | `Transport` → the answer is lost; the cancel happened |
//! | `fail_id_lookups_in_month` | QFPay id lookups whose window starts in that month (`"2026-11"`) get HTTP 503 | `HttpStatus` |

use std::time::Duration;

/// A small, stable PRNG step (SplitMix64): the same input always gives the same output, on
/// every platform and crate version, which is what "seeded and deterministic" needs.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A deterministic number in `[0, 1)` for (seed, call number, purpose).
pub(crate) fn unit(seed: u64, n: u64, purpose: u64) -> f64 {
    let x = splitmix64(seed ^ splitmix64(n ^ splitmix64(purpose)));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Which gateway(s) a fault configuration applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultScope {
    #[default]
    Both,
    Qfpay,
    Ecpay,
}

/// Fault configuration. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    pub seed: u64,
    pub scope: FaultScope,
    /// Added to every answer.
    pub latency: Duration,
    /// Up to this much more, drawn per call.
    pub latency_jitter: Duration,
    pub server_error_rate: f64,
    pub timeout_rate: f64,
    /// How long a "timed out" request is held before HTTP 504; set it above the client's
    /// request timeout. Shutdown releases held requests at once.
    pub timeout_hold: Duration,
    pub malformed_rate: f64,
    pub bad_signature_rate: f64,
    /// Every QFPay reversal and close is applied, then its answer is held this long (zero:
    /// off): a gateway that did the work and whose answer the client never receives.
    pub cancel_answer_hold: Duration,
    /// QFPay id lookups whose `start_time` falls in this provider-local month (`YYYY-MM`) fail
    /// with HTTP 503: one half of a near-month-edge lookup failing.
    pub fail_id_lookups_in_month: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: 0,
            scope: FaultScope::Both,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            server_error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_hold: Duration::from_secs(60),
            malformed_rate: 0.0,
            bad_signature_rate: 0.0,
            cancel_answer_hold: Duration::ZERO,
            fail_id_lookups_in_month: None,
        }
    }
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FaultPlan {
    pub delay: Duration,
    pub server_error: bool,
    pub timeout: bool,
    pub malformed: bool,
    pub bad_signature: bool,
}

impl Faults {
    /// No faults at all (the default).
    pub fn none() -> Self {
        Self::default()
    }

    fn applies(&self, qfpay: bool) -> bool {
        match self.scope {
            FaultScope::Both => true,
            FaultScope::Qfpay => qfpay,
            FaultScope::Ecpay => !qfpay,
        }
    }

    /// The plan for call number `n` (counted per gateway) of the QFPay (`qfpay = true`) or ECPay
    /// gateway. At most one of timeout / server error / malformed / bad signature applies, in
    /// that order of precedence.
    pub(crate) fn plan(&self, n: u64, qfpay: bool) -> FaultPlan {
        if !self.applies(qfpay) {
            return FaultPlan::default();
        }
        let gw = if qfpay { 0x51 } else { 0xEC } << 8;
        let hit = |rate: f64, purpose: u64| rate > 0.0 && unit(self.seed, n, gw | purpose) < rate;
        let jitter = if self.latency_jitter.is_zero() {
            Duration::ZERO
        } else {
            self.latency_jitter.mul_f64(unit(self.seed, n, gw | 1))
        };
        let timeout = hit(self.timeout_rate, 2);
        let server_error = !timeout && hit(self.server_error_rate, 3);
        let malformed = !timeout && !server_error && hit(self.malformed_rate, 4);
        let bad_signature =
            !timeout && !server_error && !malformed && hit(self.bad_signature_rate, 5);
        FaultPlan {
            delay: self.latency + jitter,
            server_error,
            timeout,
            malformed,
            bad_signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_faults_and_rates_are_roughly_kept() {
        let f = Faults {
            seed: 7,
            server_error_rate: 0.25,
            ..Faults::default()
        };
        let a: Vec<bool> = (0..2000).map(|n| f.plan(n, true).server_error).collect();
        let b: Vec<bool> = (0..2000).map(|n| f.plan(n, true).server_error).collect();
        assert_eq!(a, b);
        let hits = a.iter().filter(|h| **h).count();
        assert!((400..600).contains(&hits), "{hits}");
        let other = Faults {
            seed: 8,
            ..f.clone()
        };
        let c: Vec<bool> = (0..2000)
            .map(|n| other.plan(n, true).server_error)
            .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn rate_one_hits_every_call_and_scope_limits_the_gateway() {
        let f = Faults {
            malformed_rate: 1.0,
            scope: FaultScope::Ecpay,
            ..Faults::default()
        };
        assert!((0..100).all(|n| f.plan(n, false).malformed));
        assert!((0..100).all(|n| !f.plan(n, true).malformed));
        assert_eq!(Faults::none().plan(3, true), FaultPlan::default());
    }
}
