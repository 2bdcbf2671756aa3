//! The first phase of a planned pass: for each account and calendar month whose due QFPay
//! payments are cheaper to find by sweeping the time window than by id lookups (see `plan`),
//! walk the window page by page; each page claims the due payments it is about, decides and
//! applies them. Memory stays at one page, however large the backlog.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::accounts::Gateway;
use super::matching::Matcher;
use super::plan::{self, MonthAggregate};
use super::{Answer, PassContext, ReconcileError, Reconciler, RunScope, RunSummary};
use crate::gateway::qfpay::WindowQuery;
use crate::ledger::ClaimScope;

pub(crate) async fn sweep_dense_windows(
    engine: &Reconciler,
    scope: &RunScope,
    claim_scope: &ClaimScope,
    run_id: Option<i64>,
    shutdown: &CancellationToken,
    summary: &mut RunSummary,
) -> Result<(), ReconcileError> {
    let now = Utc::now();
    let mut months: HashMap<(String, DateTime<Utc>), MonthAggregate> = HashMap::new();
    engine
        .ledger
        .for_each_due(claim_scope, now, |account, created, has_ref| {
            let Some(tz) = engine.qfpay_timezone(account) else {
                return;
            };
            let (start, _) = plan::month_bounds(created, tz);
            months
                .entry((account.to_string(), start))
                .or_insert_with(|| MonthAggregate::new(created, tz))
                .add(created, has_ref);
        })
        .await?;
    let mut months: Vec<_> = months.into_iter().collect();
    months.sort_by(|a, b| a.0.cmp(&b.0));
    for ((account, _), agg) in months {
        let Some(rt) = engine.accounts.iter().find(|r| r.name.as_str() == account) else {
            continue;
        };
        let Gateway::Qfpay {
            client,
            account: cfg,
        } = &rt.gateway
        else {
            continue;
        };
        let (start, end) = agg.window(now);
        let in_ledger = engine
            .ledger
            .count_created_between(&account, start, end)
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
            let claimed = engine
                .ledger
                .claim_keys(
                    &engine.owner,
                    claim_scope,
                    &account,
                    &refs,
                    &orders,
                    now,
                    engine.settings.lease,
                )
                .await?;
            if claimed.is_empty() {
                continue;
            }
            summary.counters.claimed += claimed.len() as u64;
            let all: Vec<usize> = (0..claimed.len()).collect();
            let matcher = Matcher::new(&claimed, &all);
            let mut answers = HashMap::new();
            for obs in page.observations {
                if let Some(i) = matcher.find(&claimed, &obs) {
                    answers.insert(i, Answer::seen(obs, now));
                }
            }
            let ctx = PassContext {
                ledger: &engine.ledger,
                owner: &engine.owner,
                run_id,
                now,
                strategy: scope.strategy,
                concurrency: engine.settings.concurrency as usize,
                chunk_sweeps: false,
            };
            // Claimed by a key but not matched (another record reused the order number): leave
            // them to the id lookups of the second phase.
            let unmatched: Vec<_> = all
                .iter()
                .filter(|i| !answers.contains_key(i))
                .copied()
                .collect();
            let mut updates = engine
                .decide(&ctx, scope, rt, &claimed, answers, Vec::new(), summary)
                .await?;
            updates.extend(
                unmatched
                    .iter()
                    .map(|&i| super::update::postpone(&claimed[i], now)),
            );
            engine.commit(&ctx, scope, &updates, summary).await?;
        }
    }
    Ok(())
}
