//! What the QFPay endpoints other than the query do to a merchant's book: seeding, payment
//! creation, reversal/close and refund (docs/PROTOCOLS.md §Q4–5, seed 001). Pure given "now" and the
//! sandbox's sequence counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value, json};

use super::qfpay_book::{
    BAD_PARAMETER, MerchantBook, NOT_FOUND, QfpayRecord, error_body, make_syssn,
};
use super::scenario::{
    CancelBehaviour, PAID, QfpayPayment, QfpayRefund, QfpayScript, QfpayTimeline,
};
use super::state::SeedError;
use crate::gateway::qfpay::TIME_FORMAT;
use crate::gateway::qfpay::codes::{CodeClass, classify};

/// `2011`: the `out_trade_no` was used before.
pub const DUPLICATE_ORDER: &str = "2011";
/// `1297`: cancel unsupported for this payment (QFPay 2018 JP).
pub const NOT_CANCELLABLE: &str = "1297";

fn next(seq: &AtomicU64) -> u64 {
    seq.fetch_add(1, Ordering::Relaxed)
}

fn param<'a>(params: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty())
}

impl MerchantBook {
    /// Seeds a payment; returns its `syssn`.
    pub(crate) fn insert_payment(
        &mut self,
        p: QfpayPayment,
        now: DateTime<Utc>,
        seq: &AtomicU64,
    ) -> Result<String, SeedError> {
        if self.by_out_trade_no.contains_key(&p.out_trade_no) {
            return Err(SeedError::Duplicate(p.out_trade_no));
        }
        let created_at = p.created_at.unwrap_or(now);
        let n = next(seq);
        let syssn = p
            .syssn
            .unwrap_or_else(|| make_syssn(self.local(created_at), n));
        if self.by_syssn.contains_key(&syssn) {
            return Err(SeedError::Duplicate(syssn));
        }
        self.push(QfpayRecord {
            seq: n,
            syssn: syssn.clone(),
            out_trade_no: p.out_trade_no,
            origssn: None,
            pay_type: p.pay_type,
            amount_minor: p.amount_minor,
            currency: p.currency,
            created_at,
            txdtm: p.txdtm.unwrap_or_else(|| self.local(created_at)),
            timeline: p.timeline,
            cancel_behaviour: p.cancel,
            cancel_flag: 0,
            frozen: None,
            refunded_minor: 0,
            reversal_calls: 0,
            close_calls: 0,
            fields: p.fields,
        });
        Ok(syssn)
    }

    /// Adds a refund record and marks the payment refunded (`cancel` 3, or 5 when partial).
    /// Returns the refund record's index.
    fn add_refund(
        &mut self,
        payment: usize,
        out_trade_no: String,
        amount: i64,
        at: DateTime<Utc>,
        txdtm: Option<NaiveDateTime>,
        seq: &AtomicU64,
    ) -> usize {
        let n = next(seq);
        let p = &mut self.records[payment];
        p.refunded_minor += amount;
        p.cancel_flag = if p.refunded_minor >= p.amount_minor {
            3
        } else {
            5
        };
        let record = QfpayRecord {
            seq: n,
            syssn: String::new(),
            out_trade_no,
            origssn: Some(p.syssn.clone()),
            pay_type: p.pay_type.clone(),
            amount_minor: amount,
            currency: p.currency.clone(),
            created_at: at,
            txdtm: NaiveDateTime::default(),
            timeline: QfpayTimeline::paid(),
            cancel_behaviour: CancelBehaviour::NotCancellable,
            cancel_flag: 0,
            frozen: None,
            refunded_minor: 0,
            reversal_calls: 0,
            close_calls: 0,
            fields: Vec::new(),
        };
        let local = self.local(at);
        let record = QfpayRecord {
            syssn: make_syssn(local, n),
            txdtm: txdtm.unwrap_or(local),
            ..record
        };
        self.push(record)
    }

    /// Seeds a refund of a seeded payment; returns the refund's `syssn`.
    pub(crate) fn insert_refund(
        &mut self,
        r: QfpayRefund,
        now: DateTime<Utc>,
        seq: &AtomicU64,
    ) -> Result<String, SeedError> {
        let Some(&payment) = self.by_out_trade_no.get(&r.payment_out_trade_no) else {
            return Err(SeedError::UnknownPayment(r.payment_out_trade_no));
        };
        if self.by_out_trade_no.contains_key(&r.out_trade_no) {
            return Err(SeedError::Duplicate(r.out_trade_no));
        }
        let i = self.add_refund(
            payment,
            r.out_trade_no,
            r.amount_minor,
            r.at.unwrap_or(now),
            None,
            seq,
        );
        Ok(self.records[i].syssn.clone())
    }

    /// `POST /trade/v1/payment`.
    pub(crate) fn create_payment(
        &mut self,
        params: &BTreeMap<String, String>,
        now: DateTime<Utc>,
        seq: &AtomicU64,
    ) -> Value {
        let (Some(out_trade_no), Some(txamt), Some(currency), Some(pay_type), Some(txdtm)) = (
            param(params, "out_trade_no"),
            param(params, "txamt"),
            param(params, "txcurrcd"),
            param(params, "pay_type"),
            param(params, "txdtm"),
        ) else {
            return error_body(
                BAD_PARAMETER,
                "out_trade_no, txamt, txcurrcd, pay_type and txdtm are required",
            );
        };
        let (Ok(amount), Ok(txdtm)) = (
            txamt.parse::<i64>(),
            NaiveDateTime::parse_from_str(txdtm, TIME_FORMAT),
        ) else {
            return error_body(BAD_PARAMETER, "txamt or txdtm is malformed");
        };
        if amount <= 0 {
            return error_body(BAD_PARAMETER, "txamt must be positive");
        }
        if self.by_out_trade_no.contains_key(out_trade_no) {
            return error_body(DUPLICATE_ORDER, "out_trade_no already used");
        }
        let script: QfpayScript = self
            .scripts
            .remove(out_trade_no)
            .unwrap_or_else(|| self.default_script.clone());
        let mut p = QfpayPayment::new(
            out_trade_no,
            script.amount_override.unwrap_or(amount),
            currency,
            pay_type,
        )
        .timeline(script.timeline)
        .cancel_behaviour(script.cancel)
        .at(now);
        p.txdtm = Some(txdtm);
        let Ok(syssn) = self.insert_payment(p, now, seq) else {
            return error_body(DUPLICATE_ORDER, "syssn collision");
        };
        let i = self.by_syssn[&syssn];
        let r = &self.records[i];
        // Customer-presented codes (…08) answer with the payment's result; QR and online
        // orders are created unpaid and answer 0000 with the link to pay (seed 001).
        let cpm = pay_type.ends_with("08");
        let code = if cpm { r.code_at(now) } else { PAID };
        let mut body = json!({
            "respcd": code, "resperr": if code == PAID { "success" } else { "交易未完成" },
            "respmsg": "", "syssn": syssn, "out_trade_no": out_trade_no, "pay_type": pay_type,
            "txamt": amount.to_string(), "txcurrcd": currency,
            "txdtm": txdtm.format(TIME_FORMAT).to_string(),
            "sysdtm": self.local(now).format(TIME_FORMAT).to_string(),
        });
        if !cpm {
            body["pay_url"] = json!(format!("https://sandbox.payrecon.invalid/pay/{syssn}"));
        }
        body
    }

    fn find_payment(&self, params: &BTreeMap<String, String>, now: DateTime<Utc>) -> Option<usize> {
        let i = match (param(params, "syssn"), param(params, "out_trade_no")) {
            (Some(s), _) => self.by_syssn.get(s),
            (None, Some(o)) => self.by_out_trade_no.get(o),
            (None, None) => None,
        }
        .copied()?;
        let r = &self.records[i];
        (r.origssn.is_none() && r.created_at <= now).then_some(i)
    }

    /// `/trade/v1/reversal` (`close = false`) and `/trade/v1/close` (docs/PROTOCOLS.md §Q4.3–4.5): never
    /// cancels a `0000` (`1260`); an unpaid payment is cancelled and no longer payable.
    pub(crate) fn cancel(
        &mut self,
        params: &BTreeMap<String, String>,
        close: bool,
        now: DateTime<Utc>,
        seq: &AtomicU64,
    ) -> Value {
        if param(params, "txamt").is_none()
            || (param(params, "syssn").is_none() && param(params, "out_trade_no").is_none())
        {
            return error_body(
                BAD_PARAMETER,
                "syssn or out_trade_no, and txamt, are required",
            );
        }
        let Some(i) = self.find_payment(params, now) else {
            return error_body(NOT_FOUND, "transaction does not exist");
        };
        let non_cancellable = self
            .non_cancellable_pay_types
            .contains(&self.records[i].pay_type);
        let r = &mut self.records[i];
        if close {
            r.close_calls += 1;
        } else {
            r.reversal_calls += 1;
        }
        if let Some(refusal) = super::qfpay_rules::cancel_amount(params, r.amount_minor) {
            return error_body(refusal.code, refusal.message);
        }
        if r.cancel_behaviour == CancelBehaviour::PaidFirst && r.frozen.is_none() {
            r.frozen = Some(PAID.to_string());
        }
        let code = r.code_at(now).to_string();
        let refusal = match r.cancel_flag {
            1 => Some(("1263", "order cancelled")),
            2 => Some(("1264", "order closed")),
            3 | 5 => Some(("1262", "order refunded")),
            _ if code == PAID => Some(("1260", "order already paid; refund instead")),
            _ if classify(&code) != Some(CodeClass::InProgress) => Some(("1264", "order closed")),
            _ if non_cancellable || r.cancel_behaviour == CancelBehaviour::NotCancellable => {
                Some((NOT_CANCELLABLE, "cancel not supported for this payment"))
            }
            _ => None,
        };
        if let Some((code, msg)) = refusal {
            return error_body(code, msg);
        }
        // Reversed CPM records keep 0000 with cancel 1 (QFPay 2019 2017 example); closed orders show
        // 1142 with cancel 2 (QFPay 2017 2016 example).
        r.cancel_flag = if close { 2 } else { 1 };
        r.frozen = Some(if close { "1142" } else { PAID }.to_string());
        let answer = match r.cancel_behaviour {
            CancelBehaviour::InProgress => "1145",
            CancelBehaviour::AlreadyCancelled => return error_body("1263", "order cancelled"),
            _ => PAID,
        };
        let (orig, out_trade_no, amount, currency) = (
            r.syssn.clone(),
            r.out_trade_no.clone(),
            r.amount_minor,
            r.currency.clone(),
        );
        let local = self.local(now);
        json!({
            "respcd": answer, "resperr": "success", "respmsg": "",
            "syssn": make_syssn(local, next(seq)), "orig_syssn": orig,
            "out_trade_no": out_trade_no,
            "txamt": param(params, "txamt").map_or_else(|| amount.to_string(), str::to_string),
            "txcurrcd": currency,
            "txdtm": param(params, "txdtm").unwrap_or_default(),
            "sysdtm": local.format(TIME_FORMAT).to_string(),
            "chnlsn": "", "chnlsn2": "", "cardcd": "",
        })
    }

    /// `POST /trade/v1/refund` (docs/PROTOCOLS.md §Q5.1): only `0000` payments, never above the amount.
    pub(crate) fn refund(
        &mut self,
        params: &BTreeMap<String, String>,
        now: DateTime<Utc>,
        seq: &AtomicU64,
    ) -> Value {
        let (Some(syssn), Some(out_trade_no), Some(Ok(amount))) = (
            param(params, "syssn"),
            param(params, "out_trade_no"),
            param(params, "txamt").map(str::parse::<i64>),
        ) else {
            return error_body(BAD_PARAMETER, "syssn, out_trade_no and txamt are required");
        };
        let mut lookup = BTreeMap::new();
        lookup.insert("syssn".to_string(), syssn.to_string());
        let Some(i) = self.find_payment(&lookup, now) else {
            return error_body(NOT_FOUND, "transaction does not exist");
        };
        if self.by_out_trade_no.contains_key(out_trade_no) {
            return error_body(DUPLICATE_ORDER, "out_trade_no already used");
        }
        let r = &self.records[i];
        let refusal = match r.cancel_flag {
            1 => Some(("1263", "order cancelled")),
            2 => Some(("1264", "order closed")),
            _ if r.code_at(now) != PAID => Some(("1261", "order not paid")),
            _ if amount <= 0 => Some((BAD_PARAMETER, "txamt must be positive")),
            _ if r.refunded_minor >= r.amount_minor => Some(("1262", "order refunded")),
            _ if r.refunded_minor + amount > r.amount_minor => {
                Some(("1272", "refund exceeds the refundable amount"))
            }
            _ => None,
        };
        if let Some((code, msg)) = refusal {
            return error_body(code, msg);
        }
        let txdtm =
            param(params, "txdtm").and_then(|t| NaiveDateTime::parse_from_str(t, TIME_FORMAT).ok());
        let j = self.add_refund(i, out_trade_no.to_string(), amount, now, txdtm, seq);
        let (p, rf) = (&self.records[i], &self.records[j]);
        json!({
            "respcd": PAID, "resperr": "success", "respmsg": "",
            "syssn": rf.syssn, "orig_syssn": p.syssn, "out_trade_no": rf.out_trade_no,
            "txamt": amount.to_string(), "txcurrcd": rf.currency,
            "txdtm": rf.txdtm.format(TIME_FORMAT).to_string(),
            "sysdtm": self.local(now).format(TIME_FORMAT).to_string(),
            "chnlsn": "", "cash_fee": amount.to_string(), "cash_fee_type": rf.currency,
        })
    }
}
