//! The sandbox's idea of "now": wall-clock time plus a settable offset, or a frozen instant.
//!
//! Scenario time (when a payment settles, `sysdtm`, ECPay's `Timestamp` window) follows this
//! clock, so tests move time forward instead of sleeping. Rate limits and fault timings use
//! real time (they are about how fast requests really arrive).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Wall clock shifted by `offset`.
    Wall { offset: TimeDelta },
    /// Stands still at this instant until moved.
    Frozen(DateTime<Utc>),
}

/// A clock shared by the sandbox and whoever drives it. Clones share the same time.
#[derive(Debug, Clone)]
pub struct SandboxClock {
    mode: Arc<RwLock<Mode>>,
}

impl Default for SandboxClock {
    fn default() -> Self {
        Self::wall()
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl SandboxClock {
    /// Wall-clock time (the default).
    pub fn wall() -> Self {
        Self {
            mode: Arc::new(RwLock::new(Mode::Wall {
                offset: TimeDelta::zero(),
            })),
        }
    }

    /// A clock that stands still at `t` until [`SandboxClock::advance`] or
    /// [`SandboxClock::set`] moves it.
    pub fn frozen(t: DateTime<Utc>) -> Self {
        Self {
            mode: Arc::new(RwLock::new(Mode::Frozen(t))),
        }
    }

    fn read(&self) -> Mode {
        *self
            .mode
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, f: impl FnOnce(&mut Mode)) {
        let mut guard = self
            .mode
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard);
    }

    /// The sandbox's current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self.read() {
            Mode::Wall { offset } => Utc::now() + offset,
            Mode::Frozen(t) => t,
        }
    }

    /// Moves time forward by `d` (a wall clock keeps running from there).
    pub fn advance(&self, d: Duration) {
        self.write(|m| match m {
            Mode::Wall { offset } => *offset += delta(d),
            Mode::Frozen(t) => *t += delta(d),
        });
    }

    /// Jumps to `t`: a frozen clock stays frozen there; a wall clock keeps running from `t`.
    pub fn set(&self, t: DateTime<Utc>) {
        self.write(|m| match m {
            Mode::Wall { offset } => *offset = t - Utc::now(),
            Mode::Frozen(at) => *at = t,
        });
    }

    /// Makes a frozen clock run again from where it stands.
    pub fn unfreeze(&self) {
        self.write(|m| {
            if let Mode::Frozen(t) = *m {
                *m = Mode::Wall {
                    offset: t - Utc::now(),
                };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-01T02:00:00Z")
            .unwrap()
            .to_utc();
        let c = SandboxClock::frozen(t0);
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now(), t0 + TimeDelta::seconds(90));
        let shared = c.clone();
        shared.set(t0);
        assert_eq!(c.now(), t0);
    }

    #[test]
    fn a_wall_clock_can_be_shifted_forward() {
        let c = SandboxClock::wall();
        c.advance(Duration::from_secs(3600));
        let ahead = c.now() - Utc::now();
        assert!(ahead > TimeDelta::minutes(59) && ahead <= TimeDelta::minutes(60));
    }
}
