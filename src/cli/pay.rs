//! `payrecon pay`: create a QFPay payment (seed 001) — ledger row first, then the call — and
//! print the link the customer pays at.

use std::process::ExitCode;

use chrono::Utc;
use clap::Args;

use super::{EX_DATAERR, open_ledger};
use crate::config::{Account, Settings};
use crate::domain::{Currency, Money, OutTradeNo, PayType, Provider};
use crate::gateway::qfpay::PaymentOutcome;
use crate::gateway::transport::http_client;
use crate::intake::{PayError, PayOrder, create_qfpay_payment};

#[derive(Debug, Args)]
pub struct PayArgs {
    /// A configured QFPay account.
    #[arg(long)]
    pub account: String,
    /// Amount in minor units (1000 = HK$10.00).
    #[arg(long)]
    pub amount: i64,
    #[arg(long)]
    pub currency: String,
    /// QFPay pay type of an order paid by QR code or link, e.g. 801101 (Alipay web, overseas)
    /// or 801512 (Alipay WAP, HK). CPM types (…08) need a till and are refused.
    #[arg(long)]
    pub pay_type: String,
    /// Your order number; generated when omitted.
    #[arg(long)]
    pub out_trade_no: Option<String>,
    /// Order expiry (QFPay expired_time, 5m–120m; only pay types that accept it).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<std::time::Duration>,
    /// Product name shown to the customer (at most 20 characters).
    #[arg(long)]
    pub goods_name: Option<String>,
}

fn bad(field: &str, e: impl std::fmt::Display) -> ExitCode {
    error_line!("payrecon: --{field}: {e}");
    ExitCode::from(EX_DATAERR)
}

pub async fn run(settings: &Settings, args: &PayArgs) -> Result<ExitCode, ExitCode> {
    let Some(Account::Qfpay(account)) = settings.account(&args.account) else {
        return Err(bad(
            "account",
            format!("{:?} is not a configured QFPay account", args.account),
        ));
    };
    let now = Utc::now();
    let out_trade_no = args.out_trade_no.clone().unwrap_or_else(|| {
        format!(
            "PR{}{:08x}",
            now.format("%Y%m%d%H%M%S"),
            rand::random::<u32>()
        )
    });
    let out_trade_no =
        OutTradeNo::parse(&out_trade_no, Provider::Qfpay).map_err(|e| bad("out-trade-no", e))?;
    let currency = Currency::parse(&args.currency).map_err(|e| bad("currency", e))?;
    let amount = Money::new(args.amount, currency).map_err(|e| bad("amount", e))?;
    let pay_type = PayType::parse(&args.pay_type).map_err(|e| bad("pay-type", e))?;
    let client =
        account.client(http_client(account.connect_timeout).map_err(|e| bad("account", e))?);
    let ledger = open_ledger(settings).await?;
    let order = PayOrder {
        out_trade_no,
        amount,
        pay_type,
        expires_in: args.expires,
        goods_name: args.goods_name.clone(),
    };
    // Timed after the ledger is open (opening may wait out another writer's lock): the row's
    // hold must cover the call from its real start.
    let result = create_qfpay_payment(&ledger, account, &client, order, Utc::now()).await;
    ledger.close().await;
    match result {
        Ok(r) => {
            let syssn = r
                .answer
                .syssn
                .as_ref()
                .map_or("-".to_string(), ToString::to_string);
            match &r.answer.outcome {
                PaymentOutcome::Failed { code } => {
                    error_line!(
                        "payrecon: QFPay refused the payment with {code}; recorded as failed (payment {})",
                        r.id
                    );
                    return Err(ExitCode::FAILURE);
                }
                outcome => {
                    let what = match outcome {
                        PaymentOutcome::InProgress => "QFPay is still processing it",
                        _ => "QFPay accepted the order",
                    };
                    println!(
                        "payment {} created (syssn {syssn}, {what}); payrecon will confirm it by query",
                        r.id
                    );
                }
            }
            match &r.answer.pay_url {
                Some(url) => println!("pay_url: {url}"),
                None => println!("pay_url: (none returned)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(PayError::Input(e)) => {
            error_line!("payrecon: {e}");
            Err(ExitCode::from(EX_DATAERR))
        }
        Err(e @ PayError::Duplicate { .. }) => Err(bad("out-trade-no", e)),
        Err(e @ PayError::PayType { .. }) => Err(bad("pay-type", e)),
        Err(e) => {
            error_line!("payrecon: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}
