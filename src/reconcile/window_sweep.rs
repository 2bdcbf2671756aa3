//! The first phase of a QFPay lane's planned pass: for each calendar month whose due payments
//! are cheaper to find by sweeping the time window than by id lookups (see `plan`), walk the
//! window page by page; each page reads the due payments it is about, decides them and applies
//! them in one transaction. Memory stays at one page, however large the backlog.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::accounts::{AccountRuntime, Gateway};
use super::matching::Matcher;
use super::plan::{self, MonthAggregate};
use super::{Answer, PassContext, ReconcileError, Reconciler, RunScope, RunSummary};
use crate::gateway::qfpay::WindowQuery;
use crate::ledger::ClaimScope;

pub(crate) async fn sweep_dense_windows(
    engine: &Reconciler,
    ctx: &PassContext<'_>,
    rt: &AccountRuntime,
    scope: &RunScope,
    claim_scope: &ClaimScope,
    shutdown: &CancellationToken,
    summary: &mut RunSummary,
) -> Result<(), ReconcileError> {
    let Gateway::Qfpay {
        client,
        account: cfg,
    } = &rt.gateway
    else {
        return Ok(());
    };
    let account = rt.name.as_str();
    let now = Utc::now();
    let mut months: HashMap<DateTime<Utc>, MonthAggregate> = HashMap::new();
    engine
        .ledger
        .for_each_due(claim_scope, now, |created, has_ref| {
            let (start, _) = plan::month_bounds(created, cfg.timezone);
            months
                .entry(start)
                .or_insert_with(|| MonthAggregate::new(created, cfg.timezone))
                .add(created, has_ref);
        })
        .await?;
    let mut months: Vec<_> = months.into_iter().collect();
    months.sort_by_key(|m| m.0);
    for (_, agg) in months {
        let (start, end) = agg.window(now);
        let in_ledger = engine
            .ledger
            .count_created_between(account, start, end)
            .await?;
        let estimate = plan::estimate_records(in_ledger);
        if !agg.prefer_sweep(estimate, cfg.batch_size) {
            continue;
        }
        tracing::info!(%account, due = agg.count, %start, %end, estimate, "sweeping a dense window");
        let mut pager = client.sweep(WindowQuery::new(start, end + chrono::Duration::seconds(1)));
        // Past this many pages the estimate was wrong and id lookups are cheaper (see `plan`).
        let page_budget = agg.id_calls(cfg.batch_size);
        let mut pages = 0;
        loop {
            if pages >= page_budget {
                tracing::warn!(%account, pages, "the window holds more records than estimated; the rest goes by id lookups");
                break;
            }
            pages += 1;
            if shutdown.is_cancelled() {
                summary.interrupted = true;
                return Ok(());
            }
            if !ctx.may_call() {
                return Ok(());
            }
            let page = match pager.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => {
                    summary.counters.calls += 1;
                    summary.counters.errors += 1;
                    tracing::warn!(%account, error = %e, "window sweep failed; the rest goes by id lookups");
                    break;
                }
            };
            summary.counters.calls += 1;
            let now = Utc::now();
            let refs: Vec<&str> = page
                .observations
                .iter()
                .filter_map(|o| o.provider_ref.as_ref().map(|r| r.as_str()))
                .collect();
            let orders: Vec<&str> = page
                .observations
                .iter()
                .filter_map(|o| o.out_trade_no.as_ref().map(|r| r.as_str()))
                .collect();
            let due = engine
                .ledger
                .due_for_keys(claim_scope, &refs, &orders, now)
                .await?;
            if due.is_empty() {
                continue;
            }
            summary.counters.claimed += due.len() as u64;
            let all: Vec<usize> = (0..due.len()).collect();
            let matcher = Matcher::new(&due, &all);
            let mut answers = HashMap::new();
            for obs in page.observations {
                if let Some(i) = matcher.find(&due, &obs) {
                    answers.insert(i, Answer::seen(obs, now));
                }
            }
            let ctx = PassContext { now, ..ctx.clone() };
            // Read by a key but not matched (another record reused the order number): leave
            // them to the id lookups of the units.
            let unmatched: Vec<_> = all
                .iter()
                .filter(|i| !answers.contains_key(i))
                .map(|&i| (i, now))
                .collect();
            let updates = engine
                .decide(&ctx, scope, rt, &due, answers, unmatched, summary)
                .await?;
            engine.commit(&ctx, scope, &updates, summary).await?;
        }
    }
    Ok(())
}
