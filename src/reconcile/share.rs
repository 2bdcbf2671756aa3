//! **A replica takes its fair share of the lanes.** Several daemons sharing one ledger (on
//! PostgreSQL, or one SQLite file on one host) each try every account at every tick; without a
//! bound the quickest would hold every lane while the others idle. So a daemon holds at most
//! `ceil(accounts / live replicas)` account leases at once, and tries the accounts starting at
//! its own slice (from its rank among the live replicas × accounts / replicas), so each keeps
//! working the same merchants from tick to tick.
//!
//! Live replicas are those that wrote their `replicas` row within three leases
//! (`ledger::replicas`, `scheduler::LIVE_FOR_LEASES`); a daemon writes it every third of the
//! lease. When a replica dies its leases expire after one lease and its row stops counting
//! after three, so the others' shares grow and its accounts are taken at their next tick. One-off passes (`payrecon
//! reconcile`, `sweep`) are not replicas and are not bounded: an operator asked for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// This process's bound on the lanes it holds at once. Cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub(crate) struct LaneShare(Arc<Counters>, Arc<tokio::sync::Mutex<()>>);

#[derive(Debug)]
struct Counters {
    /// Lanes this process may hold at once (`usize::MAX`: unbounded).
    limit: AtomicUsize,
    /// Where this process starts trying the accounts.
    offset: AtomicUsize,
    held: AtomicUsize,
}

/// One lane's place in the share, given back when dropped (or by [`LaneShare::yield_if_over`]).
#[derive(Debug)]
pub(crate) struct ShareSlot {
    counters: Arc<Counters>,
    /// The lane's account: its index among the configured accounts, and their number (a lane
    /// of the own slice, as it is when asked, never yields).
    index: usize,
    accounts: usize,
    given_back: AtomicBool,
}

impl ShareSlot {
    /// Whether this lane's place was given back ([`LaneShare::yield_if_over`]): it must leave.
    pub fn given_back(&self) -> bool {
        self.given_back.load(Ordering::Acquire)
    }
}

impl Drop for ShareSlot {
    fn drop(&mut self) {
        if !self.given_back.load(Ordering::Acquire) {
            self.counters.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Default for LaneShare {
    fn default() -> Self {
        Self(
            Arc::new(Counters {
                limit: AtomicUsize::new(usize::MAX),
                offset: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
            }),
            Arc::default(),
        )
    }
}

/// The share of `me` among `live` replicas (sorted, `me` among them) for `accounts` accounts:
/// how many lanes it may hold at once, and the first account of its slice.
pub(crate) fn fair_share(live: &[String], me: &str, accounts: usize) -> (usize, usize) {
    let replicas = live.len().max(1);
    let share = accounts.div_ceil(replicas).max(1);
    let rank = live.iter().position(|h| h == me).unwrap_or(0);
    // Slices start evenly apart, so every replica has accounts of its own to start from even
    // when the shares overlap (3 replicas, 4 accounts: 0-1, 1-2, 2-3).
    (share, rank * accounts / replicas)
}

impl LaneShare {
    /// Bounds this process to `limit` lanes at once, trying the accounts from `offset`.
    pub fn set(&self, limit: usize, offset: usize) {
        self.0.limit.store(limit, Ordering::Release);
        self.0.offset.store(offset, Ordering::Release);
    }

    /// Lanes this process may hold at once (`None`: unbounded).
    pub fn limit(&self) -> Option<usize> {
        Some(self.0.limit.load(Ordering::Acquire)).filter(|&l| l != usize::MAX)
    }

    /// This process's turn to try for a lease: tries go one at a time, in the order the lanes
    /// asked (a fair lock), so a try that finds its account held has given its place back
    /// before the next lane reserves one.
    pub async fn take_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.1.lock().await
    }

    /// Whether the account at `index` of `accounts` is in this process's own slice.
    pub fn in_slice(&self, index: usize, accounts: usize) -> bool {
        let limit = self.0.limit.load(Ordering::Acquire);
        let offset = self.0.offset.load(Ordering::Acquire);
        accounts == 0 || (index + accounts - offset % accounts) % accounts < limit
    }

    /// A place for one more lane (of the account at `index` of `accounts`), or `None` when
    /// this process holds its share already.
    pub fn reserve(&self, index: usize, accounts: usize) -> Option<ShareSlot> {
        let limit = self.0.limit.load(Ordering::Acquire);
        self.0
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < limit).then_some(held + 1)
            })
            .ok()
            .map(|_| ShareSlot {
                counters: self.0.clone(),
                index,
                accounts,
                given_back: AtomicBool::new(false),
            })
    }

    /// Gives `slot` back when this process holds more lanes than its share (a replica joined,
    /// or this one started alone): `true` tells the lane to leave after its unit, so that a
    /// replica with room takes the account at its next tick. Lanes of the own slice stay, and
    /// of several lanes over the bound only as many leave as the excess.
    pub fn yield_if_over(&self, slot: &ShareSlot) -> bool {
        if self.in_slice(slot.index, slot.accounts) || slot.given_back.load(Ordering::Acquire) {
            return false;
        }
        let limit = self.0.limit.load(Ordering::Acquire);
        let over = self
            .0
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held > limit).then(|| held - 1)
            })
            .is_ok();
        if over {
            slot.given_back.store(true, Ordering::Release);
        }
        over
    }

    /// `items` in the order this process tries them: its own slice first.
    pub fn rotated<T>(&self, items: Vec<T>) -> Vec<T> {
        let mut items = items;
        if !items.is_empty() {
            let offset = self.0.offset.load(Ordering::Acquire) % items.len();
            items.rotate_left(offset);
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn the_shares_and_slices_cover_every_account() {
        for replicas in 1..=5 {
            for accounts in 1..=9 {
                let live = live(replicas);
                let mut covered = vec![0; accounts];
                let mut total = 0;
                for me in &live {
                    let (share, offset) = fair_share(&live, me, accounts);
                    total += share;
                    for i in 0..share.min(accounts) {
                        covered[(offset + i) % accounts] += 1;
                    }
                }
                assert!(
                    total >= accounts,
                    "{replicas} replicas, {accounts} accounts"
                );
                assert!(
                    covered.iter().all(|&c| c >= 1),
                    "{replicas} replicas, {accounts} accounts: {covered:?}"
                );
                // No replica may take all accounts while another is live (when there are
                // enough accounts to go round).
                if replicas > 1 && accounts >= replicas {
                    let (share, _) = fair_share(&live, "r0", accounts);
                    assert!(share < accounts);
                }
            }
        }
    }

    #[test]
    fn slices_start_apart() {
        let starts = |replicas, accounts| {
            let live = live(replicas);
            live.iter()
                .map(|me| fair_share(&live, me, accounts).1)
                .collect::<Vec<_>>()
        };
        assert_eq!(starts(3, 4), [0, 1, 2]);
        assert_eq!(starts(2, 4), [0, 2]);
        assert_eq!(starts(3, 9), [0, 3, 6]);
    }

    #[test]
    fn a_replica_alone_takes_every_account() {
        assert_eq!(fair_share(&live(1), "r0", 4), (4, 0));
        // Not yet among the live ones (its first beat failed): it still gets a share.
        assert_eq!(fair_share(&[], "r0", 4), (4, 0));
    }

    #[test]
    fn reserve_stops_at_the_limit_and_slots_come_back_when_dropped() {
        let share = LaneShare::default();
        assert_eq!(share.limit(), None);
        share.set(2, 1);
        let a = share.reserve(1, 4).expect("first");
        let b = share.reserve(2, 4).expect("second");
        assert!(share.reserve(3, 4).is_none());
        drop(a);
        let c = share.reserve(3, 4).expect("given back");
        assert!(share.reserve(0, 4).is_none());
        drop((b, c));
        assert_eq!(share.rotated(vec![0, 1, 2, 3]), vec![1, 2, 3, 0]);
        assert_eq!(
            (0..4).map(|i| share.in_slice(i, 4)).collect::<Vec<_>>(),
            [false, true, true, false]
        );
    }

    #[test]
    fn lanes_outside_the_slice_yield_only_the_excess() {
        let share = LaneShare::default();
        // Alone at first: all four lanes.
        let slots: Vec<_> = (0..4).map(|i| share.reserve(i, 4).unwrap()).collect();
        assert!(slots.iter().all(|s| !share.yield_if_over(s)));
        // A second replica joins: this one's share is 2, its slice accounts 0 and 1.
        share.set(2, 0);
        let yielded: Vec<bool> = slots.iter().map(|s| share.yield_if_over(s)).collect();
        assert_eq!(yielded, [false, false, true, true]);
        // Asking again gives nothing more back, and dropping the yielded slots does not
        // count them twice.
        assert!(slots.iter().all(|s| !share.yield_if_over(s)));
        drop(slots);
        assert!(share.reserve(0, 4).is_some());
        let (a, b) = (share.reserve(0, 4), share.reserve(1, 4));
        assert!(
            a.is_some() && b.is_some(),
            "every slot came back exactly once"
        );
        assert!(share.reserve(2, 4).is_none());
    }
}
