//! Lookups by id (`syssn` or `out_trade_no` comma lists) on `/trade/v1/query`: batches planned
//! by `request::plan_batches`, records matched to the ids asked, and a `NotFound` observation
//! for every id no record answered (docs/PROTOCOLS.md §Q2.1).

use super::client::QfpayClient;
use super::request::{self, Form, IdBatch, IdLookup};
use super::response::{self, malformed};
use crate::domain::{Observation, OutTradeNo, Outcome, ProviderRef, RecordKind};
use crate::gateway::GatewayError;

impl QfpayClient {
    /// Looks ids up in batches. Each batch answers separately, so one failed batch does not
    /// discard the others. Every id asked gets at least one observation: its record(s), or a
    /// `NotFound` observation when no successful batch returned it. Records are deduplicated by
    /// `syssn` across batches.
    pub async fn query_ids(
        &self,
        lookup: &IdLookup,
    ) -> Vec<(IdBatch, Result<Vec<Observation>, GatewayError>)> {
        let mut out = Vec::new();
        for batch in self.plan(lookup) {
            let result = self.query_batch(&batch).await;
            out.push((batch, result));
        }
        merge_batches(&mut out);
        out
    }

    /// One id batch (paged, although a batch of a few ids fits one page). Only records whose key
    /// is one of the ids asked are returned (docs/PROTOCOLS.md §Q2.1: match on the key yourself); ids with
    /// no record get a `NotFound` observation.
    pub async fn query_batch(&self, batch: &IdBatch) -> Result<Vec<Observation>, GatewayError> {
        let mut base = Form::default();
        base.set(batch.key.param(), batch.ids.join(","))
            .set_opt("mchid", self.mchid());
        if let Some(w) = batch.window {
            base.set("start_time", w.start_time())
                .set("end_time", w.end_time());
        }
        let mut found: Vec<Observation> = Vec::new();
        let mut page = 1;
        loop {
            let answer = self.query_page(&base, page).await?;
            let full = answer.is_full();
            let before = found.len();
            for rec in &answer.records {
                let obs = response::record_observation(rec);
                // A record that carries no readable key cannot be attributed to any payment:
                // treating the ids as absent would call a paid payment "not found" (a reversal
                // trigger), so the answer is malformed instead.
                let Some(key) = observation_key(&obs, batch.key) else {
                    return Err(malformed(format!(
                        "a record of an id lookup has no readable {}",
                        batch.key.param()
                    )));
                };
                let asked = batch.ids.iter().any(|id| id == key);
                let dup = obs.provider_ref.is_some()
                    && found.iter().any(|f| f.provider_ref == obs.provider_ref);
                if asked && !dup {
                    found.push(obs);
                } else if !asked {
                    tracing::debug!(page, "qfpay returned a record that was not asked for");
                }
            }
            if !full {
                let mut absent = Vec::new();
                for id in &batch.ids {
                    if !found
                        .iter()
                        .any(|o| observation_key(o, batch.key) == Some(id))
                    {
                        absent.push(not_found(batch.key, id, &answer.code));
                    }
                }
                found.extend(absent);
                return Ok(found);
            }
            if found.len() == before {
                // A full page with nothing new: paging would never end.
                return Err(malformed(format!(
                    "page {page} of an id lookup is full but adds no record asked for"
                )));
            }
            page += 1;
        }
    }
}

fn observation_key(o: &Observation, key: request::IdKey) -> Option<&str> {
    match key {
        request::IdKey::Syssn => o.provider_ref.as_ref().map(|r| r.as_str()),
        request::IdKey::OutTradeNo => o.out_trade_no.as_ref().map(|r| r.as_str()),
    }
}

/// The observation for an id that no record answered. Its kind is `payment` because nothing
/// says otherwise; match it by its id.
fn not_found(key: request::IdKey, id: &str, code: &str) -> Observation {
    let mut obs = Observation::new(RecordKind::Payment, Outcome::NotFound, code);
    match key {
        request::IdKey::Syssn => obs.provider_ref = Some(ProviderRef::from_trusted(id.into())),
        request::IdKey::OutTradeNo => obs.out_trade_no = Some(OutTradeNo::from_trusted(id.into())),
    }
    obs.evidence = serde_json::json!({ "respcd": code, "absent": { key.param(): id } });
    obs
}

/// Across batches of one lookup (an order near a month boundary is asked in two months): drop a
/// `NotFound` for an id another batch found, and records already returned by an earlier batch.
fn merge_batches(results: &mut [(IdBatch, Result<Vec<Observation>, GatewayError>)]) {
    let mut found_ids: Vec<String> = Vec::new();
    let mut seen_refs: Vec<String> = Vec::new();
    for (batch, r) in results.iter() {
        if let Ok(obs) = r {
            for o in obs.iter().filter(|o| o.outcome != Outcome::NotFound) {
                if let Some(k) = observation_key(o, batch.key) {
                    found_ids.push(k.to_string());
                }
            }
        }
    }
    for (batch, r) in results.iter_mut() {
        if let Ok(obs) = r {
            obs.retain(|o| {
                let key = observation_key(o, batch.key).unwrap_or_default();
                if o.outcome == Outcome::NotFound {
                    return !found_ids.iter().any(|f| f == key);
                }
                match &o.provider_ref {
                    Some(r) if seen_refs.iter().any(|s| s == r.as_str()) => false,
                    Some(r) => {
                        seen_refs.push(r.as_str().to_string());
                        true
                    }
                    None => true,
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::qfpay::request::IdKey;

    fn found(out_trade_no: &str, syssn: &str) -> Observation {
        let mut o = Observation::new(RecordKind::Payment, Outcome::Succeeded, "0000");
        o.out_trade_no = Some(OutTradeNo::from_trusted(out_trade_no.into()));
        o.provider_ref = Some(ProviderRef::from_trusted(syssn.into()));
        o
    }

    fn batch(ids: &[&str]) -> IdBatch {
        IdBatch {
            key: IdKey::OutTradeNo,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            window: None,
        }
    }

    #[test]
    fn an_order_found_in_one_month_is_not_reported_missing_from_the_other() {
        let mut results = vec![
            (
                batch(&["A1", "A2"]),
                Ok(vec![
                    not_found(IdKey::OutTradeNo, "A1", "0000"),
                    not_found(IdKey::OutTradeNo, "A2", "0000"),
                ]),
            ),
            (batch(&["A1"]), Ok(vec![found("A1", "QFPay 2026")])),
            (batch(&["A1"]), Ok(vec![found("A1", "QFPay 2026")])),
        ];
        merge_batches(&mut results);
        let left: Vec<(String, Outcome)> = results
            .iter()
            .flat_map(|(_, r)| r.as_ref().unwrap())
            .map(|o| (o.out_trade_no.as_ref().unwrap().to_string(), o.outcome))
            .collect();
        assert_eq!(
            left,
            [
                ("A2".to_string(), Outcome::NotFound),
                ("A1".to_string(), Outcome::Succeeded),
            ]
        );
    }
}
