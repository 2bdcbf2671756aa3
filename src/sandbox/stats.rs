//! Call counters: every request that reached an endpoint, per endpoint and per merchant, and how
//! many ended in each kind of refusal or injected fault; when each QFPay call arrived (for "the
//! most calls of a merchant in any 60-second window"), and how often each sweep page was served.
//! Read them with [`super::SandboxHandle::stats`] or `GET /sandbox/stats` (the same JSON, without
//! the per-id, per-call and per-page detail, which grows with use).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One kind of gateway call the sandbox serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    QfpayPayment,
    /// `/trade/v1/query` with `syssn` or `out_trade_no` (an id lookup).
    QfpayQueryById,
    /// `/trade/v1/query` by time window only (a sweep page).
    QfpayQueryWindow,
    QfpayReversal,
    QfpayClose,
    QfpayRefund,
    EcpayCreditDetail,
    EcpayCashier,
}

impl CallKind {
    pub fn is_qfpay(self) -> bool {
        !matches!(self, CallKind::EcpayCreditDetail | CallKind::EcpayCashier)
    }
}

/// How a call ended, when it did not end in a normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mishap {
    /// QFPay HTTP 429.
    RateLimited429,
    /// ECPay HTTP 403.
    RateLimited403,
    /// Injected HTTP 503.
    ServerError,
    /// Injected hold past the client's timeout.
    Timeout,
    /// Injected truncated body.
    Malformed,
    /// Injected wrong QFPay response signature or ECPay Data key.
    BadSignature,
    /// QFPay `1108`: the request signature (or app code) did not verify.
    SignatureRejected,
    /// ECPay `TransCode != 1` because `RqHeader.Timestamp` was outside the window.
    StaleTimestamp,
}

/// A snapshot of the counters. `calls` counts every request that reached an endpoint,
/// including those refused with 429/403 or hit by a fault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub calls: BTreeMap<CallKind, u64>,
    /// Calls per merchant (QFPay app code, ECPay MerchantID as sent) and kind.
    pub by_merchant: BTreeMap<String, BTreeMap<CallKind, u64>>,
    pub http_429: u64,
    pub http_403: u64,
    pub http_5xx: u64,
    pub timeouts: u64,
    pub malformed: u64,
    pub bad_signatures: u64,
    /// QFPay requests answered `1108`.
    pub signature_rejected: u64,
    /// ECPay requests refused for a stale `RqHeader.Timestamp`.
    pub stale_timestamps: u64,
    /// QFPay query records returned, summed over all pages.
    pub qfpay_records_returned: u64,
    /// ECPay CreditDetail queries whose `Data` carried a `TradeNo`: seed 003 reserves it for
    /// recurring (定期定額) authorizations after the first.
    pub ecpay_trade_no_sent: u64,
    /// Requests refused for breaking a documented rule (docs/SANDBOX.md), per rule.
    pub refused: BTreeMap<String, u64>,
    /// Id lookups that reached a merchant's book, per `merchant/id`: each QFPay query names
    /// every `syssn` / `out_trade_no` in its lists, each ECPay query its `MerchantTradeNo`.
    /// Tests read it to prove that no payment was asked about twice when once was enough.
    /// Left out of the JSON endpoint, which would grow with every id.
    #[serde(skip)]
    pub lookups_by_id: BTreeMap<String, u64>,
    /// When each QFPay call reached the sandbox (any endpoint, refused ones included, as the
    /// rate limiter sees them), per merchant (app code as sent), in arrival order: real time
    /// since the counters were created. At most [`MAX_CALL_TIMES`] per merchant are kept (the
    /// oldest go first, counted in `qfpay_call_times_dropped`). Read it with
    /// [`StatsSnapshot::max_qfpay_calls_in`]; left out of the JSON endpoint.
    #[serde(skip)]
    pub qfpay_call_times: BTreeMap<String, VecDeque<Duration>>,
    /// QFPay call times forgotten because a merchant's timeline reached [`MAX_CALL_TIMES`].
    pub qfpay_call_times_dropped: u64,
    /// Computed when the snapshot is taken: per QFPay merchant, the most calls in any 60-second
    /// sliding window ([`StatsSnapshot::max_qfpay_calls_in`] with 60 s). QFPay allows 400.
    pub qfpay_max_calls_per_60s: BTreeMap<String, u64>,
    /// Sweep pages served (`/trade/v1/query` by time window only, answered with records, the
    /// answer neither cut nor wrongly signed by a fault), per
    /// `"{merchant} {start_time}..{end_time} page {page}"` as sent. Read it with
    /// [`StatsSnapshot::pages_fetched_more_than_once`]; left out of the JSON endpoint.
    #[serde(skip)]
    pub sweep_pages: BTreeMap<String, u64>,
    /// Computed when the snapshot is taken: how many distinct sweep pages were served twice or
    /// more.
    pub sweep_pages_fetched_more_than_once: u64,
}

/// How many QFPay call times one merchant's timeline keeps: 250,000 (4 MB), over ten hours
/// of calls at QFPay's 400 a minute, far more than any test or demo makes.
pub const MAX_CALL_TIMES: usize = 250_000;

/// The key of one sweep page in [`StatsSnapshot::sweep_pages`].
pub(crate) fn page_key(merchant: &str, start: &str, end: &str, page: u64) -> String {
    format!("{merchant} {start}..{end} page {page}")
}

/// The most of `times` (ascending) that fit in one window of length `window`: a window
/// `(t - window, t]` ending at some call `t` (calls exactly `window` apart are never in the
/// same window, as with the sandbox's rate limiter).
fn max_in_window(times: &VecDeque<Duration>, window: Duration) -> u64 {
    let mut first = 0;
    let mut best = 0;
    for (last, t) in times.iter().enumerate() {
        while t.saturating_sub(times[first]) >= window {
            first += 1;
        }
        best = best.max(last + 1 - first);
    }
    best as u64
}

impl StatsSnapshot {
    /// Calls of one kind.
    pub fn count(&self, kind: CallKind) -> u64 {
        self.calls.get(&kind).copied().unwrap_or(0)
    }

    /// All calls to one gateway.
    pub fn total(&self, qfpay: bool) -> u64 {
        self.calls
            .iter()
            .filter(|(k, _)| k.is_qfpay() == qfpay)
            .map(|(_, n)| n)
            .sum()
    }

    /// How many id lookups that reached the merchant's book named `id`.
    pub fn lookups(&self, merchant: &str, id: &str) -> u64 {
        self.lookups_by_id
            .get(&format!("{merchant}/{id}"))
            .copied()
            .unwrap_or(0)
    }

    /// Calls of one kind for one merchant.
    pub fn merchant_count(&self, merchant: &str, kind: CallKind) -> u64 {
        self.by_merchant
            .get(merchant)
            .and_then(|m| m.get(&kind))
            .copied()
            .unwrap_or(0)
    }

    /// The largest number of QFPay calls (any endpoint, refused ones included) of `merchant`
    /// in any sliding window of length `window`, e.g. 60 s for QFPay's 400 a minute. Two calls
    /// exactly `window` apart are not in the same window. 0 for a merchant never called.
    pub fn max_qfpay_calls_in(&self, merchant: &str, window: Duration) -> u64 {
        self.qfpay_call_times
            .get(merchant)
            .map_or(0, |times| max_in_window(times, window))
    }

    /// The sweep pages (merchant, window, page number) served more than once, each as
    /// `"{merchant} {start_time}..{end_time} page {page} ×{times}"`, in key order.
    pub fn pages_fetched_more_than_once(&self) -> Vec<String> {
        self.sweep_pages
            .iter()
            .filter(|(_, n)| **n >= 2)
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect()
    }

    /// How many times one sweep page was served.
    pub fn page_fetches(&self, merchant: &str, start: &str, end: &str, page: u64) -> u64 {
        self.sweep_pages
            .get(&page_key(merchant, start, end, page))
            .copied()
            .unwrap_or(0)
    }
}

/// The live counters, shared by the server and the handle.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    inner: Arc<Mutex<StatsSnapshot>>,
    /// Where the QFPay call timeline's times count from.
    epoch: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

impl Stats {
    fn with<T>(&self, f: impl FnOnce(&mut StatsSnapshot) -> T) -> T {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn call(&self, kind: CallKind, merchant: &str) {
        // `now` is read under the lock, so the timeline is in arrival order.
        self.call_at(kind, merchant, None);
    }

    /// [`Stats::call`] at a given instant (`None`: now, read under the lock).
    fn call_at(&self, kind: CallKind, merchant: &str, at: Option<Instant>) {
        let epoch = self.epoch;
        self.with(|s| {
            *s.calls.entry(kind).or_default() += 1;
            *s.by_merchant
                .entry(merchant.to_string())
                .or_default()
                .entry(kind)
                .or_default() += 1;
            if kind.is_qfpay() {
                let t = at
                    .unwrap_or_else(Instant::now)
                    .saturating_duration_since(epoch);
                let times = s.qfpay_call_times.entry(merchant.to_string()).or_default();
                if times.len() >= MAX_CALL_TIMES {
                    times.pop_front();
                    s.qfpay_call_times_dropped += 1;
                }
                if times.back().is_none_or(|last| *last <= t) {
                    times.push_back(t);
                } else {
                    let i = times.partition_point(|x| *x <= t);
                    times.insert(i, t);
                }
            }
        });
    }

    /// A sweep page was served (see [`StatsSnapshot::sweep_pages`]).
    pub(crate) fn page_served(&self, merchant: &str, start: &str, end: &str, page: u64) {
        self.with(|s| {
            *s.sweep_pages
                .entry(page_key(merchant, start, end, page))
                .or_default() += 1;
        });
    }

    pub(crate) fn mishap(&self, m: Mishap) {
        self.with(|s| {
            let counter = match m {
                Mishap::RateLimited429 => &mut s.http_429,
                Mishap::RateLimited403 => &mut s.http_403,
                Mishap::ServerError => &mut s.http_5xx,
                Mishap::Timeout => &mut s.timeouts,
                Mishap::Malformed => &mut s.malformed,
                Mishap::BadSignature => &mut s.bad_signatures,
                Mishap::SignatureRejected => &mut s.signature_rejected,
                Mishap::StaleTimestamp => &mut s.stale_timestamps,
            };
            *counter += 1;
        });
    }

    pub(crate) fn looked_up<'a>(&self, merchant: &str, ids: impl IntoIterator<Item = &'a str>) {
        self.with(|s| {
            for id in ids {
                *s.lookups_by_id
                    .entry(format!("{merchant}/{id}"))
                    .or_default() += 1;
            }
        });
    }

    pub(crate) fn trade_no_sent(&self) {
        self.with(|s| s.ecpay_trade_no_sent += 1);
    }

    pub(crate) fn refused(&self, rule: &str) {
        self.with(|s| *s.refused.entry(rule.to_string()).or_default() += 1);
    }

    pub(crate) fn records_returned(&self, n: usize) {
        self.with(|s| s.qfpay_records_returned += n as u64);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut snap = self.with(|s| s.clone());
        snap.qfpay_max_calls_per_60s = snap
            .qfpay_call_times
            .iter()
            .map(|(m, times)| (m.clone(), max_in_window(times, Duration::from_secs(60))))
            .collect();
        snap.sweep_pages_fetched_more_than_once =
            snap.sweep_pages.values().filter(|n| **n >= 2).count() as u64;
        snap
    }

    pub(crate) fn reset(&self) {
        self.with(|s| *s = StatsSnapshot::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_kind_merchant_and_gateway() {
        let s = Stats::default();
        s.call(CallKind::QfpayQueryById, "A");
        s.call(CallKind::QfpayQueryById, "A");
        s.call(CallKind::QfpayReversal, "B");
        s.call(CallKind::EcpayCashier, "3002607");
        s.mishap(Mishap::RateLimited429);
        s.looked_up("A", ["X1", "X2"]);
        s.looked_up("A", ["X1"]);
        let snap = s.snapshot();
        assert_eq!(snap.lookups("A", "X1"), 2);
        assert_eq!(snap.lookups("A", "X2"), 1);
        assert_eq!(snap.lookups("B", "X1"), 0);
        assert_eq!(snap.count(CallKind::QfpayQueryById), 2);
        assert_eq!(snap.merchant_count("A", CallKind::QfpayQueryById), 2);
        assert_eq!(snap.merchant_count("B", CallKind::QfpayQueryById), 0);
        assert_eq!(snap.total(true), 3);
        assert_eq!(snap.total(false), 1);
        assert_eq!(snap.http_429, 1);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["calls"]["qfpay_query_by_id"], 2);
        s.reset();
        assert_eq!(s.snapshot(), StatsSnapshot::default());
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_busiest_sliding_window_of_qfpay_calls_is_found_per_merchant() {
        let s = Stats::default();
        let t0 = s.epoch;
        // 401 calls evenly 150 ms apart: QFPay's 400 a minute exactly. The 401st comes 60 s
        // after the first, so no 60-second window holds more than 400.
        for k in 0..=400 {
            s.call_at(CallKind::QfpayQueryById, "A", Some(t0 + ms(150 * k)));
        }
        // Then a burst of 10 within 90 ms, 100 s later, and another merchant's calls.
        for k in 0..10 {
            s.call_at(
                CallKind::QfpayQueryWindow,
                "A",
                Some(t0 + ms(160_000 + 10 * k)),
            );
        }
        s.call_at(CallKind::QfpayReversal, "B", Some(t0 + ms(1_000)));
        s.call_at(CallKind::QfpayReversal, "B", Some(t0 + ms(2_000)));
        // ECPay calls are not on the QFPay timeline.
        s.call_at(CallKind::EcpayCreditDetail, "A", Some(t0 + ms(1_000)));
        let snap = s.snapshot();
        let minute = Duration::from_secs(60);
        assert_eq!(snap.max_qfpay_calls_in("A", minute), 400);
        // 60.15 s holds all 401.
        assert_eq!(snap.max_qfpay_calls_in("A", ms(60_150)), 401);
        assert_eq!(snap.max_qfpay_calls_in("A", ms(100)), 10);
        assert_eq!(snap.max_qfpay_calls_in("A", Duration::from_secs(1)), 10);
        assert_eq!(snap.max_qfpay_calls_in("B", ms(1_000)), 1);
        assert_eq!(snap.max_qfpay_calls_in("B", ms(1_001)), 2);
        assert_eq!(snap.max_qfpay_calls_in("C", minute), 0);
        assert_eq!(snap.qfpay_max_calls_per_60s.get("A"), Some(&400));
        assert_eq!(snap.qfpay_max_calls_per_60s.get("B"), Some(&2));
        assert_eq!(snap.qfpay_call_times["A"].len(), 411);
        // The JSON endpoint carries the computed maximum, not the timeline.
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["qfpay_max_calls_per_60s"]["A"], 400);
        assert!(json.get("qfpay_call_times").is_none());
        s.reset();
        let snap = s.snapshot();
        assert_eq!(snap.max_qfpay_calls_in("A", minute), 0);
        assert!(snap.qfpay_max_calls_per_60s.is_empty());
    }

    #[test]
    fn calls_counted_out_of_order_still_land_in_time_order() {
        let s = Stats::default();
        let t0 = s.epoch;
        for at in [0, 59_000, 30_000, 61_000, 1_000] {
            s.call_at(CallKind::QfpayPayment, "A", Some(t0 + ms(at)));
        }
        let snap = s.snapshot();
        let times: Vec<u64> = snap.qfpay_call_times["A"]
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(times, [0, 1_000, 30_000, 59_000, 61_000]);
        // (1 s, 61 s] holds 30, 59 and 61; [0, 60) holds four.
        assert_eq!(snap.max_qfpay_calls_in("A", Duration::from_secs(60)), 4);
        // Live calls use the clock, read under the lock.
        s.call(CallKind::QfpayPayment, "L");
        s.call(CallKind::QfpayPayment, "L");
        let snap = s.snapshot();
        let live = &snap.qfpay_call_times["L"];
        assert!(live[0] <= live[1]);
        assert_eq!(snap.max_qfpay_calls_in("L", Duration::from_secs(60)), 2);
    }

    #[test]
    fn a_merchants_timeline_is_bounded_and_says_how_much_it_forgot() {
        let s = Stats::default();
        let t0 = s.epoch;
        for k in 0..(MAX_CALL_TIMES as u64 + 5) {
            s.call_at(CallKind::QfpayQueryById, "A", Some(t0 + ms(k)));
        }
        let snap = s.snapshot();
        assert_eq!(snap.qfpay_call_times["A"].len(), MAX_CALL_TIMES);
        assert_eq!(snap.qfpay_call_times_dropped, 5);
        assert_eq!(snap.qfpay_call_times["A"][0], ms(5));
        assert_eq!(
            snap.count(CallKind::QfpayQueryById),
            MAX_CALL_TIMES as u64 + 5
        );
    }

    #[test]
    fn sweep_pages_served_twice_are_named_per_merchant_window_and_page() {
        let s = Stats::default();
        let (a, b) = ("2026-11-10 09:00:00", "2026-11-10 10:00:00");
        s.page_served("A", a, b, 1);
        s.page_served("A", a, b, 2);
        s.page_served("A", a, b, 1);
        // Another window, another merchant: other pages.
        s.page_served("A", a, "2026-11-10 10:00:01", 1);
        s.page_served("B", a, b, 1);
        s.page_served("B", a, b, 2);
        s.page_served("B", a, b, 2);
        s.page_served("B", a, b, 2);
        let snap = s.snapshot();
        assert_eq!(
            snap.pages_fetched_more_than_once(),
            [
                "A 2026-11-10 09:00:00..2026-11-10 10:00:00 page 1 ×2",
                "B 2026-11-10 09:00:00..2026-11-10 10:00:00 page 2 ×3",
            ]
        );
        assert_eq!(snap.page_fetches("A", a, b, 2), 1);
        assert_eq!(snap.page_fetches("B", a, b, 2), 3);
        assert_eq!(snap.page_fetches("B", a, b, 3), 0);
        assert_eq!(snap.sweep_pages_fetched_more_than_once, 2);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["sweep_pages_fetched_more_than_once"], 2);
        assert!(json.get("sweep_pages").is_none());
        s.reset();
        let snap = s.snapshot();
        assert!(snap.pages_fetched_more_than_once().is_empty());
        assert!(snap.sweep_pages.is_empty());
        assert_eq!(snap, StatsSnapshot::default());
    }
}
