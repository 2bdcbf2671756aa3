//! One QFPay merchant's records and what `/trade/v1/query` reads from them (docs/PROTOCOLS.md §Q2.1–2.4).
//! Pure: every function takes "now" from the caller. The other endpoints are in `qfpay_ops`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeDelta, TimeZone, Utc};
use serde_json::{Value, json};

use super::scenario::{CancelBehaviour, PAID, QfpayScript, QfpayTimeline};
use crate::gateway::qfpay::{LocalWindow, MAX_ID_LIST_CHARS, PAGE_SIZE, TIME_FORMAT};

/// `1104`, bad request parameter: the request-error code the sandbox uses for every
/// malformed or out-of-range parameter (missing fields, page size above 100, a window that
/// crosses a calendar month, an id list longer than String(128)).
pub const BAD_PARAMETER: &str = "1104";
/// `1136`: transaction does not exist.
pub const NOT_FOUND: &str = "1136";

/// One record: a payment or a refund.
#[derive(Debug, Clone)]
pub(crate) struct QfpayRecord {
    pub seq: u64,
    pub syssn: String,
    pub out_trade_no: String,
    /// Refund records: the payment's `syssn`.
    pub origssn: Option<String>,
    pub pay_type: String,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub txdtm: NaiveDateTime,
    pub timeline: QfpayTimeline,
    pub cancel_behaviour: CancelBehaviour,
    /// `cancel`: 0 none, 1 reversed, 2 closed, 3 refunded, 5 partially refunded.
    pub cancel_flag: u8,
    /// Set by a reversal or close: the code shown from then on.
    pub frozen: Option<String>,
    pub refunded_minor: i64,
    pub reversal_calls: u32,
    pub close_calls: u32,
    /// Rendered over the record's own fields (see `QfpayPayment::field`).
    pub fields: Vec<(String, Value)>,
}

impl QfpayRecord {
    pub(crate) fn code_at(&self, now: DateTime<Utc>) -> &str {
        match &self.frozen {
            Some(code) => code,
            None => self.timeline.code_at(now - self.created_at),
        }
    }

    fn is_refund(&self) -> bool {
        self.origssn.is_some()
    }
}

/// What the Rust API shows about a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QfpayPaymentView {
    pub syssn: String,
    pub out_trade_no: String,
    /// The record's `respcd` now.
    pub respcd: String,
    pub cancel: u8,
    pub amount_minor: i64,
    pub refunded_minor: i64,
    /// `/trade/v1/reversal` calls that named this payment, whatever they answered.
    pub reversal_calls: u32,
    /// `/trade/v1/close` calls that named this payment.
    pub close_calls: u32,
}

/// The text QFPay puts beside a record code (localised, never parsed by clients).
pub(crate) fn errmsg(code: &str) -> &'static str {
    match code {
        PAID => "交易成功",
        "1143" => "订单还未支付，或者正在输入密码中",
        "1145" => "处理中，请稍候",
        "1142" => "订单已关闭",
        _ => "交易失败",
    }
}

/// A top-level error answer.
pub(crate) fn error_body(code: &str, message: &str) -> Value {
    json!({"respcd": code, "resperr": message, "respmsg": ""})
}

/// A record's place in time order: creation time, then sequence number.
type TimeKey = (DateTime<Utc>, u64);

/// One merchant's book.
#[derive(Debug)]
pub(crate) struct MerchantBook {
    pub tz: FixedOffset,
    pub default_script: QfpayScript,
    pub non_cancellable_pay_types: Vec<String>,
    /// The largest page this merchant serves (and echoes as `page_size`), if below 100.
    pub max_page_size: Option<usize>,
    pub records: Vec<QfpayRecord>,
    pub by_syssn: HashMap<String, usize>,
    /// Payments and refunds share one `out_trade_no` namespace per merchant (docs/PROTOCOLS.md §Q5.1).
    pub by_out_trade_no: HashMap<String, usize>,
    by_time: BTreeMap<TimeKey, usize>,
    /// `by_time` as a sorted list, made at the first window page after a change: a page of an
    /// unfiltered window is then found by position (a window of 100,000 records paged by
    /// offset cost the sandbox O(page number) per page, which the bench measured as the
    /// engine's).
    time_order: std::sync::OnceLock<Vec<(TimeKey, usize)>>,
    pub scripts: HashMap<String, QfpayScript>,
}

/// A `syssn` as QFPay writes them now: 26 digits, the local date first.
pub(crate) fn make_syssn(local: NaiveDateTime, seq: u64) -> String {
    format!(
        "{}00030002{:010}",
        local.format("%Y%m%d"),
        seq % 10_000_000_000
    )
}

impl MerchantBook {
    pub(crate) fn new(
        tz: FixedOffset,
        default_script: QfpayScript,
        non_cancellable_pay_types: Vec<String>,
    ) -> Self {
        Self {
            tz,
            default_script,
            non_cancellable_pay_types,
            max_page_size: None,
            records: Vec::new(),
            by_syssn: HashMap::new(),
            by_out_trade_no: HashMap::new(),
            by_time: BTreeMap::new(),
            time_order: std::sync::OnceLock::new(),
            scripts: HashMap::new(),
        }
    }

    pub(crate) fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.tz).naive_local()
    }

    fn utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        self.tz
            .from_local_datetime(&local)
            .single()
            .map_or_else(|| local.and_utc(), |t| t.to_utc())
    }

    /// Adds a record; the caller has checked that its ids are free.
    pub(crate) fn push(&mut self, record: QfpayRecord) -> usize {
        let i = self.records.len();
        self.by_syssn.insert(record.syssn.clone(), i);
        self.by_out_trade_no.insert(record.out_trade_no.clone(), i);
        self.by_time.insert((record.created_at, record.seq), i);
        self.time_order = std::sync::OnceLock::new();
        self.records.push(record);
        i
    }

    pub(crate) fn view(&self, i: usize, now: DateTime<Utc>) -> QfpayPaymentView {
        let r = &self.records[i];
        QfpayPaymentView {
            syssn: r.syssn.clone(),
            out_trade_no: r.out_trade_no.clone(),
            respcd: r.code_at(now).to_string(),
            cancel: r.cancel_flag,
            amount_minor: r.amount_minor,
            refunded_minor: r.refunded_minor,
            reversal_calls: r.reversal_calls,
            close_calls: r.close_calls,
        }
    }

    /// A record as `/trade/v1/query` lists it (docs/PROTOCOLS.md §Q2.3).
    pub(crate) fn render(&self, r: &QfpayRecord, now: DateTime<Utc>) -> Value {
        let code = r.code_at(now);
        let paydtm = match (code == PAID, r.timeline.paid_after()) {
            (true, Some(after)) => self
                .local(r.created_at + TimeDelta::from_std(after).unwrap_or_default())
                .format(TIME_FORMAT)
                .to_string(),
            _ => String::new(),
        };
        let mut v = json!({
            "syssn": r.syssn,
            "out_trade_no": r.out_trade_no,
            "order_type": if r.is_refund() { "refund" } else { "payment" },
            "pay_type": r.pay_type,
            "txamt": r.amount_minor.to_string(),
            "txcurrcd": r.currency,
            "cancel": r.cancel_flag.to_string(),
            "sysdtm": self.local(r.created_at).format(TIME_FORMAT).to_string(),
            "txdtm": r.txdtm.format(TIME_FORMAT).to_string(),
            "paydtm": paydtm,
            "respcd": code,
            "errmsg": errmsg(code),
            "chnlsn": "",
            "cardcd": "",
        });
        if let Some(orig) = &r.origssn {
            v["origssn"] = json!(orig);
        }
        for (name, value) in &r.fields {
            v[name.as_str()] = value.clone();
        }
        v
    }

    /// `/trade/v1/query`: the whole answer body.
    pub(crate) fn query(
        &self,
        params: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> (Value, usize) {
        match self.select(params, now) {
            Ok((records, page, size)) => {
                let n = records.len();
                let data: Vec<Value> = records.iter().map(|r| self.render(r, now)).collect();
                let body = json!({"respcd": PAID, "resperr": "请求成功", "respmsg": "",
                    "page": page.to_string(), "page_size": size.to_string(), "data": data});
                (body, n)
            }
            Err(msg) => (error_body(BAD_PARAMETER, msg), 0),
        }
    }

    fn select(
        &self,
        params: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<&QfpayRecord>, usize, usize), &'static str> {
        let get = |k: &str| params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
        let list = |k: &str| -> Result<Vec<&str>, &'static str> {
            match get(k) {
                None => Ok(Vec::new()),
                Some(v) if v.chars().count() > MAX_ID_LIST_CHARS => {
                    Err("id list longer than String(128)")
                }
                Some(v) => Ok(v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()),
            }
        };
        let number = |k: &str, default: usize| -> Result<usize, &'static str> {
            get(k).map_or(Ok(default), |v| {
                v.parse().map_err(|_| "page/page_size must be integers")
            })
        };
        let page = number("page", 1)?;
        let size = number("page_size", 10)?;
        if page == 0 || size == 0 || size > PAGE_SIZE as usize {
            return Err("page must be >= 1 and page_size 1..=100");
        }
        // A gateway may serve smaller pages than asked, and says so in its `page_size` echo.
        let size = self.max_page_size.map_or(size, |max| size.min(max.max(1)));
        let time = |k: &str| -> Result<Option<NaiveDateTime>, &'static str> {
            get(k)
                .map(|v| NaiveDateTime::parse_from_str(v, TIME_FORMAT))
                .transpose()
                .map_err(|_| "start_time/end_time must be YYYY-MM-DD hh:mm:ss")
        };
        let (start, end) = (time("start_time")?, time("end_time")?);
        let syssns = list("syssn")?;
        let orders = list("out_trade_no")?;
        let explicit = start.is_some() || end.is_some();
        // Missing ends default to the month of the other end, or of now (docs/PROTOCOLS.md §Q2.1).
        let month = LocalWindow::month_of(start.or(end).unwrap_or_else(|| self.local(now)));
        let window = LocalWindow {
            start: start.unwrap_or(month.start),
            end: end.unwrap_or(month.end),
        };
        if window.start > window.end {
            return Err("start_time is after end_time");
        }
        if LocalWindow::month_of(window.start) != LocalWindow::month_of(window.end) {
            return Err("the window crosses a calendar month");
        }
        let pay_types: Vec<&str> = get("pay_type")
            .map(|v| v.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let respcd = get("respcd");
        let (lo, hi) = (
            self.utc(window.start),
            self.utc(window.end) + TimeDelta::seconds(1),
        );
        let in_window = |r: &QfpayRecord| r.created_at >= lo && r.created_at < hi;
        let keep = |r: &QfpayRecord| {
            r.created_at <= now
                && (pay_types.is_empty() || pay_types.contains(&r.pay_type.as_str()))
                && respcd.is_none_or(|c| r.code_at(now) == c)
        };
        let skip = (page - 1) * size;
        let picked: Vec<&QfpayRecord> = if !syssns.is_empty() || !orders.is_empty() {
            // Times are ignored with syssn (QFPay 2024); with out_trade_no they filter when sent.
            let index = if syssns.is_empty() {
                &self.by_out_trade_no
            } else {
                &self.by_syssn
            };
            let ids = if syssns.is_empty() { &orders } else { &syssns };
            let mut found: Vec<&QfpayRecord> = ids
                .iter()
                .filter_map(|id| index.get(*id))
                .map(|&i| &self.records[i])
                .filter(|r| keep(r) && (!syssns.is_empty() || !explicit || in_window(r)))
                .collect();
            found.sort_by_key(|r| (r.created_at, r.seq));
            found.dedup_by_key(|r| r.seq);
            found.into_iter().skip(skip).take(size).collect()
        } else if pay_types.is_empty() && respcd.is_none() {
            let order = self
                .time_order
                .get_or_init(|| self.by_time.iter().map(|(&k, &i)| (k, i)).collect());
            let from = order.partition_point(|(k, _)| *k < (lo, 0));
            let to = order.partition_point(|(k, _)| *k < (hi, 0) && k.0 <= now);
            order[from..to.max(from)]
                .iter()
                .skip(skip)
                .take(size)
                .map(|&(_, i)| &self.records[i])
                .collect()
        } else {
            self.by_time
                .range((lo, 0)..(hi, 0))
                .map(|(_, &i)| &self.records[i])
                .filter(|r| keep(r))
                .skip(skip)
                .take(size)
                .collect()
        };
        Ok((picked, page, size))
    }
}
