//! Reversal (`/trade/v1/reversal`) and close (`/trade/v1/close`): the request form and the
//! reading of the answer (docs/PROTOCOLS.md §Q4.3–4.5). Pure; the client performs the call.
//!
//! The decision to cancel belongs to the reconcile engine (query first, never reverse a `0000`,
//! docs/PROTOCOLS.md §Q4.4); which endpoint applies comes from the account's cancel routes (§Q4.2).

use chrono::NaiveDateTime;
use serde_json::Value;

use super::codes::{self, CodeClass};
use super::request::{Form, TIME_FORMAT};
use super::response::{Envelope, text_field};
use crate::domain::{OutTradeNo, ProviderRef};
use crate::gateway::GatewayError;

/// Which payment to cancel: `syssn` when QFPay ever returned one, else the merchant number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelTarget {
    Syssn(ProviderRef),
    OutTradeNo(OutTradeNo),
}

/// A reversal or close of one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub target: CancelTarget,
    /// The original payment's amount in minor units (`txamt`, required).
    pub amount_minor: i64,
    /// The original transaction time in provider-local time (`txdtm`; §Q4.3 "original
    /// transaction time"; whether the server checks it is unconfirmed).
    pub txdtm: NaiveDateTime,
    /// Device id (`udid`), optional.
    pub udid: Option<String>,
}

/// What QFPay answered to a reversal or close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// `0000` with a new `syssn`: the cancel was accepted. Confirm with a query (§Q4.4: a
    /// reversal does not prove the customer was not charged).
    Accepted {
        syssn: ProviderRef,
        orig_syssn: Option<ProviderRef>,
    },
    /// `1143`/`1145` (or another in-progress code): still running; poll the query.
    InProgress,
    /// This payment cannot be cancelled this way: `1297`, `1150` (T0 merchant), `1155`, a `0000`
    /// without `syssn` (QFPay 2018 JP), or no route configured (`code` is `None`, nothing was sent).
    /// Refund instead if it was paid.
    NotCancellable { code: Option<String> },
    /// Any other final code (already paid `1260`, not found `1136`, …): the gateway refused;
    /// the original payment is untouched. Never a success.
    Refused { code: String },
}

/// In words, for event messages and logs (`ledger show` prints them to operators).
impl std::fmt::Display for CancelOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accepted { syssn, .. } => write!(f, "accepted as {syssn}"),
            Self::InProgress => f.write_str("still in progress"),
            Self::NotCancellable { code: Some(code) } => write!(f, "not cancellable ({code})"),
            Self::NotCancellable { code: None } => {
                f.write_str("not cancellable (no cancel route for this pay type)")
            }
            Self::Refused { code } => write!(f, "refused with {code}"),
        }
    }
}

/// A cancel answer with its evidence (the raw response body; it holds no secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelAnswer {
    pub outcome: CancelOutcome,
    /// The top-level `respcd` (empty when nothing was sent).
    pub code: String,
    pub evidence: Value,
}

pub(crate) fn cancel_form(req: &CancelRequest, mchid: Option<&str>) -> Form {
    let mut f = Form::default();
    match &req.target {
        CancelTarget::Syssn(s) => f.set("syssn", s.as_str()),
        CancelTarget::OutTradeNo(o) => f.set("out_trade_no", o.as_str()),
    };
    f.set("txamt", req.amount_minor.to_string())
        .set("txdtm", req.txdtm.format(TIME_FORMAT).to_string())
        .set_opt("udid", req.udid.as_deref())
        .set_opt("mchid", mchid);
    f
}

/// Reads a reversal/close answer. Account and request errors are errors (no evidence about the
/// payment); every other code is an answer.
pub(crate) fn parse_cancel(env: &Envelope, body: Value) -> Result<CancelAnswer, GatewayError> {
    let code = env.code()?.to_string();
    let outcome = match codes::classify(&code) {
        Some(CodeClass::Success) => {
            match text_field(&body, "syssn").and_then(|s| ProviderRef::parse(&s).ok()) {
                Some(syssn) => CancelOutcome::Accepted {
                    syssn,
                    orig_syssn: text_field(&body, "orig_syssn")
                        .and_then(|s| ProviderRef::parse(&s).ok()),
                },
                None => CancelOutcome::NotCancellable {
                    code: Some(code.clone()),
                },
            }
        }
        Some(CodeClass::InProgress) => CancelOutcome::InProgress,
        _ if matches!(code.as_str(), "1297" | "1150" | "1155") => CancelOutcome::NotCancellable {
            code: Some(code.clone()),
        },
        Some(CodeClass::AccountError | CodeClass::RequestError) => {
            return Err(env.request_error(&code));
        }
        Some(
            CodeClass::Failure
            | CodeClass::OrderStateConflict
            | CodeClass::NotFound
            | CodeClass::CancelRefused,
        )
        | None => CancelOutcome::Refused { code: code.clone() },
    };
    Ok(CancelAnswer {
        outcome,
        code,
        evidence: body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::qfpay::response::parse_envelope;

    fn answer(body: &str) -> Result<CancelAnswer, GatewayError> {
        let (env, v) = parse_envelope(body.as_bytes()).unwrap();
        parse_cancel(&env, v)
    }

    #[test]
    fn the_documented_reversal_answer_is_accepted_with_both_numbers() {
        // docs/PROTOCOLS.md §Q4.3 sample [QFPay 2026/QFPay 2024].
        let a = answer(
            r#"{"surcharge_fee": "0", "resperr": "success", "txdtm": "2020-03-05 16:50:30",
            "syssn": "20200305066100020000977814", "sysdtm": "2020-03-05 16:54:38",
            "txcurrcd": "EUR", "respmsg": "", "chnlsn2": "", "cardcd": "", "udid": "qiantai2",
            "txamt": "2500", "orig_syssn": "20200305066100020000977813", "surcharge_rate": "0",
            "respcd": "0000", "chnlsn": ""}"#,
        )
        .unwrap();
        assert_eq!(
            a.outcome,
            CancelOutcome::Accepted {
                syssn: ProviderRef::parse("20200305066100020000977814").unwrap(),
                orig_syssn: Some(ProviderRef::parse("20200305066100020000977813").unwrap()),
            }
        );
        assert_eq!(a.evidence["txamt"], "2500");
    }

    #[test]
    fn a_0000_without_syssn_or_a_1297_means_not_cancellable() {
        let a = answer(r#"{"respcd": "0000", "orig_syssn": "20180112000100020001659801"}"#);
        assert_eq!(
            a.unwrap().outcome,
            CancelOutcome::NotCancellable {
                code: Some("0000".into())
            }
        );
        let a = answer(r#"{"respcd": "1297", "resperr": "bank busy"}"#).unwrap();
        assert_eq!(
            a.outcome,
            CancelOutcome::NotCancellable {
                code: Some("1297".into())
            }
        );
    }

    #[test]
    fn in_progress_refused_and_error_codes_are_told_apart() {
        for code in ["1143", "1145"] {
            let a = answer(&format!(r#"{{"respcd": "{code}"}}"#)).unwrap();
            assert_eq!(a.outcome, CancelOutcome::InProgress, "{code}");
        }
        for code in ["1260", "1136", "1142", "9876"] {
            let a = answer(&format!(r#"{{"respcd": "{code}"}}"#)).unwrap();
            assert_eq!(a.outcome, CancelOutcome::Refused { code: code.into() });
        }
        assert!(matches!(
            answer(r#"{"respcd": "1108"}"#),
            Err(GatewayError::Account { .. })
        ));
        assert!(matches!(
            answer(r#"{"respcd": "1104"}"#),
            Err(GatewayError::Rejected { .. })
        ));
    }

    #[test]
    fn the_cancel_form_sends_one_target_and_no_empty_fields() {
        let req = CancelRequest {
            target: CancelTarget::Syssn(ProviderRef::parse("20200305066100020000977813").unwrap()),
            amount_minor: 2500,
            txdtm: NaiveDateTime::parse_from_str("2020-03-05 16:50:30", TIME_FORMAT).unwrap(),
            udid: None,
        };
        assert_eq!(
            cancel_form(&req, None).encode(),
            "syssn=20200305066100020000977813&txamt=2500&txdtm=2020-03-05+16%3A50%3A30"
        );
        assert!(cancel_form(&req, Some("M1")).encode().contains("mchid=M1"));
    }
}
