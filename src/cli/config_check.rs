//! `payrecon config check`: validate configuration and summarise it with secrets masked.

use std::process::ExitCode;

use clap::Subcommand;

use super::Cli;
use crate::config::{self, Account, ReversalMode};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration; exit 78 (EX_CONFIG) with one line per problem.
    Check,
}

pub fn run(cli: &Cli, cmd: &ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Check => check(cli),
    }
}

fn check(cli: &Cli) -> ExitCode {
    let settings = match config::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let lines = e.lines();
            error_line!(
                "payrecon: configuration is invalid ({} problem(s)):",
                lines.len()
            );
            for line in lines {
                error_line!("  {line}");
            }
            return ExitCode::from(config::EX_CONFIG);
        }
    };
    let source = settings
        .source
        .as_ref()
        .map_or("built-in defaults only".to_string(), |p| {
            p.display().to_string()
        });
    println!("configuration OK ({source})");
    println!("  ledger      {}", settings.ledger.shown());
    println!(
        "  schedule    reconcile {:?}, sweep {:?}, max_failed_passes {}",
        settings.schedule.reconcile, settings.schedule.sweep, settings.schedule.max_failed_passes
    );
    let mode = match settings.reversal.mode {
        ReversalMode::Auto => "auto",
        ReversalMode::DryRun => "dry-run",
        ReversalMode::Off => "off",
    };
    println!("  reversal    {mode}");
    if settings.accounts.is_empty() {
        println!("  accounts    none");
    }
    for a in &settings.accounts {
        match a {
            Account::Qfpay(q) => println!(
                "  account     {} (qfpay) {} app_code {} client_key ******** mchid {} timezone {} batch {}",
                q.name,
                q.base_url,
                q.app_code,
                q.mchid.as_deref().unwrap_or("-"),
                q.timezone,
                q.batch_size
            ),
            Account::Ecpay(e) => println!(
                "  account     {} (ecpay) {} merchant_id {} hash_key ******** hash_iv ******** nopay_interval {}",
                e.name,
                e.base_url,
                e.merchant_id,
                humantime::format_duration(e.nopay_interval)
            ),
        }
    }
    ExitCode::SUCCESS
}
