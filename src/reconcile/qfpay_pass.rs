//! Asking QFPay about one unit of an account's due payments: window sweeps where they are
//! cheaper (see `plan`), batched id lookups for the rest, and a `NotFound` for every payment
//! no successful answer mentioned. Each answer goes to the lane as soon as the calls it depends
//! on have answered.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::matching::{Matcher, foreign_record};
use super::plan::{self, Strategy};
use super::{Answer, Delivery, PassContext, Sink};
use crate::domain::{Observation, Outcome};
use crate::gateway::GatewayError;
use crate::gateway::qfpay::{IdBatch, IdKey, IdLookup, OrderLookup, QfpayClient, WindowQuery};
use crate::ledger::Claimed;

/// Asks about `members` (indexes into `claimed`) and hands each answer to `sink` as soon as
/// the calls it depends on have answered. Returns the number of calls spent.
pub(crate) async fn check(
    ctx: &PassContext<'_>,
    client: &QfpayClient,
    batch_size: u32,
    claimed: &[Claimed],
    members: &[usize],
    sink: Sink,
) -> u64 {
    let mut calls = 0;
    let matcher = Matcher::new(claimed, members);
    let mut lookups: Vec<usize> = Vec::new();
    match ctx.strategy {
        Strategy::PerPayment => lookups.extend_from_slice(members),
        Strategy::Planned if !ctx.unit_sweeps => lookups.extend_from_slice(members),
        Strategy::Planned => {
            for g in plan::group_by_month(claimed, members, client.timezone()) {
                let account = claimed[g.members[0]].account.as_str();
                let (start, end) = g.aggregate.window(ctx.now);
                let in_ledger = ctx
                    .ledger
                    .count_created_between(account, start, end)
                    .await
                    .unwrap_or(u64::MAX);
                let estimate = plan::estimate_records(in_ledger);
                let mut found = HashMap::new();
                if g.aggregate.prefer_sweep(estimate, batch_size) {
                    let budget = g.aggregate.id_calls(batch_size);
                    calls +=
                        sweep(client, (start, end), budget, claimed, &matcher, &mut found).await;
                }
                lookups.extend(g.members.iter().filter(|i| !found.contains_key(i)));
                if !found.is_empty() {
                    let _ = sink.send(Delivery::answers(found));
                }
            }
        }
    }
    let batch_for_each = ctx.strategy == Strategy::PerPayment;
    calls += look_up(
        ctx,
        client,
        claimed,
        &lookups,
        batch_for_each,
        &matcher,
        &sink,
    )
    .await;
    calls
}

/// Sweeps one month group's window, at most `budget` pages; returns calls spent. Matching
/// records become answers; on an error or an exhausted budget the sweep stops and the
/// unmatched members fall back to id lookups.
async fn sweep(
    client: &QfpayClient,
    (start, end): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    budget: u64,
    claimed: &[Claimed],
    matcher: &Matcher,
    answers: &mut HashMap<usize, Answer>,
) -> u64 {
    // WindowQuery is half-open: end + 1 s includes the window's last second.
    let query = WindowQuery::new(start, end + chrono::Duration::seconds(1));
    let mut pager = client.sweep(query);
    let mut calls = 0;
    while calls < budget {
        calls += 1;
        match pager.next_page().await {
            Ok(Some(page)) => {
                let at = chrono::Utc::now();
                for obs in page.observations {
                    if let Some(i) = matcher.find(claimed, &obs) {
                        answers.insert(i, Answer::seen(obs, at));
                    }
                }
            }
            Ok(None) => {
                // `next_page` answered from its own state without a call.
                calls -= 1;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "window sweep failed; falling back to id lookups");
                break;
            }
        }
    }
    calls
}

/// The id of `obs` that a lookup by `key` matches on.
fn carrier(obs: &Observation, key: IdKey) -> Option<&str> {
    match key {
        IdKey::Syssn => obs.provider_ref.as_ref().map(|r| r.as_str()),
        IdKey::OutTradeNo => obs.out_trade_no.as_ref().map(|r| r.as_str()),
    }
}

/// What the batches that asked about one member said so far.
#[derive(Debug, Default)]
struct Heard {
    /// Batches still to answer.
    outstanding: usize,
    found: Option<(Observation, DateTime<Utc>)>,
    failed: Option<(Arc<GatewayError>, DateTime<Utc>)>,
    /// A record carrying the member's id that is not the member's (another kind or `syssn`).
    carried: Option<(Observation, DateTime<Utc>)>,
    answered_at: Option<DateTime<Utc>>,
}

impl Heard {
    /// The member's answer once every batch that asked about it has answered. A member is
    /// "not found" only when every batch answered and none carried its ids; one failed batch
    /// (e.g. the other month of an order near a month edge) makes it a failed call, whatever
    /// the others said.
    fn conclude(self, c: &Claimed) -> Option<Answer> {
        if let Some((obs, at)) = self.found {
            return Some(Answer::seen(obs, at));
        }
        if let Some((e, at)) = self.failed {
            return Some(Answer::failed(e, at));
        }
        if let Some((obs, at)) = self.carried {
            return Some(Answer::seen(foreign_record(c.kind, obs), at));
        }
        let at = self.answered_at?;
        let mut obs = Observation::new(c.kind, Outcome::NotFound, "not_found");
        obs.out_trade_no = Some(c.out_trade_no.clone());
        obs.provider_ref = c.provider_ref.clone();
        Some(Answer::seen(obs, at))
    }
}

/// Looks `members` up by id (in batches, or one per call for `--strategy per-payment`), and
/// sends the members each answered batch completes to `sink`, together.
async fn look_up(
    ctx: &PassContext<'_>,
    client: &QfpayClient,
    claimed: &[Claimed],
    members: &[usize],
    one_per_call: bool,
    matcher: &Matcher,
    sink: &Sink,
) -> u64 {
    let (with_ref, without_ref): (Vec<usize>, Vec<usize>) = members
        .iter()
        .partition(|&&i| claimed[i].provider_ref.is_some());
    let mut lookups = Vec::new();
    let syssns = |ids: &[usize]| {
        IdLookup::Syssn(
            ids.iter()
                .filter_map(|&i| claimed[i].provider_ref.clone())
                .collect(),
        )
    };
    let orders = |ids: &[usize]| {
        IdLookup::OutTradeNo(
            ids.iter()
                .map(|&i| OrderLookup {
                    out_trade_no: claimed[i].out_trade_no.clone(),
                    created_at: Some(claimed[i].created_at),
                })
                .collect(),
        )
    };
    if one_per_call {
        lookups.extend(with_ref.iter().map(|&i| syssns(&[i])));
        lookups.extend(without_ref.iter().map(|&i| orders(&[i])));
    } else {
        if !with_ref.is_empty() {
            lookups.push(syssns(&with_ref));
        }
        if !without_ref.is_empty() {
            lookups.push(orders(&without_ref));
        }
    }
    let batches: Vec<IdBatch> = lookups.iter().flat_map(|l| client.plan(l)).collect();
    // Which members each batch asks about, to attribute errors and "not found".
    let mut asked: HashMap<(IdKey, &str), Vec<usize>> = HashMap::new();
    for &i in members {
        let c = &claimed[i];
        if let Some(r) = &c.provider_ref {
            asked.entry((IdKey::Syssn, r.as_str())).or_default().push(i);
        }
        asked
            .entry((IdKey::OutTradeNo, c.out_trade_no.as_str()))
            .or_default()
            .push(i);
    }
    let in_batch = |batch: &IdBatch| -> Vec<usize> {
        batch
            .ids
            .iter()
            .filter_map(|id| asked.get(&(batch.key, id.as_str())))
            .flatten()
            .copied()
            .collect()
    };
    let mut heard: HashMap<usize, Heard> = HashMap::new();
    for b in &batches {
        for i in in_batch(b) {
            heard.entry(i).or_default().outstanding += 1;
        }
    }
    let mut calls = 0;
    let mut results = futures::stream::iter(batches)
        .take_while(|_| std::future::ready(ctx.may_call()))
        .map(|b| async move {
            let r = client.query_batch(&b).await;
            (b, r)
        })
        .buffer_unordered(ctx.concurrency);
    while let Some((batch, result)) = results.next().await {
        calls += 1;
        let at = Utc::now();
        match result {
            Ok(observations) => {
                for obs in observations
                    .into_iter()
                    .filter(|o| o.outcome != Outcome::NotFound)
                {
                    if let Some(i) = matcher.find(claimed, &obs) {
                        if let Some(h) = heard.get_mut(&i) {
                            h.found = Some((obs, at));
                        }
                    } else if let Some(h) = carrier(&obs, batch.key)
                        .and_then(|k| asked.get(&(batch.key, k)))
                        .and_then(|v| v.first())
                        .and_then(|i| heard.get_mut(i))
                    {
                        h.carried.get_or_insert((obs, at));
                    }
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for i in in_batch(&batch) {
                    if let Some(h) = heard.get_mut(&i) {
                        h.failed.get_or_insert((e.clone(), at));
                    }
                }
            }
        }
        let mut done = HashMap::new();
        for i in in_batch(&batch) {
            let Some(h) = heard.get_mut(&i) else { continue };
            h.answered_at = Some(at);
            h.outstanding = h.outstanding.saturating_sub(1);
            if h.outstanding == 0
                && let Some(answer) = heard.remove(&i).and_then(|h| h.conclude(&claimed[i]))
            {
                done.insert(i, answer);
            }
        }
        if !done.is_empty() {
            let _ = sink.send(Delivery::answers(done));
        }
    }
    calls
}
