//! `payrecon ledger list|show|stats`: read the ledger.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;

use super::open_ledger;
use super::output::{Format, RowPrinter, emit, printable, printable_row};
use crate::config::Settings;
use crate::domain::{PaymentState, format_money};
use crate::ledger::{ListFilter, time};
use crate::outln;

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List payments, oldest first.
    List {
        /// Only payments in this state (pending, in_progress, succeeded, failed, cancelled,
        /// reversing, reversed, refunded, partially_refunded, needs_review).
        #[arg(long)]
        state: Option<PaymentState>,
        /// Only payments of this account.
        #[arg(long)]
        account: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one payment (by ledger id or out_trade_no) and its event history.
    Show {
        #[arg(value_name = "ID|OUT_TRADE_NO")]
        key: String,
    },
    /// Counts by state per account, the oldest open payment, gateway calls spent.
    Stats {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn failed(e: impl std::fmt::Display) -> ExitCode {
    error_line!("payrecon: {e}");
    ExitCode::FAILURE
}

pub async fn run(settings: &Settings, cmd: &LedgerCommand) -> Result<ExitCode, ExitCode> {
    let ledger = open_ledger(settings).await?;
    let result = match cmd {
        LedgerCommand::List {
            state,
            account,
            format,
        } => list(&ledger, *state, account.clone(), *format).await,
        LedgerCommand::Show { key } => show(&ledger, key).await,
        LedgerCommand::Stats { json } => stats(&ledger, *json).await,
    };
    ledger.close().await;
    result
}

async fn list(
    ledger: &crate::ledger::Ledger,
    state: Option<PaymentState>,
    account: Option<String>,
    format: Format,
) -> Result<ExitCode, ExitCode> {
    let stdout = std::io::stdout().lock();
    let mut printer = RowPrinter::new(format, std::io::BufWriter::new(stdout)).map_err(failed)?;
    let filter = ListFilter { state, account };
    ledger
        .for_each_payment(&filter, |row| printer.row(row))
        .await
        .map_err(failed)?;
    match printer.finish() {
        // The reader went away (`| head`): not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(failed(e)),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(ledger: &crate::ledger::Ledger, key: &str) -> Result<ExitCode, ExitCode> {
    let mut out = String::new();
    let payments = ledger.find_payments(key).await.map_err(failed)?;
    if payments.is_empty() {
        error_line!("payrecon: no payment with id or out_trade_no {key:?}");
        return Err(ExitCode::FAILURE);
    }
    // Everything below may hold text from a gateway or an import file: printed through
    // `printable`, so no control character reaches the terminal.
    for p in payments {
        let p = printable_row(p);
        outln!(
            out,
            "payment {} ({} {} {})",
            p.id,
            p.account,
            p.kind,
            p.out_trade_no
        );
        outln!(out, "  state          {}", p.state);
        outln!(
            out,
            "  amount         {}",
            format_money(p.amount, &p.currency)
        );
        outln!(out, "  provider       {}", p.provider);
        outln!(
            out,
            "  provider_ref   {}",
            p.provider_ref.as_deref().unwrap_or("-")
        );
        outln!(
            out,
            "  pay_type       {}",
            p.pay_type.as_deref().unwrap_or("-")
        );
        outln!(
            out,
            "  provider_code  {}",
            p.provider_code.as_deref().unwrap_or("-")
        );
        outln!(out, "  attempts       {}", p.attempts);
        outln!(
            out,
            "  next_check_at  {}",
            p.next_check_at.as_deref().unwrap_or("- (final)")
        );
        outln!(out, "  created_at     {}", p.created_at);
        outln!(out, "  updated_at     {}", p.updated_at);
        outln!(out, "  history:");
        for e in ledger.events(p.id).await.map_err(failed)? {
            let transition = match (&e.from_state, &e.to_state) {
                (Some(a), Some(b)) if a != b => format!("{a} -> {b}"),
                (_, Some(b)) => b.clone(),
                _ => String::new(),
            };
            outln!(
                out,
                "    {}  {:<16} {:<24} {} {}",
                printable(&e.at),
                printable(&e.kind),
                printable(&transition),
                printable(e.provider_code.as_deref().unwrap_or("")),
                printable(e.message.as_deref().unwrap_or(""))
            );
            if !e.evidence.is_null() && e.evidence != serde_json::json!({}) {
                outln!(
                    out,
                    "      evidence: {}",
                    printable(&e.evidence.to_string())
                );
            }
        }
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

async fn stats(ledger: &crate::ledger::Ledger, json: bool) -> Result<ExitCode, ExitCode> {
    let mut out = String::new();
    let now = Utc::now();
    let s = ledger.stats(now).await.map_err(failed)?;
    if json {
        let text = serde_json::to_string_pretty(&s).map_err(failed)?;
        outln!(out, "{text}");
        emit(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(out, "payments by account and state:");
    if s.by_state.is_empty() {
        outln!(out, "  (none)");
    }
    for c in &s.by_state {
        outln!(out, "  {:<16} {:<20} {:>8}", c.account, c.state, c.count);
    }
    match &s.oldest_open {
        Some(p) => {
            let age = time::from_db(&p.created_at)
                .map(|t| {
                    humantime::format_duration(std::time::Duration::from_secs(
                        (now - t).num_seconds().max(0) as u64,
                    ))
                    .to_string()
                })
                .unwrap_or_else(|| "?".into());
            outln!(
                out,
                "oldest open payment: {} ({} {}, {}), created {} ago",
                p.id,
                p.account,
                p.out_trade_no,
                p.state,
                age
            );
        }
        None => outln!(out, "oldest open payment: none"),
    }
    outln!(
        out,
        "gateway calls spent: {} over {} run(s)",
        s.gateway_calls,
        s.runs
    );
    outln!(out, "open discrepancies: {}", s.open_discrepancies);
    if s.paused_accounts.is_empty() {
        outln!(out, "paused accounts: none");
    }
    for (account, until, reason) in &s.paused_accounts {
        outln!(out, "paused account: {account} until {until} ({reason})");
    }
    outln!(
        out,
        "lanes (one per account; the holder is the process working it):"
    );
    if s.lanes.is_empty() {
        outln!(out, "  (none)");
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for l in &s.lanes {
        outln!(
            out,
            "  {:<16} {:<6} holder {} (token {}), heartbeat {}, pace {}, due {}, paused until {}",
            l.account,
            l.provider.as_deref().unwrap_or("-"),
            dash(&l.holder),
            l.token,
            dash(&l.heartbeat_at),
            l.pace_per_minute
                .map_or_else(|| "-".to_string(), |p| format!("{p}/min")),
            l.due,
            dash(&l.paused_until)
        );
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
