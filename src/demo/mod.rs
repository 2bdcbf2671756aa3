//! `payrecon demo`: the whole job on the built-in sandbox gateways. It starts the sandbox,
//! writes a config and a fresh ledger, registers about two thousand payments (QFPay online
//! orders through `pay`'s code path, the rest through `import`), runs the real daemon
//! (scheduler and all, with short intervals) until nothing is due, sweeps the window to find
//! what the merchant never recorded, and checks every payment ended where its scenario says.

mod scenario;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Account, Settings};
use crate::domain::{Currency, Money, OutTradeNo, PayType, Provider};
use crate::gateway::transport::http_client;
use crate::intake::{ImportError, PayOrder, create_qfpay_payment, read_file};
use crate::ledger::{self, Ledger, ListFilter};
use crate::reconcile::Reconciler;
use crate::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, RateLimits, Sandbox, SandboxConfig, SandboxHandle,
};

/// How long the demo lets the daemon work before it calls the run a failure.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo setup: {0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> DemoError {
    DemoError::Setup(e.to_string())
}

/// What the demo found, for the caller to print and to decide the exit code.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub dir: PathBuf,
    pub payments: usize,
    pub by_state: std::collections::BTreeMap<String, usize>,
    /// `account out_trade_no: expected X, got Y`.
    pub mismatches: Vec<String>,
    pub discrepancies: Vec<String>,
    pub gateway_calls: u64,
    pub gateway_checks_needed: u64,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl DemoReport {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && !self.timed_out
    }
}

/// The demo's configuration: the sandbox merchants, short intervals so it runs in seconds.
fn write_config(dir: &Path, sandbox: &SandboxHandle) -> Result<PathBuf, DemoError> {
    let url = sandbox.base_url();
    let toml = format!(
        r#"# Written by `payrecon demo`. Inspect the ledger with:
#   payrecon --config {cfg} ledger stats
[ledger]
path = "{ledger}"

[schedule]
reconcile = "* * * * * *"
sweep = "0 0 0 1 1 *"

[reconcile]
lease = "30s"

[reversal]
mode = "auto"

[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{url}"
app_code = "{DEV_QFPAY_APP_CODE}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"
in_progress_interval = "1s"
retry_for = "5s"
# The demo registers every payment it makes, so a gateway record the ledger lacks is news.
ledger_is_complete = true

[[accounts]]
name = "tw"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{DEV_ECPAY_MERCHANT_ID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
first_query_after = "1s"
nopay_interval = "2s"
# Unauthorized (銀行未授權完成) may still be pending; the demo's declined cards were declined
# minutes to hours ago, past this horizon, so their first answer fails them.
unauthorized_horizon = "5m"
rate_per_minute = 6000
retry_for = "5s"
"#,
        cfg = dir.join("payrecon.toml").display(),
        ledger = dir.join("ledger.db").display(),
    );
    let path = dir.join("payrecon.toml");
    std::fs::write(&path, toml).map_err(setup)?;
    Ok(path)
}

/// A fresh demo directory: the previous demo's ledger is removed, nothing else is touched.
fn fresh_dir(dir: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(dir).map_err(setup)?;
    for name in [
        "ledger.db",
        "ledger.db-wal",
        "ledger.db-shm",
        "payrecon.toml",
        "import.jsonl",
    ] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(setup(format!(
                    "cannot clear {}: {e}",
                    dir.join(name).display()
                )));
            }
        }
    }
    Ok(())
}

async fn register(
    settings: &Settings,
    ledger: &Ledger,
    dir: &Path,
    world: &scenario::World,
) -> Result<(), DemoError> {
    let file = dir.join("import.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).map_err(setup)?);
    for row in &world.import {
        writeln!(out, "{row}").map_err(setup)?;
    }
    out.flush().map_err(setup)?;
    drop(out);
    let rows = read_file(&file, settings, Utc::now()).map_err(|e| match e {
        ImportError::Unreadable(e) => setup(e),
        ImportError::Invalid(errors) => setup(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    })?;
    let batch: Vec<_> = rows.into_iter().map(|(_, p)| p).collect();
    ledger.register(&batch, Utc::now()).await.map_err(setup)?;

    let Some(Account::Qfpay(account)) = settings.account(scenario::QFPAY_ACCOUNT) else {
        return Err(setup("the demo config has no QFPay account"));
    };
    let client = account.client(http_client(account.connect_timeout).map_err(setup)?);
    let hkd = Currency::parse("HKD").map_err(setup)?;
    for o in &world.online {
        let order = PayOrder {
            out_trade_no: OutTradeNo::parse(&o.out_trade_no, Provider::Qfpay).map_err(setup)?,
            amount: Money::new(o.amount, hkd).map_err(setup)?,
            pay_type: PayType::parse(o.pay_type).map_err(setup)?,
            expires_in: Some(Duration::from_secs(30 * 60)),
            goods_name: Some("payrecon demo".into()),
        };
        create_qfpay_payment(ledger, account, &client, order, Utc::now())
            .await
            .map_err(setup)?;
    }
    Ok(())
}

/// Counts of payments still open (pending, in progress, reversing).
async fn open_count(ledger: &Ledger) -> usize {
    let stats = ledger.stats(Utc::now()).await;
    stats.map_or(usize::MAX, |s| {
        s.by_state
            .iter()
            .filter(|c| matches!(c.state.as_str(), "pending" | "in_progress" | "reversing"))
            .map(|c| c.count as usize)
            .sum()
    })
}

/// Runs the demo in `dir`.
pub async fn run(dir: &Path) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    fresh_dir(dir)?;
    let mut sandbox_config = SandboxConfig::dev();
    // QFPay keeps its documented limits; ECPay publishes none, so the demo allows its pace.
    sandbox_config.rate_limits = RateLimits {
        ecpay_per_minute: Some(6_000),
        ..RateLimits::default()
    };
    let sandbox = Sandbox::start(sandbox_config).await.map_err(setup)?;
    let world = scenario::build(sandbox.state(), Utc::now()).map_err(setup)?;
    let cfg_path = write_config(dir, &sandbox)?;
    let settings = config::load(Some(&cfg_path)).map_err(setup)?;
    let ledger = ledger::open_store(&settings.ledger).await.map_err(setup)?;
    register(&settings, &ledger, dir, &world).await?;
    let total = world.expected.len();
    println!(
        "registered {total} payments ({} through `pay`, the rest imported); starting the daemon",
        world.online.len()
    );

    // The real daemon path: scheduler, cron ticks, leases, everything.
    let engine = Arc::new(Reconciler::new(ledger.clone(), &settings).map_err(setup)?);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn({
        let (engine, schedule, shutdown) =
            (engine.clone(), settings.schedule.clone(), shutdown.clone());
        // Nothing wakes the demo's lanes between ticks: it has no API.
        let (_, wakes) = crate::scheduler::Waker::channel();
        let status = Arc::default();
        async move { crate::scheduler::run(engine, &schedule, shutdown, wakes, status).await }
    });
    let bar = std::io::stdout().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed:>4} [{bar:40}] {pos}/{len} settled {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut report = DemoReport {
        dir: dir.to_path_buf(),
        payments: total,
        ..DemoReport::default()
    };
    let mut last_line = Instant::now();
    loop {
        let open = open_count(&ledger).await;
        let settled = total.saturating_sub(open);
        match &bar {
            Some(b) => b.set_position(settled as u64),
            None if last_line.elapsed() >= Duration::from_secs(2) || open == 0 => {
                println!("{settled}/{total} settled");
                last_line = Instant::now();
            }
            None => {}
        }
        if open == 0 {
            break;
        }
        if started.elapsed() > DEADLINE {
            report.timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(b) = &bar {
        b.finish();
    }
    shutdown.cancel();
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(setup(e)),
        Err(e) => return Err(setup(e)),
    }

    // The closing sweep over the demo's window: confirms, and finds what the ledger lacks.
    let from = world.first_record.unwrap_or_else(Utc::now) - chrono::Duration::minutes(1);
    let sweep = engine
        .sweep(
            scenario::QFPAY_ACCOUNT,
            from,
            Utc::now(),
            false,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .map_err(setup)?;
    report
        .discrepancies
        .extend(sweep.missing_in_ledger.iter().cloned());
    for d in ledger.discrepancies(false).await.map_err(setup)? {
        if !report.discrepancies.contains(&d.detail) {
            report
                .discrepancies
                .push(format!("{} ({})", d.detail, d.kind));
        }
    }
    if !report
        .discrepancies
        .iter()
        .any(|d| d.contains("HKAMT00001") && d.contains("amount"))
    {
        report
            .mismatches
            .push("the amount mismatch of HKAMT00001 was not reported".into());
    }
    for ghost in &world.ghosts {
        if !report.discrepancies.iter().any(|d| d.contains(ghost)) {
            report
                .mismatches
                .push(format!("the gateway-only payment {ghost} was not reported"));
        }
    }

    ledger
        .for_each_payment(&ListFilter::default(), |p| {
            *report.by_state.entry(p.state.clone()).or_default() += 1;
            report.gateway_checks_needed += 1;
            match world
                .expected
                .get(&(p.account.clone(), p.out_trade_no.clone()))
            {
                Some(want) if *want == p.state => {}
                Some(want) => report.mismatches.push(format!(
                    "{} {}: expected {want}, got {}",
                    p.account, p.out_trade_no, p.state
                )),
                None => report.mismatches.push(format!(
                    "{} {}: not part of the scenario",
                    p.account, p.out_trade_no
                )),
            }
            Ok(())
        })
        .await
        .map_err(setup)?;
    let stats = sandbox.stats();
    report.gateway_calls = stats.total(true) + stats.total(false);
    report.elapsed = started.elapsed();
    ledger.close().await;
    sandbox.shutdown().await;
    Ok(report)
}
