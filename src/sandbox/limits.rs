//! Per-merchant rate limits, as sliding windows over real time: QFPay 100 requests/second and
//! 400/minute per merchant → HTTP 429 (docs/PROTOCOLS.md §Q6); ECPay a configurable number per minute →
//! HTTP 403 (docs/PROTOCOLS.md §E6). Refused calls do not use up the window, so a client that backs off
//! gets through again once the window has room.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate limit configuration. Each limit is switchable off with `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// QFPay per-merchant requests per second (documented: 100).
    pub qfpay_per_second: Option<u32>,
    /// QFPay per-merchant requests per minute (documented: 400).
    pub qfpay_per_minute: Option<u32>,
    /// ECPay per-merchant requests per minute. ECPay publishes no number, only "too fast →
    /// 403"; the default, 60, is twice payrecon's default pace of 30/min.
    pub ecpay_per_minute: Option<u32>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            qfpay_per_second: Some(100),
            qfpay_per_minute: Some(400),
            ecpay_per_minute: Some(60),
        }
    }
}

impl RateLimits {
    /// No limits at all (benchmarks of the engine itself).
    pub fn off() -> Self {
        Self {
            qfpay_per_second: None,
            qfpay_per_minute: None,
            ecpay_per_minute: None,
        }
    }
}

/// Sliding-window counters keyed by (gateway, merchant).
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    windows: Mutex<HashMap<(bool, String), VecDeque<Instant>>>,
}

impl Limiter {
    /// Admits a call now, or says how long until the first window has room.
    /// `limits` is a list of (window length, allowed calls in it).
    pub(crate) fn admit(
        &self,
        qfpay: bool,
        merchant: &str,
        limits: &[(Duration, u32)],
        now: Instant,
    ) -> Result<(), Duration> {
        if limits.is_empty() {
            return Ok(());
        }
        let longest = limits.iter().map(|(w, _)| *w).max().unwrap_or_default();
        let mut map = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let calls = map.entry((qfpay, merchant.to_string())).or_default();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= longest)
        {
            calls.pop_front();
        }
        let mut wait = Duration::ZERO;
        for &(window, allowed) in limits {
            let allowed = allowed.max(1) as usize;
            let in_window = calls
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .count();
            if in_window >= allowed {
                // The call that must leave the window before this one fits.
                let oldest = calls[calls.len() - allowed];
                wait = wait.max(window.saturating_sub(now.duration_since(oldest)));
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        calls.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QFPAY: [(Duration, u32); 2] = [
        (Duration::from_secs(1), 100),
        (Duration::from_secs(60), 400),
    ];

    #[test]
    fn the_101st_call_in_a_second_waits_and_the_401st_in_a_minute_waits_longer() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(l.admit(true, "m", &QFPAY, t0).is_ok());
        }
        assert_eq!(l.admit(true, "m", &QFPAY, t0), Err(Duration::from_secs(1)));
        // Another merchant has its own window.
        assert!(l.admit(true, "other", &QFPAY, t0).is_ok());
        for s in 1..4 {
            let t = t0 + Duration::from_secs(s);
            for _ in 0..100 {
                assert!(l.admit(true, "m", &QFPAY, t).is_ok());
            }
        }
        let t = t0 + Duration::from_secs(5);
        assert_eq!(l.admit(true, "m", &QFPAY, t), Err(Duration::from_secs(55)));
        assert!(
            l.admit(true, "m", &QFPAY, t0 + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn no_limits_admit_everything() {
        let l = Limiter::default();
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.admit(false, "m", &[], t0).is_ok()));
    }
}
