//! The engine's own measures: how long passes and units take, and what became of last-resort
//! reversals.

use std::time::Instant;

use crate::domain::AccountName;

use super::{PASS_DURATION, PASSES, REVERSALS, UNIT_DURATION};

/// Records the time from its creation to its drop into a histogram: a pass or unit that ends
/// with an error (or is dropped at shutdown) is measured too.
#[derive(Debug)]
#[must_use = "the time is recorded when the timer is dropped"]
pub(crate) struct Timer {
    started: Instant,
    histogram: &'static str,
    label: (&'static str, String),
}

impl Drop for Timer {
    fn drop(&mut self) {
        let (key, value) = (self.label.0, std::mem::take(&mut self.label.1));
        ::metrics::histogram!(self.histogram, key => value).record(self.started.elapsed());
    }
}

/// Times one reconcile pass (`Reconciler::run_once`) started by `trigger` (`cron`, `cli` …).
pub(crate) fn time_pass(trigger: &'static str) -> Timer {
    Timer {
        started: Instant::now(),
        histogram: PASS_DURATION,
        label: ("trigger", trigger.to_string()),
    }
}

/// Times one unit of an account's lane: its calls, decisions and writes.
pub(crate) fn time_unit(account: &AccountName) -> Timer {
    Timer {
        started: Instant::now(),
        histogram: UNIT_DURATION,
        label: ("account", account.as_str().to_string()),
    }
}

/// What became of a last-resort reversal or close (`payrecon_reversals_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reversal {
    /// The request left, once, after its intent was written.
    Sent,
    /// The gateway refused it (not cancellable, or refused with a code).
    Refused,
    /// The ledger wrote the payment `reversing` → `reversed`.
    Confirmed,
}

/// Counts `what` for `account`, and writes the account's other outcomes too (adding 0): a
/// series that appears at 1 has no earlier sample, and `increase()` would miss the first
/// refusal an alert waits for.
pub(crate) fn reversal(account: &str, what: Reversal) {
    for (outcome, label) in [
        (Reversal::Sent, "sent"),
        (Reversal::Refused, "refused"),
        (Reversal::Confirmed, "confirmed"),
    ] {
        ::metrics::counter!(REVERSALS, "account" => account.to_string(), "outcome" => label)
            .increment(u64::from(outcome == what));
    }
}

/// A reconcile pass started by `trigger` ended `status` (`completed`, `interrupted`, `failed`).
pub(crate) fn pass_finished(trigger: &'static str, status: &'static str) {
    ::metrics::counter!(PASSES, "trigger" => trigger, "status" => status).increment(1);
}
