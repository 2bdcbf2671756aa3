//! `POST /1.0.0/Cashier/QueryTrade`: order-level paid/unpaid (docs/PROTOCOLS.md §E3.2, §E3.3), for
//! merchants whose orders are not credit-card detail records. Pure, like `credit_detail`.
//!
//! `RtnCode` (integer, 1 = success) first: any other value is a refused query
//! ([`GatewayError::Rejected`], no evidence). Then `OrderInfo.TradeStatus`, a *string*:
//!
//! | TradeStatus | outcome |
//! |---|---|
//! | `"0"` unpaid: the bank may not have answered yet, ask again in 10 minutes | InProgress |
//! | `"1"` paid | Succeeded |
//! | `"10200095"` no payment method chosen, the trade failed | Failed |
//! | anything else | Unrecognised |

use serde::Serialize;
use serde_json::{Map, Value};

use super::envelope::GATEWAY;
use super::fields;
use crate::domain::{Currency, Observation, OutTradeNo, Outcome, ProviderRef, RecordKind};
use crate::gateway::GatewayError;

/// Path below the account's `base_url`.
pub const CASHIER_PATH: &str = "/1.0.0/Cashier/QueryTrade";

#[derive(Serialize)]
struct CashierData<'a> {
    /// Sent only by platform sub-merchants (docs/PROTOCOLS.md §E1.1).
    #[serde(rename = "PlatformID", skip_serializing_if = "Option::is_none")]
    platform_id: Option<&'a str>,
    #[serde(rename = "MerchantID")]
    merchant_id: &'a str,
    #[serde(rename = "MerchantTradeNo")]
    merchant_trade_no: &'a str,
}

/// The plaintext `Data` JSON of a query (vector C1 in docs/PROTOCOLS.md §E2 has this exact shape).
pub fn cashier_data(
    platform_id: Option<&str>,
    merchant_id: &str,
    out_trade_no: &OutTradeNo,
) -> String {
    serde_json::to_string(&CashierData {
        platform_id,
        merchant_id,
        merchant_trade_no: out_trade_no.as_str(),
    })
    .unwrap_or_default()
}

fn malformed(detail: impl Into<String>) -> GatewayError {
    GatewayError::Malformed {
        gateway: GATEWAY,
        detail: detail.into(),
    }
}

fn outcome_of(trade_status: &str) -> Outcome {
    match trade_status {
        "0" => Outcome::InProgress,
        "1" => Outcome::Succeeded,
        "10200095" => Outcome::Failed,
        _ => Outcome::Unrecognised,
    }
}

/// Turns a decrypted Cashier answer into an observation of the queried order.
pub fn classify_cashier(
    data: &Value,
    out_trade_no: &OutTradeNo,
) -> Result<Observation, GatewayError> {
    let obj = data
        .as_object()
        .ok_or_else(|| malformed("Cashier Data is not a JSON object"))?;
    if let Some(code) = fields::integer(obj, "RtnCode").filter(|c| *c != 1) {
        let msg: String = fields::text(obj, "RtnMsg")
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(GatewayError::Rejected {
            gateway: GATEWAY,
            code: format!("RtnCode {code}"),
            detail: msg,
        });
    }
    // OrderInfo per the ECPG shape; a flat answer is read the same way.
    let order: &Map<String, Value> = fields::object(obj, "OrderInfo").unwrap_or(obj);
    let status = fields::text(order, "TradeStatus")
        .map(|s| s.trim().to_string())
        .ok_or_else(|| malformed("Cashier answer has no TradeStatus"))?;
    if let Some(echoed) = fields::text(order, "MerchantTradeNo").filter(|s| !s.is_empty())
        && echoed != out_trade_no.as_str()
    {
        return Err(malformed("Cashier answer is about another MerchantTradeNo"));
    }
    let mut o = Observation::new(RecordKind::Payment, outcome_of(&status), status);
    o.out_trade_no = Some(out_trade_no.clone());
    o.provider_ref = fields::text(order, "TradeNo").and_then(|t| ProviderRef::parse(&t).ok());
    o.amount_minor = fields::integer(order, "TradeAmt");
    o.currency = Currency::parse("TWD").ok();
    o.gateway_time = fields::text(order, "PaymentDate")
        .filter(|t| !t.trim().is_empty())
        .or_else(|| fields::text(order, "TradeDate").filter(|t| !t.trim().is_empty()));
    o.evidence = data.clone();
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ErrorClass;
    use serde_json::json;

    fn order() -> OutTradeNo {
        OutTradeNo::parse("20180914001", crate::domain::Provider::Ecpay).unwrap()
    }

    fn answer(trade_status: Value) -> Value {
        json!({"RtnCode": 1, "RtnMsg": "Success", "MerchantID": "3002607", "OrderInfo": {
            "MerchantTradeNo": "20180914001", "TradeNo": "2309011234567890", "TradeAmt": 500,
            "TradeDate": "2023/09/01 12:00:00", "PaymentType": "Credit", "PaymentDate": "",
            "TradeStatus": trade_status
        }})
    }

    #[test]
    fn the_query_data_matches_vector_c1_exactly() {
        assert_eq!(
            cashier_data(None, "3002607", &order()),
            r#"{"MerchantID":"3002607","MerchantTradeNo":"20180914001"}"#
        );
    }

    #[test]
    fn trade_status_strings_map_as_documented() {
        for (status, expected) in [
            ("0", Outcome::InProgress),
            ("1", Outcome::Succeeded),
            ("10200095", Outcome::Failed),
            ("10200163", Outcome::Unrecognised),
            ("", Outcome::Unrecognised),
        ] {
            let o = classify_cashier(&answer(json!(status)), &order()).unwrap();
            assert_eq!(o.outcome, expected, "{status}");
            assert_eq!(o.provider_code, status);
        }
    }

    #[test]
    fn a_numeric_trade_status_is_read_like_its_string() {
        let o = classify_cashier(&answer(json!(1)), &order()).unwrap();
        assert_eq!(
            (o.outcome, o.provider_code.as_str()),
            (Outcome::Succeeded, "1")
        );
    }

    #[test]
    fn a_paid_order_carries_trade_no_amount_and_trade_date() {
        let data = answer(json!("1"));
        let o = classify_cashier(&data, &order()).unwrap();
        assert_eq!(o.provider_ref.unwrap().as_str(), "2309011234567890");
        assert_eq!(o.amount_minor, Some(500));
        assert_eq!(o.currency.unwrap().as_str(), "TWD");
        // PaymentDate is empty, so the trade date stands in.
        assert_eq!(o.gateway_time.as_deref(), Some("2023/09/01 12:00:00"));
        assert_eq!(o.evidence, data);
    }

    #[test]
    fn a_refused_query_is_a_request_error_without_evidence() {
        let err =
            classify_cashier(&json!({"RtnCode": 10200047, "RtnMsg": "bad"}), &order()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Request);
        assert!(err.to_string().contains("RtnCode 10200047"));
    }

    #[test]
    fn an_answer_about_another_order_or_without_status_is_retryable() {
        let mut other = answer(json!("1"));
        other["OrderInfo"]["MerchantTradeNo"] = json!("SOMEONEELSE");
        let no_status = json!({"RtnCode": 1, "OrderInfo": {}});
        for data in [other, no_status, json!(null)] {
            let err = classify_cashier(&data, &order()).unwrap_err();
            assert_eq!(err.class(), ErrorClass::Retryable, "{data}");
        }
    }
}
