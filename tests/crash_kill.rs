//! Crash safety (issue 8 item 1): `payrecon reconcile --once` and `payrecon run` are killed with
//! SIGKILL at random points while they work a few thousand payments against the sandbox, and
//! restarted each time. At the end every payment matches the sandbox's truth, nothing was
//! reversed twice, no event takes a final state back to an open one, and SQLite's
//! `integrity_check` is `ok`.
//!
//! `PAYRECON_LONG_TESTS=1` runs the long version (more payments, 200 kills);
//! `PAYRECON_TEST_SEED=N` replays one run.

mod reliability_support;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reliability_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_and_never_reverses_twice() {
    let long = long_tests();
    let seed = seed(0x5EED_C4A5);
    let mix = if long {
        Mix {
            qf_old: 6_000,
            qf_fresh: 200,
            ec_old: 1_500,
            ec_fresh: 100,
            open_ones: true,
        }
    } else {
        Mix {
            qf_old: 2_000,
            qf_fresh: 60,
            ec_old: 600,
            ec_fresh: 40,
            open_ones: true,
        }
    };
    let kills_wanted = if long { 200 } else { 30 };
    let w = world(mix, Knobs::default(), seed).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut kills, mut finished_first, mut round) = (0, 0, 0);
    while kills < kills_wanted {
        round += 1;
        let daemon = rng.random_bool(0.4);
        let args: &[&str] = if daemon {
            &["run"]
        } else {
            &["reconcile", "--once"]
        };
        let log = w.dir.path().join(format!("round-{round}.log"));
        let mut child = w.spawn(args, &log);
        // Short random lives: most kills land inside a pass (claim, calls, apply, reversal).
        let life = Duration::from_millis(rng.random_range(30..900));
        tokio::time::sleep(life).await;
        match child.try_wait().unwrap() {
            Some(status) => {
                // The pass ended first: fine, as long as it ended well.
                let err = std::fs::read_to_string(&log).unwrap();
                assert!(status.success(), "round {round} failed: {status:?}\n{err}");
                finished_first += 1;
            }
            None => {
                child.kill().unwrap(); // SIGKILL on Unix
                child.wait().unwrap();
                kills += 1;
            }
        }
        let err = std::fs::read_to_string(&log).unwrap();
        assert!(!err.contains("panicked"), "round {round} panicked:\n{err}");
    }
    let killing = started.elapsed();
    let settle_passes = w
        .settle(Duration::from_secs(if long { 300 } else { 90 }))
        .await;
    let (bad, stranded) = w.mismatches().await;
    assert!(bad.is_empty(), "{bad:?}");
    let events = w.assert_invariants().await;
    let stats = w.sandbox.stats();
    eprintln!(
        "crash test: {} payments, {kills} SIGKILLs ({finished_first} passes finished before their kill) \
         in {killing:.1?}, settled with {settle_passes} more passes; {} reversals sent, \
         {stranded} left in reversing (intent written, call never sent), {events} events checked, \
         {} gateway calls, payments lost 0",
        w.payments.len(),
        w.reversals(),
        stats.total(true) + stats.total(false),
    );
    assert!(kills >= 30);
}
