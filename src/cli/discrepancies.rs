//! `payrecon discrepancies list|resolve`: what a person should look at, and closing it.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;

use super::open_ledger;
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum DiscrepancyCommand {
    /// List open discrepancies (amount mismatches, contradicted final states, records missing
    /// on one side).
    List {
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mark a discrepancy resolved, with a note saying what was done.
    Resolve {
        id: i64,
        #[arg(long)]
        note: String,
    },
}

pub async fn run(settings: &Settings, cmd: &DiscrepancyCommand) -> Result<ExitCode, ExitCode> {
    let ledger = open_ledger(settings).await?;
    let fail = |e: crate::ledger::LedgerError| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    };
    let result = match cmd {
        DiscrepancyCommand::List { all, json } => {
            let rows = ledger.discrepancies(*all).await.map_err(fail);
            rows.map(|rows| {
                if *json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&rows).unwrap_or_default()
                    );
                } else if rows.is_empty() {
                    println!("no open discrepancies");
                } else {
                    for d in &rows {
                        let payment = d.payment_id.map_or("-".into(), |p| p.to_string());
                        let state = d
                            .resolved_at
                            .as_ref()
                            .map_or("open".to_string(), |r| format!("resolved {r}"));
                        // The detail quotes gateway answers: no control characters.
                        println!(
                            "{:>5}  {:<8} payment {:<8} {:<20} {}  [{}]",
                            d.id,
                            d.account,
                            payment,
                            d.kind,
                            super::output::printable(&d.detail),
                            state
                        );
                    }
                }
                ExitCode::SUCCESS
            })
        }
        DiscrepancyCommand::Resolve { id, note } => {
            if note.trim().is_empty() {
                error_line!("payrecon: --note must say what was done");
                Err(ExitCode::from(super::EX_DATAERR))
            } else {
                match ledger.resolve_discrepancy(*id, note, Utc::now()).await {
                    Ok(true) => {
                        println!("discrepancy {id} resolved");
                        Ok(ExitCode::SUCCESS)
                    }
                    Ok(false) => {
                        error_line!("payrecon: no open discrepancy with id {id}");
                        Err(ExitCode::FAILURE)
                    }
                    Err(e) => Err(fail(e)),
                }
            }
        }
    };
    ledger.close().await;
    result
}
