//! What one page of a sweep does to the ledger (see `sweep` for the walk):
//!
//! - a record of an open payment makes it due (the lane's next unit settles it);
//! - a record of a payment no pass works on any more (final, or `needs_review`) goes through
//!   the state machine: `succeeded` → `refunded` / `partially_refunded`, `needs_review` → the
//!   gateway's final state, each an `observed` event with the record as evidence; a
//!   contradiction is a discrepancy, as in a pass;
//! - a refund record (`order_type` refund, `origssn` = its payment's `syssn`) is linked to its
//!   payment; one the ledger does not know is **registered** as a refund row when the ledger
//!   holds its payment, and the payment becomes `partially_refunded` / `refunded` by the sum of
//!   its succeeded refunds (docs/OPERATIONS.md, "What a sweep writes");
//! - any other record the ledger does not know is `missing_in_ledger` only when the account
//!   says the ledger is its complete book (`ledger_is_complete`); otherwise it is counted.

use std::collections::{BTreeSet, HashSet};

use chrono::{FixedOffset, NaiveDateTime, TimeZone, Utc};

use super::Reconciler;
use super::sweep::{SweepError, SweepReport};
use crate::domain::{
    Currency, DiscrepancyKind, LedgerView, Observation, Outcome, PaymentState, RecordKind, decide,
};
use crate::gateway::qfpay::TIME_FORMAT;
use crate::ledger::{Fence, FoundRefund, KnownPayment, NewDiscrepancy, NewEvent, SweepDiscrepancy};

fn find<'a>(known: &'a [KnownPayment], o: &Observation) -> Option<&'a KnownPayment> {
    let kind = o.kind.as_str();
    known
        .iter()
        .find(|k| {
            k.kind == kind
                && o.provider_ref
                    .as_ref()
                    .is_some_and(|r| k.provider_ref.as_deref() == Some(r.as_str()))
        })
        .or_else(|| {
            // By order number only when the gateway ids do not contradict each other: a
            // record with another `syssn` is another payment that reused the number.
            known.iter().find(|k| {
                k.kind == kind
                    && o.out_trade_no
                        .as_ref()
                        .is_some_and(|n| n.as_str() == k.out_trade_no)
                    && match (&k.provider_ref, &o.provider_ref) {
                        (Some(mine), Some(theirs)) => mine == theirs.as_str(),
                        _ => true,
                    }
            })
        })
}

/// Where a paid payment stands on its refund lifecycle; `None` off it.
fn refund_rank(s: PaymentState) -> Option<u8> {
    match s {
        PaymentState::Succeeded => Some(0),
        PaymentState::PartiallyRefunded => Some(1),
        PaymentState::Refunded => Some(2),
        _ => None,
    }
}

fn view(k: &KnownPayment, state: PaymentState) -> Option<LedgerView> {
    Some(LedgerView {
        state,
        amount_minor: k.amount,
        currency: Currency::parse(&k.currency).ok()?,
    })
}

/// A record the ledger does not know: a finding when the ledger is the complete book, else
/// counted.
fn unknown_record(
    ledger_is_complete: bool,
    o: &Observation,
    report: &mut SweepReport,
) -> Option<SweepDiscrepancy> {
    if o.provider_ref.is_none() && o.out_trade_no.is_none() {
        // Reported as unreadable by the sweep.
        return None;
    }
    // A refund of a payment the ledger lacks is covered by that payment's own record.
    if !ledger_is_complete || o.kind != RecordKind::Payment {
        report.unknown_records += 1;
        return None;
    }
    let key = o
        .provider_ref
        .as_ref()
        .map(|r| r.to_string())
        .or_else(|| o.out_trade_no.as_ref().map(|n| n.to_string()))
        .unwrap_or_default();
    Some(SweepDiscrepancy {
        payment: None,
        found: NewDiscrepancy {
            kind: DiscrepancyKind::MissingInLedger,
            detail: format!(
                "syssn {key}: gateway record ({}, {}) unknown to the ledger",
                o.provider_code,
                crate::domain::format_money(
                    o.amount_minor.unwrap_or_default(),
                    &o.currency.map(|c| c.to_string()).unwrap_or_default()
                )
            ),
            evidence: o.evidence.clone(),
        },
        subject: key,
    })
}

impl Reconciler {
    pub(super) async fn sweep_page(
        &self,
        fence: &Fence,
        tz: FixedOffset,
        ledger_is_complete: bool,
        observations: &[Observation],
        seen: &mut HashSet<i64>,
        report: &mut SweepReport,
    ) -> Result<(), SweepError> {
        let account = fence.account.as_str();
        let refs: Vec<&str> = observations
            .iter()
            .flat_map(|o| [o.provider_ref.as_ref(), o.original_ref.as_ref()])
            .flatten()
            .map(|r| r.as_str())
            .collect();
        let orders: Vec<&str> = observations
            .iter()
            .filter_map(|o| o.out_trade_no.as_ref().map(|r| r.as_str()))
            .collect();
        let known = self.ledger.known_payments(account, &refs, &orders).await?;
        let mut due = Vec::new();
        let mut refunded: BTreeSet<String> = BTreeSet::new();
        let mut unknown = Vec::new();
        for o in observations {
            let Some(k) = find(&known, o) else {
                if let Some(orig) = self.register_refund(fence, tz, &known, o, report).await? {
                    refunded.insert(orig);
                } else {
                    unknown.extend(unknown_record(ledger_is_complete, o, report));
                }
                continue;
            };
            report.matched += 1;
            seen.insert(k.id);
            if let (RecordKind::Refund, Some(orig)) = (o.kind, &o.original_ref) {
                if k.original_ref.is_none() {
                    self.ledger.link_refund(fence, k.id, orig.as_str()).await?;
                }
                refunded.insert(orig.to_string());
            }
            let state: PaymentState = k.state.parse().unwrap_or(PaymentState::NeedsReview);
            if !state.is_final() {
                due.push(k.id);
                continue;
            }
            self.apply_to_settled(fence, k, state, o, report).await?;
        }
        self.report_once(fence, unknown, &mut report.missing_in_ledger)
            .await?;
        report.made_due += due.len() as u64;
        self.ledger.make_due(fence, &due, Utc::now()).await?;
        self.follow_refunds(fence, &refunded, report).await
    }

    /// A record about a payment no pass works on: the state machine decides, the ledger
    /// follows (or records the contradiction).
    async fn apply_to_settled(
        &self,
        fence: &Fence,
        k: &KnownPayment,
        state: PaymentState,
        o: &Observation,
        report: &mut SweepReport,
    ) -> Result<(), SweepError> {
        let account = fence.account.as_str();
        let Some(v) = view(k, state) else {
            return Ok(());
        };
        let mut d = decide(v, o);
        // A payment's own record can lag its refunds (and older docs know no flag 5): a step
        // back along succeeded → partially_refunded → refunded that the ledger's refund rows
        // contradict is not followed.
        let back = matches!(
            (refund_rank(d.next), refund_rank(state)),
            (Some(to), Some(from)) if to < from
        );
        if back && let Some(orig) = k.provider_ref.as_deref() {
            let total = self.ledger.refunded_total(account, orig).await?;
            let explained = match state {
                PaymentState::Refunded => total >= k.amount,
                _ => total > 0,
            };
            if explained {
                d.next = state;
                d.discrepancies
                    .retain(|x| *x != DiscrepancyKind::FinalStateChanged);
            }
        }
        let message = format!("a sweep found the gateway record: {}", o.outcome);
        self.write_finding(fence, k, state, d.next, d.discrepancies, o, message, report)
            .await
    }

    /// Writes a sweep's finding about `k` and reports it.
    #[allow(clippy::too_many_arguments)]
    async fn write_finding(
        &self,
        fence: &Fence,
        k: &KnownPayment,
        state: PaymentState,
        next: PaymentState,
        kinds: Vec<DiscrepancyKind>,
        o: &Observation,
        message: String,
        report: &mut SweepReport,
    ) -> Result<(), SweepError> {
        if next == state && kinds.is_empty() {
            return Ok(());
        }
        let discrepancies: Vec<NewDiscrepancy> = kinds
            .into_iter()
            .map(|kind| NewDiscrepancy {
                kind,
                detail: format!(
                    "{} {}: ledger {} {} {}, gateway {} ({})",
                    kind.as_str(),
                    k.out_trade_no,
                    k.state,
                    k.amount,
                    k.currency,
                    o.provider_code,
                    o.amount_minor.unwrap_or_default()
                ),
                evidence: o.evidence.clone(),
            })
            .collect();
        let now = Utc::now();
        let event = NewEvent {
            at: now,
            kind: "observed",
            from_state: Some(state),
            to_state: Some(next),
            provider_code: Some(o.provider_code.clone()),
            message: Some(message),
            evidence: o.evidence.clone(),
        };
        let (changed, recorded) = self
            .ledger
            .apply_sweep_finding(fence, k.id, state, next, &event, &discrepancies, now)
            .await?;
        if changed {
            report
                .updated
                .push(format!("{} {}: {state} → {next}", k.kind, k.out_trade_no));
        }
        report.contradictions.extend(
            recorded
                .into_iter()
                .map(|i| discrepancies[i].detail.clone()),
        );
        Ok(())
    }

    /// Registers a refund record whose payment is in the ledger; returns the payment's gateway
    /// id, or `None` when the record is not such a refund.
    async fn register_refund(
        &self,
        fence: &Fence,
        tz: FixedOffset,
        known: &[KnownPayment],
        o: &Observation,
        report: &mut SweepReport,
    ) -> Result<Option<String>, SweepError> {
        let (RecordKind::Refund, Some(orig), Some(out_trade_no), Some(amount)) = (
            o.kind,
            o.original_ref.as_ref(),
            o.out_trade_no.as_ref(),
            o.amount_minor.filter(|a| *a > 0),
        ) else {
            return Ok(None);
        };
        let Some(payment) = known
            .iter()
            .find(|k| k.kind == "payment" && k.provider_ref.as_deref() == Some(orig.as_str()))
        else {
            return Ok(None);
        };
        let currency = o
            .currency
            .map_or_else(|| payment.currency.clone(), |c| c.to_string());
        let state = Currency::parse(&currency)
            .ok()
            .map(|currency| {
                decide(
                    LedgerView {
                        state: PaymentState::Pending,
                        amount_minor: amount,
                        currency,
                    },
                    o,
                )
                .next
            })
            .unwrap_or(PaymentState::Pending);
        let created_at = o
            .gateway_time
            .as_deref()
            .and_then(|t| NaiveDateTime::parse_from_str(t, TIME_FORMAT).ok())
            .and_then(|t| tz.from_local_datetime(&t).single())
            .map_or_else(Utc::now, |t| t.to_utc());
        let found = FoundRefund {
            out_trade_no: out_trade_no.as_str(),
            syssn: o.provider_ref.as_ref().map(|r| r.as_str()),
            original_ref: orig.as_str(),
            pay_type: o.pay_type.as_ref().map(|p| p.as_str()),
            amount,
            currency: &currency,
            created_at,
            state,
            provider_code: &o.provider_code,
            evidence: &o.evidence,
        };
        if self
            .ledger
            .register_found_refund(fence, &found, Utc::now())
            .await?
            .is_some()
        {
            report.refunds_registered.push(format!(
                "refund {out_trade_no} of {} ({}, {state})",
                payment.out_trade_no,
                crate::domain::format_money(amount, &currency)
            ));
        }
        Ok(Some(orig.to_string()))
    }

    /// Payments with refunds on this page: `succeeded` → `partially_refunded` → `refunded` by
    /// the sum of their succeeded refund rows (only forward along that lifecycle: a record of
    /// the payment itself says more and is applied as it is).
    async fn follow_refunds(
        &self,
        fence: &Fence,
        originals: &BTreeSet<String>,
        report: &mut SweepReport,
    ) -> Result<(), SweepError> {
        let account = fence.account.as_str();
        if originals.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = originals.iter().map(String::as_str).collect();
        let payments = self.ledger.known_payments(account, &refs, &[]).await?;
        for k in payments.iter().filter(|k| k.kind == "payment") {
            let state: PaymentState = k.state.parse().unwrap_or(PaymentState::NeedsReview);
            let Some(orig) = k.provider_ref.as_deref() else {
                continue;
            };
            let total = self.ledger.refunded_total(account, orig).await?;
            let next = match state {
                PaymentState::Succeeded | PaymentState::PartiallyRefunded if total >= k.amount => {
                    PaymentState::Refunded
                }
                PaymentState::Succeeded if total > 0 => PaymentState::PartiallyRefunded,
                _ => continue,
            };
            let mut o = Observation::new(
                RecordKind::Payment,
                if next == PaymentState::Refunded {
                    Outcome::Refunded
                } else {
                    Outcome::PartiallyRefunded
                },
                "refund",
            );
            o.evidence = serde_json::json!({ "refunded_total": total, "amount": k.amount });
            let message = format!(
                "refund records of this payment total {total} of {} {}",
                k.amount, k.currency
            );
            self.write_finding(fence, k, state, next, Vec::new(), &o, message, report)
                .await?;
        }
        Ok(())
    }
}
