//! `payrecon sweep`: walk a closed QFPay window and print the discrepancy report.

use std::process::ExitCode;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use clap::Args;

use super::{EX_DATAERR, open_ledger};
use crate::config::{Account, Settings};
use crate::reconcile::Reconciler;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// A configured QFPay account.
    #[arg(long)]
    pub account: String,
    /// Window start: RFC 3339, "YYYY-MM-DD hh:mm:ss" or "YYYY-MM-DD" (account time).
    #[arg(long)]
    pub from: String,
    /// Window end (exclusive), same formats; must be in the past.
    #[arg(long)]
    pub to: String,
    /// Read month pieces that were already swept once more from the first page (to see what
    /// changed since, e.g. refunds); without it they are skipped.
    #[arg(long)]
    pub again: bool,
}

/// Parses a time in the formats `--from`/`--to` accept.
fn parse_time(s: &str, tz: FixedOffset) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_time(chrono::NaiveTime::MIN))
        })?;
    tz.from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

pub async fn run(settings: &Settings, args: &SweepArgs) -> Result<ExitCode, ExitCode> {
    let Some(Account::Qfpay(account)) = settings.account(&args.account) else {
        error_line!(
            "payrecon: --account: {:?} is not a configured QFPay account",
            args.account
        );
        return Err(ExitCode::from(EX_DATAERR));
    };
    let parse = |flag: &str, s: &str| {
        parse_time(s, account.timezone).ok_or_else(|| {
            error_line!("payrecon: --{flag}: {s:?} is not RFC 3339, \"YYYY-MM-DD hh:mm:ss\" or \"YYYY-MM-DD\"");
            ExitCode::from(EX_DATAERR)
        })
    };
    let (from, to) = (parse("from", &args.from)?, parse("to", &args.to)?);
    let ledger = open_ledger(settings).await?;
    let engine = Reconciler::new(ledger.clone(), settings).map_err(|e| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    })?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    super::daemon::cancel_on_signal(shutdown.clone());
    let result = engine
        .sweep(&args.account, from, to, args.again, &shutdown)
        .await;
    ledger.close().await;
    let report = match result {
        Ok(report) => report,
        // A stop request ends the sweep between pages with its cursor saved and the account
        // given back: nothing is wrong, so exit 0 like `reconcile --once`.
        Err(e @ crate::reconcile::sweep::SweepError::Interrupted) => {
            warning_line!("payrecon: {e}");
            return Ok(ExitCode::SUCCESS);
        }
        // Another process works the account: nothing is wrong, but the window was not read.
        Err(e @ crate::reconcile::sweep::SweepError::Held { .. }) => {
            warning_line!("payrecon: {e}");
            return Err(ExitCode::from(super::EX_TEMPFAIL));
        }
        Err(e) => {
            error_line!("payrecon: {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    println!(
        "swept {} {} – {}: {} gateway records in {} calls; {} matched the ledger, {} open ones made due",
        args.account, from, to, report.records, report.calls, report.matched, report.made_due
    );
    if report.already_complete_pieces > 0 {
        println!(
            "  ({} month piece(s) were already swept; add --again to read them once more)",
            report.already_complete_pieces
        );
    }
    if report.unknown_records > 0 {
        println!(
            "  {} gateway records are not in the ledger (not reported: the account's ledger_is_complete is false)",
            report.unknown_records
        );
    }
    for (title, list) in [
        (
            "updated (payments the ledger held as settled whose gateway record says more)",
            &report.updated,
        ),
        (
            "refunds registered (gateway refunds of ledger payments)",
            &report.refunds_registered,
        ),
        (
            "unreadable records (no readable id; this window's missing-at-gateway check skipped)",
            &report.unreadable,
        ),
        (
            "missing in ledger (gateway records the merchant never registered)",
            &report.missing_in_ledger,
        ),
        (
            "missing at gateway (registered payments the gateway never had)",
            &report.missing_at_gateway,
        ),
        (
            "contradictions (final states or amounts the gateway disagrees with)",
            &report.contradictions,
        ),
    ] {
        println!("{title}: {}", list.len());
        for d in list {
            // Gateway records carry the gateway's text: no control characters on the terminal.
            println!("  {}", super::output::printable(&d.to_string()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_times_accept_rfc3339_local_times_and_dates() {
        let tz = FixedOffset::east_opt(8 * 3600).unwrap();
        let want = Utc.with_ymd_and_hms(2026, 11, 21, 16, 0, 0).unwrap();
        assert_eq!(parse_time("2026-11-22", tz), Some(want));
        assert_eq!(parse_time("2026-11-22 00:00:00", tz), Some(want));
        assert_eq!(parse_time("2026-11-21T16:00:00Z", tz), Some(want));
        assert_eq!(parse_time("yesterday", tz), None);
    }
}
