//! What QFPay refuses before it touches a merchant's book, as the protocol reference documents
//! it (seed 001, docs/PROTOCOLS.md §Q1.2, §Q4.1, §Q4.3, §Q6, §Q7). Pure; each refusal names its rule so the
//! sandbox's stats (and docs/SANDBOX.md) can count and cite it. Codes: `1103` malformed
//! request, `1104` bad request parameter, `1266` amount wrong (docs/PROTOCOLS.md §Q3.2).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, header};

pub(crate) use super::qfpay_book::BAD_PARAMETER;
use crate::domain::{Currency, PayMode, PayType, Provider};
use crate::gateway::qfpay::{
    EXPIRY_MINUTES, EXPIRY_PAY_TYPES, GOODS_NAME_MAX_BYTES, GOODS_NAME_MAX_CHARS,
};

/// `1103`: malformed request.
pub const MALFORMED_REQUEST: &str = "1103";
/// `1266`: amount wrong (a reversal or close whose `txamt` is not the original's).
pub const AMOUNT_WRONG: &str = "1266";

/// A refusal: QFPay's code, its message, and the rule's name in the sandbox stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: &'static str,
    pub message: &'static str,
    pub rule: &'static str,
}

const fn refuse(code: &'static str, message: &'static str, rule: &'static str) -> Refusal {
    Refusal {
        code,
        message,
        rule,
    }
}

/// docs/PROTOCOLS.md §Q1.2: request bodies are `application/x-www-form-urlencoded` (a GET carries its
/// parameters in the query string and has no body to type).
pub(crate) fn content_type(method: &Method, headers: &HeaderMap) -> Option<Refusal> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    (method != Method::GET && !form).then_some(refuse(
        MALFORMED_REQUEST,
        "Content-Type must be application/x-www-form-urlencoded",
        "qfpay_content_type",
    ))
}

fn value<'a>(params: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// `/trade/v1/payment` parameters: a documented pay type (docs/PROTOCOLS.md §Q4.1); CPM types carry the
/// customer's `auth_code` (seed 001 sample: "#CPM only"); a supported currency (§Q7);
/// `expired_time` 5–120 minutes and only for the pay types that take it (seed 001, §Q6);
/// `goods_name` at most 20 characters, String(64) (seed 001).
pub(crate) fn payment(params: &BTreeMap<String, String>) -> Option<Refusal> {
    let pay_type = value(params, "pay_type").and_then(|p| PayType::parse(p).ok());
    let Some(pay_type) = pay_type.filter(PayType::is_documented) else {
        return Some(refuse(BAD_PARAMETER, "unknown pay_type", "qfpay_pay_type"));
    };
    if pay_type.mode() == PayMode::Cpm && value(params, "auth_code").is_none() {
        return Some(refuse(
            BAD_PARAMETER,
            "auth_code is required for a customer-presented code",
            "qfpay_auth_code",
        ));
    }
    let currency = value(params, "txcurrcd")
        .and_then(|c| Currency::parse(c).ok())
        .and_then(|c| c.check_supported(Provider::Qfpay).ok());
    if currency.is_none() {
        return Some(refuse(
            BAD_PARAMETER,
            "unsupported txcurrcd",
            "qfpay_currency",
        ));
    }
    if let Some(minutes) = params.get("expired_time") {
        let ok = minutes
            .trim()
            .parse::<u64>()
            .is_ok_and(|m| EXPIRY_MINUTES.contains(&m))
            && EXPIRY_PAY_TYPES.contains(&pay_type.as_str());
        if !ok {
            return Some(refuse(
                BAD_PARAMETER,
                "expired_time must be 5 to 120 minutes, for a pay type that accepts it",
                "qfpay_expired_time",
            ));
        }
    }
    if let Some(name) = params.get("goods_name")
        && (name.chars().count() > GOODS_NAME_MAX_CHARS || name.len() > GOODS_NAME_MAX_BYTES)
    {
        return Some(refuse(
            BAD_PARAMETER,
            "goods_name is longer than 20 characters",
            "qfpay_goods_name",
        ));
    }
    None
}

/// `/trade/v1/reversal` and `/trade/v1/close`: `txamt` is "the amount of the original
/// transaction" (docs/PROTOCOLS.md §Q4.3).
pub(crate) fn cancel_amount(params: &BTreeMap<String, String>, original: i64) -> Option<Refusal> {
    let sent = value(params, "txamt").and_then(|t| t.parse::<i64>().ok());
    (sent != Some(original)).then_some(refuse(
        AMOUNT_WRONG,
        "txamt is not the original transaction's amount",
        "qfpay_cancel_txamt",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rule(pairs: &[(&str, &str)]) -> Option<&'static str> {
        let mut all = params(&[("pay_type", "801512"), ("txcurrcd", "HKD")]);
        all.extend(params(pairs));
        payment(&all).map(|r| r.rule)
    }

    #[test]
    fn each_documented_payment_rule_refuses_with_its_name() {
        assert_eq!(rule(&[]), None);
        assert_eq!(rule(&[("pay_type", "999999")]), Some("qfpay_pay_type"));
        assert_eq!(rule(&[("pay_type", "800108")]), Some("qfpay_auth_code"));
        assert_eq!(
            rule(&[("pay_type", "800108"), ("auth_code", "28385470")]),
            None
        );
        assert_eq!(rule(&[("txcurrcd", "XXX")]), Some("qfpay_currency"));
        assert_eq!(rule(&[("expired_time", "999")]), Some("qfpay_expired_time"));
        assert_eq!(rule(&[("expired_time", "30")]), None);
        assert_eq!(
            rule(&[
                ("pay_type", "800108"),
                ("auth_code", "1"),
                ("expired_time", "30")
            ]),
            Some("qfpay_expired_time")
        );
        assert_eq!(
            rule(&[("goods_name", &"x".repeat(300))]),
            Some("qfpay_goods_name")
        );
        assert_eq!(rule(&[("goods_name", "二十個字以內的名字")]), None);
    }

    #[test]
    fn a_cancel_must_name_the_original_amount_and_bodies_must_be_forms() {
        assert_eq!(cancel_amount(&params(&[("txamt", "1000")]), 1000), None);
        assert_eq!(
            cancel_amount(&params(&[("txamt", "999")]), 1000).map(|r| r.code),
            Some(AMOUNT_WRONG)
        );
        let mut h = HeaderMap::new();
        assert!(content_type(&Method::POST, &h).is_some());
        assert!(content_type(&Method::GET, &h).is_none());
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert!(content_type(&Method::POST, &h).is_none());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(content_type(&Method::POST, &h).is_some());
    }
}
