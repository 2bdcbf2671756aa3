//! Seeded bulk generators for demos and benchmarks: many records with a deterministic mix of
//! outcomes and times. The same spec and seed always give the same records (SplitMix64, not a
//! crate RNG whose stream could change between versions).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::faults::unit;
use super::scenario::{EcpayOrder, EcpayStatus, QfpayPayment, QfpayTimeline};
use super::state::{SandboxState, SeedError};

/// Relative weights of outcomes in a bulk seed (zero weights are never drawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeMix {
    /// Final success from the start (QFPay `0000`; ECPay authorized).
    pub paid: u32,
    /// Failure from the start (QFPay `1205`; ECPay `Unauthorized`, which payrecon keeps open
    /// until the account's `unauthorized_horizon` after creation, then fails).
    pub failed: u32,
    /// In progress (QFPay `1143`; ECPay `error_nopay`) for `pending_for`, then paid.
    pub pending_then_paid: u32,
    /// In progress forever.
    pub never_completes: u32,
}

impl Default for OutcomeMix {
    fn default() -> Self {
        Self {
            paid: 85,
            failed: 10,
            pending_then_paid: 4,
            never_completes: 1,
        }
    }
}

/// The outcome a bulk record was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOutcome {
    Paid,
    Failed,
    PaidAfter(Duration),
    NeverCompletes,
}

impl OutcomeMix {
    fn draw(&self, u: f64, pending_for: Duration) -> BulkOutcome {
        let weights = [
            self.paid,
            self.failed,
            self.pending_then_paid,
            self.never_completes,
        ];
        let total: u32 = weights.iter().sum();
        let mut pick = u * f64::from(total.max(1));
        for (i, w) in weights.iter().enumerate() {
            if pick < f64::from(*w) {
                return match i {
                    0 => BulkOutcome::Paid,
                    1 => BulkOutcome::Failed,
                    2 => BulkOutcome::PaidAfter(pending_for),
                    _ => BulkOutcome::NeverCompletes,
                };
            }
            pick -= f64::from(*w);
        }
        BulkOutcome::Paid
    }
}

/// Many records for one merchant: `count` of them, created uniformly at random in
/// `[start, start + span)`, numbered `{prefix}{index:08}`.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkSpec {
    pub prefix: String,
    pub count: usize,
    pub start: DateTime<Utc>,
    pub span: Duration,
    pub seed: u64,
    pub mix: OutcomeMix,
    /// How long `pending_then_paid` records stay in progress.
    pub pending_for: Duration,
    /// Inclusive range of amounts in minor units.
    pub amount_minor: (i64, i64),
    /// QFPay only: pay types drawn uniformly.
    pub pay_types: Vec<String>,
    /// QFPay only.
    pub currency: String,
}

impl BulkSpec {
    pub fn new(prefix: &str, count: usize, start: DateTime<Utc>, span: Duration) -> Self {
        Self {
            prefix: prefix.to_string(),
            count,
            start,
            span,
            seed: 1,
            mix: OutcomeMix::default(),
            pending_for: Duration::from_secs(30),
            amount_minor: (100, 100_000),
            pay_types: vec!["800101".to_string()],
            currency: "HKD".to_string(),
        }
    }

    fn draw(&self, i: usize) -> (String, DateTime<Utc>, i64, BulkOutcome, usize) {
        let n = i as u64;
        let offset = self.span.mul_f64(unit(self.seed, n, 1));
        let created = self.start + TimeDelta::from_std(offset).unwrap_or_default();
        let (lo, hi) = self.amount_minor;
        let width = (hi - lo).max(0) as f64 + 1.0;
        let amount = lo + (unit(self.seed, n, 2) * width) as i64;
        let outcome = self.mix.draw(unit(self.seed, n, 3), self.pending_for);
        let pay_type = (unit(self.seed, n, 4) * self.pay_types.len() as f64) as usize;
        (
            format!("{}{i:08}", self.prefix),
            created,
            amount.min(hi),
            outcome,
            pay_type,
        )
    }
}

/// One generated record: what the bench or demo registers in the ledger (or leaves out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededRecord {
    pub out_trade_no: String,
    /// QFPay `syssn` or ECPay `TradeNo`.
    pub provider_ref: String,
    pub amount_minor: i64,
    pub created_at: DateTime<Utc>,
    pub pay_type: Option<String>,
    pub outcome: BulkOutcome,
}

impl SandboxState {
    /// Seeds `spec.count` QFPay payments (failures answer `1205`).
    pub fn seed_qfpay_bulk(
        &self,
        app_code: &str,
        spec: &BulkSpec,
    ) -> Result<Vec<SeededRecord>, SeedError> {
        let now = self.clock().now();
        let seq = &self.shared.seq;
        self.with_qfpay_mut(app_code, |book| {
            (0..spec.count)
                .map(|i| {
                    let (no, created, amount, outcome, pt) = spec.draw(i);
                    let pay_type = spec
                        .pay_types
                        .get(pt)
                        .cloned()
                        .unwrap_or_else(|| "800101".into());
                    let timeline = match outcome {
                        BulkOutcome::Paid => QfpayTimeline::paid(),
                        BulkOutcome::Failed => QfpayTimeline::failed("1205"),
                        BulkOutcome::PaidAfter(d) => QfpayTimeline::pending_then(d, "0000"),
                        BulkOutcome::NeverCompletes => QfpayTimeline::never_completes(),
                    };
                    let p = QfpayPayment::new(&no, amount, &spec.currency, &pay_type)
                        .at(created)
                        .timeline(timeline);
                    let syssn = book.insert_payment(p, now, seq)?;
                    Ok(SeededRecord {
                        out_trade_no: no,
                        provider_ref: syssn,
                        amount_minor: amount,
                        created_at: created,
                        pay_type: Some(pay_type),
                        outcome,
                    })
                })
                .collect()
        })
        .ok_or_else(|| SeedError::UnknownMerchant(app_code.to_string()))?
    }

    /// Seeds `spec.count` ECPay orders (`prefix` must be alphanumeric, at most 12 characters,
    /// so that numbers stay within String(20)).
    pub fn seed_ecpay_bulk(
        &self,
        merchant_id: &str,
        spec: &BulkSpec,
    ) -> Result<Vec<SeededRecord>, SeedError> {
        (0..spec.count)
            .map(|i| {
                let (no, created, amount, outcome, _) = spec.draw(i);
                let order = EcpayOrder::new(&no, amount).at(created);
                let order = match outcome {
                    BulkOutcome::Paid => order,
                    BulkOutcome::Failed => order.status(EcpayStatus::Unauthorized),
                    BulkOutcome::PaidAfter(d) => order.nopay_until(d, EcpayStatus::Authorized),
                    BulkOutcome::NeverCompletes => order.never_answered(),
                };
                let trade_no = self.insert_ecpay(merchant_id, order)?;
                Ok(SeededRecord {
                    out_trade_no: no,
                    provider_ref: trade_no,
                    amount_minor: amount,
                    created_at: created,
                    pay_type: None,
                    outcome,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxConfig;

    #[test]
    fn the_same_spec_seeds_the_same_records_and_follows_the_mix() {
        let start = DateTime::parse_from_rfc3339("2026-11-10T00:00:00+08:00")
            .unwrap()
            .to_utc();
        let spec = BulkSpec::new("B", 2000, start, Duration::from_secs(86_400));
        let a = SandboxState::new(&SandboxConfig::dev());
        let b = SandboxState::new(&SandboxConfig::dev());
        let app = crate::sandbox::DEV_QFPAY_APP_CODE;
        let ra = a.seed_qfpay_bulk(app, &spec).unwrap();
        let rb = b.seed_qfpay_bulk(app, &spec).unwrap();
        assert_eq!(ra, rb);
        assert_eq!(a.qfpay_len(app), 2000);
        let paid = ra.iter().filter(|r| r.outcome == BulkOutcome::Paid).count();
        assert!((1550..1850).contains(&paid), "{paid}");
        let end = start + TimeDelta::days(1);
        assert!(
            ra.iter()
                .all(|r| r.created_at >= start && r.created_at < end)
        );
        assert!(ra.iter().all(|r| (100..=100_000).contains(&r.amount_minor)));
        // Seeding the same numbers twice is refused, not silently doubled.
        assert!(a.seed_qfpay_bulk(app, &spec).is_err());
    }
}
