//! What the sandbox is seeded with: QFPay payments and refunds and ECPay orders whose state
//! evolves with the sandbox clock, deterministically. Times are relative to the record's
//! creation (`sysdtm` for QFPay, `AuthTime`/`TradeDate` for ECPay).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

/// The QFPay "not yet paid" code (docs/PROTOCOLS.md §Q3.2).
pub const NOT_YET_PAID: &str = "1143";
/// The QFPay success code.
pub const PAID: &str = "0000";

/// How a QFPay payment record's own `respcd` evolves: `initial` from creation, then `then.1`
/// from `then.0` after creation. A reversal or close freezes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QfpayTimeline {
    pub initial: String,
    pub then: Option<(Duration, String)>,
}

impl QfpayTimeline {
    /// `0000` from the start.
    pub fn paid() -> Self {
        Self::fixed(PAID)
    }

    /// A final failure code (e.g. `1205`) from the start.
    pub fn failed(code: &str) -> Self {
        Self::fixed(code)
    }

    /// The same code forever (`1143` = a payment that never completes).
    pub fn fixed(code: &str) -> Self {
        Self {
            initial: code.to_string(),
            then: None,
        }
    }

    /// `1143` forever: the customer never finishes paying.
    pub fn never_completes() -> Self {
        Self::fixed(NOT_YET_PAID)
    }

    /// `1143` until `after`, then `code` (`0000`, or a failure such as `1205`).
    pub fn pending_then(after: Duration, code: &str) -> Self {
        Self {
            initial: NOT_YET_PAID.to_string(),
            then: Some((after, code.to_string())),
        }
    }

    /// The code `elapsed` after creation.
    pub fn code_at(&self, elapsed: TimeDelta) -> &str {
        match &self.then {
            Some((after, code))
                if elapsed >= TimeDelta::from_std(*after).unwrap_or(TimeDelta::MAX) =>
            {
                code
            }
            _ => &self.initial,
        }
    }

    /// When the record first showed `0000`, relative to creation, if it ever does.
    pub(crate) fn paid_after(&self) -> Option<Duration> {
        if self.initial == PAID {
            return Some(Duration::ZERO);
        }
        match &self.then {
            Some((after, code)) if code == PAID => Some(*after),
            _ => None,
        }
    }
}

/// What `/trade/v1/reversal` and `/trade/v1/close` answer for an unpaid payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CancelBehaviour {
    /// `0000` with a new `syssn`; the payment shows `cancel` 1 (reversal) or 2 (close).
    #[default]
    Accept,
    /// `1297`: this pay type cannot be cancelled (Hong Kong wallets, QFPay 2018 JP).
    NotCancellable,
    /// `1145` (still processing), but the cancel takes effect: the next query shows it.
    InProgress,
    /// The cancel takes effect, but the answer is the refusal `1263` ("order cancelled"), as
    /// when another system cancelled it a moment earlier: the query shows it cancelled.
    AlreadyCancelled,
    /// The customer's payment completes just before the cancel arrives (a race the gateway
    /// wins): the record turns `0000` (`cancel` 0) and the cancel is refused `1260`.
    PaidFirst,
}

/// A QFPay payment record to seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QfpayPayment {
    pub out_trade_no: String,
    /// `None`: the sandbox assigns a 26-digit `syssn`.
    pub syssn: Option<String>,
    pub pay_type: String,
    pub amount_minor: i64,
    pub currency: String,
    /// `sysdtm`; `None`: the sandbox clock's now at insertion. A record created in the
    /// sandbox's future is invisible until then.
    pub created_at: Option<DateTime<Utc>>,
    /// The merchant's `txdtm` (provider-local); `None`: the local time of `created_at`.
    pub txdtm: Option<NaiveDateTime>,
    pub timeline: QfpayTimeline,
    pub cancel: CancelBehaviour,
    /// Fields rendered over the record's own in query answers: odd-but-valid records as
    /// gateways produce them (`cancel` "6", `order_type` "PAYMENT", a nested object …).
    pub fields: Vec<(String, serde_json::Value)>,
}

impl QfpayPayment {
    /// A payment that is paid (`0000`) from the start; change it with the builder methods.
    pub fn new(out_trade_no: &str, amount_minor: i64, currency: &str, pay_type: &str) -> Self {
        Self {
            out_trade_no: out_trade_no.to_string(),
            syssn: None,
            pay_type: pay_type.to_string(),
            amount_minor,
            currency: currency.to_string(),
            created_at: None,
            txdtm: None,
            timeline: QfpayTimeline::paid(),
            cancel: CancelBehaviour::Accept,
            fields: Vec::new(),
        }
    }

    /// Renders `name` as `value` in every query answer about this record.
    pub fn field(mut self, name: &str, value: serde_json::Value) -> Self {
        self.fields.push((name.to_string(), value));
        self
    }

    pub fn at(mut self, created_at: DateTime<Utc>) -> Self {
        self.created_at = Some(created_at);
        self
    }

    pub fn syssn(mut self, syssn: &str) -> Self {
        self.syssn = Some(syssn.to_string());
        self
    }

    pub fn timeline(mut self, timeline: QfpayTimeline) -> Self {
        self.timeline = timeline;
        self
    }

    pub fn cancel_behaviour(mut self, cancel: CancelBehaviour) -> Self {
        self.cancel = cancel;
        self
    }

    /// Reversal and close answer `1297`.
    pub fn not_cancellable(self) -> Self {
        self.cancel_behaviour(CancelBehaviour::NotCancellable)
    }
}

/// How a payment created through `POST /trade/v1/payment` behaves: registered in advance for
/// its `out_trade_no` with [`super::SandboxState::script_qfpay_payment`]; payments without a
/// script follow the merchant's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QfpayScript {
    pub timeline: QfpayTimeline,
    pub cancel: CancelBehaviour,
    /// Record this amount instead of the requested one (an amount mismatch).
    pub amount_override: Option<i64>,
}

impl QfpayScript {
    pub fn new(timeline: QfpayTimeline) -> Self {
        Self {
            timeline,
            cancel: CancelBehaviour::Accept,
            amount_override: None,
        }
    }
}

/// A QFPay refund record (`order_type=refund`) against a seeded payment, as if
/// `/trade/v1/refund` had been called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QfpayRefund {
    /// The refunded payment's `out_trade_no`.
    pub payment_out_trade_no: String,
    /// The refund's own, new `out_trade_no`.
    pub out_trade_no: String,
    pub amount_minor: i64,
    /// `None`: now.
    pub at: Option<DateTime<Utc>>,
}

/// An ECPay credit-card authorization status (docs/PROTOCOLS.md §E3.1), written in the merchant's
/// language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcpayStatus {
    Authorized,
    ToBeCaptured,
    Captured,
    Unauthorized,
    Cancelled,
    OperationCancelled,
}

impl EcpayStatus {
    /// The `RtnValue.Status` text.
    pub fn text(self, english: bool) -> &'static str {
        match (self, english) {
            (Self::Authorized, false) => "已授權",
            (Self::ToBeCaptured, false) => "要關帳",
            (Self::Captured, false) => "已關帳",
            (Self::Unauthorized, false) => "未授權",
            (Self::Cancelled, false) => "已取消",
            (Self::OperationCancelled, false) => "操作取消",
            (Self::Authorized, true) => "Authorized",
            (Self::ToBeCaptured, true) => "To be captured",
            (Self::Captured, true) => "Captured",
            (Self::Unauthorized, true) => "Unauthorized",
            (Self::Cancelled, true) => "Canceled",
            (Self::OperationCancelled, true) => "Operation canceled",
        }
    }

    /// Whether the money was (or is being) taken: Cashier `TradeStatus` "1".
    pub fn is_paid(self) -> bool {
        matches!(self, Self::Authorized | Self::ToBeCaptured | Self::Captured)
    }
}

/// An ECPay order to seed. Until the bank answers, CreditDetail says `error_nopay` and Cashier
/// says `TradeStatus` "0".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcpayOrder {
    pub merchant_trade_no: String,
    /// ECPay's `TradeNo`; `None`: the sandbox assigns a 16-digit one.
    pub trade_no: Option<String>,
    pub amount: i64,
    /// `None`: the sandbox clock's now at insertion.
    pub created_at: Option<DateTime<Utc>>,
    /// When the bank answers, after creation; `None`: never (`error_nopay` forever).
    pub bank_answers_after: Option<Duration>,
    pub status: EcpayStatus,
    /// Captures, refunds, cancellations after authorization (`super::ecpay_close`).
    pub actions: Vec<super::ecpay_close::EcpayAfter>,
}

impl EcpayOrder {
    /// An order the bank has already authorized.
    pub fn new(merchant_trade_no: &str, amount: i64) -> Self {
        Self {
            merchant_trade_no: merchant_trade_no.to_string(),
            trade_no: None,
            amount,
            created_at: None,
            bank_answers_after: Some(Duration::ZERO),
            status: EcpayStatus::Authorized,
            actions: Vec::new(),
        }
    }

    pub fn at(mut self, created_at: DateTime<Utc>) -> Self {
        self.created_at = Some(created_at);
        self
    }

    pub fn trade_no(mut self, trade_no: &str) -> Self {
        self.trade_no = Some(trade_no.to_string());
        self
    }

    /// `error_nopay` until `after` creation, then `status`.
    pub fn nopay_until(mut self, after: Duration, status: EcpayStatus) -> Self {
        self.bank_answers_after = Some(after);
        self.status = status;
        self
    }

    /// The bank's answer from the start.
    pub fn status(mut self, status: EcpayStatus) -> Self {
        self.status = status;
        self
    }

    /// `error_nopay` forever.
    pub fn never_answered(mut self) -> Self {
        self.bank_answers_after = None;
        self
    }

    /// `action` happens `after` creation (docs/PROTOCOLS.md §E5; see `ecpay_close` for how it shows).
    pub fn then(mut self, after: Duration, action: super::ecpay_close::EcpayAction) -> Self {
        self.actions
            .push(super::ecpay_close::EcpayAfter { after, action });
        self
    }

    /// Captured in full `after` creation.
    pub fn captured_after(self, after: Duration) -> Self {
        let amount = self.amount;
        self.then(after, super::ecpay_close::EcpayAction::Captured(amount))
    }

    /// Captured in full at `captured`, then `refund` of it given back at `refunded`.
    pub fn refunded_after(self, captured: Duration, refunded: Duration, refund: i64) -> Self {
        let amount = self.amount;
        self.then(captured, super::ecpay_close::EcpayAction::Captured(amount))
            .then(refunded, super::ecpay_close::EcpayAction::Refunded(refund))
    }

    /// Only `amount` of the order captured, `after` creation.
    pub fn partly_captured_after(self, after: Duration, amount: i64) -> Self {
        self.then(after, super::ecpay_close::EcpayAction::Captured(amount))
    }

    /// The authorization dropped `after` creation, before any capture (放棄).
    pub fn cancelled_after(self, after: Duration) -> Self {
        self.then(after, super::ecpay_close::EcpayAction::Abandoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_changes_code_exactly_at_its_offset() {
        let t = QfpayTimeline::pending_then(Duration::from_secs(30), PAID);
        assert_eq!(t.code_at(TimeDelta::seconds(29)), NOT_YET_PAID);
        assert_eq!(t.code_at(TimeDelta::seconds(30)), PAID);
        assert_eq!(t.paid_after(), Some(Duration::from_secs(30)));
        let never = QfpayTimeline::never_completes();
        assert_eq!(never.code_at(TimeDelta::days(400)), NOT_YET_PAID);
        assert_eq!(never.paid_after(), None);
        assert_eq!(QfpayTimeline::failed("1205").paid_after(), None);
    }
}
