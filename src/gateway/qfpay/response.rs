//! Lenient wire types for QFPay answers and the mapping of a query record to a domain
//! [`Observation`] (docs/PROTOCOLS.md §Q2.2–2.5).
//!
//! QFPay sends numbers as strings (`txamt`, `cancel`), `page` sometimes as a string and sometimes
//! as an integer, empty `txcurrcd` in old records, and adds fields over time. Every field here is
//! optional and accepts a string or a number; unknown fields are ignored. Localised texts
//! (`resperr`, `errmsg`) are carried for operators but never parsed.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::codes::{self, CodeClass};
use crate::domain::{
    Currency, Money, Observation, OutTradeNo, Outcome, PayType, ProviderRef, RecordKind,
};
use crate::gateway::GatewayError;

pub(crate) const GATEWAY: &str = "qfpay";

/// A string, or a number rendered as one; `null`/absent → `None`. Booleans, arrays and objects
/// are refused (the answer is not what we think it is).
fn loose<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string or number, found {other}"
        ))),
    }
}

/// The top level of every QFPay answer. `respcd` here is the outcome of the *request*.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    #[serde(default, deserialize_with = "loose")]
    pub respcd: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub resperr: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub respmsg: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub page: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pub page_size: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
}

/// The fields of a query record we interpret; the whole record is kept as evidence.
#[derive(Debug, Default, Deserialize)]
struct WireRecord {
    #[serde(default, deserialize_with = "loose")]
    syssn: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    out_trade_no: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    origssn: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    order_type: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    pay_type: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    txamt: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    txcurrcd: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    respcd: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    cancel: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    sysdtm: Option<String>,
    #[serde(default, deserialize_with = "loose")]
    txdtm: Option<String>,
}

pub(crate) fn malformed(detail: impl Into<String>) -> GatewayError {
    GatewayError::Malformed {
        gateway: GATEWAY,
        detail: detail.into(),
    }
}

/// Parses the raw body into the envelope and the body as a JSON value (for evidence).
/// Anything but a JSON object is [`GatewayError::Malformed`], never a panic.
pub(crate) fn parse_envelope(body: &[u8]) -> Result<(Envelope, Value), GatewayError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("body is not JSON ({e}); {} bytes", body.len())))?;
    if !value.is_object() {
        return Err(malformed("body is not a JSON object"));
    }
    let env = Envelope::deserialize(&value).map_err(|e| malformed(e.to_string()))?;
    Ok((env, value))
}

impl Envelope {
    /// The request's `respcd`; an answer without one is malformed.
    pub(crate) fn code(&self) -> Result<&str, GatewayError> {
        self.respcd
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| malformed("no top-level respcd"))
    }

    /// The `data` records. A missing or `null` `data` is no records; a single object is accepted
    /// as one record; anything else is malformed.
    pub(crate) fn records(&self) -> Result<Vec<&Value>, GatewayError> {
        match &self.data {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                if let Some(bad) = items.iter().find(|v| !v.is_object()) {
                    return Err(malformed(format!("data item is not an object: {bad}")));
                }
                Ok(items.iter().collect())
            }
            Some(obj @ Value::Object(_)) => Ok(vec![obj]),
            Some(other) => Err(malformed(format!(
                "data is neither array nor object: {other}"
            ))),
        }
    }

    /// Short operator text for errors: code and the (localised, unparsed) message.
    fn detail(&self) -> String {
        let text = [self.resperr.as_deref(), self.respmsg.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        text.chars().take(200).collect()
    }

    /// The error for a top-level code that is not an answer: account/config codes (incl. 1108
    /// signature) → [`GatewayError::Account`]; everything else → [`GatewayError::Rejected`].
    pub(crate) fn request_error(&self, code: &str) -> GatewayError {
        match codes::classify(code) {
            Some(CodeClass::AccountError) => GatewayError::Account {
                gateway: GATEWAY,
                code: code.to_string(),
                detail: self.detail(),
            },
            _ => GatewayError::Rejected {
                gateway: GATEWAY,
                code: code.to_string(),
                detail: self.detail(),
            },
        }
    }
}

/// A top-level field of an answer as trimmed text (string or number), `None` when absent/empty.
pub(crate) fn text_field(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => non_empty(Some(s.clone())),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The record's kind: `order_type=refund`, or (older records without `order_type`) an `origssn`.
fn kind_of(rec: &WireRecord) -> (RecordKind, bool) {
    match rec.order_type.as_deref().map(str::trim) {
        Some("refund") => (RecordKind::Refund, true),
        Some("payment") => (RecordKind::Payment, true),
        None | Some("") if non_empty(rec.origssn.clone()).is_some() => (RecordKind::Refund, true),
        None | Some("") => (RecordKind::Payment, true),
        // `close` (QFPay 2018 JP) or anything newer: kept, but not classified.
        Some(_) => (RecordKind::Payment, false),
    }
}

/// Maps one query record to an observation. The record's own `respcd` is the payment status.
///
/// Values that decode but do not parse (an odd currency) are left out; the raw record stays in
/// `evidence`. A record without a `respcd`, or of an unknown `order_type` or `cancel` flag, is
/// unrecognised; if it says `0000` it is [`Outcome::UnrecognisedPaid`], never something a
/// reversal may follow. A record whose interpreted fields cannot be decoded at all (an array
/// or object where a string or number belongs) is unrecognised too, carrying only the ids
/// that are plain text: it is never read as "no record", and a caller that needs its ids and
/// cannot read them treats the whole answer as malformed.
pub fn record_observation(record: &Value) -> Observation {
    let Ok(rec) = WireRecord::deserialize(record) else {
        return undecodable(record);
    };
    let (kind, known_type) = kind_of(&rec);
    let code = non_empty(rec.respcd.clone()).unwrap_or_default();
    let outcome = if code.is_empty() {
        Outcome::Unrecognised
    } else if !known_type {
        unrecognised(&code)
    } else {
        codes::record_outcome(&code, rec.cancel.as_deref(), kind)
    };
    let mut obs = Observation::new(kind, outcome, code);
    obs.provider_ref = non_empty(rec.syssn).and_then(|s| ProviderRef::parse(&s).ok());
    obs.original_ref = non_empty(rec.origssn).and_then(|s| ProviderRef::parse(&s).ok());
    // The gateway's own value is authoritative for matching, so it is not re-validated.
    obs.out_trade_no = non_empty(rec.out_trade_no).map(OutTradeNo::from_trusted);
    obs.pay_type = non_empty(rec.pay_type).and_then(|s| PayType::parse(&s).ok());
    obs.amount_minor = rec.txamt.and_then(|s| Money::parse_minor(&s).ok());
    obs.currency = non_empty(rec.txcurrcd).and_then(|s| Currency::parse(&s).ok());
    obs.gateway_time = non_empty(rec.sysdtm);
    obs.merchant_time = non_empty(rec.txdtm);
    obs.evidence = record.clone();
    obs
}

/// An answer we cannot classify; if its code says `0000`, money moved.
fn unrecognised(code: &str) -> Outcome {
    match codes::classify(code) {
        Some(CodeClass::Success) => Outcome::UnrecognisedPaid,
        _ => Outcome::Unrecognised,
    }
}

/// A record that does not decode: what can be read as plain text, nothing else.
fn undecodable(record: &Value) -> Observation {
    let text = |name: &str| match record.get(name) {
        Some(Value::String(s)) => non_empty(Some(s.clone())),
        _ => None,
    };
    let code = text("respcd").unwrap_or_default();
    let refund = text("origssn").is_some() || text("order_type").as_deref() == Some("refund");
    let kind = if refund {
        RecordKind::Refund
    } else {
        RecordKind::Payment
    };
    let mut obs = Observation::new(kind, unrecognised(&code), code);
    obs.provider_ref = text("syssn").and_then(|s| ProviderRef::parse(&s).ok());
    obs.out_trade_no = text("out_trade_no").map(OutTradeNo::from_trusted);
    obs.evidence = record.clone();
    obs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/PROTOCOLS.md §Q2.5, Docusaurus sample (respcd quoted).
    const SUCCESS: &str = r#"{
      "respmsg": "", "resperr": "请求成功", "respcd": "0000",
      "data": [{
        "cardtp": "5", "cancel": "0", "pay_type": "800101", "order_type": "payment",
        "clisn": "038424", "txdtm": "2019-12-27 10:39:39", "goods_detail": "",
        "out_trade_no": "CHZ7D61JN1ANJF2R2K1I7TXP2JTCEWBL", "syssn": "20191227000200020061752831",
        "sysdtm": "2019-12-27 10:40:24", "paydtm": "2019-12-27 10:42:18", "goods_name": "",
        "txcurrcd": "EUR", "chnlsn2": "", "udid": "qiantai2", "userid": "2605489", "txamt": "10",
        "chnlsn": "2019122722001411461404119764", "respcd": "0000", "goods_info": "", "errmsg": "success"
      }],
      "page": "1", "page_size": "10"
    }"#;

    /// docs/PROTOCOLS.md §Q2.5, the 2018 pending sample: outer 0000, record 1143, integer page fields.
    const PENDING: &str = r#"{"resperr": "请求成功", "page_size": 1, "respmsg": "", "respcd": "0000", "page": 1,
     "data": [{"pay_type": "800201", "sysdtm": "2018-07-24 12:30:57", "paydtm": "", "txcurrcd": "CNY",
               "txdtm": "2018-07-24 13:31:03", "txamt": "1", "chnlsn": "", "out_trade_no": "923500563158",
               "syssn": "20180724000200020076586895", "cancel": "0", "respcd": "1143",
               "errmsg": "订单还未支付，或者正在输入密码中", "order_type": "payment"}]}"#;

    fn only_record(body: &str) -> (Envelope, Observation) {
        let (env, _) = parse_envelope(body.as_bytes()).unwrap();
        let recs = env.records().unwrap();
        assert_eq!(recs.len(), 1);
        let obs = record_observation(recs[0]);
        (env, obs)
    }

    #[test]
    fn the_documented_success_record_becomes_a_succeeded_payment() {
        let (env, obs) = only_record(SUCCESS);
        assert_eq!(env.code().unwrap(), "0000");
        assert_eq!(env.page.as_deref(), Some("1"));
        assert_eq!(obs.kind, RecordKind::Payment);
        assert_eq!(obs.outcome, Outcome::Succeeded);
        assert_eq!(obs.provider_code, "0000");
        assert_eq!(
            obs.provider_ref.as_ref().unwrap().as_str(),
            "20191227000200020061752831"
        );
        assert_eq!(
            obs.out_trade_no.as_ref().unwrap().as_str(),
            "CHZ7D61JN1ANJF2R2K1I7TXP2JTCEWBL"
        );
        assert_eq!(obs.pay_type.as_ref().unwrap().as_str(), "800101");
        assert_eq!(obs.amount_minor, Some(10));
        assert_eq!(obs.currency.unwrap().as_str(), "EUR");
        assert_eq!(obs.gateway_time.as_deref(), Some("2019-12-27 10:40:24"));
        assert_eq!(obs.evidence["chnlsn"], "2019122722001411461404119764");
    }

    #[test]
    fn the_documented_pending_record_is_in_progress_although_the_query_succeeded() {
        let (env, obs) = only_record(PENDING);
        assert_eq!(env.code().unwrap(), "0000");
        assert_eq!(env.page.as_deref(), Some("1"));
        assert_eq!(env.page_size.as_deref(), Some("1"));
        assert_eq!(obs.outcome, Outcome::InProgress);
        assert_eq!(obs.provider_code, "1143");
        assert_eq!(obs.currency.unwrap().as_str(), "CNY");
    }

    #[test]
    fn a_refund_record_links_to_its_payment_through_origssn() {
        let body = r#"{"respcd": "0000", "page": 1, "data": [{
            "syssn": "20200311066100020000977841", "origssn": "20200311066100020000977800",
            "order_type": "refund", "out_trade_no": "R-1", "pay_type": "800101",
            "txamt": 250, "txcurrcd": "HKD", "respcd": "0000", "cancel": "0",
            "sysdtm": "2020-03-11 10:00:00", "a_field_added_in_2030": {"nested": true}}]}"#;
        let (_, obs) = only_record(body);
        assert_eq!(obs.kind, RecordKind::Refund);
        assert_eq!(obs.outcome, Outcome::Succeeded);
        assert_eq!(
            obs.original_ref.as_ref().unwrap().as_str(),
            "20200311066100020000977800"
        );
        // A number where the docs promise a string is accepted.
        assert_eq!(obs.amount_minor, Some(250));
    }

    #[test]
    fn loose_types_are_accepted_and_empty_currency_is_no_currency() {
        let body = r#"{"respcd": 0, "data": [{"syssn": "20170101000100020001234567",
            "txamt": "0010", "txcurrcd": "", "cancel": 3, "respcd": "0000"}]}"#;
        let (env, obs) = only_record(body);
        // A numeric top-level code renders as "0", which is no QFPay code, never success.
        assert_eq!(env.code().unwrap(), "0");
        assert_eq!(obs.currency, None);
        assert_eq!(obs.amount_minor, Some(10));
        assert_eq!(obs.outcome, Outcome::Refunded);
        assert_eq!(
            obs.provider_ref.as_ref().unwrap().as_str(),
            "20170101000100020001234567"
        );
        // Page echoes as integers or strings read the same.
        let (a, _) = parse_envelope(br#"{"respcd": "0000", "page": 2}"#).unwrap();
        let (b, _) = parse_envelope(br#"{"respcd": "0000", "page": "2"}"#).unwrap();
        assert_eq!(a.page, b.page);
    }

    #[test]
    fn records_without_respcd_or_of_unknown_type_are_unrecognised() {
        let read = |v: Value| record_observation(&v);
        let obs = read(serde_json::json!({"syssn": "1", "txstatus": "SUCCESS"}));
        assert_eq!(obs.outcome, Outcome::Unrecognised);
        let obs = read(serde_json::json!({"syssn": "1", "respcd": "1143", "order_type": "close"}));
        assert_eq!(obs.outcome, Outcome::Unrecognised);
        // A 0000 of an unknown type or flag: the money moved, and we do not know how.
        for odd in [
            serde_json::json!({"syssn": "1", "respcd": "0000", "order_type": "close"}),
            serde_json::json!({"syssn": "1", "respcd": "0000", "order_type": "PAYMENT"}),
            serde_json::json!({"syssn": "1", "respcd": "0000", "cancel": "6"}),
        ] {
            assert_eq!(
                read(odd.clone()).outcome,
                Outcome::UnrecognisedPaid,
                "{odd}"
            );
        }
        // Legacy records without order_type but with origssn are refunds.
        let obs = read(serde_json::json!({"origssn": "9", "respcd": "0000"}));
        assert_eq!(obs.kind, RecordKind::Refund);
    }

    #[test]
    fn a_record_whose_fields_cannot_be_decoded_is_unrecognised_never_absent() {
        let read = |v: Value| record_observation(&v);
        // Its ids are read when they are plain text; a 0000 stays "money moved".
        let o = read(serde_json::json!({"out_trade_no": "A1", "respcd": "0000", "cancel": [0]}));
        assert_eq!(o.outcome, Outcome::UnrecognisedPaid);
        assert_eq!(o.out_trade_no.as_ref().unwrap().as_str(), "A1");
        let o = read(
            serde_json::json!({"syssn": "20191227000200020061752831", "respcd": "1143", "txamt": {}}),
        );
        assert_eq!(o.outcome, Outcome::Unrecognised);
        assert_eq!(
            o.provider_ref.as_ref().unwrap().as_str(),
            "20191227000200020061752831"
        );
        let o = read(
            serde_json::json!({"syssn": ["20191227000200020061752831"], "respcd": {"v": "0000"}}),
        );
        assert_eq!(o.outcome, Outcome::Unrecognised);
        assert!(
            o.provider_ref.is_none(),
            "an id that is not plain text is not read"
        );
    }
}
