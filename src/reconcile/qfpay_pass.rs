//! Asking QFPay about one account's claimed payments: window sweeps where they are cheaper
//! (see `plan`), batched id lookups for the rest, and a `NotFound` for every payment no
//! successful answer mentioned.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::matching::{Matcher, foreign_record};
use super::plan::{self, Strategy};
use super::{Answer, PassContext};
use crate::domain::{Observation, Outcome};
use crate::gateway::GatewayError;
use crate::gateway::qfpay::{IdBatch, IdKey, IdLookup, OrderLookup, QfpayClient, WindowQuery};
use crate::ledger::Claimed;

/// Answers for `members` (indexes into `claimed`), and the number of calls spent.
pub(crate) async fn check(
    ctx: &PassContext<'_>,
    client: &QfpayClient,
    batch_size: u32,
    claimed: &[Claimed],
    members: &[usize],
) -> (HashMap<usize, Answer>, u64) {
    let mut answers = HashMap::new();
    let mut calls = 0;
    let matcher = Matcher::new(claimed, members);
    let mut lookups: Vec<usize> = Vec::new();
    match ctx.strategy {
        Strategy::PerPayment => lookups.extend_from_slice(members),
        Strategy::Planned if !ctx.chunk_sweeps => lookups.extend_from_slice(members),
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
                if g.aggregate.prefer_sweep(estimate, batch_size) {
                    let budget = g.aggregate.id_calls(batch_size);
                    calls += sweep(
                        client,
                        (start, end),
                        budget,
                        claimed,
                        &matcher,
                        &mut answers,
                    )
                    .await;
                }
                lookups.extend(g.members.iter().filter(|i| !answers.contains_key(i)));
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
        &mut answers,
    )
    .await;
    (answers, calls)
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

/// Looks `members` up by id (in batches, or one per call for `--strategy per-payment`).
async fn look_up(
    ctx: &PassContext<'_>,
    client: &QfpayClient,
    claimed: &[Claimed],
    members: &[usize],
    one_per_call: bool,
    matcher: &Matcher,
    answers: &mut HashMap<usize, Answer>,
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
    let calls = batches.len() as u64;
    let mut results = futures::stream::iter(batches)
        .map(|b| async move {
            let r = client.query_batch(&b).await;
            (b, r)
        })
        .buffer_unordered(ctx.concurrency);
    // Which members each batch asked about, to attribute errors and "not found".
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
    // A member is "not found" only when every batch that asked about it answered and none
    // carried its ids; one failed batch (e.g. the other month of an order near a month edge)
    // makes it a failed call, whatever the others said.
    let mut asked_ok: HashMap<usize, DateTime<Utc>> = HashMap::new();
    let mut failed: HashMap<usize, (Arc<GatewayError>, DateTime<Utc>)> = HashMap::new();
    let mut carried: HashMap<usize, (Observation, DateTime<Utc>)> = HashMap::new();
    while let Some((batch, result)) = results.next().await {
        let at = Utc::now();
        let in_batch: Vec<usize> = batch
            .ids
            .iter()
            .filter_map(|id| asked.get(&(batch.key, id.as_str())))
            .flatten()
            .copied()
            .collect();
        match result {
            Ok(observations) => {
                for obs in observations
                    .into_iter()
                    .filter(|o| o.outcome != Outcome::NotFound)
                {
                    if let Some(i) = matcher.find(claimed, &obs) {
                        answers.insert(i, Answer::seen(obs, at));
                    } else if let Some(&i) = carrier(&obs, batch.key)
                        .and_then(|k| asked.get(&(batch.key, k)))
                        .and_then(|v| v.first())
                    {
                        carried.insert(i, (obs, at));
                    }
                }
                for i in in_batch {
                    asked_ok.insert(i, at);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for i in in_batch {
                    failed.insert(i, (e.clone(), at));
                }
            }
        }
    }
    for (i, (e, at)) in failed {
        answers.entry(i).or_insert(Answer::failed(e, at));
    }
    for (i, (obs, at)) in carried {
        answers
            .entry(i)
            .or_insert_with(|| Answer::seen(foreign_record(claimed[i].kind, obs), at));
    }
    for (i, at) in asked_ok {
        answers.entry(i).or_insert_with(|| {
            let c = &claimed[i];
            let mut obs = Observation::new(c.kind, Outcome::NotFound, "not_found");
            obs.out_trade_no = Some(c.out_trade_no.clone());
            obs.provider_ref = c.provider_ref.clone();
            Answer::seen(obs, at)
        });
    }
    calls
}
