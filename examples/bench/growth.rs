//! Growth scenarios (issue 16): does the cost of one item — a sweep page, a payment settled by
//! a pass — grow with the ledger?
//!
//! The engine child installs a tracing layer ([`Progress`]) that keeps only two of the engine's
//! debug events, with the instant each happened: [`SWEEP_PAGE`] (a sweep page applied and its
//! cursor saved, `src/reconcile/sweep.rs`) and [`PASS_COMMIT`] (a pass's delivery of answers
//! decided and committed, `src/reconcile/decisions.rs` `commit`, which both the dense-window
//! pages and the lane's units use). The time from one such event to the next (the first: from
//! the start of the phase) is the cost of the items the later one carries: its `records` (a
//! page's records) or `payments` (updates committed). An event with no items adds its time to
//! the next one.
//!
//! **Cost at a mark**: of a phase's N items, the cost per item of the steps whose items overlap
//! `[5 %, 15 %)` of N ("at 10 %"), `[45 %, 55 %)` ("at 50 %") and `[90 %, 100 %]` ("at 100 %"):
//! their total time ÷ their total items. The first 5 % is left out on purpose (it carries the
//! phase's start-up: a pass's planning, a sweep's lane entry). A phase is **flat** when its
//! cost at 100 % is within [`FLAT_WITHIN`] of its cost at 10 %. Sweep costs are shown per page
//! of 100 records (QFPay's page size), pass costs per payment.
//!
//! Not in any step: what follows the last event of a phase (a sweep's final short or empty page
//! and its check for ledger payments missing at the gateway; the pass that finds nothing due).

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use payrecon::gateway::qfpay::PAGE_SIZE;
use payrecon::ledger::{self, Ledger};
use payrecon::reconcile::{Reconciler, Strategy};
use payrecon::sandbox::{CallKind, StatsSnapshot};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::scenario::{self, BoxError, EngineRun};

/// The message of the engine's debug event for an applied sweep page (field `records`).
pub const SWEEP_PAGE: &str = "sweep page applied";
/// The message of the engine's debug event for a committed delivery of a pass (field
/// `payments`).
pub const PASS_COMMIT: &str = "pass updates committed";

/// A phase is flat when its cost per item at 100 % is at most this many times its cost at 10 %.
pub const FLAT_WITHIN: f64 = 1.5;

/// The marks: a label and the share `[from, to)` of a phase's items whose steps are averaged
/// (the last one includes its end).
pub const MARKS: [(&str, f64, f64); 3] = [
    ("at 10 %", 0.05, 0.15),
    ("at 50 %", 0.45, 0.55),
    ("at 100 %", 0.90, 1.0),
];

/// What the parent asks the engine child to do (`--child-growth`, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrowthPlan {
    /// Planned passes until one claims nothing, before the sweep.
    pub passes: bool,
    /// The window `Reconciler::sweep` reads (the seeded one).
    pub sweep_from: DateTime<Utc>,
    pub sweep_to: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhaseKind {
    Pass,
    Sweep,
}

impl PhaseKind {
    fn name(self) -> &'static str {
        match self {
            PhaseKind::Pass => "pass",
            PhaseKind::Sweep => "sweep",
        }
    }

    /// How a cost per item is shown: per payment, or per page of 100 records.
    fn unit(self) -> (&'static str, f64) {
        match self {
            PhaseKind::Pass => ("ms/payment", 1_000.0),
            PhaseKind::Sweep => ("ms/page", 1_000.0 * f64::from(PAGE_SIZE)),
        }
    }
}

/// One timed step of a phase: the seconds since the previous step and the items it carried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub secs: f64,
    pub items: u64,
}

/// One phase of a growth run, as the child saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub kind: PhaseKind,
    pub wall_secs: f64,
    pub steps: Vec<Step>,
    /// Pass: payments finalized. Sweep: gateway records read.
    pub items: u64,
    /// Rows the phase added to the discrepancy table.
    pub discrepancies: u64,
    /// The engine's own count (the sandbox's counters are the truth).
    pub engine_calls: u64,
    pub errors: u64,
}

impl Phase {
    /// Seconds per item over the steps whose items overlap `[from, to)` of the phase's items
    /// (`to` included when it is the end).
    pub fn cost(&self, from: f64, to: f64) -> Option<f64> {
        let total: u64 = self.steps.iter().map(|s| s.items).sum();
        let (lo, hi) = (from * total as f64, to * total as f64);
        let (mut secs, mut items, mut before) = (0.0, 0, 0);
        for s in &self.steps {
            let after = before + s.items;
            if (after as f64) > lo && ((before as f64) < hi || to >= 1.0) {
                secs += s.secs;
                items += s.items;
            }
            before = after;
        }
        (items > 0).then(|| secs / items as f64)
    }

    /// The cost at each of [`MARKS`].
    pub fn costs(&self) -> [Option<f64>; 3] {
        MARKS.map(|(_, from, to)| self.cost(from, to))
    }

    /// Cost at 100 % ÷ cost at 10 %.
    pub fn growth(&self) -> Option<f64> {
        match self.costs() {
            [Some(first), _, Some(last)] if first > 0.0 => Some(last / first),
            _ => None,
        }
    }
}

/// What the engine child reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrowthRun {
    pub phases: Vec<Phase>,
    /// From opening the ledger to the end of the sweep.
    pub wall_secs: f64,
    pub discrepancies_before: u64,
    pub discrepancies_after: u64,
    /// Open payments left at the end.
    pub open_left: u64,
    /// `VmHWM` of the child.
    pub peak_rss_kib: Option<u64>,
}

/// One event the child keeps: when it happened, which kind, and its items.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    kind: PhaseKind,
    items: u64,
}

/// A tracing layer keeping [`SWEEP_PAGE`] and [`PASS_COMMIT`] events with their instants.
#[derive(Debug, Clone, Default)]
struct Progress(Arc<Mutex<Vec<Mark>>>);

impl Progress {
    /// Installs the layer as this process's subscriber; only `payrecon::reconcile` debug
    /// events reach it (nothing is printed).
    fn install() -> Result<Self, BoxError> {
        let progress = Self::default();
        let only = Targets::new().with_target("payrecon::reconcile", tracing::Level::DEBUG);
        let subscriber = tracing_subscriber::registry().with(progress.clone().with_filter(only));
        tracing::subscriber::set_global_default(subscriber)?;
        Ok(progress)
    }

    /// The steps of `kind` between `from` and `to`.
    fn steps(&self, kind: PhaseKind, from: Instant, to: Instant) -> Vec<Step> {
        let marks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut steps = Vec::new();
        let (mut previous, mut carried) = (from, 0.0);
        for m in marks
            .iter()
            .filter(|m| m.kind == kind && m.at >= from && m.at <= to)
        {
            let secs = carried + (m.at - previous).as_secs_f64();
            previous = m.at;
            if m.items == 0 {
                carried = secs;
                continue;
            }
            carried = 0.0;
            steps.push(Step {
                secs,
                items: m.items,
            });
        }
        steps
    }
}

impl<S: tracing::Subscriber> Layer<S> for Progress {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let at = Instant::now();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (kind, items) = match fields.message.as_deref() {
            Some(SWEEP_PAGE) => (PhaseKind::Sweep, fields.records),
            Some(PASS_COMMIT) => (PhaseKind::Pass, fields.payments),
            _ => return,
        };
        let mut marks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        marks.push(Mark { at, kind, items });
    }
}

#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    records: u64,
    payments: u64,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "records" => self.records = value,
            "payments" => self.payments = value,
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

async fn discrepancy_count(ledger: &Ledger) -> Result<u64, BoxError> {
    Ok(ledger.discrepancies(true).await?.len() as u64)
}

/// The engine side of a growth scenario: limits off, planned passes until quiet (if asked),
/// then the sweep of the plan's window; each phase's steps timed.
pub async fn child(config: &Path, plan: &GrowthPlan) -> Result<GrowthRun, BoxError> {
    let progress = Progress::install()?;
    let settings = scenario::load_settings(config, false)?;
    let started = Instant::now();
    let ledger = ledger::open_store(&settings.ledger).await?;
    let engine = Reconciler::new(ledger.clone(), &settings)?;
    let mut run = GrowthRun {
        discrepancies_before: discrepancy_count(&ledger).await?,
        ..GrowthRun::default()
    };
    let mut discrepancies = run.discrepancies_before;
    if plan.passes {
        let from = Instant::now();
        let mut passes = EngineRun::default();
        scenario::run_until_quiet(&engine, Strategy::Planned, &mut passes).await?;
        let to = Instant::now();
        let after = discrepancy_count(&ledger).await?;
        run.phases.push(Phase {
            kind: PhaseKind::Pass,
            wall_secs: (to - from).as_secs_f64(),
            steps: progress.steps(PhaseKind::Pass, from, to),
            items: passes.finalized,
            discrepancies: after.saturating_sub(discrepancies),
            engine_calls: passes.engine_calls,
            errors: passes.errors,
        });
        discrepancies = after;
    }
    let from = Instant::now();
    let report = engine
        .sweep(
            scenario::QFPAY_ACCOUNT,
            plan.sweep_from,
            plan.sweep_to,
            false,
            &CancellationToken::new(),
        )
        .await?;
    let to = Instant::now();
    run.discrepancies_after = discrepancy_count(&ledger).await?;
    run.phases.push(Phase {
        kind: PhaseKind::Sweep,
        wall_secs: (to - from).as_secs_f64(),
        steps: progress.steps(PhaseKind::Sweep, from, to),
        items: report.records,
        discrepancies: run.discrepancies_after.saturating_sub(discrepancies),
        engine_calls: report.calls,
        errors: 0,
    });
    run.wall_secs = started.elapsed().as_secs_f64();
    run.open_left = scenario::open_payments(&ledger).await?;
    ledger.close().await;
    run.peak_rss_kib = scenario::peak_rss_kib();
    Ok(run)
}

/// A growth scenario's result: the child's run and the sandbox's counters.
#[derive(Debug)]
pub struct GrowthRow {
    pub scenario: &'static str,
    pub run: GrowthRun,
    pub stats: StatsSnapshot,
}

pub fn header() {
    println!(
        "{:<17} {:<6} {:<11} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6} {:>8} {:>8}",
        "scenario",
        "phase",
        "unit",
        MARKS[0].0,
        MARKS[1].0,
        MARKS[2].0,
        "100/10",
        "wall s",
        "steps",
        "items",
        "discr."
    );
}

impl GrowthRow {
    pub fn print(&self) {
        for p in &self.run.phases {
            let (unit, scale) = p.kind.unit();
            let [a, b, c] = p
                .costs()
                .map(|x| x.map_or("-".to_string(), |x| format!("{:.3}", x * scale)));
            println!(
                "{:<17} {:<6} {:<11} {:>9} {:>9} {:>9} {:>8} {:>8.2} {:>6} {:>8} {:>8}",
                self.scenario,
                p.kind.name(),
                unit,
                a,
                b,
                c,
                p.growth().map_or("-".into(), |g| format!("{g:.2}x")),
                p.wall_secs,
                p.steps.len(),
                p.items,
                p.discrepancies,
            );
        }
        let r = &self.run;
        let s = &self.stats;
        println!(
            "{:<17}   wall {:.2} s; discrepancies {} → {}; open payments left {}; peak RSS {}; \
             calls: {} window pages, {} id lookups, {} records paged; engine counted {} calls, {} errors",
            "",
            r.wall_secs,
            r.discrepancies_before,
            r.discrepancies_after,
            r.open_left,
            r.peak_rss_kib
                .map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0)),
            s.count(CallKind::QfpayQueryWindow),
            s.count(CallKind::QfpayQueryById),
            s.qfpay_records_returned,
            r.phases.iter().map(|p| p.engine_calls).sum::<u64>(),
            r.phases.iter().map(|p| p.errors).sum::<u64>(),
        );
    }

    /// One line per phase: flat or growing.
    pub fn verdicts(&self) {
        for p in &self.run.phases {
            let (unit, scale) = p.kind.unit();
            let [first, _, last] = p.costs();
            let (Some(first), Some(last), Some(g)) = (first, last, p.growth()) else {
                println!(
                    "{} {}: too few steps to compare ({})",
                    self.scenario,
                    p.kind.name(),
                    p.steps.len()
                );
                continue;
            };
            println!(
                "{} {}: cost at 100 % within {FLAT_WITHIN}x of the cost at 10 %: {:.3} → {:.3} {unit} = {g:.2}x  {}",
                self.scenario,
                p.kind.name(),
                first * scale,
                last * scale,
                if g <= FLAT_WITHIN { "FLAT" } else { "GROWS" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(steps: &[(f64, u64)]) -> Phase {
        Phase {
            kind: PhaseKind::Sweep,
            wall_secs: 0.0,
            steps: steps
                .iter()
                .map(|&(secs, items)| Step { secs, items })
                .collect(),
            items: 0,
            discrepancies: 0,
            engine_calls: 0,
            errors: 0,
        }
    }

    #[test]
    fn the_cost_at_a_mark_averages_the_steps_overlapping_its_share() {
        // 20 pages of 100 records; page i takes i seconds.
        let p = phase(&(1..=20).map(|i| (i as f64, 100)).collect::<Vec<_>>());
        // [5 %, 15 %) of 2,000 = records [100, 300): pages 2 and 3.
        assert_eq!(p.cost(0.05, 0.15), Some(5.0 / 200.0));
        // [90 %, 100 %]: pages 19 and 20.
        assert_eq!(p.cost(0.90, 1.0), Some(39.0 / 200.0));
        assert_eq!(p.growth(), Some(39.0 / 5.0));
    }

    #[test]
    fn a_short_last_page_counts_by_its_records() {
        let p = phase(&[(1.0, 100), (1.0, 100), (0.5, 50)]);
        assert_eq!(p.cost(0.90, 1.0), Some(0.5 / 50.0));
        assert_eq!(phase(&[]).cost(0.05, 0.15), None);
    }
}
