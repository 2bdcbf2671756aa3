//! Waiting out an answer that may mean "not yet" *or* "never".
//!
//! ECPay gives two such answers (seed 003, docs/PROTOCOLS.md §E3.1): `error_nopay` ("查無該筆交易授權單號",
//! no authorization for this trade — the bank has not answered, or the customer abandoned the
//! checkout) and `Unauthorized` ("銀行未授權完成", the bank has not completed authorization —
//! failed or still pending). Asking every 10 minutes for as long as the payment is open costs
//! hundreds of calls per abandoned checkout, and ECPay paces its callers (HTTP 403 → 30
//! minutes). So such a payment is asked at the gateway's documented interval for the first
//! `steady_checks` checks, then at a growing interval, and once it is `horizon` past its
//! creation with the same answer it is settled as `failed`: by then the gateway has said, on
//! every check for that long, that no authorization exists. A late authorization after that is
//! still not lost: it would contradict a final state, which the state machine records as a
//! discrepancy and follows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RetryRule;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Patience {
    /// How many more times the documented interval (`rule.initial`) is repeated before the
    /// interval starts to grow: 0 grows from the second check on.
    pub steady_checks: u32,
    /// The interval after the steady checks: `initial × factor^k`, capped at `max`.
    pub rule: RetryRule,
    /// Measured from the payment's creation at the gateway.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
}

impl Patience {
    /// Delay before the next check after `repeats` consecutive checks with this answer (0 for
    /// the first).
    pub fn delay(&self, repeats: u32, jitter_unit: f64) -> Duration {
        self.rule
            .delay(repeats.saturating_sub(self.steady_checks), jitter_unit)
    }

    /// Whether a payment created at `created_at` has been waited out by `now`.
    pub fn is_over(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let horizon = chrono::Duration::from_std(self.horizon).unwrap_or(chrono::TimeDelta::MAX);
        now >= created_at
            .checked_add_signed(horizon)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn patience() -> Patience {
        Patience {
            steady_checks: 3,
            rule: RetryRule {
                initial: Duration::from_secs(600),
                factor: 2.0,
                max: Duration::from_secs(3 * 3600),
                jitter: false,
            },
            horizon: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn the_documented_interval_first_then_growing_to_the_cap() {
        let p = patience();
        let minutes: Vec<u64> = (0..9).map(|n| p.delay(n, 0.5).as_secs() / 60).collect();
        assert_eq!(minutes, [10, 10, 10, 10, 20, 40, 80, 160, 180]);
    }

    #[test]
    fn the_horizon_counts_from_creation() {
        let p = patience();
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        assert!(!p.is_over(t, t + chrono::Duration::seconds(86_399)));
        assert!(p.is_over(t, t + chrono::Duration::seconds(86_400)));
    }
}
