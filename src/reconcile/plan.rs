//! QFPay call planning: for each calendar month of due payments, ask by ids in batches or
//! sweep the time window page by page, whichever costs fewer calls.
//!
//! Cost model (calls are what the 400/minute limit rations):
//! - id lookups: `⌈with_syssn / batch⌉ + ⌈without_syssn / batch⌉` calls. Lookups by `syssn`
//!   ignore time; lookups by `out_trade_no` carry the month's window (docs/PROTOCOLS.md §Q2.1).
//! - a window sweep: QFPay returns every record whose `sysdtm` falls in the window, 100 per
//!   page, with no total count, so paging stops at the first short page:
//!   `⌊records / 100⌋ + 1` calls. `records` is estimated from the ledger's own payments in that
//!   window (×1.25, for refunds and payments the ledger never saw).
//!
//! The sweep window is the due payments' creation span widened by [`WINDOW_MARGIN`] on each
//! side (the gateway's `sysdtm` is close to, not equal to, the merchant's creation time),
//! clipped to the calendar month (windows never cross a month, docs/PROTOCOLS.md §Q2.1) and to now.
//! Payments the sweep does not find are looked up by id in the same pass, so the margin affects
//! cost, never correctness.
//!
//! The estimate can be wrong (the gateway may hold far more records than the ledger knows of),
//! so a sweep stops after as many pages as the id lookups would have cost and leaves the rest to
//! them: a wrong estimate costs at most twice the id lookups, never a walk through a whole month.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};

use crate::ledger::Claimed;

/// How far around the due payments' creation times a sweep window reaches.
pub const WINDOW_MARGIN: chrono::Duration = chrono::Duration::minutes(15);
/// QFPay's maximum `page_size` (docs/PROTOCOLS.md §Q2.1).
pub const PAGE_SIZE: u64 = 100;

/// `--strategy`: the planner, or one lookup per payment like the seed samples (for benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Strategy {
    #[default]
    Planned,
    PerPayment,
}

/// Due payments of one account created in one calendar month (account time): how many, how
/// many have a `syssn`, and their creation span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthAggregate {
    pub month_start: DateTime<Utc>,
    pub next_month: DateTime<Utc>,
    pub count: usize,
    pub with_syssn: usize,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl MonthAggregate {
    pub fn new(created_at: DateTime<Utc>, tz: FixedOffset) -> Self {
        let (month_start, next_month) = month_bounds(created_at, tz);
        Self {
            month_start,
            next_month,
            count: 0,
            with_syssn: 0,
            first: created_at,
            last: created_at,
        }
    }

    pub fn add(&mut self, created_at: DateTime<Utc>, has_syssn: bool) {
        self.count += 1;
        self.with_syssn += usize::from(has_syssn);
        self.first = self.first.min(created_at);
        self.last = self.last.max(created_at);
    }

    /// The sweep window: the creation span widened by [`WINDOW_MARGIN`], clipped to the month
    /// and to now. Both ends inclusive.
    pub fn window(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = (self.first - WINDOW_MARGIN).max(self.month_start);
        let last_second = self.next_month - chrono::Duration::seconds(1);
        let end = (self.last + WINDOW_MARGIN)
            .min(last_second)
            .min(now)
            .max(start);
        (start, end)
    }

    /// What looking every payment up by id would cost.
    pub fn id_calls(&self, batch: u32) -> u64 {
        id_lookup_calls(self.with_syssn, self.count - self.with_syssn, batch)
    }

    /// Whether sweeping the window is cheaper than looking the payments up by id.
    pub fn prefer_sweep(&self, estimated_records: u64, batch: u32) -> bool {
        sweep_calls(estimated_records) < self.id_calls(batch)
    }
}

pub fn id_lookup_calls(with_syssn: usize, without_syssn: usize, batch: u32) -> u64 {
    let b = u64::from(batch.max(1));
    (with_syssn as u64).div_ceil(b) + (without_syssn as u64).div_ceil(b)
}

pub fn sweep_calls(estimated_records: u64) -> u64 {
    estimated_records / PAGE_SIZE + 1
}

/// The window's estimated record count (module doc): the ledger's count × 1.25, saturating.
pub fn estimate_records(ledger_count: u64) -> u64 {
    ledger_count.saturating_add(ledger_count / 4)
}

/// First instant of the month containing `t` (in `tz`), and of the next month, as UTC.
pub fn month_bounds(t: DateTime<Utc>, tz: FixedOffset) -> (DateTime<Utc>, DateTime<Utc>) {
    let local = t.with_timezone(&tz);
    let first = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).unwrap_or_default();
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    let at = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_time(chrono::NaiveTime::MIN))
            .single()
            .map_or(t, |x| x.with_timezone(&Utc))
    };
    (at(first), at(next))
}

/// Claimed payments of one account grouped by calendar month of creation.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthGroup {
    /// Indexes into the claimed slice.
    pub members: Vec<usize>,
    pub aggregate: MonthAggregate,
}

/// Groups claimed payments by calendar month of creation, in the account's timezone.
pub fn group_by_month(claimed: &[Claimed], members: &[usize], tz: FixedOffset) -> Vec<MonthGroup> {
    let mut groups: Vec<MonthGroup> = Vec::new();
    for &i in members {
        let c = &claimed[i];
        let (start, _) = month_bounds(c.created_at, tz);
        let g = match groups.iter().position(|g| g.aggregate.month_start == start) {
            Some(k) => &mut groups[k],
            None => {
                groups.push(MonthGroup {
                    members: Vec::new(),
                    aggregate: MonthAggregate::new(c.created_at, tz),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        g.members.push(i);
        g.aggregate.add(c.created_at, c.provider_ref.is_some());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn claimed_at(t: DateTime<Utc>, syssn: bool) -> Claimed {
        Claimed {
            provider_ref: syssn.then(|| ProviderRef::from_trusted("2026".into())),
            ..Claimed::sample(Provider::Qfpay, t)
        }
    }

    fn aggregate(count: usize) -> MonthAggregate {
        let tz = FixedOffset::east_opt(8 * 3600).unwrap();
        let mut a = MonthAggregate::new(Utc::now(), tz);
        for _ in 0..count {
            a.add(Utc::now(), true);
        }
        a
    }

    #[test]
    fn a_dense_day_is_swept_and_a_sparse_month_is_looked_up_by_id() {
        assert_eq!(sweep_calls(25_000), 251);
        assert!(aggregate(20_000).prefer_sweep(25_000, 4));
        assert_eq!(id_lookup_calls(50, 0, 4), 13);
        assert!(!aggregate(50).prefer_sweep(100_000, 4));
    }

    #[test]
    fn the_estimate_adds_a_quarter_to_the_ledger_count() {
        assert_eq!(estimate_records(100), 125);
        // An unknown count (u64::MAX) means "do not sweep", not an overflow.
        assert_eq!(estimate_records(u64::MAX), u64::MAX);
    }

    #[test]
    fn groups_split_at_the_month_boundary_in_account_time() {
        let tz = FixedOffset::east_opt(8 * 3600).unwrap();
        // 2026-10-31 23:50 and 2026-11-01 00:10 in +08:00.
        let a = tz
            .with_ymd_and_hms(2026, 10, 31, 23, 50, 0)
            .unwrap()
            .with_timezone(&Utc);
        let b = tz
            .with_ymd_and_hms(2026, 11, 1, 0, 10, 0)
            .unwrap()
            .with_timezone(&Utc);
        let claimed = vec![claimed_at(a, true), claimed_at(b, false)];
        let now = b + chrono::Duration::days(1);
        let groups = group_by_month(&claimed, &[0, 1], tz);
        assert_eq!(groups.len(), 2);
        // October's window ends at the last second of October, November's starts at its first.
        let oct_end = tz
            .with_ymd_and_hms(2026, 10, 31, 23, 59, 59)
            .unwrap()
            .with_timezone(&Utc);
        let nov_start = tz
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(groups[0].aggregate.window(now).1, oct_end);
        assert_eq!(
            groups[1].aggregate.window(now),
            (nov_start, b + WINDOW_MARGIN)
        );
        assert_eq!(
            (
                groups[0].aggregate.with_syssn,
                groups[1].aggregate.with_syssn
            ),
            (1, 0)
        );
    }
}
