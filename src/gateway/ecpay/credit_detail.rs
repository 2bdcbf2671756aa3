//! `POST /1.0.0/CreditDetail/QueryTrade`: one credit-card trade by `MerchantTradeNo`, seed 003
//! and docs/PROTOCOLS.md §E3.1. Pure: builds the `Data` JSON and turns the decrypted answer into a domain
//! [`Observation`] or a [`GatewayError`].
//!
//! `TradeNo` is not sent for the orders payrecon tracks: seed 003 reserves it for recurring
//! (定期定額) authorizations after the first ("可查詢定期定額第一筆之後的授權資料內容"), and its
//! own example of a one-off query carries only `MerchantID` and `MerchantTradeNo`. A `TradeNo`
//! payrecon knows is still kept as the observation's `provider_ref`.
//!
//! `RtnMsg` first:
//! - `""` with a non-empty `RtnValue`: an answer; the whole `RtnValue` decides
//!   ([`super::card_trade`], table in `docs/PROTOCOLS.md`).
//! - `error_nopay`: no authorization for this trade (yet) → [`Outcome::InProgress`] with
//!   `provider_code = "error_nopay"`; ECPay says to ask again in 10 minutes (the account's
//!   `nopay_interval`). Never failed this early (§E6); waited out by the account's
//!   `nopay_*` patience.
//! - `error_Stop`: no such merchant, or the merchant has expired → [`GatewayError::Account`].
//! - `error` (an error, or the query failed validation) and anything else → a retryable
//!   [`GatewayError::Malformed`]: no evidence about the payment.

use serde::Serialize;
use serde_json::Value;

use super::card_trade::CardTrade;
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
    /// Empty for an ordinary merchant (docs/PROTOCOLS.md §E1.1).
    #[serde(rename = "PlatformID")]
    platform_id: &'a str,
    #[serde(rename = "MerchantID")]
    merchant_id: &'a str,
    #[serde(rename = "MerchantTradeNo")]
    merchant_trade_no: &'a str,
    #[serde(rename = "TradeNo", skip_serializing_if = "Option::is_none")]
    trade_no: Option<&'a str>,
}

/// The plaintext `Data` JSON of a query (vector C2 in docs/PROTOCOLS.md §E2 has this exact shape).
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

fn malformed(detail: impl Into<String>) -> GatewayError {
    GatewayError::Malformed {
        gateway: GATEWAY,
        detail: detail.into(),
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
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
    let verdict = CardTrade::read(obj, rtn).outcome();
    let mut o = base(verdict.outcome, status_text);
    o.amount_minor = verdict.amount;
    o.currency = Currency::parse("TWD").ok();
    o.gateway_time = fields::text(rtn, "AuthTime").filter(|t| !t.is_empty());
    Ok(o)
}

#[cfg(test)]
#[path = "credit_detail_tests.rs"]
mod tests;
