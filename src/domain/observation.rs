//! What a gateway said about one payment record: the input of the state machine.
//!
//! Adapters produce observations only from answers that are *evidence* about a payment. A
//! transport error, timeout, 5xx, 429 or bad signature is not an observation: it is a
//! `gateway::GatewayError` and changes no state.

use serde::{Deserialize, Serialize};

use super::{Currency, OutTradeNo, PayType, ProviderRef};

/// Payment or refund record. Also the ledger's `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Payment,
    Refund,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Payment => "payment",
            RecordKind::Refund => "refund",
        }
    }
}

impl std::str::FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "payment" => Ok(RecordKind::Payment),
            "refund" => Ok(RecordKind::Refund),
            other => Err(format!(
                "{other:?} is not a kind (expected payment or refund)"
            )),
        }
    }
}

/// The gateway's verdict on a record, already classified by the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Paid (QFPay `0000` with `cancel=0`; ECPay authorized / to be captured / captured).
    Succeeded,
    /// A final failure of the payment (any other final code).
    Failed,
    /// Closed, cancelled or expired at the gateway (QFPay `1142`, `1181`, `cancel=2`;
    /// ECPay cancelled).
    Cancelled,
    /// The gateway shows the payment reversed (QFPay `cancel=1`). Whether that was our doing
    /// is for the state machine to say, from the ledger state.
    Reversed,
    /// Money went back in full (QFPay `cancel=3`).
    Refunded,
    /// Part of the money went back (QFPay `cancel=5`).
    PartiallyRefunded,
    /// Still being paid: QFPay 1143/1145/…, ECPay `error_nopay` (bank has not answered).
    InProgress,
    /// The bank has not completed authorization (ECPay `Unauthorized`, 銀行未授權完成): failed
    /// *or* still pending (docs/PROTOCOLS.md §E3.1), so never final at once; see
    /// [`crate::domain::Patience`] for how long it is waited out.
    Unauthorized,
    /// The gateway has no record (yet).
    NotFound,
    /// An answer the adapter could not classify (e.g. an unknown ECPay `Status` string).
    /// Never treated as failure.
    Unrecognised,
    /// The gateway says the money moved (a QFPay record with `respcd` `0000`) but the rest of
    /// the record is not understood (a `cancel` flag outside 0–5, an unknown `order_type`).
    /// Never a reversal candidate: an open payment goes to a person with the record.
    UnrecognisedPaid,
}

/// In words, for event messages (`ledger show`) and logs: never the Rust variant name.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Succeeded => "paid",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Reversed => "reversed",
            Outcome::Refunded => "refunded",
            Outcome::PartiallyRefunded => "partially refunded",
            Outcome::InProgress => "in progress",
            Outcome::Unauthorized => "not authorized",
            Outcome::NotFound => "no record",
            Outcome::Unrecognised => "an answer payrecon does not understand",
            Outcome::UnrecognisedPaid => "paid, with details payrecon does not understand",
        })
    }
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Cancelled,
        Outcome::Reversed,
        Outcome::Refunded,
        Outcome::PartiallyRefunded,
        Outcome::InProgress,
        Outcome::Unauthorized,
        Outcome::NotFound,
        Outcome::Unrecognised,
        Outcome::UnrecognisedPaid,
    ];

    /// Whether this answer may lead to a reversal or close: only "still being paid" and a
    /// genuine "no record" (the gateway answered, validly signed, and no record carries the
    /// payment's ids). Everything else, and above all any record that says `0000`, is not
    /// evidence that cancelling is safe.
    pub fn permits_cancel(self) -> bool {
        matches!(self, Outcome::InProgress | Outcome::NotFound)
    }
}

/// One gateway record, matched to a ledger payment by `out_trade_no` or `provider_ref`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub kind: RecordKind,
    pub outcome: Outcome,
    /// The gateway's own code for this record: QFPay record `respcd` (`0000`, `1143` …),
    /// ECPay `RtnMsg`/`Status` (`error_nopay`, `已授權` …).
    pub provider_code: String,
    pub out_trade_no: Option<OutTradeNo>,
    /// QFPay `syssn`, ECPay `TradeNo`/`TradeID`.
    pub provider_ref: Option<ProviderRef>,
    /// Refund records: the original payment's `syssn` (QFPay `origssn`).
    pub original_ref: Option<ProviderRef>,
    pub pay_type: Option<PayType>,
    /// Amount in minor units as the gateway reports it.
    pub amount_minor: Option<i64>,
    /// Currency as reported; QFPay may send an empty `txcurrcd` (docs/PROTOCOLS.md §Q2.3).
    pub currency: Option<Currency>,
    /// Gateway time of the record in provider-local text (QFPay `sysdtm`, ECPay `AuthTime`).
    pub gateway_time: Option<String>,
    /// The merchant's own transaction time as the gateway recorded it (QFPay `txdtm`), in
    /// provider-local text: what a reversal or close must send back.
    pub merchant_time: Option<String>,
    /// The raw record (already free of secrets), stored in the event row as evidence.
    pub evidence: serde_json::Value,
}

impl Observation {
    /// An observation with only the verdict filled in; adapters and tests add the rest.
    pub fn new(kind: RecordKind, outcome: Outcome, provider_code: impl Into<String>) -> Self {
        Self {
            kind,
            outcome,
            provider_code: provider_code.into(),
            out_trade_no: None,
            provider_ref: None,
            original_ref: None,
            pay_type: None,
            amount_minor: None,
            currency: None,
            gateway_time: None,
            merchant_time: None,
            evidence: serde_json::Value::Null,
        }
    }
}
