//! `payrecon ledger list|show|stats`: read the ledger. `payrecon ledger copy --to URL`: move a
//! SQLite ledger to PostgreSQL (`ledger::copy`).

use std::path::PathBuf;
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
    /// Copy the configured SQLite ledger, every row and event, into an empty PostgreSQL
    /// ledger, in one transaction verified before it commits (stop the daemons first).
    Copy(CopyArgs),
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The PostgreSQL database: postgres://user@host:port/database, without a password.
    #[arg(long, value_name = "URL")]
    to: String,
    /// The database password, in a file private to its owner (else PGPASSFILE / ~/.pgpass).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Rows per batch sent to PostgreSQL.
    #[arg(long, value_name = "N", default_value_t = crate::ledger::copy::BATCH_ROWS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
}

fn failed(e: impl std::fmt::Display) -> ExitCode {
    error_line!("payrecon: {e}");
    ExitCode::FAILURE
}

pub async fn run(settings: &Settings, cmd: &LedgerCommand) -> Result<ExitCode, ExitCode> {
    if let LedgerCommand::Copy(args) = cmd {
        return copy(settings, args).await;
    }
    let ledger = open_ledger(settings).await?;
    let result = match cmd {
        LedgerCommand::List {
            state,
            account,
            format,
        } => list(&ledger, *state, account.clone(), *format).await,
        LedgerCommand::Show { key } => show(&ledger, key).await,
        LedgerCommand::Stats { json } => stats(&ledger, *json).await,
        LedgerCommand::Copy(_) => unreachable!("handled above"),
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

/// `ledger copy`: the configured SQLite ledger into the empty PostgreSQL ledger at `--to`.
async fn copy(settings: &Settings, args: &CopyArgs) -> Result<ExitCode, ExitCode> {
    use crate::config::{EX_CONFIG, LedgerStore, postgres_target};
    use crate::ledger::copy::{CopyError, CopyOptions, copy_to_postgres};
    use crate::ledger::pg::PgLedger;

    let path = match &settings.ledger.store {
        LedgerStore::Sqlite { path } => path.clone(),
        LedgerStore::Postgres(pg) => {
            error_line!(
                "payrecon: the configured ledger is already PostgreSQL ({}); `ledger copy` \
                 moves a SQLite ledger ([ledger] path, with no url) to PostgreSQL",
                pg.url
            );
            return Err(ExitCode::from(EX_CONFIG));
        }
    };
    if !path.exists() {
        error_line!(
            "payrecon: no SQLite ledger at {} ([ledger] path): nothing to copy",
            path.display()
        );
        return Err(ExitCode::from(super::EX_NOINPUT));
    }
    let password_file = args.password_file.as_ref().map(|p| p.display().to_string());
    let target = postgres_target(&args.to, password_file.as_deref(), 2).map_err(|lines| {
        error_line!("payrecon: ledger copy refused:");
        for line in lines {
            error_line!("  {line}");
        }
        ExitCode::from(super::EX_USAGE)
    })?;
    let source = open_ledger(settings).await?;
    let Some(sqlite) = source.as_sqlite() else {
        unreachable!("a [ledger] path opens a SQLite ledger")
    };
    eprintln!(
        "payrecon: migrating the PostgreSQL ledger at {}",
        target.url
    );
    let pg = match PgLedger::connect_with(&target, settings.ledger.busy_timeout).await {
        Ok(pg) => pg,
        Err(e) => {
            source.close().await;
            return Err(failed(e));
        }
    };
    eprintln!("payrecon: copying {} into {}", path.display(), target.url);
    let options = CopyOptions {
        lease: settings.reconcile.lease,
        batch_rows: args.batch as usize,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let result = copy_to_postgres(sqlite, &pg, &options).await;
    pg.close().await;
    source.close().await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            error_line!("payrecon: ledger copy failed: {e}");
            error_line!(
                "payrecon: nothing was written to {} (its transaction rolled back)",
                target.url
            );
            return Err(match e {
                CopyError::SourceBusy(_) => ExitCode::from(super::EX_TEMPFAIL),
                CopyError::TargetNotEmpty(_)
                | CopyError::Schema(_)
                | CopyError::Data(_)
                | CopyError::Mismatch(_) => ExitCode::from(super::EX_DATAERR),
                CopyError::Ledger(_) => ExitCode::FAILURE,
            });
        }
    };
    for w in &report.warnings {
        warning_line!("payrecon: {w}");
    }
    let mut out = String::new();
    let total: i64 = report.rows.iter().map(|(_, n)| n).sum();
    let secs = report.elapsed.as_secs_f64();
    outln!(
        out,
        "copied {} ({total} rows) into {} in {:.1}s ({:.0} rows/s)",
        path.display(),
        target.url,
        secs,
        total as f64 / secs.max(0.001)
    );
    outln!(out, "verified before commit (source = target):");
    for c in &report.checks {
        outln!(
            out,
            "  {:<20} {:<28} {:>12} {:>12}",
            c.table,
            printable(&c.what),
            c.source,
            c.target
        );
    }
    for (table, next) in &report.next_ids {
        outln!(out, "next {table} id: {next}");
    }
    outln!(
        out,
        "next: set [ledger] url = \"{}\" (and remove path), then start the daemons",
        target.url
    );
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
