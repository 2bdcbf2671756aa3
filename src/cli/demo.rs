//! `payrecon demo`: the whole job on the built-in sandbox (README command 1).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's config, import file and ledger (its old ledger is replaced).
    #[arg(long, default_value = "payrecon-demo")]
    pub dir: PathBuf,
}

pub async fn run(args: &DemoArgs) -> Result<ExitCode, ExitCode> {
    let report = crate::demo::run(&args.dir).await.map_err(|e| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    })?;
    println!();
    println!(
        "ledger after {:.1} s ({} payments):",
        report.elapsed.as_secs_f64(),
        report.payments
    );
    for (state, n) in &report.by_state {
        println!("  {state:<20} {n:>6}");
    }
    println!("discrepancies found ({}):", report.discrepancies.len());
    for d in &report.discrepancies {
        println!("  {d}");
    }
    println!(
        "gateway calls: {} in all (payment creation, lookups, sweeps, reversal) for {} payments; \
         one lookup per payment per check would need at least {}",
        report.gateway_calls, report.payments, report.gateway_checks_needed
    );
    let cfg = report.dir.join("payrecon.toml");
    println!(
        "inspect it: payrecon --config {} ledger stats   (or ledger list / ledger show ID)",
        cfg.display()
    );
    if report.timed_out {
        error_line!("payrecon: the demo did not settle every payment in time");
    }
    if report.passed() {
        println!("demo passed: every payment reached the state its scenario defines");
        Ok(ExitCode::SUCCESS)
    } else {
        error_line!("demo FAILED:");
        for m in &report.mismatches {
            error_line!("  {m}");
        }
        Err(ExitCode::FAILURE)
    }
}
