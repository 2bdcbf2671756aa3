//! Fault soak (issue 8 item 3; also issue 6's end-to-end test with faults injected): the
//! daemon binary works a ledger against a sandbox that answers ~10 % of calls with HTTP 5xx,
//! holds 5 % past the client's timeout, truncates 2 % of bodies, signs 2 % with the wrong key,
//! and refuses bursts with HTTP 403 (ECPay's rate limit). Every payment still reaches the
//! sandbox's truth, and no payment is ever failed, cancelled or reversed on the strength of a
//! transport fault: every such transition carries a real gateway answer as its evidence.

mod reliability_support;

use std::process::Command;
use std::time::{Duration, Instant};

use payrecon::sandbox::{Faults, RateLimits};
use reliability_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payment_reaches_its_truth_through_faults_and_none_is_decided_by_one() {
    let seed = seed(0xFA017);
    let long = long_tests();
    let knobs = Knobs {
        faults: Faults {
            seed,
            server_error_rate: 0.10,
            timeout_rate: 0.05,
            timeout_hold: Duration::from_millis(900),
            malformed_rate: 0.02,
            bad_signature_rate: 0.02,
            ..Faults::none()
        },
        // QFPay keeps its documented limits (payrecon paces under them); ECPay allows a
        // small part of what the pass needs at the pace payrecon is configured for (6,000/min), so
        // 403 bursts come and go.
        limits: RateLimits {
            ecpay_per_minute: Some(200),
            ..RateLimits::default()
        },
        account: "retry_for = \"1s\"\nrequest_timeout = \"400ms\"\n".into(),
        ecpay: "pause_after_403 = \"1s\"\nrate_per_minute = 300\n".into(),
        ..Knobs::default()
    };
    let mix = Mix {
        qf_old: if long { 4_000 } else { 1_000 },
        qf_fresh: 40,
        ec_old: if long { 1_500 } else { 200 },
        ec_fresh: 30,
        open_ones: true,
    };
    let w = world(mix, knobs, seed).await;
    let log = w.dir.path().join("daemon.log");
    let mut daemon = w.spawn(&["run"], &log);
    let started = Instant::now();
    // It settles in ~125 s on an idle 2-core machine and has needed 141 s (and once missed 150)
    // beside parallel builds: the bound is for a hang, not a benchmark.
    let deadline = Duration::from_secs(if long { 600 } else { 240 });
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (bad, _) = w.mismatches().await;
        if bad.is_empty() {
            break;
        }
        if started.elapsed() > deadline {
            let _ = daemon.kill();
            panic!(
                "not settled in {deadline:?}: {} mismatches, e.g.\n{}",
                bad.len(),
                bad.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
            );
        }
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon died: {}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    let took = started.elapsed();
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let status = daemon.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "daemon exit {status:?}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for s in SECRETS {
        assert!(!stderr.contains(s), "a secret reached the log");
    }

    let events = w.assert_invariants().await;
    let (_, stranded) = w.mismatches().await;

    // Every decisive transition rests on a gateway answer; transport faults change nothing.
    let db = w.db().await;
    type Transition = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<Transition> = db
        .fetch_all(
            "SELECT payment_id, kind, from_state, to_state, provider_code, evidence FROM events
             WHERE from_state IS DISTINCT FROM to_state OR kind = 'call_failed'",
        )
        .await;
    let mut call_failed = 0;
    for (payment_id, kind, from, to, code, evidence) in rows {
        let what = format!("payment {payment_id}: {kind} {from:?} -> {to:?} ({code:?})");
        match (kind.as_str(), to.as_deref()) {
            ("call_failed", _) => {
                call_failed += 1;
                assert_eq!(from, to, "a failed call changed state: {what}");
            }
            ("registered", _) => {}
            ("observed", Some(_)) | ("reversal_intent", Some("reversing")) => {
                assert!(code.is_some(), "no gateway code: {what}");
                assert!(
                    evidence != "{}" && !evidence.is_empty(),
                    "no evidence: {what}"
                );
            }
            _ => panic!("unexpected transition in a fault soak: {what}"),
        }
        if to.as_deref() == Some("reversing") && from.as_deref() != Some("reversing") {
            // The fresh query right before a reversal must have said "still in progress". (A
            // failed confirmation query of a payment already reversing stays reversing: the
            // `call_failed` arm above checks it changed nothing.)
            assert!(
                matches!(code.as_deref(), Some("1143" | "1145")),
                "reversal without an in-progress answer: {what}"
            );
        }
    }
    let needs_review = db
        .fetch_all::<(i64,)>(
            "SELECT COUNT(*) FROM payments WHERE state IN ('needs_review', 'cancelled')",
        )
        .await[0]
        .0;
    db.close().await;
    assert_eq!(
        needs_review, 0,
        "a fault pushed payments to review or cancelled"
    );

    let s = w.sandbox.stats();
    eprintln!(
        "fault soak: {} payments settled in {took:.1?}; {} gateway calls; injected {} 5xx, {} timeouts, \
         {} truncated bodies, {} bad signatures, {} HTTP 403 and {} HTTP 429 refusals; {call_failed} \
         call_failed events, {} reversals, {stranded} stranded in reversing, {events} events checked, \
         0 payments failed or reversed by a fault",
        w.payments.len(),
        s.total(true) + s.total(false),
        s.http_5xx,
        s.timeouts,
        s.malformed,
        s.bad_signatures,
        s.http_403,
        s.http_429,
        w.reversals(),
    );
    assert!(s.http_5xx > 0 && s.timeouts > 0 && s.malformed > 0 && s.bad_signatures > 0);
    assert!(s.http_403 > 0, "no rate-limit burst happened");
}
