//! One ECPay merchant's orders and the decrypted answers of `CreditDetail/QueryTrade` and
//! `Cashier/QueryTrade` (docs/PROTOCOLS.md §E3.1–3.2). Pure given "now"; the envelope, the AES `Data` and
//! the timestamp window are handled in `ecpay_http`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use serde_json::{Value, json};

use super::ecpay_close::close_view;
use super::scenario::EcpayOrder;
use super::state::SeedError;

/// ECPay's time format in answers (`AuthTime`, `TradeDate`).
const ECPAY_TIME: &str = "%Y/%m/%d %H:%M:%S";

/// `RtnCode` the sandbox answers on Cashier for an order it does not know (ECPay's real code
/// for this is not documented in the pages read; see docs/PROTOCOLS.md §E6).
pub const CASHIER_NOT_FOUND: i64 = 10_200_047;

#[derive(Debug, Clone)]
pub(crate) struct EcpayRecord {
    pub order: EcpayOrder,
    pub trade_no: String,
    pub created_at: DateTime<Utc>,
}

impl EcpayRecord {
    /// Whether the bank has answered by `now`.
    fn answered(&self, now: DateTime<Utc>) -> bool {
        self.order.bank_answers_after.is_some_and(|after| {
            now - self.created_at >= TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX)
        })
    }
}

/// What the Rust API shows about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcpayOrderView {
    pub merchant_trade_no: String,
    pub trade_no: String,
    /// `None` while the bank has not answered (`error_nopay`).
    pub status: Option<super::scenario::EcpayStatus>,
}

#[derive(Debug)]
pub(crate) struct EcpayBook {
    /// `Status` strings in English instead of Chinese.
    pub english: bool,
    /// Answers `error_Stop` (merchant expired) to every query.
    pub stopped: bool,
    /// Taiwan time for `AuthTime`/`TradeDate`.
    tz: FixedOffset,
    orders: HashMap<String, EcpayRecord>,
}

impl EcpayBook {
    pub(crate) fn new(english: bool, stopped: bool) -> Self {
        Self {
            english,
            stopped,
            tz: FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
            orders: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.orders.len()
    }

    pub(crate) fn insert(
        &mut self,
        order: EcpayOrder,
        now: DateTime<Utc>,
        seq: &AtomicU64,
    ) -> Result<String, SeedError> {
        if self.orders.contains_key(&order.merchant_trade_no) {
            return Err(SeedError::Duplicate(order.merchant_trade_no));
        }
        let created_at = order.created_at.unwrap_or(now);
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let trade_no = order.trade_no.clone().unwrap_or_else(|| {
            format!(
                "{}{:08}",
                created_at.with_timezone(&self.tz).format("%y%m%d%H"),
                n % 100_000_000
            )
        });
        self.orders.insert(
            order.merchant_trade_no.clone(),
            EcpayRecord {
                order,
                trade_no: trade_no.clone(),
                created_at,
            },
        );
        Ok(trade_no)
    }

    pub(crate) fn view(
        &self,
        merchant_trade_no: &str,
        now: DateTime<Utc>,
    ) -> Option<EcpayOrderView> {
        let r = self.orders.get(merchant_trade_no)?;
        Some(EcpayOrderView {
            merchant_trade_no: r.order.merchant_trade_no.clone(),
            trade_no: r.trade_no.clone(),
            status: r.answered(now).then_some(r.order.status),
        })
    }

    /// The order a query names, by `MerchantTradeNo`. `TradeNo` selects among a recurring
    /// order's authorizations after the first (seed 003); the sandbox has no recurring orders,
    /// so it is not a filter here (the documents do not say a one-off order is hidden by it).
    fn visible(&self, data: &Value, now: DateTime<Utc>) -> Option<&EcpayRecord> {
        let no = data.get("MerchantTradeNo")?.as_str()?;
        let r = self.orders.get(no)?;
        (r.created_at <= now).then_some(r)
    }

    fn time(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz).format(ECPAY_TIME).to_string()
    }

    /// The decrypted answer of `CreditDetail/QueryTrade`. An order the bank has not answered,
    /// or that ECPay has no authorization for, is `error_nopay` (docs/PROTOCOLS.md §E3.1).
    pub(crate) fn credit_detail(&self, data: &Value, now: DateTime<Utc>) -> Value {
        if self.stopped {
            return json!({"RtnMsg": "error_Stop", "RtnValue": {}});
        }
        let Some(r) = self.visible(data, now).filter(|r| r.answered(now)) else {
            return json!({"RtnMsg": "error_nopay", "RtnValue": {}});
        };
        let view = close_view(
            r.order.status,
            r.order.amount,
            &r.order.actions,
            r.created_at,
            now,
        );
        let rows: Vec<Value> = view
            .rows
            .iter()
            .map(|row| {
                json!({"Status": row.status.text(self.english), "Amount": row.amount,
                       "DateTime": self.time(row.at)})
            })
            .collect();
        json!({"RtnMsg": "", "RtnValue": {
            "TradeID": r.trade_no.parse::<i64>().map_or(json!(r.trade_no), |n| json!(n)),
            "Amount": r.order.amount,
            "ClsAmt": view.cls_amt,
            "AuthTime": self.time(r.created_at),
            "Status": view.status.text(self.english),
            "CloseData": rows,
        }})
    }

    /// The decrypted answer of `Cashier/QueryTrade`: `TradeStatus` "0" until the bank answers,
    /// then "1" (paid) or "10200095" (failed).
    pub(crate) fn cashier(&self, merchant_id: &str, data: &Value, now: DateTime<Utc>) -> Value {
        if self.stopped {
            return json!({"RtnCode": 0, "RtnMsg": "error_Stop"});
        }
        let Some(r) = self.visible(data, now) else {
            return json!({"RtnCode": CASHIER_NOT_FOUND, "RtnMsg": "order not found"});
        };
        let (status, paid_at) = match (r.answered(now), r.order.status.is_paid()) {
            (false, _) => ("0", String::new()),
            (true, true) => ("1", self.time(r.created_at)),
            (true, false) => ("10200095", String::new()),
        };
        json!({"RtnCode": 1, "RtnMsg": "Success", "MerchantID": merchant_id, "OrderInfo": {
            "MerchantTradeNo": r.order.merchant_trade_no, "TradeNo": r.trade_no,
            "TradeAmt": r.order.amount, "TradeDate": self.time(r.created_at),
            "PaymentType": "Credit", "PaymentDate": paid_at, "TradeStatus": status,
        }})
    }
}
