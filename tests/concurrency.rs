//! Two processes at once (issue 8 item 2): the daemon (`payrecon run`) and two one-off
//! `reconcile --once` passes, started again and again, work the same ledger against the
//! sandbox. No payment is asked about twice when one answer settled it (the sandbox counts
//! every id lookup per payment), nothing is reversed twice, every process exits cleanly and
//! none of them ever reports `database is locked`.

mod reliability_support;

use std::process::Command;
use std::time::{Duration, Instant};

use payrecon::sandbox::{BulkOutcome, CallKind, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE, Faults};
use reliability_support::*;

fn assert_clean(name: &str, log: &str) {
    let lower = log.to_lowercase();
    for bad in [
        "database is locked",
        "sqlite_busy",
        "panicked",
        "database table is locked",
    ] {
        assert!(!lower.contains(bad), "{name} reported {bad:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_and_two_one_off_passes_share_the_ledger_without_double_work() {
    let knobs = Knobs {
        // Calls take a little while, so the three processes' passes overlap for seconds.
        faults: Faults {
            latency: Duration::from_millis(5),
            ..Faults::none()
        },
        // Longer than any chunk's calls: a lease must never expire under a live pass here.
        reconcile: "lease = \"60s\"\nchunk_size = 50\n".into(),
        ..Knobs::default()
    };
    let mix = Mix {
        qf_old: 1_500,
        qf_fresh: 0,
        ec_old: 700,
        ec_fresh: 0,
        open_ones: true,
    };
    let w = world(mix, knobs, seed(0xC0C0)).await;
    let daemon_log = w.dir.path().join("daemon.log");
    let mut daemon = w.spawn(&["run"], &daemon_log);
    let started = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let logs = [1, 2].map(|i| w.dir.path().join(format!("once-{rounds}-{i}.log")));
        let mut a = w.spawn(&["reconcile", "--once"], &logs[0]);
        let mut b = w.spawn(&["reconcile", "--once"], &logs[1]);
        let (sa, sb) = (a.wait().unwrap(), b.wait().unwrap());
        for (status, log) in [(sa, &logs[0]), (sb, &logs[1])] {
            let text = std::fs::read_to_string(log).unwrap();
            assert!(
                status.success(),
                "a one-off pass failed ({status:?}):\n{text}"
            );
            assert_clean("reconcile --once", &text);
        }
        let (bad, _) = w.mismatches().await;
        if bad.is_empty() && rounds >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not settled: {bad:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = daemon.wait().unwrap();
    let daemon_text = std::fs::read_to_string(&daemon_log).unwrap();
    assert!(status.success(), "daemon exit {status:?}:\n{daemon_text}");
    assert_clean("the daemon", &daemon_text);

    w.assert_invariants().await;
    let stats = w.sandbox.stats();
    let state = w.sandbox.state();
    let db = w.db().await;
    // (account, out_trade_no) -> (attempts, observations)
    let work: std::collections::HashMap<(String, String), (i64, i64)> = db
        .fetch_all::<(String, String, i64, i64)>(
            "SELECT account, out_trade_no, attempts,
                    (SELECT COUNT(*) FROM events e WHERE e.payment_id = p.id AND e.kind = 'observed')
             FROM payments p",
        )
        .await
        .into_iter()
        .map(|(a, no, attempts, obs)| ((a, no), (attempts, obs)))
        .collect();
    let mut double = Vec::new();
    let mut lookups_checked = 0;
    for p in &w.payments {
        let settled_at_once = matches!(p.outcome, BulkOutcome::Paid | BulkOutcome::Failed);
        if p.account == EC {
            // One query settles every ECPay order of this mix.
            let n = stats.lookups(DEV_ECPAY_MERCHANT_ID, &p.out_trade_no);
            lookups_checked += 1;
            if n != 1 {
                double.push(format!("{}: {n} ECPay queries", p.out_trade_no));
            }
        } else if settled_at_once {
            // Settled by a window page (0 lookups) or one id lookup, never two.
            let n = stats.lookups(DEV_QFPAY_APP_CODE, &p.provider_ref)
                + stats.lookups(DEV_QFPAY_APP_CODE, &p.out_trade_no);
            lookups_checked += 1;
            if n > 1 {
                double.push(format!("{}: named in {n} QFPay id lookups", p.out_trade_no));
            }
        } else {
            let v = state
                .qfpay_payment(DEV_QFPAY_APP_CODE, &p.out_trade_no)
                .unwrap();
            assert!(v.reversal_calls + v.close_calls <= 1, "{v:?}");
        }
        if settled_at_once {
            let (attempts, obs) = work[&(p.account.to_string(), p.out_trade_no.clone())];
            if attempts != 1 || obs != 1 {
                double.push(format!(
                    "{}: {attempts} attempts, {obs} observations",
                    p.out_trade_no
                ));
            }
        }
    }
    let runs: Vec<(String, String, i64)> = db
        .fetch_all("SELECT owner, status, claimed FROM runs WHERE claimed > 0")
        .await;
    let failed_runs = db
        .fetch_all::<(i64,)>("SELECT COUNT(*) FROM runs WHERE status = 'failed'")
        .await[0]
        .0;
    db.close().await;
    assert!(double.is_empty(), "double work:\n{}", double.join("\n"));
    assert_eq!(failed_runs, 0, "a pass failed");
    let owners: std::collections::BTreeSet<_> = runs.iter().map(|r| &r.0).collect();
    eprintln!(
        "concurrency: {} payments, {rounds} rounds of 2 one-offs beside the daemon, {} passes that \
         claimed work by {} processes, {lookups_checked} payments' lookups checked, {} reversals, \
         {} window pages, {} id lookups, {} ECPay queries",
        w.payments.len(),
        runs.len(),
        owners.len(),
        w.reversals(),
        stats.count(CallKind::QfpayQueryWindow),
        stats.count(CallKind::QfpayQueryById),
        stats.count(CallKind::EcpayCreditDetail),
    );
    assert!(
        owners.len() >= 3,
        "the processes did not all get work, so nothing was proven: {runs:?}"
    );
}

/// The daemon meets accounts other processes hold at every tick: that is how replicas share
/// the accounts (its next tick tries again), so it says so at INFO, not as a warning that
/// would fill the journal of every replica. (A one-off pass that waited for an account and
/// still did not get it warns: `tests/lanes.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_notes_an_account_another_process_holds_without_a_warning() {
    let mix = Mix {
        qf_old: 20,
        qf_fresh: 0,
        ec_old: 10,
        ec_fresh: 0,
        open_ones: false,
    };
    let w = world(mix, Knobs::default(), seed(0xB0B)).await;
    let db = w.db().await;
    // Another replica holds the QFPay account, with a lease that outlives the test.
    let held: Vec<(i64,)> = db
        .fetch_all(&format!(
            "INSERT INTO account_leases
                 (account, holder, token, acquired_at, heartbeat_at, expires_at, pace_per_minute)
             VALUES ('{QF}', 'other-replica', 7, '2099-01-01T00:00:00.000Z',
                     '2099-01-01T00:00:00.000Z', '2099-01-01T00:01:00.000Z', 400)
             RETURNING token"
        ))
        .await;
    assert_eq!(held, [(7,)]);
    db.close().await;
    let log = w.dir.path().join("daemon.log");
    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(&w.config)
        .arg("run")
        .env("PAYRECON__LOG__LEVEL", "info")
        .env("PAYRECON__LOG__FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let said = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("is held by other-replica"))
            })
            .collect()
    };
    while said(&std::fs::read_to_string(&log).unwrap()).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon never said the account was held:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(daemon.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    for line in said(&text) {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["holder"], "other-replica", "{line}");
    }
}
