//! `POST /1.0.0/CreditDetail/QueryTrade`: one credit-card trade by `MerchantTradeNo` (and
//! `TradeNo` when known), seed 003 and ecpay.md §3.1. Pure: builds the `Data` JSON and turns
//! the decrypted answer into a domain [`Observation`] or a [`GatewayError`].
//!
//! `RtnMsg` first:
//! - `""` with a non-empty `RtnValue`: an answer; `RtnValue.Status` decides (below).
//! - `error_nopay`: the bank has not answered yet → [`Outcome::InProgress`] with
//!   `provider_code = "error_nopay"`; ECPay says to ask again in 10 minutes (the account's
//!   `nopay_interval`). Never failed or unpaid this early (§7 trap 6).
//! - `error_Stop`: no such merchant, or the merchant has expired → [`GatewayError::Account`].
//! - `error` (an error, or the query failed validation) and anything else → a retryable
//!   [`GatewayError::Malformed`]: no evidence about the payment.
//!
//! `Status`, in Chinese (official doc) or English (seed 003), any case:
//!
//! | Status | outcome |
//! |---|---|
//! | 已授權 Authorized, 要關帳 To be captured, 已關帳 Captured | Succeeded |
//! | 未授權 Unauthorized | Failed |
//! | 已取消 Canceled/Cancelled, 操作取消 Operation canceled | Cancelled, unless the latest `CloseData` row says the money is (being) captured: that contradiction is Unrecognised |
//! | anything else | Unrecognised (never Failed) |

use serde::Serialize;
use serde_json::{Map, Value};

use super::envelope::GATEWAY;
use super::fields;
use crate::domain::{Currency, Observation, OutTradeNo, Outcome, ProviderRef, RecordKind};
use crate::gateway::GatewayError;

/// Path below the account's `base_url`.
pub const CREDIT_DETAIL_PATH: &str = "/1.0.0/CreditDetail/QueryTrade";

/// `provider_code` of an `error_nopay` answer.
pub const NOPAY: &str = "error_nopay";

#[derive(Serialize)]
struct CreditDetailData<'a> {
    /// Empty for an ordinary merchant (ecpay.md §1.1).
    #[serde(rename = "PlatformID")]
    platform_id: &'a str,
    #[serde(rename = "MerchantID")]
    merchant_id: &'a str,
    #[serde(rename = "MerchantTradeNo")]
    merchant_trade_no: &'a str,
    #[serde(rename = "TradeNo", skip_serializing_if = "Option::is_none")]
    trade_no: Option<&'a str>,
}

/// The plaintext `Data` JSON of a query (vector C2 in ecpay.md §2 has this exact shape).
pub fn credit_detail_data(
    platform_id: Option<&str>,
    merchant_id: &str,
    out_trade_no: &OutTradeNo,
    trade_no: Option<&ProviderRef>,
) -> String {
    serde_json::to_string(&CreditDetailData {
        platform_id: platform_id.unwrap_or(""),
        merchant_id,
        merchant_trade_no: out_trade_no.as_str(),
        trade_no: trade_no.map(ProviderRef::as_str),
    })
    .unwrap_or_default()
}

/// The documented `Status` values, Chinese and English alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    Authorized,
    ToBeCaptured,
    Captured,
    Unauthorized,
    Cancelled,
    OperationCancelled,
    Unknown,
}

impl CardStatus {
    pub fn parse(raw: &str) -> Self {
        let words: Vec<String> = raw
            .split(|c: char| c.is_whitespace() || c == '_')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase().replace("cancelled", "canceled"))
            .collect();
        match words.join(" ").as_str() {
            "已授權" | "authorized" | "authorised" => Self::Authorized,
            "要關帳" | "to be captured" => Self::ToBeCaptured,
            "已關帳" | "captured" => Self::Captured,
            "未授權" | "unauthorized" | "unauthorised" => Self::Unauthorized,
            "已取消" | "canceled" => Self::Cancelled,
            "操作取消" | "operation canceled" => Self::OperationCancelled,
            _ => Self::Unknown,
        }
    }

    fn is_capture(self) -> bool {
        matches!(self, Self::ToBeCaptured | Self::Captured)
    }
}

fn malformed(detail: impl Into<String>) -> GatewayError {
    GatewayError::Malformed {
        gateway: GATEWAY,
        detail: detail.into(),
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

/// `CloseData` sits in `RtnValue` in the official table and beside it in the seed's example.
fn close_rows<'a>(data: &'a Map<String, Value>, rtn: &'a Map<String, Value>) -> &'a [Value] {
    fields::field(rtn, "CloseData")
        .or_else(|| fields::field(data, "CloseData"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Status of the most recent close row: latest `DateTime` (ECPay's `yyyy/MM/dd HH:mm:ss`
/// sorts as text), ties and missing times broken by position.
fn latest_close_status(rows: &[Value]) -> Option<CardStatus> {
    rows.iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let row = row.as_object()?;
            let when = fields::text(row, "DateTime").unwrap_or_default();
            let status = fields::text(row, "Status")?;
            Some(((when, i), CardStatus::parse(&status)))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, s)| s)
}

fn outcome_of(status: CardStatus, close: Option<CardStatus>) -> Outcome {
    match status {
        CardStatus::Authorized | CardStatus::ToBeCaptured | CardStatus::Captured => {
            Outcome::Succeeded
        }
        CardStatus::Unauthorized => Outcome::Failed,
        CardStatus::Cancelled | CardStatus::OperationCancelled => {
            if close.is_some_and(CardStatus::is_capture) {
                Outcome::Unrecognised
            } else {
                Outcome::Cancelled
            }
        }
        CardStatus::Unknown => Outcome::Unrecognised,
    }
}

/// Turns a decrypted CreditDetail answer into an observation of the queried order.
/// `evidence` is the decrypted `Data` as received (it holds no secret).
pub fn classify_credit_detail(
    data: &Value,
    out_trade_no: &OutTradeNo,
    trade_no: Option<&ProviderRef>,
) -> Result<Observation, GatewayError> {
    let obj = data
        .as_object()
        .ok_or_else(|| malformed("CreditDetail Data is not a JSON object"))?;
    let rtn_msg = fields::text(obj, "RtnMsg").unwrap_or_default();
    let base = |outcome: Outcome, code: String| {
        let mut o = Observation::new(RecordKind::Payment, outcome, code);
        o.out_trade_no = Some(out_trade_no.clone());
        o.provider_ref = trade_no.cloned();
        o.evidence = data.clone();
        o
    };
    match rtn_msg.trim().to_ascii_lowercase().as_str() {
        "" => {}
        "error_nopay" => return Ok(base(Outcome::InProgress, NOPAY.to_string())),
        "error_stop" => {
            return Err(GatewayError::Account {
                gateway: GATEWAY,
                code: "error_Stop".to_string(),
                detail: "ECPay knows no such merchant, or the merchant has expired".to_string(),
            });
        }
        "error" => {
            return Err(malformed(
                "RtnMsg \"error\": ECPay reports an error or that the query failed validation",
            ));
        }
        _ => {
            return Err(malformed(format!(
                "unexpected RtnMsg {:?}",
                short(&rtn_msg)
            )));
        }
    }
    let rtn = fields::object(obj, "RtnValue")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| malformed("RtnMsg is empty but RtnValue is missing or empty"))?;
    let status_text = fields::text(rtn, "Status").unwrap_or_default();
    let status = CardStatus::parse(&status_text);
    let outcome = outcome_of(status, latest_close_status(close_rows(obj, rtn)));
    let mut o = base(outcome, status_text);
    o.amount_minor = fields::integer(rtn, "Amount");
    o.currency = Currency::parse("TWD").ok();
    o.gateway_time = fields::text(rtn, "AuthTime").filter(|t| !t.is_empty());
    Ok(o)
}

#[cfg(test)]
#[path = "credit_detail_tests.rs"]
mod tests;
