//! Building request bodies (pure): the sorted, non-empty form parameters that are both signed and
//! sent, calendar-month window splitting, and id batching for comma-list lookups.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeDelta, Utc};

use crate::domain::{OutTradeNo, ProviderRef};

/// QFPay's time format for `txdtm`, `start_time`, `end_time` and `sysdtm` (docs/PROTOCOLS.md §Q2.1).
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Largest `page_size` QFPay accepts (docs/PROTOCOLS.md §Q2.1).
pub const PAGE_SIZE: u32 = 100;

/// `syssn` / `out_trade_no` lists are typed String(128) (docs/PROTOCOLS.md §Q2.1): a batch never joins to
/// more characters than this, whatever the configured batch size.
pub const MAX_ID_LIST_CHARS: usize = 128;

/// An `out_trade_no` created this close to a month boundary is also looked up in the
/// neighbouring month: `sysdtm` (which the window filters on) is QFPay's clock, not ours.
pub const MONTH_EDGE_MARGIN: TimeDelta = TimeDelta::minutes(15);

/// Form parameters kept sorted by name with empty values dropped, so the body and the signature
/// are built from the same list and can never disagree (docs/PROTOCOLS.md §Q1.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Form {
    params: Vec<(&'static str, String)>,
}

impl Form {
    /// Sets a parameter; an empty value removes it (never sent, never signed).
    pub(crate) fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.params.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) if value.is_empty() => {
                self.params.remove(i);
            }
            Ok(i) => self.params[i].1 = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.params.insert(i, (name, value)),
        }
        self
    }

    pub(crate) fn set_opt(&mut self, name: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.set(name, v);
        }
        self
    }

    pub(crate) fn params(&self) -> &[(&'static str, String)] {
        &self.params
    }

    /// `application/x-www-form-urlencoded` body (spaces as `+`), in the signed order.
    pub(crate) fn encode(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.params {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

/// A query window inside one calendar month, in provider-local time, both ends inclusive at
/// second resolution (as `start_time`/`end_time` are sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalWindow {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

impl LocalWindow {
    pub fn start_time(&self) -> String {
        self.start.format(TIME_FORMAT).to_string()
    }
    pub fn end_time(&self) -> String {
        self.end.format(TIME_FORMAT).to_string()
    }

    /// The whole calendar month that contains `t`.
    pub fn month_of(t: NaiveDateTime) -> Self {
        let first = first_of_month(t.date());
        Self {
            start: first.and_time(chrono::NaiveTime::MIN),
            end: next_month(first).and_time(chrono::NaiveTime::MIN) - TimeDelta::seconds(1),
        }
    }
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn next_month(first: NaiveDate) -> NaiveDate {
    let (y, m) = if first.month() == 12 {
        (first.year() + 1, 1)
    } else {
        (first.year(), first.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(first)
}

fn floor_second(t: NaiveDateTime) -> NaiveDateTime {
    t - TimeDelta::nanoseconds(i64::from(t.and_utc().timestamp_subsec_nanos()))
}

/// Splits the half-open interval `[start, end)` into windows that never cross a calendar month
/// in the account's timezone (docs/PROTOCOLS.md §Q2.1 cross-month CONFLICT; always send both
/// times). The last second sent is the last whole second before `end`. Empty when `end <= start`.
pub fn month_windows(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    tz: FixedOffset,
) -> Vec<LocalWindow> {
    if end <= start {
        return Vec::new();
    }
    let mut from = floor_second(start.with_timezone(&tz).naive_local());
    let last = floor_second(
        (end - TimeDelta::nanoseconds(1))
            .with_timezone(&tz)
            .naive_local(),
    );
    let mut out = Vec::new();
    while from <= last {
        let month_end = LocalWindow::month_of(from).end;
        let to = month_end.min(last);
        out.push(LocalWindow {
            start: from,
            end: to,
        });
        from = to + TimeDelta::seconds(1);
    }
    out
}

/// Which comma-list parameter a batch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKey {
    Syssn,
    OutTradeNo,
}

impl IdKey {
    pub(crate) fn param(self) -> &'static str {
        match self {
            IdKey::Syssn => "syssn",
            IdKey::OutTradeNo => "out_trade_no",
        }
    }
}

/// A merchant order number to look up, with when the ledger registered it (if known), so a
/// payment from an earlier month is searched in its own month (docs/PROTOCOLS.md §Q2.1: whether an
/// `out_trade_no` query without times only sees the current month is unconfirmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLookup {
    pub out_trade_no: OutTradeNo,
    pub created_at: Option<DateTime<Utc>>,
}

/// What to look up by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdLookup {
    /// QFPay numbers; the server ignores times when `syssn` is given (docs/PROTOCOLS.md §Q2.1).
    Syssn(Vec<ProviderRef>),
    OutTradeNo(Vec<OrderLookup>),
}

/// One `/trade/v1/query` call of a comma list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBatch {
    pub key: IdKey,
    pub ids: Vec<String>,
    /// The month window sent with an `out_trade_no` batch, when the creation time is known.
    pub window: Option<LocalWindow>,
}

/// Splits a lookup into batches of at most `batch_size` ids whose comma list fits
/// [`MAX_ID_LIST_CHARS`]. `out_trade_no` ids are grouped by the local month of their creation
/// time (plus the neighbouring month within [`MONTH_EDGE_MARGIN`] of a boundary); ids without a
/// creation time are sent without a window. Duplicate ids are sent once per group.
pub fn plan_batches(lookup: &IdLookup, batch_size: u32, tz: FixedOffset) -> Vec<IdBatch> {
    let size = batch_size.max(1) as usize;
    let mut groups: BTreeMap<Option<LocalWindow>, Vec<String>> = BTreeMap::new();
    let key = match lookup {
        IdLookup::Syssn(ids) => {
            let g = groups.entry(None).or_default();
            g.extend(ids.iter().map(|id| id.as_str().to_string()));
            IdKey::Syssn
        }
        IdLookup::OutTradeNo(orders) => {
            for o in orders {
                let id = o.out_trade_no.as_str().to_string();
                let Some(at) = o.created_at else {
                    groups.entry(None).or_default().push(id);
                    continue;
                };
                let local = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
                let mut windows = vec![LocalWindow::month_of(local(at))];
                for edge in [at - MONTH_EDGE_MARGIN, at + MONTH_EDGE_MARGIN] {
                    let w = LocalWindow::month_of(local(edge));
                    if !windows.contains(&w) {
                        windows.push(w);
                    }
                }
                for w in windows {
                    groups.entry(Some(w)).or_default().push(id.clone());
                }
            }
            IdKey::OutTradeNo
        }
    };
    let mut out = Vec::new();
    for (window, mut ids) in groups {
        ids.sort();
        ids.dedup();
        let mut current: Vec<String> = Vec::new();
        let mut chars = 0;
        for id in ids {
            let extra = id.len() + usize::from(!current.is_empty());
            if !current.is_empty() && (current.len() == size || chars + extra > MAX_ID_LIST_CHARS) {
                out.push(IdBatch {
                    key,
                    ids: std::mem::take(&mut current),
                    window,
                });
                chars = 0;
            }
            chars += id.len() + usize::from(!current.is_empty());
            current.push(id);
        }
        if !current.is_empty() {
            out.push(IdBatch {
                key,
                ids: current,
                window,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hk() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        hk().with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().to_utc()
    }

    fn w(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    fn texts(ws: &[LocalWindow]) -> Vec<(String, String)> {
        ws.iter().map(|w| (w.start_time(), w.end_time())).collect()
    }

    #[test]
    fn the_form_drops_empty_values_sorts_by_name_and_encodes_spaces_as_plus() {
        let mut f = Form::default();
        f.set("start_time", "2024-03-01 00:00:00")
            .set("respcd", "")
            .set("pay_type", "800101,800201")
            .set("mchid", "ZaMVg12345")
            .set("end_time", "2024-03-31 23:59:59")
            .set("page_size", "100")
            .set("page", "1");
        let names: Vec<_> = f.params().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "end_time",
                "mchid",
                "page",
                "page_size",
                "pay_type",
                "start_time"
            ]
        );
        // The wire body of the worked example (docs/PROTOCOLS.md §Q1.7, line 3).
        assert_eq!(
            f.encode(),
            "end_time=2024-03-31+23%3A59%3A59&mchid=ZaMVg12345&page=1&page_size=100\
             &pay_type=800101%2C800201&start_time=2024-03-01+00%3A00%3A00"
        );
        f.set("page", "");
        assert!(f.params().iter().all(|(n, _)| *n != "page"));
    }

    #[test]
    fn a_window_across_midnight_at_month_end_becomes_two_requests() {
        let ws = month_windows(at(2026, 10, 31, 23, 0, 0), at(2026, 11, 1, 1, 0, 0), hk());
        assert_eq!(
            texts(&ws),
            [
                w("2026-10-31 23:00:00", "2026-10-31 23:59:59"),
                w("2026-11-01 00:00:00", "2026-11-01 00:59:59"),
            ]
        );
    }

    #[test]
    fn month_boundaries_are_taken_in_the_account_timezone() {
        // 16:00 UTC on 31 October is already 1 November in Hong Kong.
        let start = Utc.with_ymd_and_hms(2026, 10, 31, 15, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 10, 31, 17, 0, 0).unwrap();
        assert_eq!(
            texts(&month_windows(start, end, hk())),
            [
                w("2026-10-31 23:00:00", "2026-10-31 23:59:59"),
                w("2026-11-01 00:00:00", "2026-11-01 00:59:59"),
            ]
        );
        let utc = FixedOffset::east_opt(0).unwrap();
        assert_eq!(month_windows(start, end, utc).len(), 1);
    }

    #[test]
    fn a_long_window_is_split_into_whole_months_including_december() {
        let ws = month_windows(at(2026, 11, 15, 0, 0, 0), at(2027, 2, 1, 0, 0, 0), hk());
        assert_eq!(
            texts(&ws),
            [
                w("2026-11-15 00:00:00", "2026-11-30 23:59:59"),
                w("2026-12-01 00:00:00", "2026-12-31 23:59:59"),
                w("2027-01-01 00:00:00", "2027-01-31 23:59:59"),
            ]
        );
        assert!(month_windows(at(2026, 1, 1, 0, 0, 0), at(2026, 1, 1, 0, 0, 0), hk()).is_empty());
    }

    fn syssns(n: usize) -> Vec<ProviderRef> {
        (0..n)
            .map(|i| ProviderRef::parse(&format!("202611220001000200{i:08}")).unwrap())
            .collect()
    }

    #[test]
    fn syssn_lookups_are_batched_by_the_configured_size() {
        let batches = plan_batches(&IdLookup::Syssn(syssns(9)), 4, hk());
        let sizes: Vec<_> = batches.iter().map(|b| b.ids.len()).collect();
        assert_eq!(sizes, [4, 4, 1]);
        assert!(
            batches
                .iter()
                .all(|b| b.key == IdKey::Syssn && b.window.is_none())
        );
    }

    #[test]
    fn a_batch_never_exceeds_128_characters_even_with_a_large_batch_size() {
        // 26-digit syssn: 4 fit in 107 characters, a fifth would need 134.
        let batches = plan_batches(&IdLookup::Syssn(syssns(10)), 50, hk());
        assert!(
            batches
                .iter()
                .all(|b| b.ids.join(",").len() <= MAX_ID_LIST_CHARS)
        );
        assert_eq!(batches[0].ids.len(), 4);
    }

    fn order(no: &str, created: Option<DateTime<Utc>>) -> OrderLookup {
        OrderLookup {
            out_trade_no: OutTradeNo::parse(no, crate::domain::Provider::Qfpay).unwrap(),
            created_at: created,
        }
    }

    #[test]
    fn out_trade_no_lookups_carry_the_month_window_of_their_creation() {
        let lookup = IdLookup::OutTradeNo(vec![
            order("A1", Some(at(2026, 9, 10, 12, 0, 0))),
            order("A2", None),
            order("A3", Some(at(2026, 9, 20, 12, 0, 0))),
        ]);
        let batches = plan_batches(&lookup, 4, hk());
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].ids, ["A2"]);
        assert_eq!(batches[0].window, None);
        assert_eq!(batches[1].ids, ["A1", "A3"]);
        let win = batches[1].window.unwrap();
        assert_eq!(
            (win.start_time(), win.end_time()),
            w("2026-09-01 00:00:00", "2026-09-30 23:59:59")
        );
    }

    #[test]
    fn an_order_created_just_before_month_end_is_also_looked_up_in_the_next_month() {
        let lookup = IdLookup::OutTradeNo(vec![order("A1", Some(at(2026, 9, 30, 23, 55, 0)))]);
        let batches = plan_batches(&lookup, 4, hk());
        let months: Vec<_> = batches
            .iter()
            .map(|b| b.window.unwrap().start_time())
            .collect();
        assert_eq!(months, ["2026-09-01 00:00:00", "2026-10-01 00:00:00"]);
    }
}
