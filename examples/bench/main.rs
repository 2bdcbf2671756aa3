//! The payrecon performance benchmark (issue 6 items 3–4; results in `docs/PERFORMANCE.md`).
//!
//! ```text
//! cargo run --release --example bench -- [--scenario NAME|all] [--strategy planned|per-payment|both]
//!                                         [--limits auto|on|off] [--latency 0ms] [--quick]
//!                                         [--sweep-records N] [--repeat N]
//!                                         [--store sqlite|postgres] [--pg-url URL]
//! ```
//!
//! `--store postgres` (issue 18): the ledgers are PostgreSQL databases on the server `--pg-url`
//! (or `PAYRECON_BENCH_PG_URL`) names, a template per scenario and a copy of it per run, created
//! and dropped by the bench (`pg.rs`); the growth scenarios stay SQLite only.
//!
//! For each scenario it seeds the in-process sandbox (simulated QFPay/ECPay) once, builds a
//! ledger template once (due payments through `Ledger::register` in batches of 5,000, history
//! rows by bulk SQL), and then for each strategy × limits setting copies the template, starts a
//! fresh sandbox server on the seeded state (fresh counters and rate-limit windows), and runs
//! the engine in a **child process** of this same binary (`--child`): open the ledger, `run_once`
//! until a pass claims nothing. The child reports its wall time and peak RSS (`VmHWM`), so
//! the RSS column is the engine's alone, not the sandbox's or the seeding's. Gateway calls come
//! from the sandbox's counters (the truth), not from the engine's own count.
//!
//! Scenarios (`--quick` shrinks them to run in seconds):
//! - `dense`: 25,000 QFPay records in one day, 20,000 of them due in the ledger.
//! - `sparse`: 100,000 QFPay records over a month; the ledger holds all of them, 50 due.
//! - `sparse-thin`: the same gateway, but the ledger holds only the 50 due payments (shows
//!   what the planner's ledger-based estimate does when the ledger does not know the gateway's
//!   volume).
//! - `ecpay`: 1,000 due ECPay orders (ECPay has no batch query: one call each either way).
//! - `ledger-1m`: 900,000 settled history rows plus 125,000 QFPay records over a month of
//!   which 100,000 are due: a 1,000,000-row ledger.
//! - `mixed`: `dense` plus 20 due ECPay orders in the same run: each account's lane keeps its
//!   own pace, so each account should be settled within its own rate bound (its calls ÷ its
//!   rate), and the run within the slower account's bound, not their sum.
//!
//! Growth scenarios (issue 16; `growth.rs`): one run each, planned and limits off whatever
//! `--strategy` and `--limits` say, timing every applied sweep page and every committed
//! delivery of a pass through the engine's debug events, to show whether the cost of one item
//! stays flat as the ledger grows. They print the cost per page (sweeps) or per payment
//! (passes) around 10 %, 50 % and 100 % of the run, and FLAT when the cost at 100 % is within
//! 1.5x of the cost at 10 %.
//! - `sweep-growth`: `Reconciler::sweep` (what `payrecon sweep` runs) of a day of 100,000
//!   QFPay records (`--sweep-records N` to change it) of which the ledger knows 1 %: it records
//!   a `missing_in_ledger` discrepancy for each of the other 99 %, so the discrepancy table
//!   grows from 0 to 99,000 during the run.
//! - `discrepancies-1m`: a 1,000,000-row ledger (980,000 settled history rows by bulk SQL) that
//!   holds 100,000 open discrepancies (bulk SQL, as earlier sweeps write them); a planned pass
//!   settles 20,000 due payments (a `dense` day), then a sweep of that day records the 5,000
//!   records the ledger never saw.
//!
//! `--limits auto` (default) runs every combination with rate limits off (sandbox limits off
//! and client pacing lifted: the call-count comparison and raw throughput), then again with
//! limits on (the sandbox enforces QFPay 100/s + 400/min and ECPay 60/min; the client paces to
//! QFPay 400/min and ECPay 30/min) wherever the rate-limit bound of the limits-off run's calls
//! is at most `--max-limited` (default 240 s, 2 s with `--quick`). `on` / `off` force one
//! setting for everything.

mod growth;
mod pg;
mod scenario;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use growth::{GrowthPlan, GrowthRow};
use payrecon::ledger::Ledger;
use payrecon::ledger::pg::PgLedger;
use payrecon::reconcile::Strategy;
use payrecon::sandbox::{CallKind, Faults, RateLimits, Sandbox, SandboxConfig, StatsSnapshot};
use scenario::{
    BoxError, ECPAY_PER_MINUTE, EngineRun, Measure, QFPAY_PER_MINUTE, Scenario, strategy_name,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    Planned,
    PerPayment,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreArg {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LimitsArg {
    Auto,
    On,
    Off,
}

#[derive(Debug, Parser)]
#[command(about = "payrecon performance benchmark against the in-process sandbox")]
struct Args {
    /// dense, sparse, sparse-thin, ecpay, ledger-1m, mixed, sweep-growth, discrepancies-1m,
    /// or all.
    #[arg(long, default_value = "all")]
    scenario: String,
    #[arg(long, value_enum, default_value = "both")]
    strategy: StrategyArg,
    #[arg(long, value_enum, default_value = "auto")]
    limits: LimitsArg,
    /// Latency the sandbox adds to every answer.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Small versions of every scenario (a few seconds in all).
    #[arg(long)]
    quick: bool,
    /// sweep-growth: the gateway records of the swept day (default 100,000; 1,000 with
    /// --quick); the ledger knows 1 % of them.
    #[arg(long)]
    sweep_records: Option<usize>,
    /// `--limits auto`: run with limits on only where the rate-limit bound is at most this
    /// (default 240 s; 2 s with `--quick`).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_limited: Option<Duration>,
    /// The ledger's store: a SQLite file per run (default), or a PostgreSQL database per run
    /// on the server `--pg-url` names.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreArg,
    /// `--store postgres`: a database on the server to connect to (e.g.
    /// `postgres://user@127.0.0.1:5432/postgres`, no password: use `PGPASSFILE`); the bench
    /// creates a template database per scenario and a fresh copy per run there, and drops
    /// them (the role needs CREATEDB).
    #[arg(long, env = "PAYRECON_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// Run each limits-off measurement this many times on the same template (a row each),
    /// to see the spread without rebuilding the ledger.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Internal: run the engine on this config and print one result line.
    #[arg(long, hide = true)]
    child: Option<PathBuf>,
    /// Internal (with --child): keep the client's rate pacing.
    #[arg(long, hide = true)]
    child_limits: bool,
    /// Internal (with --child): run a growth scenario's phases (a `GrowthPlan` as JSON).
    #[arg(long, hide = true, requires = "child")]
    child_growth: Option<String>,
}

/// One measured run: a row of the table.
struct Row {
    scenario: &'static str,
    strategy: Strategy,
    limits: bool,
    due: usize,
    engine: EngineRun,
    stats: StatsSnapshot,
}

impl Row {
    fn qfpay_calls(&self) -> u64 {
        self.stats.total(true)
    }

    fn ecpay_calls(&self) -> u64 {
        self.stats.total(false)
    }

    fn calls(&self) -> u64 {
        self.qfpay_calls() + self.ecpay_calls()
    }

    /// QFPay's calls ÷ 400/min.
    fn qfpay_bound_secs(&self) -> f64 {
        self.qfpay_calls() as f64 * 60.0 / QFPAY_PER_MINUTE
    }

    /// ECPay's calls ÷ payrecon's default pace of 30/min.
    fn ecpay_bound_secs(&self) -> f64 {
        self.ecpay_calls() as f64 * 60.0 / ECPAY_PER_MINUTE
    }

    /// The slower account's bound: each account is worked by its own lane, at its own pace,
    /// at the same time as the others (issue 13).
    fn bound_secs(&self) -> f64 {
        self.qfpay_bound_secs().max(self.ecpay_bound_secs())
    }

    fn finalized_per_sec(&self) -> f64 {
        self.engine.finalized as f64 / self.engine.wall_secs.max(1e-9)
    }

    fn print(&self) {
        let per_final = if self.engine.finalized == 0 {
            "-".to_string()
        } else {
            format!("{:.4}", self.calls() as f64 / self.engine.finalized as f64)
        };
        let ratio = if self.limits {
            format!("{:.3}", self.engine.wall_secs / self.bound_secs().max(1e-9))
        } else {
            "-".to_string()
        };
        let rss = self
            .engine
            .peak_rss_kib
            .map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        println!(
            "{:<12} {:<12} {:<6} {:>8} {:>8} {:>5} {:>8} {:>9} {:>9} {:>9} {:>7} {:>9} {:>8}",
            self.scenario,
            strategy_name(self.strategy),
            if self.limits { "on" } else { "off" },
            self.due,
            self.engine.finalized,
            self.engine.open_left,
            self.calls(),
            per_final,
            format!("{:.2}", self.engine.wall_secs),
            format!("{:.2}", self.bound_secs()),
            ratio,
            format!("{:.0}", self.finalized_per_sec()),
            rss,
        );
        let s = &self.stats;
        println!(
            "{:<12}   calls: {} window pages, {} id lookups, {} ECPay; {} records paged; \
             429/403: {}/{}; engine counted {} calls, {} errors, {} passes",
            "",
            s.count(CallKind::QfpayQueryWindow),
            s.count(CallKind::QfpayQueryById),
            self.ecpay_calls(),
            s.qfpay_records_returned,
            s.http_429,
            s.http_403,
            self.engine.engine_calls,
            self.engine.errors,
            self.engine.passes,
        );
    }
}

fn header() {
    println!(
        "{:<12} {:<12} {:<6} {:>8} {:>8} {:>5} {:>8} {:>9} {:>9} {:>9} {:>7} {:>9} {:>8}",
        "scenario",
        "strategy",
        "limits",
        "payments",
        "final",
        "open",
        "calls",
        "calls/fin",
        "wall s",
        "bound s",
        "ratio",
        "fin/s",
        "RSS MB"
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match (&args.child, &args.child_growth) {
        (Some(config), Some(plan)) => rt.block_on(growth_child(config, plan)),
        (Some(config), None) => rt.block_on(child(config, args.strategy, args.child_limits)),
        (None, _) => rt.block_on(parent(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The engine side: one run, one JSON line on stdout.
async fn child(config: &Path, strategy: StrategyArg, limits: bool) -> Result<(), BoxError> {
    let strategy = match strategy {
        StrategyArg::PerPayment => Strategy::PerPayment,
        _ => Strategy::Planned,
    };
    let settings = scenario::load_settings(config, limits)?;
    let run = scenario::drive(&settings, strategy).await?;
    println!("BENCH_RESULT {}", serde_json::to_string(&run)?);
    Ok(())
}

/// The engine side of a growth scenario: one line of JSON on stdout.
async fn growth_child(config: &Path, plan: &str) -> Result<(), BoxError> {
    let plan: GrowthPlan = serde_json::from_str(plan)?;
    let run = growth::child(config, &plan).await?;
    println!("BENCH_RESULT {}", serde_json::to_string(&run)?);
    Ok(())
}

/// Every scenario, with `--sweep-records` applied.
fn scenarios(args: &Args) -> Vec<Scenario> {
    let mut all = scenario::scenarios(args.quick);
    if let Some(records) = args.sweep_records {
        for s in all.iter_mut().filter(|s| s.name == "sweep-growth") {
            *s = scenario::sweep_growth(records);
        }
    }
    all
}

/// What the scenarios measured.
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    growth: Vec<GrowthRow>,
}

async fn parent(args: &Args) -> Result<(), BoxError> {
    let all = scenarios(args);
    let selected: Vec<Scenario> = if args.scenario == "all" {
        all
    } else {
        let names: Vec<&str> = all.iter().map(|s| s.name).collect();
        let s: Vec<_> = all
            .iter()
            .filter(|s| s.name == args.scenario)
            .cloned()
            .collect();
        if s.is_empty() {
            return Err(format!(
                "unknown scenario {:?} ({}, all)",
                args.scenario,
                names.join(", ")
            )
            .into());
        }
        s
    };
    let strategies: &[Strategy] = match args.strategy {
        StrategyArg::Planned => &[Strategy::Planned],
        StrategyArg::PerPayment => &[Strategy::PerPayment],
        StrategyArg::Both => &[Strategy::Planned, Strategy::PerPayment],
    };
    let root = tempfile::Builder::new()
        .prefix("payrecon-bench-")
        .tempdir()?;
    println!(
        "payrecon bench: {} scenario(s), store {:?}, strategy {:?}, limits {:?}, latency {:?}{}",
        selected.len(),
        args.store,
        args.strategy,
        args.limits,
        args.latency,
        if args.quick { ", quick" } else { "" }
    );
    let mut results = Results::default();
    for s in &selected {
        run_scenario(args, s, strategies, root.path(), &mut results).await?;
    }
    println!();
    println!("== summary ==");
    if !results.rows.is_empty() {
        header();
        for r in &results.rows {
            r.print();
        }
        println!();
    }
    if !results.growth.is_empty() {
        growth::header();
        for r in &results.growth {
            r.print();
        }
        println!();
    }
    verdicts(&selected, &results.rows);
    for r in &results.growth {
        r.verdicts();
    }
    Ok(())
}

async fn run_scenario(
    args: &Args,
    s: &Scenario,
    strategies: &[Strategy],
    root: &Path,
    results: &mut Results,
) -> Result<(), BoxError> {
    println!();
    println!(
        "== {}: {} gateway records, {} due, {} ledger rows{} ==",
        s.name,
        s.gateway_records,
        s.due,
        s.ledger_rows(),
        if s.open_discrepancies > 0 {
            format!(", {} open discrepancies", s.open_discrepancies)
        } else {
            String::new()
        }
    );
    if args.store == StoreArg::Postgres && matches!(s.measure, Measure::Growth { .. }) {
        println!("skipped: the growth scenarios run on SQLite only");
        return Ok(());
    }
    let config = SandboxConfig::dev();
    let t = Instant::now();
    let now = chrono::Utc::now();
    let (state, records) = scenario::seed(s, &config, now)?;
    let beside = scenario::seed_ecpay_beside(s, &state, chrono::Utc::now())?;
    println!(
        "setup: seeded {} gateway records in {:.2} s",
        records.len(),
        t.elapsed().as_secs_f64()
    );
    let dir = root.join(s.name);
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    let (template, build) = build_template(args, s, &records, &beside, &dir).await?;
    drop(records);
    println!(
        "setup: ledger built in {:.2} s: {} due registered through Ledger::register in {:.2} s \
         ({:.0}/s, batches of {}), {} history rows bulk-inserted in {:.2} s",
        t.elapsed().as_secs_f64(),
        build.registered,
        build.register_time.as_secs_f64(),
        build.registered as f64 / build.register_time.as_secs_f64().max(1e-9),
        scenario::REGISTER_BATCH,
        build.history,
        build.history_time.as_secs_f64(),
    );
    if build.discrepancies > 0 {
        println!(
            "setup: {} open discrepancies bulk-inserted in {:.2} s",
            build.discrepancies,
            build.discrepancies_time.as_secs_f64()
        );
    }
    if let Measure::Growth { passes } = s.measure {
        println!("(growth scenario: planned, limits off, whatever --strategy and --limits say)");
        let (from, span) = scenario::seeded_window(s, now);
        let plan = GrowthPlan {
            passes,
            sweep_from: from,
            sweep_to: from + chrono::Duration::from_std(span)?,
        };
        let (line, stats) = run_child(
            args,
            s,
            Strategy::Planned,
            false,
            &config,
            &state,
            &template,
            root,
            &["--child-growth".into(), serde_json::to_string(&plan)?],
        )
        .await?;
        let row = GrowthRow {
            scenario: s.name,
            run: serde_json::from_str(&line)?,
            stats,
        };
        growth::header();
        row.print();
        results.growth.push(row);
        template.remove().await?;
        std::fs::remove_dir_all(&dir)?;
        return Ok(());
    }
    header();
    let rows = &mut results.rows;
    for &strategy in strategies {
        let settings: &[bool] = match args.limits {
            LimitsArg::On => &[true],
            LimitsArg::Off | LimitsArg::Auto => &[false],
        };
        for &limits in settings {
            let times = if limits { 1 } else { args.repeat };
            for _ in 0..times {
                let row =
                    run_one(args, s, strategy, limits, &config, &state, &template, root).await?;
                row.print();
                rows.push(row);
            }
        }
        if args.limits == LimitsArg::Auto {
            let off = rows.last().expect("the limits-off run was just pushed");
            let bound = off.bound_secs();
            let max = args
                .max_limited
                .unwrap_or(Duration::from_secs(if args.quick { 2 } else { 240 }));
            if bound <= max.as_secs_f64() {
                let row =
                    run_one(args, s, strategy, true, &config, &state, &template, root).await?;
                row.print();
                rows.push(row);
            } else {
                println!(
                    "{:<12} {:<12} on     skipped: rate-limit bound {:.0} s ({:.1} min) > --max-limited {:?}",
                    s.name,
                    strategy_name(strategy),
                    bound,
                    bound / 60.0,
                    max
                );
            }
        }
    }
    template.remove().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Where a scenario's ledger template lives: copied for each run.
enum Template {
    /// A SQLite file.
    File(PathBuf),
    /// A database `name` on the PostgreSQL server `server` (the `--pg-url`).
    Postgres { server: String, name: String },
}

impl Template {
    async fn remove(&self) -> Result<(), BoxError> {
        match self {
            Template::File(_) => Ok(()),
            Template::Postgres { server, name } => pg::drop_db(server, name).await,
        }
    }
}

/// Builds the scenario's ledger template in the chosen store.
async fn build_template(
    args: &Args,
    s: &Scenario,
    records: &[payrecon::sandbox::SeededRecord],
    beside: &[payrecon::sandbox::SeededRecord],
    dir: &Path,
) -> Result<(Template, scenario::LedgerBuild), BoxError> {
    match args.store {
        StoreArg::Sqlite => {
            let path = dir.join("template.db");
            let build = scenario::build_ledger(s, records, &path).await?;
            scenario::register_ecpay_beside(&path, beside).await?;
            Ok((Template::File(path), build))
        }
        StoreArg::Postgres => {
            let server = args
                .pg_url
                .clone()
                .ok_or("--store postgres needs --pg-url (or PAYRECON_BENCH_PG_URL)")?;
            let name = pg::db_name(s.name, "template");
            pg::create(&server, &name, None).await?;
            let url = pg::db_url(&server, &name)?;
            let built = async {
                let ledger = Ledger::Postgres(PgLedger::open(&url, Duration::from_secs(30)).await?);
                let build = scenario::build_ledger_in(&ledger, s, records).await?;
                scenario::register_ecpay_beside_in(&ledger, beside).await?;
                ledger.close().await;
                pg::settle(&url).await?;
                Ok::<_, BoxError>(build)
            }
            .await;
            let template = Template::Postgres { server, name };
            match built {
                Ok(build) => Ok((template, build)),
                Err(e) => {
                    // Not left behind on the server; the error is the build's.
                    let _ = template.remove().await;
                    Err(e)
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    args: &Args,
    s: &Scenario,
    strategy: Strategy,
    limits: bool,
    config: &SandboxConfig,
    state: &payrecon::sandbox::SandboxState,
    template: &Template,
    root: &Path,
) -> Result<Row, BoxError> {
    let extra: &[String] = if limits {
        &["--child-limits".into()]
    } else {
        &[]
    };
    let (line, stats) = run_child(
        args, s, strategy, limits, config, state, template, root, extra,
    )
    .await?;
    Ok(Row {
        scenario: s.name,
        strategy,
        limits,
        due: s.due + s.ecpay_beside,
        engine: serde_json::from_str(&line)?,
        stats,
    })
}

/// Runs the engine child (`--child`, plus `extra` arguments) on a fresh copy of the template
/// against a fresh sandbox server on `state`; returns its result line (after `BENCH_RESULT `)
/// and the sandbox's counters.
#[allow(clippy::too_many_arguments)]
async fn run_child(
    args: &Args,
    s: &Scenario,
    strategy: Strategy,
    limits: bool,
    config: &SandboxConfig,
    state: &payrecon::sandbox::SandboxState,
    template: &Template,
    root: &Path,
    extra: &[String],
) -> Result<(String, StatsSnapshot), BoxError> {
    let dir = scenario::run_dir(root, s.name, strategy, limits);
    std::fs::create_dir_all(&dir)?;
    // The run's ledger: a copy of the template, and the `[ledger]` line naming it.
    let (ledger_line, run_db) = match template {
        Template::File(path) => {
            let ledger_path = dir.join("ledger.db");
            std::fs::copy(path, &ledger_path)?;
            (
                scenario::LedgerLine::Path(ledger_path),
                None::<(&String, String)>,
            )
        }
        Template::Postgres { server, name } => {
            let run = pg::db_name(s.name, "run");
            pg::create(server, &run, Some(name)).await?;
            (
                scenario::LedgerLine::Url(pg::db_url(server, &run)?),
                Some((server, run)),
            )
        }
    };
    let mut config = config.clone();
    config.rate_limits = if limits {
        RateLimits::default()
    } else {
        RateLimits::off()
    };
    config.faults = Faults {
        latency: args.latency,
        ..Faults::none()
    };
    let sandbox = Sandbox::start_with_state(config, state.clone()).await?;
    let config_path = dir.join("config.toml");
    std::fs::write(
        &config_path,
        match &ledger_line {
            scenario::LedgerLine::Path(path) => {
                scenario::config_toml(sandbox.base_url().as_str(), path)
            }
            scenario::LedgerLine::Url(url) => {
                scenario::config_toml_pg(sandbox.base_url().as_str(), url)
            }
        },
    )?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child")
        .arg(&config_path)
        .arg("--strategy")
        .arg(strategy_name(strategy))
        .args(extra);
    let output = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    if let Some((server, run)) = run_db {
        pg::drop_db(server, &run).await?;
    }
    std::fs::remove_dir_all(&dir)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("BENCH_RESULT ")) else {
        return Err(format!(
            "{} {}: the engine process failed ({}): {}",
            s.name,
            strategy_name(strategy),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    };
    Ok((line.to_string(), stats))
}

/// Issue 6 item 4, judged from this run's rows (only those it ran).
fn verdicts(scenarios: &[Scenario], rows: &[Row]) {
    println!("== targets ==");
    let find = |name: &str, strategy: Strategy, limits: bool| {
        rows.iter()
            .find(|r| r.scenario == name && r.strategy == strategy && r.limits == limits)
    };
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    if let Some(d) = scenarios.iter().find(|s| s.name == "dense") {
        let ideal = (d.gateway_records as u64).div_ceil(100);
        if let Some(p) = find("dense", Strategy::Planned, false) {
            let x = p.calls() as f64 / ideal as f64;
            println!(
                "dense calls within 1.1x of ceil(records/100) = {ideal}: {} calls = {x:.3}x  {}",
                p.calls(),
                verdict(x <= 1.1)
            );
            if let Some(pp) = find("dense", Strategy::PerPayment, false) {
                let f = pp.calls() as f64 / p.calls().max(1) as f64;
                println!(
                    "dense >= 50x fewer calls than per-payment: {} vs {} = {f:.1}x  {}",
                    p.calls(),
                    pp.calls(),
                    verdict(f >= 50.0)
                );
            }
        }
    }
    for name in ["sparse", "sparse-thin"] {
        if let Some(p) = find(name, Strategy::Planned, false) {
            let pages = p.stats.count(CallKind::QfpayQueryWindow);
            let ids = p.stats.count(CallKind::QfpayQueryById);
            println!(
                "{name} uses id batches, not a sweep: {ids} id lookups, {pages} window pages  {}",
                verdict(pages == 0 && ids > 0)
            );
        }
    }
    for r in rows.iter().filter(|r| r.limits && r.scenario == "mixed") {
        for (account, bound) in [("hk", r.qfpay_bound_secs()), ("tw", r.ecpay_bound_secs())] {
            let Some(&done) = r.engine.settled_after.get(account) else {
                continue;
            };
            let x = done / bound.max(1e-9);
            println!(
                "mixed: account {account} settled within 1.15x of its own bound: {done:.2} s / {bound:.2} s = {x:.3}x  {}",
                verdict(x <= 1.15)
            );
        }
    }
    for r in rows.iter().filter(|r| r.limits) {
        let x = r.engine.wall_secs / r.bound_secs().max(1e-9);
        println!(
            "{} {} under limits within 1.15x of the bound: {:.2} s / {:.2} s = {x:.3}x  {}",
            r.scenario,
            strategy_name(r.strategy),
            r.engine.wall_secs,
            r.bound_secs(),
            verdict(x <= 1.15)
        );
    }
    for r in rows.iter().filter(|r| !r.limits) {
        let f = r.finalized_per_sec();
        println!(
            "{} {} limits off: {f:.0} finalized/s (target >= 10,000)  {}",
            r.scenario,
            strategy_name(r.strategy),
            verdict(f >= 10_000.0)
        );
    }
    for r in rows.iter().filter(|r| r.scenario == "ledger-1m") {
        let mb = r.engine.peak_rss_kib.unwrap_or(u64::MAX) as f64 / 1024.0;
        println!(
            "ledger-1m {} limits {}: peak RSS {mb:.1} MB (target <= 100 MB)  {}",
            strategy_name(r.strategy),
            if r.limits { "on" } else { "off" },
            verdict(mb <= 100.0)
        );
    }
}
