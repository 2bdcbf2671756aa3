//! Payment creation (`POST /trade/v1/payment`, seed 001): a request that can only be built from
//! valid input, its form, and the reading of the answer. Pure; the client performs the call.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::Value;

use super::codes::{self, CodeClass};
use super::request::{Form, TIME_FORMAT};
use super::response::{Envelope, text_field};
use crate::domain::{
    Currency, Money, Observation, OutTradeNo, Outcome, PayType, Provider, ProviderRef, RecordKind,
};
use crate::gateway::GatewayError;

/// `txamt` is Int(11) (seed 001).
pub const MAX_AMOUNT_MINOR: i64 = 99_999_999_999;
/// `expired_time` is whole minutes, 5 to 120, default 30 (docs/PROTOCOLS.md §Q6; seed 001).
pub const EXPIRY_MINUTES: std::ops::RangeInclusive<u64> = 5..=120;
/// Pay types documented to accept `expired_time` (docs/PROTOCOLS.md §Q6, QFPay 2026 request-format / QFPay 2024 / QFPay 2024).
pub const EXPIRY_PAY_TYPES: &[&str] = &[
    "800201", "800101", "801512", "801501", "801107", "801101", "801010", "801510",
];
/// `goods_name`: at most 20 characters, String(64) (seed 001).
pub const GOODS_NAME_MAX_CHARS: usize = 20;
pub const GOODS_NAME_MAX_BYTES: usize = 64;
/// `udid`: String(40).
pub const UDID_MAX: usize = 40;
/// `return_url`: String(512), and at most 200 characters for WAP pay types (seed 001).
pub const RETURN_URL_MAX: usize = 512;
pub const RETURN_URL_MAX_WAP: usize = 200;
const WAP_PAY_TYPES: &[&str] = &["801107", "801512"];

/// Input that QFPay's documented limits would refuse. Messages name the option and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentInputError {
    #[error("amount: {0} minor units is above QFPay's maximum of {MAX_AMOUNT_MINOR} (Int(11))")]
    AmountTooLarge(i64),
    #[error("currency: {0}")]
    Currency(String),
    #[error("expires: must be whole minutes between 5 and 120 (QFPay expired_time), got {0:?}")]
    Expiry(Duration),
    #[error("expires: pay type {0} does not accept an expiry (only {list})", list = EXPIRY_PAY_TYPES.join(", "))]
    ExpiryNotSupported(String),
    #[error(
        "goods-name: must be 1 to {GOODS_NAME_MAX_CHARS} characters and {GOODS_NAME_MAX_BYTES} UTF-8 bytes without control characters"
    )]
    GoodsName,
    #[error("udid: must be 1 to {UDID_MAX} printable ASCII characters")]
    Udid,
    #[error("return-url: {0}")]
    ReturnUrl(String),
}

/// A validated `/trade/v1/payment` request. Fields are private so that an invalid request cannot
/// be built; [`PaymentRequest::new`] and the setters check QFPay's documented limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    out_trade_no: OutTradeNo,
    amount: Money,
    pay_type: PayType,
    txdtm: NaiveDateTime,
    expired_minutes: Option<u64>,
    goods_name: Option<String>,
    udid: Option<String>,
    return_url: Option<String>,
}

impl PaymentRequest {
    /// `txdtm` is the request time in provider-local time (the account's timezone).
    pub fn new(
        out_trade_no: OutTradeNo,
        amount: Money,
        pay_type: PayType,
        txdtm: NaiveDateTime,
    ) -> Result<Self, PaymentInputError> {
        if amount.minor > MAX_AMOUNT_MINOR {
            return Err(PaymentInputError::AmountTooLarge(amount.minor));
        }
        amount
            .currency
            .check_supported(Provider::Qfpay)
            .map_err(|e| PaymentInputError::Currency(e.to_string()))?;
        Ok(Self {
            out_trade_no,
            amount,
            pay_type,
            txdtm,
            expired_minutes: None,
            goods_name: None,
            udid: None,
            return_url: None,
        })
    }

    /// Sets `expired_time`: whole minutes, 5–120, only for the pay types that accept it.
    pub fn expires_in(mut self, d: Duration) -> Result<Self, PaymentInputError> {
        let minutes = d.as_secs() / 60;
        if d.subsec_nanos() != 0
            || !d.as_secs().is_multiple_of(60)
            || !EXPIRY_MINUTES.contains(&minutes)
        {
            return Err(PaymentInputError::Expiry(d));
        }
        if !EXPIRY_PAY_TYPES.contains(&self.pay_type.as_str()) {
            return Err(PaymentInputError::ExpiryNotSupported(
                self.pay_type.to_string(),
            ));
        }
        self.expired_minutes = Some(minutes);
        Ok(self)
    }

    pub fn goods_name(mut self, name: &str) -> Result<Self, PaymentInputError> {
        let ok = !name.trim().is_empty()
            && name.chars().count() <= GOODS_NAME_MAX_CHARS
            && name.len() <= GOODS_NAME_MAX_BYTES
            && !name.chars().any(char::is_control);
        if !ok {
            return Err(PaymentInputError::GoodsName);
        }
        self.goods_name = Some(name.to_string());
        Ok(self)
    }

    pub fn udid(mut self, udid: &str) -> Result<Self, PaymentInputError> {
        if udid.is_empty() || udid.len() > UDID_MAX || !udid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PaymentInputError::Udid);
        }
        self.udid = Some(udid.to_string());
        Ok(self)
    }

    pub fn return_url(mut self, u: &str) -> Result<Self, PaymentInputError> {
        let max = if WAP_PAY_TYPES.contains(&self.pay_type.as_str()) {
            RETURN_URL_MAX_WAP
        } else {
            RETURN_URL_MAX
        };
        if u.len() > max {
            return Err(PaymentInputError::ReturnUrl(format!(
                "longer than {max} characters for pay type {}",
                self.pay_type
            )));
        }
        match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") => {}
            _ => {
                return Err(PaymentInputError::ReturnUrl(
                    "not an http(s) URL".to_string(),
                ));
            }
        }
        self.return_url = Some(u.to_string());
        Ok(self)
    }

    pub fn out_trade_no(&self) -> &OutTradeNo {
        &self.out_trade_no
    }
    pub fn amount(&self) -> Money {
        self.amount
    }
    pub fn pay_type(&self) -> &PayType {
        &self.pay_type
    }

    pub(crate) fn form(&self, mchid: Option<&str>) -> Form {
        let mut f = Form::default();
        f.set("txamt", self.amount.minor.to_string())
            .set("txcurrcd", self.amount.currency.as_str())
            .set("pay_type", self.pay_type.as_str())
            .set("out_trade_no", self.out_trade_no.as_str())
            .set("txdtm", self.txdtm.format(TIME_FORMAT).to_string())
            .set_opt(
                "expired_time",
                self.expired_minutes.map(|m| m.to_string()).as_deref(),
            )
            .set_opt("goods_name", self.goods_name.as_deref())
            .set_opt("udid", self.udid.as_deref())
            .set_opt("return_url", self.return_url.as_deref())
            .set_opt("mchid", mchid);
        f
    }
}

/// What QFPay said about a payment request (seed 001: `0000` success, `1143`/`1145` in
/// progress, others failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// `0000`: QFPay created the order. For QR / online pay types (the ones with a `pay_url`)
    /// this does **not** mean the customer has paid: the status comes from the query API.
    Accepted,
    /// `1143`/`1145` …: being processed; query for the result.
    InProgress,
    /// A final failure code for this payment.
    Failed { code: String },
}

/// The answer to [`PaymentRequest`], with its evidence (the raw body; it holds no secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentCreated {
    pub syssn: Option<ProviderRef>,
    /// The link the customer opens (or that is shown as a QR code).
    pub pay_url: Option<String>,
    pub outcome: PaymentOutcome,
    /// The top-level `respcd`.
    pub code: String,
    pub evidence: Value,
}

impl PaymentCreated {
    /// The answer as evidence for the ledger. `Accepted` becomes **in progress**, not succeeded:
    /// a created QR/online order is unpaid until the query API says `0000`.
    pub fn observation(&self, req: &PaymentRequest) -> Observation {
        let outcome = match self.outcome {
            PaymentOutcome::Accepted | PaymentOutcome::InProgress => Outcome::InProgress,
            PaymentOutcome::Failed { .. } => Outcome::Failed,
        };
        let mut obs = Observation::new(RecordKind::Payment, outcome, self.code.clone());
        obs.out_trade_no = Some(req.out_trade_no.clone());
        obs.provider_ref = self.syssn.clone();
        obs.pay_type = Some(req.pay_type.clone());
        obs.amount_minor = text_field(&self.evidence, "txamt")
            .and_then(|s| Money::parse_minor(&s).ok())
            .or(Some(req.amount.minor));
        obs.currency = text_field(&self.evidence, "txcurrcd")
            .and_then(|s| Currency::parse(&s).ok())
            .or(Some(req.amount.currency));
        obs.gateway_time = text_field(&self.evidence, "sysdtm");
        obs.evidence = self.evidence.clone();
        obs
    }
}

/// Reads a payment answer. Account codes → [`GatewayError::Account`]; request errors, order-state
/// conflicts (duplicate `out_trade_no` 2011, …) and unknown codes → [`GatewayError::Rejected`]:
/// they say nothing certain about this payment, so the reconciler's query decides.
pub(crate) fn parse_payment(env: &Envelope, body: Value) -> Result<PaymentCreated, GatewayError> {
    let code = env.code()?.to_string();
    let outcome = match codes::classify(&code) {
        Some(CodeClass::Success) => PaymentOutcome::Accepted,
        Some(CodeClass::InProgress) => PaymentOutcome::InProgress,
        Some(CodeClass::Failure | CodeClass::NotFound | CodeClass::CancelRefused) => {
            PaymentOutcome::Failed { code: code.clone() }
        }
        Some(CodeClass::AccountError | CodeClass::RequestError | CodeClass::OrderStateConflict)
        | None => return Err(env.request_error(&code)),
    };
    Ok(PaymentCreated {
        syssn: text_field(&body, "syssn").and_then(|s| ProviderRef::parse(&s).ok()),
        pay_url: text_field(&body, "pay_url"),
        outcome,
        code,
        evidence: body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::qfpay::response::parse_envelope;

    fn req(pay_type: &str) -> PaymentRequest {
        PaymentRequest::new(
            OutTradeNo::parse("ORDER-1", Provider::Qfpay).unwrap(),
            Money::new(300, Currency::parse("HKD").unwrap()).unwrap(),
            PayType::parse(pay_type).unwrap(),
            NaiveDateTime::parse_from_str("2026-11-22 10:30:34", TIME_FORMAT).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn expiry_must_be_whole_minutes_from_5_to_120_on_a_pay_type_that_accepts_it() {
        let mins = |m: u64| Duration::from_secs(m * 60);
        assert!(req("801101").expires_in(mins(5)).is_ok());
        assert!(req("801101").expires_in(mins(120)).is_ok());
        assert!(req("801101").expires_in(mins(4)).is_err());
        assert!(req("801101").expires_in(mins(121)).is_err());
        assert!(req("801101").expires_in(Duration::from_secs(330)).is_err());
        assert_eq!(
            req("800208").expires_in(mins(30)),
            Err(PaymentInputError::ExpiryNotSupported("800208".into()))
        );
    }

    #[test]
    fn goods_names_are_limited_to_20_characters_counting_chinese_as_one() {
        assert!(req("801101").goods_name("咖啡一杯").is_ok());
        assert!(req("801101").goods_name(&"a".repeat(20)).is_ok());
        assert!(req("801101").goods_name(&"a".repeat(21)).is_err());
        // 20 Chinese characters are 60 bytes: still within String(64).
        assert!(req("801101").goods_name(&"咖".repeat(20)).is_ok());
        assert!(req("801101").goods_name("").is_err());
        assert!(req("801101").goods_name("a\nb").is_err());
    }

    #[test]
    fn amount_currency_udid_and_return_url_are_checked() {
        let big = Money::new(MAX_AMOUNT_MINOR + 1, Currency::parse("HKD").unwrap()).unwrap();
        let r = PaymentRequest::new(
            OutTradeNo::parse("O", Provider::Qfpay).unwrap(),
            big,
            PayType::parse("801101").unwrap(),
            NaiveDateTime::default(),
        );
        assert!(matches!(r, Err(PaymentInputError::AmountTooLarge(_))));
        let twd = Money::new(1, Currency::parse("TWD").unwrap()).unwrap();
        let r = PaymentRequest::new(
            OutTradeNo::parse("O", Provider::Qfpay).unwrap(),
            twd,
            PayType::parse("801101").unwrap(),
            NaiveDateTime::default(),
        );
        assert!(matches!(r, Err(PaymentInputError::Currency(_))));
        assert!(req("801101").udid(&"u".repeat(41)).is_err());
        assert!(req("801101").return_url("ftp://x").is_err());
        let long = format!("https://shop.example/{}", "p".repeat(200));
        assert!(req("801101").return_url(&long).is_ok());
        assert!(req("801107").return_url(&long).is_err());
    }

    #[test]
    fn the_form_holds_exactly_the_set_fields() {
        let r = req("801101")
            .expires_in(Duration::from_secs(1800))
            .unwrap()
            .goods_name("test 1")
            .unwrap();
        assert_eq!(
            r.form(None).encode(),
            "expired_time=30&goods_name=test+1&out_trade_no=ORDER-1&pay_type=801101\
             &txamt=300&txcurrcd=HKD&txdtm=2026-11-22+10%3A30%3A34"
        );
    }

    fn answer(body: &str) -> Result<PaymentCreated, GatewayError> {
        let (env, v) = parse_envelope(body.as_bytes()).unwrap();
        parse_payment(&env, v)
    }

    #[test]
    fn an_accepted_payment_carries_syssn_and_pay_url_but_is_not_yet_paid() {
        let a = answer(
            r#"{"sysdtm": "2020-04-13 10:30:34", "txcurrcd": "HKD", "respmsg": "",
            "pay_type": "801101", "txamt": "300", "resperr": "success",
            "out_trade_no": "ORDER-1", "syssn": "20200413000300020087033882", "respcd": "0000",
            "pay_url": "https://globalmapi.alipay.com/gateway.do?total_fee=3.0", "chnlsn": ""}"#,
        )
        .unwrap();
        assert_eq!(a.outcome, PaymentOutcome::Accepted);
        assert_eq!(
            a.syssn.as_ref().unwrap().as_str(),
            "20200413000300020087033882"
        );
        assert!(
            a.pay_url
                .as_deref()
                .unwrap()
                .starts_with("https://globalmapi")
        );
        let obs = a.observation(&req("801101"));
        assert_eq!(obs.outcome, Outcome::InProgress);
        assert_eq!(obs.amount_minor, Some(300));
    }

    #[test]
    fn payment_codes_split_into_progress_failure_and_errors() {
        assert_eq!(
            answer(r#"{"respcd": "1145"}"#).unwrap().outcome,
            PaymentOutcome::InProgress
        );
        assert_eq!(
            answer(r#"{"respcd": "1205"}"#).unwrap().outcome,
            PaymentOutcome::Failed {
                code: "1205".into()
            }
        );
        assert!(matches!(
            answer(r#"{"respcd": "1108"}"#),
            Err(GatewayError::Account { .. })
        ));
        for code in ["1104", "2011", "4242"] {
            assert!(
                matches!(
                    answer(&format!(r#"{{"respcd": "{code}"}}"#)),
                    Err(GatewayError::Rejected { .. })
                ),
                "{code}"
            );
        }
    }
}
