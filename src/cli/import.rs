//! `payrecon import FILE`: register many payments, all-or-nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::Args;

use super::{EX_DATAERR, EX_NOINPUT, open_ledger};
use crate::config::Settings;
use crate::intake::{ImportError, read_file};
use crate::ledger::NewPayment;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A .jsonl file (one JSON object per line) or a .csv file with a header row. Columns:
    /// account, kind, out_trade_no, syssn (QFPay) or trade_no (ECPay), pay_type, amount
    /// (integer minor units; TWD and JPY have no minor unit), currency, created_at.
    pub file: PathBuf,
}

pub async fn run(settings: &Settings, args: &ImportArgs) -> Result<ExitCode, ExitCode> {
    let shown = args.file.display();
    let no_input = |why: String| {
        error_line!("payrecon: {shown}: {why}");
        ExitCode::from(EX_NOINPUT)
    };
    match std::fs::metadata(&args.file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(no_input("no such file".into()));
        }
        Err(e) => return Err(no_input(format!("cannot read: {e}"))),
        Ok(m) if m.is_dir() => return Err(no_input("is a directory".into())),
        Ok(_) => {}
    }
    let now = Utc::now();
    let rows = read_file(&args.file, settings, now).map_err(|e| {
        let errors = match e {
            ImportError::Unreadable(e) => return no_input(format!("cannot read: {e}")),
            ImportError::Invalid(errors) => errors,
        };
        // A file that is wrong throughout is reported by its first problems, not line by line
        // for millions of lines.
        const SHOWN_ERRORS: usize = 100;
        for e in errors.iter().take(SHOWN_ERRORS) {
            error_line!("{}: {e}", args.file.display());
        }
        if errors.len() > SHOWN_ERRORS {
            error_line!(
                "{}: ... and {} more problem(s)",
                args.file.display(),
                errors.len() - SHOWN_ERRORS
            );
        }
        error_line!(
            "payrecon: {} problem(s); nothing was imported",
            errors.len()
        );
        ExitCode::from(EX_DATAERR)
    })?;
    let (lines, batch): (Vec<usize>, Vec<NewPayment>) = rows.into_iter().unzip();
    let ledger = open_ledger(settings).await?;
    let report = ledger.register(&batch, now).await;
    ledger.close().await;
    let report = report.map_err(|e| {
        error_line!("payrecon: {e}; nothing was imported");
        ExitCode::FAILURE
    })?;
    if !report.conflicts.is_empty() {
        for (i, why) in &report.conflicts {
            error_line!(
                "{}: line {}: out_trade_no: {why}",
                args.file.display(),
                lines[*i]
            );
        }
        error_line!(
            "payrecon: {} conflict(s) with the ledger; nothing was imported",
            report.conflicts.len()
        );
        return Err(ExitCode::from(EX_DATAERR));
    }
    println!(
        "imported {} new payment(s); {} already in the ledger",
        report.inserted.len(),
        report.already_present.len()
    );
    const SHOWN: usize = 20;
    for (i, id) in report.already_present.iter().take(SHOWN) {
        println!("  line {}: already tracked as payment {id}", lines[*i]);
    }
    if report.already_present.len() > SHOWN {
        println!("  ... and {} more", report.already_present.len() - SHOWN);
    }
    Ok(ExitCode::SUCCESS)
}
