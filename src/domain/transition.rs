//! The payment state machine: one pure function from (ledger view, observation) to a decision.
//!
//! Rules (docs/ARCHITECTURE.md §2):
//! - an open payment takes the state the gateway reports;
//! - a final state never goes back to an open one; an open answer about a final payment is
//!   recorded as a discrepancy when it contradicts it (`in_progress` after `succeeded`);
//! - a final state the gateway later contradicts (e.g. `reversed`, then `0000`) follows the
//!   gateway's money truth and is recorded as a discrepancy, except for the normal lifecycle
//!   (`succeeded` → `partially_refunded` → `refunded`);
//! - `reversing` only becomes `reversed` when the gateway shows the payment cancelled; a record
//!   that shows it paid and not cancelled (`0000`, `cancel` 0) makes it `succeeded` with a
//!   `paid_despite_reversal` discrepancy: the customer was charged and the money truth wins
//!   (the engine believes it only at the third read after the request, `reconcile::update`);
//! - a record that says `0000` but is otherwise not understood never lets a payment be
//!   cancelled: an open payment goes to `needs_review` with the record;
//! - an amount or currency that differs from the ledger is a discrepancy, whatever the state;
//! - "not authorized (yet)" (ECPay `Unauthorized`) keeps an open payment `in_progress` (how long
//!   is the retry schedule's `Patience`); about a final payment it agrees with `failed`,
//!   `cancelled` and `reversed`, and reopens the others (a `gateway_reopened` discrepancy).
//!
//! Transport-class errors never reach this function: they are not observations.

use serde::{Deserialize, Serialize};

use super::{Currency, Observation, Outcome, PaymentState, RetryReason};

/// What the state machine needs to know about the ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerView {
    pub state: PaymentState,
    pub amount_minor: i64,
    pub currency: Currency,
}

/// Something a person should look at. Stored as `discrepancies.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyKind {
    /// The gateway's amount differs from the ledger's.
    AmountMismatch,
    /// The gateway's currency differs from the ledger's.
    CurrencyMismatch,
    /// A final state changed to a different final state against the normal lifecycle.
    FinalStateChanged,
    /// The gateway reports an open state for a payment the ledger holds as final.
    GatewayReopened,
    /// The gateway has a record the ledger does not know (sweeps).
    MissingInLedger,
    /// A closed sweep window has no gateway record for a ledger payment (sweeps).
    MissingAtGateway,
    /// We asked the gateway to reverse/close the payment, and it shows the payment paid and
    /// not cancelled: the customer was charged and the reversal did not take effect.
    PaidDespiteReversal,
    /// A record says the money moved (`0000`) but is otherwise not understood.
    UnrecognisedPaidRecord,
    /// A sweep found a record without a readable id: it cannot be matched to any payment, so
    /// that window's "missing at gateway" report is skipped.
    UnreadableRecord,
    /// The gateway notified a payment the ledger does not know, and the account does not
    /// register payments from notifications (`register_from_notifications`).
    NotifiedUnknown,
    /// The gateway notified a payment as paid that the ledger holds (or its query calls)
    /// failed, or that is in review.
    NotifiedAfterFinal,
}

impl DiscrepancyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyKind::AmountMismatch => "amount_mismatch",
            DiscrepancyKind::CurrencyMismatch => "currency_mismatch",
            DiscrepancyKind::FinalStateChanged => "final_state_changed",
            DiscrepancyKind::GatewayReopened => "gateway_reopened",
            DiscrepancyKind::MissingInLedger => "missing_in_ledger",
            DiscrepancyKind::MissingAtGateway => "missing_at_gateway",
            DiscrepancyKind::PaidDespiteReversal => "paid_despite_reversal",
            DiscrepancyKind::UnrecognisedPaidRecord => "unrecognised_paid_record",
            DiscrepancyKind::UnreadableRecord => "unreadable_record",
            DiscrepancyKind::NotifiedUnknown => "notified_unknown",
            DiscrepancyKind::NotifiedAfterFinal => "notified_after_final",
        }
    }
}

/// The result of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub next: PaymentState,
    pub discrepancies: Vec<DiscrepancyKind>,
    /// Why to check again, for open next states; `None` when the payment is final.
    pub retry: Option<RetryReason>,
}

impl Decision {
    pub fn changes_state(&self, from: PaymentState) -> bool {
        self.next != from
    }
}

/// The state an open (pending / in-progress) payment takes from a final outcome.
fn final_state_of(outcome: Outcome) -> Option<PaymentState> {
    Some(match outcome {
        Outcome::Succeeded => PaymentState::Succeeded,
        Outcome::Failed => PaymentState::Failed,
        // Reversed by someone other than us: closed at the gateway.
        Outcome::Cancelled | Outcome::Reversed => PaymentState::Cancelled,
        Outcome::Refunded => PaymentState::Refunded,
        Outcome::PartiallyRefunded => PaymentState::PartiallyRefunded,
        Outcome::InProgress
        | Outcome::Unauthorized
        | Outcome::NotFound
        | Outcome::Unrecognised
        | Outcome::UnrecognisedPaid => return None,
    })
}

fn retry_reason(outcome: Outcome) -> RetryReason {
    match outcome {
        Outcome::InProgress => RetryReason::InProgress,
        Outcome::Unauthorized => RetryReason::Unauthorized,
        Outcome::NotFound => RetryReason::NotFound,
        _ => RetryReason::Unrecognised,
    }
}

/// Moves between final states that are the normal life of a paid payment, not a surprise.
fn is_lifecycle(from: PaymentState, to: PaymentState) -> bool {
    use PaymentState::*;
    matches!(
        (from, to),
        (Succeeded, Refunded) | (Succeeded, PartiallyRefunded) | (PartiallyRefunded, Refunded)
    )
}

/// Decides the next state of a payment from one observation. Pure and total.
pub fn decide(view: LedgerView, obs: &Observation) -> Decision {
    use PaymentState::*;
    let mut discrepancies = Vec::new();
    if obs.amount_minor.is_some_and(|a| a != view.amount_minor) {
        discrepancies.push(DiscrepancyKind::AmountMismatch);
    }
    if obs.currency.is_some_and(|c| c != view.currency) {
        discrepancies.push(DiscrepancyKind::CurrencyMismatch);
    }

    let (next, retry) = match view.state {
        Pending | InProgress => match final_state_of(obs.outcome) {
            Some(fin) => (fin, None),
            None if matches!(obs.outcome, Outcome::InProgress | Outcome::Unauthorized) => {
                (InProgress, Some(retry_reason(obs.outcome)))
            }
            // Money may have moved and we cannot tell how: a person decides, with the record.
            None if obs.outcome == Outcome::UnrecognisedPaid => {
                discrepancies.push(DiscrepancyKind::UnrecognisedPaidRecord);
                (NeedsReview, None)
            }
            None => (view.state, Some(retry_reason(obs.outcome))),
        },
        Reversing => match obs.outcome {
            Outcome::Cancelled | Outcome::Reversed => (Reversed, None),
            Outcome::Failed => (Failed, None),
            Outcome::Refunded => (Refunded, None),
            Outcome::PartiallyRefunded => (PartiallyRefunded, None),
            // Paid and not cancelled: the reversal did not take effect (or never arrived) and
            // the customer was charged. The money truth wins; a person is told.
            Outcome::Succeeded => {
                discrepancies.push(DiscrepancyKind::PaidDespiteReversal);
                (Succeeded, None)
            }
            // Still being processed, or not visible yet: keep polling.
            Outcome::InProgress
            | Outcome::Unauthorized
            | Outcome::NotFound
            | Outcome::Unrecognised => (Reversing, Some(RetryReason::AwaitingReversal)),
            Outcome::UnrecognisedPaid => {
                discrepancies.push(DiscrepancyKind::UnrecognisedPaidRecord);
                (NeedsReview, None)
            }
        },
        NeedsReview => (final_state_of(obs.outcome).unwrap_or(NeedsReview), None),
        fin => match obs.outcome {
            Outcome::InProgress => {
                discrepancies.push(DiscrepancyKind::GatewayReopened);
                (fin, None)
            }
            // "Not authorized (yet)" agrees with a payment that took no money; about one that
            // did, it is the gateway reopening it.
            Outcome::Unauthorized if matches!(fin, Failed | Cancelled | Reversed) => (fin, None),
            Outcome::Unauthorized => {
                discrepancies.push(DiscrepancyKind::GatewayReopened);
                (fin, None)
            }
            Outcome::NotFound | Outcome::Unrecognised => (fin, None),
            // A ledger that says the money did not move, and a record that says `0000`.
            Outcome::UnrecognisedPaid => {
                if matches!(fin, Failed | Cancelled | Reversed) {
                    discrepancies.push(DiscrepancyKind::UnrecognisedPaidRecord);
                }
                (fin, None)
            }
            outcome => {
                let reported = match (fin, outcome) {
                    // Our reversal shows as cancel=1 or as closed: the same fact.
                    (Reversed, Outcome::Reversed | Outcome::Cancelled) => Reversed,
                    // QFPay cancel=1 on a paid CPM payment means reversed *or refunded*
                    // (docs/PROTOCOLS.md §Q2.4): either way the money went back. For a payment already
                    // known refunded it says nothing new.
                    (Succeeded | PartiallyRefunded | Refunded, Outcome::Reversed) => Refunded,
                    _ => final_state_of(outcome).unwrap_or(fin),
                };
                if reported != fin && !is_lifecycle(fin, reported) {
                    discrepancies.push(DiscrepancyKind::FinalStateChanged);
                }
                (reported, None)
            }
        },
    };
    Decision {
        next,
        discrepancies,
        retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecordKind;
    use DiscrepancyKind as D;
    use Outcome as O;
    use PaymentState as S;

    fn view(state: PaymentState) -> LedgerView {
        LedgerView {
            state,
            amount_minor: 1000,
            currency: Currency::parse("HKD").unwrap(),
        }
    }

    fn obs(outcome: Outcome) -> Observation {
        Observation::new(RecordKind::Payment, outcome, "x")
    }

    /// Every (state, outcome) pair with its expected next state and discrepancy.
    /// `None` in the last column: no discrepancy.
    #[rustfmt::skip]
    const TABLE: &[(S, O, S, Option<D>)] = &[
        (S::Pending, O::Succeeded, S::Succeeded, None),
        (S::Pending, O::Failed, S::Failed, None),
        (S::Pending, O::Cancelled, S::Cancelled, None),
        (S::Pending, O::Reversed, S::Cancelled, None),
        (S::Pending, O::Refunded, S::Refunded, None),
        (S::Pending, O::PartiallyRefunded, S::PartiallyRefunded, None),
        (S::Pending, O::InProgress, S::InProgress, None),
        (S::Pending, O::Unauthorized, S::InProgress, None),
        (S::Pending, O::NotFound, S::Pending, None),
        (S::Pending, O::Unrecognised, S::Pending, None),
        (S::Pending, O::UnrecognisedPaid, S::NeedsReview, Some(D::UnrecognisedPaidRecord)),

        (S::InProgress, O::Succeeded, S::Succeeded, None),
        (S::InProgress, O::Failed, S::Failed, None),
        (S::InProgress, O::Cancelled, S::Cancelled, None),
        (S::InProgress, O::Reversed, S::Cancelled, None),
        (S::InProgress, O::Refunded, S::Refunded, None),
        (S::InProgress, O::PartiallyRefunded, S::PartiallyRefunded, None),
        (S::InProgress, O::InProgress, S::InProgress, None),
        (S::InProgress, O::Unauthorized, S::InProgress, None),
        (S::InProgress, O::NotFound, S::InProgress, None),
        (S::InProgress, O::Unrecognised, S::InProgress, None),
        (S::InProgress, O::UnrecognisedPaid, S::NeedsReview, Some(D::UnrecognisedPaidRecord)),

        (S::Reversing, O::Succeeded, S::Succeeded, Some(D::PaidDespiteReversal)),
        (S::Reversing, O::Failed, S::Failed, None),
        (S::Reversing, O::Cancelled, S::Reversed, None),
        (S::Reversing, O::Reversed, S::Reversed, None),
        (S::Reversing, O::Refunded, S::Refunded, None),
        (S::Reversing, O::PartiallyRefunded, S::PartiallyRefunded, None),
        (S::Reversing, O::InProgress, S::Reversing, None),
        (S::Reversing, O::Unauthorized, S::Reversing, None),
        (S::Reversing, O::NotFound, S::Reversing, None),
        (S::Reversing, O::Unrecognised, S::Reversing, None),
        (S::Reversing, O::UnrecognisedPaid, S::NeedsReview, Some(D::UnrecognisedPaidRecord)),

        (S::Succeeded, O::Succeeded, S::Succeeded, None),
        (S::Succeeded, O::Failed, S::Failed, Some(D::FinalStateChanged)),
        (S::Succeeded, O::Cancelled, S::Cancelled, Some(D::FinalStateChanged)),
        (S::Succeeded, O::Reversed, S::Refunded, None),
        (S::Succeeded, O::Refunded, S::Refunded, None),
        (S::Succeeded, O::PartiallyRefunded, S::PartiallyRefunded, None),
        (S::Succeeded, O::InProgress, S::Succeeded, Some(D::GatewayReopened)),
        (S::Succeeded, O::Unauthorized, S::Succeeded, Some(D::GatewayReopened)),
        (S::Succeeded, O::NotFound, S::Succeeded, None),
        (S::Succeeded, O::Unrecognised, S::Succeeded, None),
        (S::Succeeded, O::UnrecognisedPaid, S::Succeeded, None),

        (S::Failed, O::Succeeded, S::Succeeded, Some(D::FinalStateChanged)),
        (S::Failed, O::Failed, S::Failed, None),
        (S::Failed, O::Cancelled, S::Cancelled, Some(D::FinalStateChanged)),
        (S::Failed, O::Reversed, S::Cancelled, Some(D::FinalStateChanged)),
        (S::Failed, O::Refunded, S::Refunded, Some(D::FinalStateChanged)),
        (S::Failed, O::PartiallyRefunded, S::PartiallyRefunded, Some(D::FinalStateChanged)),
        (S::Failed, O::InProgress, S::Failed, Some(D::GatewayReopened)),
        (S::Failed, O::Unauthorized, S::Failed, None),
        (S::Failed, O::NotFound, S::Failed, None),
        (S::Failed, O::Unrecognised, S::Failed, None),
        (S::Failed, O::UnrecognisedPaid, S::Failed, Some(D::UnrecognisedPaidRecord)),

        (S::Cancelled, O::Succeeded, S::Succeeded, Some(D::FinalStateChanged)),
        (S::Cancelled, O::Failed, S::Failed, Some(D::FinalStateChanged)),
        (S::Cancelled, O::Cancelled, S::Cancelled, None),
        (S::Cancelled, O::Reversed, S::Cancelled, None),
        (S::Cancelled, O::Refunded, S::Refunded, Some(D::FinalStateChanged)),
        (S::Cancelled, O::PartiallyRefunded, S::PartiallyRefunded, Some(D::FinalStateChanged)),
        (S::Cancelled, O::InProgress, S::Cancelled, Some(D::GatewayReopened)),
        (S::Cancelled, O::Unauthorized, S::Cancelled, None),
        (S::Cancelled, O::NotFound, S::Cancelled, None),
        (S::Cancelled, O::Unrecognised, S::Cancelled, None),
        (S::Cancelled, O::UnrecognisedPaid, S::Cancelled, Some(D::UnrecognisedPaidRecord)),

        (S::Reversed, O::Succeeded, S::Succeeded, Some(D::FinalStateChanged)),
        (S::Reversed, O::Failed, S::Failed, Some(D::FinalStateChanged)),
        (S::Reversed, O::Cancelled, S::Reversed, None),
        (S::Reversed, O::Reversed, S::Reversed, None),
        (S::Reversed, O::Refunded, S::Refunded, Some(D::FinalStateChanged)),
        (S::Reversed, O::PartiallyRefunded, S::PartiallyRefunded, Some(D::FinalStateChanged)),
        (S::Reversed, O::InProgress, S::Reversed, Some(D::GatewayReopened)),
        (S::Reversed, O::Unauthorized, S::Reversed, None),
        (S::Reversed, O::NotFound, S::Reversed, None),
        (S::Reversed, O::Unrecognised, S::Reversed, None),
        (S::Reversed, O::UnrecognisedPaid, S::Reversed, Some(D::UnrecognisedPaidRecord)),

        (S::Refunded, O::Succeeded, S::Succeeded, Some(D::FinalStateChanged)),
        (S::Refunded, O::Failed, S::Failed, Some(D::FinalStateChanged)),
        (S::Refunded, O::Cancelled, S::Cancelled, Some(D::FinalStateChanged)),
        (S::Refunded, O::Reversed, S::Refunded, None),
        (S::Refunded, O::Refunded, S::Refunded, None),
        (S::Refunded, O::PartiallyRefunded, S::PartiallyRefunded, Some(D::FinalStateChanged)),
        (S::Refunded, O::InProgress, S::Refunded, Some(D::GatewayReopened)),
        (S::Refunded, O::Unauthorized, S::Refunded, Some(D::GatewayReopened)),
        (S::Refunded, O::NotFound, S::Refunded, None),
        (S::Refunded, O::Unrecognised, S::Refunded, None),
        (S::Refunded, O::UnrecognisedPaid, S::Refunded, None),

        (S::PartiallyRefunded, O::Succeeded, S::Succeeded, Some(D::FinalStateChanged)),
        (S::PartiallyRefunded, O::Failed, S::Failed, Some(D::FinalStateChanged)),
        (S::PartiallyRefunded, O::Cancelled, S::Cancelled, Some(D::FinalStateChanged)),
        (S::PartiallyRefunded, O::Reversed, S::Refunded, None),
        (S::PartiallyRefunded, O::Refunded, S::Refunded, None),
        (S::PartiallyRefunded, O::PartiallyRefunded, S::PartiallyRefunded, None),
        (S::PartiallyRefunded, O::InProgress, S::PartiallyRefunded, Some(D::GatewayReopened)),
        (S::PartiallyRefunded, O::Unauthorized, S::PartiallyRefunded, Some(D::GatewayReopened)),
        (S::PartiallyRefunded, O::NotFound, S::PartiallyRefunded, None),
        (S::PartiallyRefunded, O::Unrecognised, S::PartiallyRefunded, None),
        (S::PartiallyRefunded, O::UnrecognisedPaid, S::PartiallyRefunded, None),

        (S::NeedsReview, O::Succeeded, S::Succeeded, None),
        (S::NeedsReview, O::Failed, S::Failed, None),
        (S::NeedsReview, O::Cancelled, S::Cancelled, None),
        (S::NeedsReview, O::Reversed, S::Cancelled, None),
        (S::NeedsReview, O::Refunded, S::Refunded, None),
        (S::NeedsReview, O::PartiallyRefunded, S::PartiallyRefunded, None),
        (S::NeedsReview, O::InProgress, S::NeedsReview, None),
        (S::NeedsReview, O::Unauthorized, S::NeedsReview, None),
        (S::NeedsReview, O::NotFound, S::NeedsReview, None),
        (S::NeedsReview, O::Unrecognised, S::NeedsReview, None),
        (S::NeedsReview, O::UnrecognisedPaid, S::NeedsReview, None),
    ];

    #[test]
    fn the_table_covers_every_state_and_outcome_pair() {
        for st in S::ALL {
            for o in O::ALL {
                assert_eq!(
                    TABLE.iter().filter(|r| r.0 == st && r.1 == o).count(),
                    1,
                    "{st:?} x {o:?} must appear exactly once"
                );
            }
        }
    }

    #[test]
    fn each_state_and_outcome_pair_decides_as_the_table_says() {
        for &(from, outcome, to, discrepancy) in TABLE {
            let d = decide(view(from), &obs(outcome));
            assert_eq!(d.next, to, "{from:?} x {outcome:?}");
            assert_eq!(
                d.discrepancies,
                discrepancy.into_iter().collect::<Vec<_>>(),
                "{from:?} x {outcome:?}"
            );
            assert_eq!(
                d.retry.is_some(),
                !to.is_final(),
                "{from:?} x {outcome:?}: retry iff open"
            );
        }
    }

    #[test]
    fn a_final_state_never_goes_back_to_an_open_one() {
        for &(from, outcome, ..) in TABLE {
            let d = decide(view(from), &obs(outcome));
            assert!(
                !from.is_final() || d.next.is_final(),
                "{from:?} x {outcome:?}"
            );
        }
    }

    #[test]
    fn in_progress_asks_again_soon_and_not_found_backs_off() {
        assert_eq!(
            decide(view(S::Pending), &obs(O::InProgress)).retry,
            Some(RetryReason::InProgress)
        );
        assert_eq!(
            decide(view(S::Pending), &obs(O::NotFound)).retry,
            Some(RetryReason::NotFound)
        );
        assert_eq!(
            decide(view(S::Reversing), &obs(O::InProgress)).retry,
            Some(RetryReason::AwaitingReversal)
        );
    }

    #[test]
    fn a_different_amount_or_currency_is_a_discrepancy_but_the_state_follows_the_gateway() {
        let mut o = obs(O::Succeeded);
        o.amount_minor = Some(999);
        o.currency = Some(Currency::parse("USD").unwrap());
        let d = decide(view(S::Pending), &o);
        assert_eq!(d.next, S::Succeeded);
        assert_eq!(
            d.discrepancies,
            vec![D::AmountMismatch, D::CurrencyMismatch]
        );

        o.amount_minor = Some(1000);
        o.currency = Some(Currency::parse("HKD").unwrap());
        assert!(decide(view(S::Pending), &o).discrepancies.is_empty());
    }
}
