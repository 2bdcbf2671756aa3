//! `payrecon reconcile --once`: one pass over due payments, through the same `run_once` as the
//! daemon.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::open_ledger;
use crate::config::Settings;
use crate::domain::Provider;
use crate::reconcile::{Reconciler, RunScope, RunSummary, Strategy};

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Run exactly one pass and exit (the daemon is `payrecon run`).
    #[arg(long, required = true)]
    pub once: bool,
    /// Only this account.
    #[arg(long)]
    pub account: Option<String>,
    /// Only this provider.
    #[arg(long, value_parser = parse_provider)]
    pub provider: Option<Provider>,
    /// Every open payment, not only those due now, and the paid ECPay orders still inside
    /// their `after_final_look_back` (re-checked now).
    #[arg(long)]
    pub all: bool,
    /// Ask the gateways and print what would change; write nothing, reverse nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// planned (sweeps and id batches) or per-payment (one lookup each, for comparison).
    #[arg(long, value_enum, default_value = "planned")]
    pub strategy: Strategy,
    /// Print the pass's summary as one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_provider(s: &str) -> Result<Provider, String> {
    s.parse().map_err(|e: crate::domain::IdError| e.to_string())
}

/// One line a person can read, e.g. in a cron mail.
pub fn describe(s: &RunSummary, dry_run: bool) -> String {
    let c = s.counters;
    let states: Vec<String> = s.decided.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let what = if dry_run {
        "dry run (nothing written)"
    } else {
        "pass"
    };
    let id = s.run_id.map(|i| format!(" {i}")).unwrap_or_default();
    let mut line = format!(
        "{what}{id}: {} claimed, {} checked, {} finalized, {} gateway calls, {} errors, {} reversals sent",
        c.claimed, c.checked, c.finalized, c.calls, c.errors, s.reversals_sent
    );
    if !states.is_empty() {
        line.push_str(&format!("; now {}", states.join(", ")));
    }
    if !s.paused_accounts.is_empty() {
        line.push_str(&format!("; paused: {}", s.paused_accounts.join(", ")));
    }
    if !s.skipped_accounts.is_empty() {
        let skipped: Vec<String> = s
            .skipped_accounts
            .iter()
            .map(|k| format!("{} (held by {})", k.account, k.holder))
            .collect();
        line.push_str(&format!("; skipped: {}", skipped.join(", ")));
    }
    if !s.fenced_out.is_empty() {
        line.push_str(&format!(
            "; fenced out (taken over by another process): {}",
            s.fenced_out.join(", ")
        ));
    }
    line
}

pub async fn run(settings: &Settings, args: &ReconcileArgs) -> Result<ExitCode, ExitCode> {
    let ledger = open_ledger(settings).await?;
    let engine = Reconciler::new(ledger.clone(), settings).map_err(|e| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    })?;
    let engine = Arc::new(engine);
    let shutdown = CancellationToken::new();
    super::daemon::cancel_on_signal(shutdown.clone());
    let scope = RunScope {
        account: args.account.clone(),
        provider: args.provider,
        all: args.all,
        dry_run: args.dry_run,
        strategy: args.strategy,
        trigger: "cli",
        lane_wait: Some(settings.reconcile.lane_wait),
    };
    let result = engine.run_once(&scope, &shutdown).await;
    ledger.close().await;
    match result {
        Ok(summary) => {
            if args.json {
                match serde_json::to_string(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        error_line!("payrecon: cannot print the summary: {e}");
                        return Err(ExitCode::FAILURE);
                    }
                }
            } else {
                println!("{}", describe(&summary, args.dry_run));
            }
            // A stop request (SIGTERM from `systemctl stop` or at shutdown, or Ctrl-C) ends
            // the pass between chunks with the leases released: nothing is wrong, the next
            // pass takes the rest. Exit 0 so systemd does not mark the unit failed.
            if summary.interrupted {
                warning_line!(
                    "payrecon: stopped by a signal before the pass ended; the rest is left for the next pass"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            error_line!("payrecon: reconcile pass failed: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}
