//! Matching gateway records to the claimed payments they are about: by the gateway id when the
//! ledger has one, else by kind and merchant order number (docs/PROTOCOLS.md §Q2.1: "match on the key
//! yourself").

use std::collections::HashMap;

use crate::domain::{Observation, Outcome, RecordKind};
use crate::gateway::qfpay::{CodeClass, classify};
use crate::ledger::Claimed;

/// The answer for a payment when a record carries its id but is not it (another kind, another
/// `syssn`): not "no record" (which could license a reversal), and nothing we understand
/// either. If the record says `0000`, money moved.
pub(crate) fn foreign_record(kind: RecordKind, record: Observation) -> Observation {
    let outcome = match classify(&record.provider_code) {
        Some(CodeClass::Success) => Outcome::UnrecognisedPaid,
        _ => Outcome::Unrecognised,
    };
    let mut obs = Observation::new(kind, outcome, record.provider_code);
    obs.evidence = record.evidence;
    obs
}

#[derive(Debug, Default)]
pub(crate) struct Matcher {
    by_ref: HashMap<String, usize>,
    by_order: HashMap<(RecordKind, String), usize>,
}

impl Matcher {
    pub fn new(claimed: &[Claimed], members: &[usize]) -> Self {
        let mut m = Matcher::default();
        for &i in members {
            let c = &claimed[i];
            if let Some(r) = &c.provider_ref {
                m.by_ref.insert(r.as_str().to_string(), i);
            }
            m.by_order
                .insert((c.kind, c.out_trade_no.as_str().to_string()), i);
        }
        m
    }

    /// The claimed payment `obs` is about, if any.
    pub fn find(&self, claimed: &[Claimed], obs: &Observation) -> Option<usize> {
        if let Some(i) = obs
            .provider_ref
            .as_ref()
            .and_then(|r| self.by_ref.get(r.as_str()))
            && claimed[*i].kind == obs.kind
        {
            return Some(*i);
        }
        let i = *self
            .by_order
            .get(&(obs.kind, obs.out_trade_no.as_ref()?.as_str().to_string()))?;
        // A record with a different gateway id than the ledger's is another payment that reused
        // the order number: not this one.
        match (&claimed[i].provider_ref, &obs.provider_ref) {
            (Some(mine), Some(theirs)) if mine != theirs => None,
            _ => Some(i),
        }
    }
}
