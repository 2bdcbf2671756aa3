//! The payment states of the ledger (docs/ARCHITECTURE.md §2). The strings are part of the public
//! interface: they are stored in `payments.state` (with a CHECK constraint) and printed by the CLI.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Registered; no gateway answer yet, or the gateway has no record yet.
    Pending,
    /// The gateway says it is still being paid (QFPay 1143/1145, ECPay `error_nopay`).
    InProgress,
    /// Paid.
    Succeeded,
    /// The gateway says it failed.
    Failed,
    /// Closed, cancelled or expired at the gateway, not by us.
    Cancelled,
    /// We asked the gateway to reverse/close it and wait for confirmation.
    Reversing,
    /// Our reversal/close is confirmed.
    Reversed,
    /// A succeeded payment whose money went back in full.
    Refunded,
    /// A succeeded payment of which part went back.
    PartiallyRefunded,
    /// Automation gave up; a person must decide.
    NeedsReview,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a payment state (expected one of: {list})", list = PaymentState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownState(pub String);

impl PaymentState {
    pub const ALL: [PaymentState; 10] = [
        PaymentState::Pending,
        PaymentState::InProgress,
        PaymentState::Succeeded,
        PaymentState::Failed,
        PaymentState::Cancelled,
        PaymentState::Reversing,
        PaymentState::Reversed,
        PaymentState::Refunded,
        PaymentState::PartiallyRefunded,
        PaymentState::NeedsReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Pending => "pending",
            PaymentState::InProgress => "in_progress",
            PaymentState::Succeeded => "succeeded",
            PaymentState::Failed => "failed",
            PaymentState::Cancelled => "cancelled",
            PaymentState::Reversing => "reversing",
            PaymentState::Reversed => "reversed",
            PaymentState::Refunded => "refunded",
            PaymentState::PartiallyRefunded => "partially_refunded",
            PaymentState::NeedsReview => "needs_review",
        }
    }

    /// Final states are never checked again by the scheduler and never go back to a
    /// non-final state. `needs_review` is final for automation only.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            PaymentState::Pending | PaymentState::InProgress | PaymentState::Reversing
        )
    }
}

impl std::str::FromStr for PaymentState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl fmt::Display for PaymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_string() {
        for st in PaymentState::ALL {
            assert_eq!(st.as_str().parse::<PaymentState>(), Ok(st));
        }
        assert!("paid".parse::<PaymentState>().is_err());
    }

    #[test]
    fn only_pending_in_progress_and_reversing_are_open() {
        let open: Vec<_> = PaymentState::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .collect();
        assert_eq!(
            open,
            [
                PaymentState::Pending,
                PaymentState::InProgress,
                PaymentState::Reversing
            ]
        );
    }
}
