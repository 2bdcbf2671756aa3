//! The JSON envelope around `Data` (docs/PROTOCOLS.md §E1.1, §E1.3).
//!
//! Request: `{"MerchantID", "RqHeader": {"Timestamp": <Unix seconds>}, "Data"}`. The timestamp
//! is true epoch seconds (no +8 h, not milliseconds) and is made fresh for every attempt:
//! ECPay refuses envelopes older than 10 minutes (§E1.2, §E1.2).
//!
//! Response: `{"MerchantID", "RpHeader", "TransCode", "TransMsg", "Data"}`. `TransCode == 1`
//! only says the envelope was accepted; the business answer is inside `Data`. Any other
//! `TransCode` means ECPay could not take our envelope (MerchantID, timestamp, or Data under
//! this HashKey/HashIV), and `Data` is then not decrypted. Since the envelope is built the
//! same way for every order of the account, that is reported as an account error
//! ([`GatewayError::Account`], code `TransCode <n>`): the engine pauses the account and alerts
//! instead of retrying every order into the same wall.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto::{DataKey, decrypt_json};
use super::fields;
use crate::gateway::GatewayError;

pub(crate) const GATEWAY: &str = "ecpay";

/// Unix time in whole seconds, now.
pub fn epoch_seconds_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RqHeader {
    #[serde(rename = "Timestamp")]
    pub timestamp: i64,
}

/// A request body. Field order on the wire is MerchantID, RqHeader, Data (the order has no
/// meaning to ECPay; the PHP SDK happens to sort them differently).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The merchant, or the platform when the account is a platform sub-merchant.
    #[serde(rename = "MerchantID")]
    pub merchant_id: String,
    #[serde(rename = "RqHeader")]
    pub rq_header: RqHeader,
    /// Encrypted with [`super::crypto::encrypt_data`].
    #[serde(rename = "Data")]
    pub data: String,
}

impl RequestEnvelope {
    pub fn new(merchant_id: &str, timestamp: i64, data: String) -> Self {
        Self {
            merchant_id: merchant_id.to_string(),
            rq_header: RqHeader { timestamp },
            data,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// For the sandbox: reads a request body as ECPay would.
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpHeader {
    #[serde(rename = "Timestamp")]
    pub timestamp: i64,
}

/// A response body, as ECPay writes it (and as the sandbox should).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    #[serde(rename = "MerchantID")]
    pub merchant_id: String,
    #[serde(rename = "RpHeader")]
    pub rp_header: RpHeader,
    #[serde(rename = "TransCode")]
    pub trans_code: i64,
    #[serde(rename = "TransMsg")]
    pub trans_msg: String,
    /// Encrypted answer; empty when `TransCode != 1`.
    #[serde(rename = "Data")]
    pub data: String,
}

fn malformed(detail: impl Into<String>) -> GatewayError {
    GatewayError::Malformed {
        gateway: GATEWAY,
        detail: detail.into(),
    }
}

/// Keeps gateway-supplied text short and on one line before it goes into an error.
fn short(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(200).collect()
}

impl ResponseEnvelope {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a response leniently: field names in any case, `TransCode` as a number or a
    /// numeric string, missing `Data`/`TransMsg` as empty.
    pub fn parse(body: &str) -> Result<Self, GatewayError> {
        let value: Value = serde_json::from_str(body)
            .map_err(|e| malformed(format!("response is not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| malformed("response is not a JSON object"))?;
        let trans_code = fields::integer(obj, "TransCode")
            .ok_or_else(|| malformed("response has no numeric TransCode"))?;
        let rp_header = fields::object(obj, "RpHeader")
            .and_then(|h| fields::integer(h, "Timestamp"))
            .map(|timestamp| RpHeader { timestamp })
            .unwrap_or_default();
        Ok(Self {
            merchant_id: fields::text(obj, "MerchantID").unwrap_or_default(),
            rp_header,
            trans_code,
            trans_msg: fields::text(obj, "TransMsg").unwrap_or_default(),
            data: fields::text(obj, "Data").unwrap_or_default(),
        })
    }

    /// Checks `TransCode`, then decrypts `Data` into the JSON answer.
    pub fn open(&self, key: &DataKey) -> Result<Value, GatewayError> {
        if self.trans_code != 1 {
            return Err(GatewayError::Account {
                gateway: GATEWAY,
                code: format!("TransCode {}", self.trans_code),
                detail: format!(
                    "ECPay did not accept the request envelope: {:?}",
                    short(&self.trans_msg)
                ),
            });
        }
        if self.data.trim().is_empty() {
            return Err(malformed("TransCode 1 but Data is empty"));
        }
        decrypt_json(&self.data, key).map_err(|e| malformed(format!("Data: {e}")))
    }
}

/// Parses a response body and opens its `Data`: the whole pure path from bytes to answer.
pub fn open_response(body: &str, key: &DataKey) -> Result<Value, GatewayError> {
    ResponseEnvelope::parse(body)?.open(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ErrorClass;
    use crate::gateway::ecpay::crypto::encrypt_data;

    fn key() -> DataKey {
        DataKey::new(b"pwFHCqoQZGmho4w6", b"EkRm7iFT261dpevs").unwrap()
    }

    #[test]
    fn the_request_body_has_the_three_documented_fields() {
        let body = RequestEnvelope::new("3002607", 1_700_000_000, "abc==".into()).to_json();
        assert_eq!(
            body,
            r#"{"MerchantID":"3002607","RqHeader":{"Timestamp":1700000000},"Data":"abc=="}"#
        );
        assert_eq!(
            RequestEnvelope::parse(&body).unwrap().rq_header.timestamp,
            1_700_000_000
        );
    }

    #[test]
    fn a_non_one_trans_code_is_an_account_error_and_data_is_left_alone() {
        // Data is garbage on purpose: it must not even be looked at.
        let body =
            r#"{"MerchantID":"3002607","TransCode":0,"TransMsg":"Timestamp expired","Data":"%%%"}"#;
        let err = open_response(body, &key()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Account);
        let text = err.to_string();
        assert!(text.contains("TransCode 0"), "{text}");
        assert!(text.contains("Timestamp expired"), "{text}");
    }

    #[test]
    fn trans_code_may_be_a_string_and_names_any_case() {
        let data = encrypt_data(r#"{"RtnMsg":"error_nopay"}"#, &key());
        let body = format!(r#"{{"transcode":"1","transmsg":"Success","data":"{data}"}}"#);
        assert_eq!(
            open_response(&body, &key()).unwrap(),
            serde_json::json!({"RtnMsg": "error_nopay"})
        );
    }

    #[test]
    fn broken_bodies_are_retryable_malformed_errors() {
        for body in [
            "<html>busy</html>",
            "[]",
            r#"{"TransMsg":"no code"}"#,
            r#"{"TransCode":1,"Data":""}"#,
            r#"{"TransCode":1,"Data":"!!not base64!!"}"#,
        ] {
            let err = open_response(body, &key()).unwrap_err();
            assert!(
                matches!(err, GatewayError::Malformed { .. }),
                "{body}: {err:?}"
            );
            assert_eq!(err.class(), ErrorClass::Retryable);
        }
    }

    #[test]
    fn the_timestamp_is_epoch_seconds_not_milliseconds() {
        let now = epoch_seconds_now();
        // 2020-01-01 .. 2100-01-01 in seconds.
        assert!((1_577_836_800..4_102_444_800).contains(&now), "{now}");
    }
}
