//! `payrecon track`: register one payment.

use std::process::ExitCode;

use chrono::Utc;
use clap::Args;
use serde_json::Value;

use super::{EX_DATAERR, open_ledger};
use crate::config::Settings;
use crate::intake::{RecordFields, validate_record};

#[derive(Debug, Args)]
pub struct TrackArgs {
    /// Configured account name.
    #[arg(long)]
    pub account: String,
    /// The merchant order number (QFPay out_trade_no, ECPay MerchantTradeNo).
    #[arg(long)]
    pub out_trade_no: String,
    /// Amount in minor units (1000 = HK$10.00; TWD and JPY have no minor unit).
    #[arg(long, allow_hyphen_values = true)]
    pub amount: String,
    /// ISO 4217 currency code.
    #[arg(long)]
    pub currency: String,
    /// QFPay pay type (e.g. 800108); decides whether and how it can be reversed.
    #[arg(long)]
    pub pay_type: Option<String>,
    /// QFPay syssn, if the gateway returned one.
    #[arg(long)]
    pub syssn: Option<String>,
    /// ECPay TradeNo, if known.
    #[arg(long)]
    pub trade_no: Option<String>,
    /// When the payment was created: "YYYY-MM-DD hh:mm:ss" in the account's time, or RFC 3339.
    /// Defaults to now.
    #[arg(long)]
    pub created_at: Option<String>,
    /// payment or refund.
    #[arg(long, default_value = "payment")]
    pub kind: String,
    /// QFPay QR/online orders: when the order stops being payable (same formats as
    /// --created-at). Without it (or --expired-time) QFPay's default of 30 minutes is assumed
    /// before a last-resort close.
    #[arg(long, conflicts_with = "expired_time")]
    pub expires_at: Option<String>,
    /// QFPay QR/online orders: the expired_time the order was created with, in whole minutes
    /// (5–120) after --created-at.
    #[arg(long)]
    pub expired_time: Option<String>,
}

impl TrackArgs {
    fn fields(&self) -> RecordFields {
        let mut f = RecordFields::new();
        let mut put = |k: &str, v: Option<&String>| {
            if let Some(v) = v {
                f.insert(k.to_string(), Value::String(v.clone()));
            }
        };
        put("account", Some(&self.account));
        put("out_trade_no", Some(&self.out_trade_no));
        put("amount", Some(&self.amount));
        put("currency", Some(&self.currency));
        put("pay_type", self.pay_type.as_ref());
        put("syssn", self.syssn.as_ref());
        put("trade_no", self.trade_no.as_ref());
        put("created_at", self.created_at.as_ref());
        put("kind", Some(&self.kind));
        put("expires_at", self.expires_at.as_ref());
        put("expired_time", self.expired_time.as_ref());
        f
    }
}

pub async fn run(settings: &Settings, args: &TrackArgs) -> Result<ExitCode, ExitCode> {
    let now = Utc::now();
    let payment = validate_record(&args.fields(), 1, settings, now).map_err(|errors| {
        for e in errors {
            // The "line" of a single record is meaningless here: name the flag.
            error_line!("payrecon: --{}: {}", e.field.replace('_', "-"), e.reason);
        }
        ExitCode::from(EX_DATAERR)
    })?;
    let ledger = open_ledger(settings).await?;
    let report = ledger.register(std::slice::from_ref(&payment), now).await;
    ledger.close().await;
    let report = report.map_err(|e| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    })?;
    if let Some((_, why)) = report.conflicts.first() {
        error_line!(
            "payrecon: {} {}: {why}",
            payment.account,
            payment.out_trade_no
        );
        return Err(ExitCode::from(EX_DATAERR));
    }
    if let Some((_, id)) = report.inserted.first() {
        println!(
            "tracking payment {id}: {} {} {} (pending)",
            payment.account, payment.out_trade_no, payment.amount
        );
    } else if let Some((_, id)) = report.already_present.first() {
        println!(
            "payment {id} ({} {}) is already tracked",
            payment.account, payment.out_trade_no
        );
    }
    Ok(ExitCode::SUCCESS)
}
