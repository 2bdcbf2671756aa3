//! The first phase of a QFPay lane's planned pass: for each calendar month whose due payments
//! are cheaper to find by sweeping the time window than by id lookups (see `plan`), walk the
//! window page by page; each page reads the due payments it is about, decides them and applies
//! them in one transaction. Memory stays at one page, however large the backlog.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::accounts::{AccountRuntime, Gateway};
use super::matching::Matcher;
use super::plan::{self, MonthAggregate};
use super::{Answer, PassContext, ReconcileError, Reconciler, RunScope, RunSummary};
use crate::domain::PaymentId;
use crate::gateway::qfpay::{Page, WindowPager, WindowQuery};
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
        let pager = client.sweep(WindowQuery::new(start, end + chrono::Duration::seconds(1)));
        // Past this many pages the estimate was wrong and id lookups are cheaper (see `plan`).
        let page_budget = agg.id_calls(cfg.batch_size);
        // Pages are fetched while earlier ones are decided and written: the reader walks the
        // window and hands pages over a short channel; the writer decides every page waiting
        // and commits them together, so a gateway that answers faster than the disk syncs
        // costs one sync for several pages.
        let (pages, mut waiting) = mpsc::channel(PAGES_AHEAD);
        // A failed write stops the reading too: its pages could not be written.
        let stop = ctx.stop.child_token();
        let reading = PassContext {
            stop: stop.clone(),
            ..ctx.clone()
        };
        let (read, written) = tokio::join!(
            read_window(&reading, pager, page_budget, account, shutdown, pages),
            async {
                let mut written = RunSummary::default();
                while let Some(first) = waiting.recv().await {
                    let mut group = vec![first];
                    while group.len() < PAGES_PER_COMMIT {
                        match waiting.try_recv() {
                            Ok(page) => group.push(page),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) =
                        write_pages(engine, ctx, scope, rt, claim_scope, group, &mut written).await
                    {
                        stop.cancel();
                        waiting.close();
                        return (written, Err(e));
                    }
                }
                (written, Ok(()))
            }
        );
        summary.merge(read);
        let (written, result) = written;
        summary.merge(written);
        result?;
    }
    Ok(())
}

/// Pages read ahead of the one being written.
const PAGES_AHEAD: usize = 16;
/// Pages decided and committed in one transaction at most.
const PAGES_PER_COMMIT: usize = 16;

/// Walks the window's pages up to `page_budget` and sends each to the writer with the time it
/// arrived; stops on a stop request, a lapsed lease, a failed call (the rest goes by id
/// lookups) or a writer that failed (`ctx.stop`, also while a call or a send waits). Counts the
/// calls.
async fn read_window(
    ctx: &PassContext<'_>,
    mut pager: WindowPager<'_>,
    page_budget: u64,
    account: &str,
    shutdown: &CancellationToken,
    pages: mpsc::Sender<(Page, DateTime<Utc>)>,
) -> RunSummary {
    let mut read = RunSummary::default();
    let mut fetched = 0;
    loop {
        if fetched >= page_budget {
            tracing::warn!(%account, pages = fetched, "the window holds more records than estimated; the rest goes by id lookups");
            break;
        }
        fetched += 1;
        if shutdown.is_cancelled() {
            read.interrupted = true;
            break;
        }
        if !ctx.may_call() {
            break;
        }
        if ctx.over_share() {
            tracing::info!(%account, "this replica holds more than its fair share of the lanes; the window is left to another replica");
            break;
        }
        let next = tokio::select! {
            next = pager.next_page() => next,
            () = ctx.stop.cancelled() => break,
        };
        let page = match next {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                read.counters.calls += 1;
                read.counters.errors += 1;
                tracing::warn!(%account, error = %e, "window sweep failed; the rest goes by id lookups");
                break;
            }
        };
        read.counters.calls += 1;
        let sent = tokio::select! {
            sent = pages.send((page, Utc::now())) => sent.is_ok(),
            () = ctx.stop.cancelled() => false,
        };
        if !sent {
            break;
        }
    }
    read
}

/// Decides the due payments the pages are about and commits them in one transaction; a page
/// about a payment an earlier page of the group already decided is written after the group,
/// so every decision starts from the ledger's current state.
async fn write_pages(
    engine: &Reconciler,
    ctx: &PassContext<'_>,
    scope: &RunScope,
    rt: &AccountRuntime,
    claim_scope: &ClaimScope,
    group: Vec<(Page, DateTime<Utc>)>,
    summary: &mut RunSummary,
) -> Result<(), ReconcileError> {
    let mut updates = Vec::new();
    let mut decided: HashSet<PaymentId> = HashSet::new();
    for (page, now) in group {
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
        let mut due = engine
            .ledger
            .due_for_keys(claim_scope, &refs, &orders, now)
            .await?;
        if due.iter().any(|c| decided.contains(&c.id)) {
            engine.commit(ctx, scope, &updates, summary).await?;
            updates.clear();
            decided.clear();
            due = engine
                .ledger
                .due_for_keys(claim_scope, &refs, &orders, now)
                .await?;
        }
        if due.is_empty() {
            continue;
        }
        let all: Vec<usize> = (0..due.len()).collect();
        let matcher = Matcher::new(&due, &all);
        let mut answers = HashMap::new();
        for obs in page.observations {
            if let Some(i) = matcher.find(&due, &obs) {
                answers.insert(i, Answer::seen(obs, now));
            }
        }
        // A payment read by a key but not matched (another record reused its order number) is
        // left as it is: its own record on a later page, or the units' id lookups, settle it.
        // Written as decided by this pass, both would skip it.
        summary.counters.claimed += answers.len() as u64;
        decided.extend(answers.keys().map(|&i| due[i].id));
        let ctx = PassContext { now, ..ctx.clone() };
        updates.extend(
            engine
                .decide(&ctx, scope, rt, &due, answers, Vec::new(), summary)
                .await?,
        );
    }
    engine.commit(ctx, scope, &updates, summary).await
}
