//! One contract, two stores (issue 18): each test here runs on the SQLite ledger and on the
//! PostgreSQL ledger (a server: `bash tests/run.sh`), with the same calls and the same
//! expectations. So far: account leases, their fence, and account pauses.

#[macro_use]
mod pg_support;

use std::time::Duration;

use chrono::Utc;
use payrecon::ledger::{self, LedgerError};

contract!(one_holder_at_a_time_with_a_growing_token, |l| {
    let ttl = Duration::from_secs(30);
    let t0 = Utc::now();
    let a = l
        .acquire_account("hk", "A", ttl, 400, t0)
        .await
        .unwrap()
        .expect("free");
    assert!(!a.taken_over);
    assert_eq!(a.fence.token, 1);
    let held = l
        .acquire_account("hk", "B", ttl, 400, t0)
        .await
        .unwrap()
        .expect_err("held by A");
    assert_eq!(held.holder, "A");
    assert!(held.expires_at.is_some());
    // Its own lease again (a release that failed): same holder, a higher token.
    let again = l
        .acquire_account("hk", "A", ttl, 400, t0)
        .await
        .unwrap()
        .expect("its own");
    assert!(again.fence.token > a.fence.token);
    assert!(!l.renew_account(&a.fence, ttl, t0).await.unwrap());
    assert!(l.renew_account(&again.fence, ttl, t0).await.unwrap());

    // A stalls past its lease: B takes it over; A's heartbeat is refused.
    let later = t0 + chrono::Duration::seconds(31);
    let b = l
        .acquire_account("hk", "B", ttl, 400, later)
        .await
        .unwrap()
        .expect("expired");
    assert!(b.taken_over);
    assert!(b.fence.token > again.fence.token);
    assert!(!l.renew_account(&again.fence, ttl, later).await.unwrap());

    // B gives it back with its pacer's next slot; C takes it and keeps the pace.
    let slot = later + chrono::Duration::milliseconds(150);
    assert!(l.release_account(&b.fence, Some(slot)).await.unwrap());
    assert!(!l.release_account(&b.fence, None).await.unwrap());
    let c = l
        .acquire_account("hk", "C", ttl, 400, later)
        .await
        .unwrap()
        .expect("released");
    assert!(!c.taken_over, "a released lease is not taken over");
    assert_eq!(
        c.next_call_at.map(|t| t.timestamp_millis()),
        Some(slot.timestamp_millis())
    );
    assert!(c.fence.token > b.fence.token);
});

contract!(a_holder_that_lost_its_lease_cannot_pause_the_account, |l| {
    let ttl = Duration::from_secs(30);
    let t0 = Utc::now();
    let a = l
        .acquire_account("hk", "A", ttl, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let hour = t0 + chrono::Duration::hours(1);
    l.pause_account(&a, hour, "rate limited", t0).await.unwrap();
    assert_eq!(l.paused_accounts(t0).await.unwrap(), ["hk"]);
    // A shorter pause never shortens a longer one.
    l.pause_account(&a, t0 + chrono::Duration::seconds(5), "again", t0)
        .await
        .unwrap();
    let half = t0 + chrono::Duration::minutes(30);
    assert_eq!(l.paused_accounts(half).await.unwrap(), ["hk"]);
    assert!(l.paused_accounts(hour).await.unwrap().is_empty());

    let later = t0 + chrono::Duration::seconds(31);
    l.acquire_account("hk", "B", ttl, 400, later)
        .await
        .unwrap()
        .expect("expired");
    let refused = l
        .pause_account(&a, later + chrono::Duration::days(1), "late", later)
        .await;
    assert!(
        matches!(refused, Err(LedgerError::FencedOut { ref account, token }) if account == "hk" && token == a.token),
        "{refused:?}"
    );
    assert!(l.paused_accounts(hour).await.unwrap().is_empty());
});

contract!(replicas_racing_for_an_account_get_it_once, |l| {
    let ttl = Duration::from_secs(30);
    let t0 = Utc::now();
    // Eight processes at once, on a free account and then on an expired lease.
    for at in [t0, t0 + chrono::Duration::seconds(31)] {
        let tries = (0..8).map(|i| {
            let l = l.clone();
            async move {
                l.acquire_account("hk", &format!("R{i}"), ttl, 400, at)
                    .await
                    .unwrap()
            }
        });
        let won: Vec<_> = futures::future::join_all(tries)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        assert_eq!(won.len(), 1, "{won:?}");
    }
});

fn payment(no: &str, amount: i64) -> ledger::NewPayment {
    use payrecon::domain::{AccountName, Currency, Money, OutTradeNo, Provider, RecordKind};
    ledger::NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(amount, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: Utc::now() - chrono::Duration::minutes(5),
        expires_at: None,
    }
}

contract!(registering_is_all_or_nothing_and_idempotent, |l| {
    let now = Utc::now();
    let first = l
        .register(&[payment("P1", 100), payment("P2", 200)], now)
        .await
        .unwrap();
    assert_eq!(first.inserted.len(), 2);
    let p1 = first.inserted[0].1;
    let again = l
        .register(&[payment("P1", 100), payment("P3", 300)], now)
        .await
        .unwrap();
    assert_eq!(again.already_present, [(0, p1)]);
    assert_eq!(again.inserted.len(), 1);
    // A conflict rolls the whole batch back: P4 is not written.
    let conflict = l
        .register(&[payment("P4", 400), payment("P1", 101)], now)
        .await
        .unwrap();
    assert!(conflict.inserted.is_empty());
    assert_eq!(conflict.conflicts.len(), 1);
    assert_eq!(conflict.conflicts[0].0, 1);
    assert!(
        conflict.conflicts[0]
            .1
            .contains("amount is 1.00 HKD in the ledger"),
        "{:?}",
        conflict.conflicts
    );
    assert!(l.find_payments("P4").await.unwrap().is_empty());

    let row = l.payment(p1).await.unwrap().expect("P1");
    assert_eq!(
        (row.out_trade_no.as_str(), row.state.as_str(), row.amount),
        ("P1", "pending", 100)
    );
    assert_eq!(
        row.next_check_at.as_deref(),
        Some(ledger::time::to_db(now).as_str())
    );
    assert_eq!(
        l.find_payments(&p1.to_string()).await.unwrap(),
        std::slice::from_ref(&row)
    );
    assert_eq!(l.find_payments("P1").await.unwrap(), [row]);
    let events = l.events(p1).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind.as_str(), events[0].to_state.as_deref()),
        ("registered", Some("pending"))
    );
    assert!(l.payment(9999).await.unwrap().is_none());
});

// A batch larger than one PostgreSQL statement carries, with keys repeated inside the batch
// and keys already in the ledger, is reported index by index as SQLite's row-by-row
// registering reports it: the first of a repeated key inserted, the later ones present (or a
// conflict), ids growing with the index, one `registered` event each.
contract!(
    a_large_batch_with_repeated_keys_is_reported_index_by_index,
    |l| {
        let now = Utc::now();
        let before = l
            .register(&[payment("OLD-1", 100), payment("OLD-2", 200)], now)
            .await
            .unwrap();
        let old: Vec<i64> = before.inserted.iter().map(|&(_, id)| id).collect();
        let mut batch: Vec<_> = (0..12_001)
            .map(|n| payment(&format!("N{n}"), 500))
            .collect();
        batch[3] = payment("OLD-2", 200);
        batch[7] = payment("N1", 500); // N1 again, in the same statement
        batch[6_000] = payment("N2", 500); // N2 again, in the next statement
        batch[11_000] = payment("OLD-1", 100);
        let report = l.register(&batch, now).await.unwrap();
        assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        assert_eq!(report.inserted.len(), 12_001 - 4);
        let ids_of = |n: &str| {
            let i = batch
                .iter()
                .position(|p| p.out_trade_no.as_str() == n)
                .unwrap();
            report.inserted.iter().find(|&&(j, _)| j == i).unwrap().1
        };
        assert_eq!(
            report.already_present,
            [
                (3, old[1]),
                (7, ids_of("N1")),
                (6_000, ids_of("N2")),
                (11_000, old[0])
            ]
        );
        assert!(
            report
                .inserted
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "ids grow with the index"
        );
        let last = report.inserted.last().unwrap().1;
        let events = l.events(last).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].message.as_deref(),
            Some("registered 5.00 HKD payment")
        );
        let stats = l.stats(now).await.unwrap();
        let total: i64 = stats.by_state.iter().map(|c| c.count).sum();
        assert_eq!(total, 12_001 - 4 + 2);

        // A repeated key with other details is a conflict at its index, and nothing is written.
        let mut clash: Vec<_> = (0..6_002).map(|n| payment(&format!("C{n}"), 700)).collect();
        clash[6_001] = payment("C0", 701);
        let report = l.register(&clash, now).await.unwrap();
        assert!(report.inserted.is_empty());
        assert_eq!(report.conflicts.len(), 1);
        assert_eq!(report.conflicts[0].0, 6_001);
        assert!(l.find_payments("C1").await.unwrap().is_empty());
    }
);

contract!(runs_and_discrepancies_are_recorded_and_resolved, |l| {
    let t0 = Utc::now();
    let first = l.start_run("me", "cron", t0).await.unwrap();
    // A second start by the same owner closes the first, which could not record its end.
    let second = l.start_run("me", "cron", t0).await.unwrap();
    assert!(second > first);
    let counters = ledger::RunCounters {
        claimed: 3,
        checked: 3,
        finalized: 2,
        calls: 4,
        errors: 0,
    };
    l.finish_run(second, "completed", counters, None, t0)
        .await
        .unwrap();
    assert_eq!(l.run_totals().await.unwrap(), (2, 4));

    let evidence = serde_json::json!({"syssn": "S1"});
    assert!(
        l.record_notified_unknown("hk", "S1", "hk O1: notified", &evidence, t0)
            .await
            .unwrap()
    );
    assert!(
        !l.record_notified_unknown("hk", "S1", "hk O1: notified", &evidence, t0)
            .await
            .unwrap(),
        "recorded once"
    );
    let open = l.discrepancies(false).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].kind, "notified_unknown");
    assert!(
        l.resolve_discrepancy(open[0].id, "checked", t0)
            .await
            .unwrap()
    );
    assert!(
        !l.resolve_discrepancy(open[0].id, "again", t0)
            .await
            .unwrap()
    );
    assert!(l.discrepancies(false).await.unwrap().is_empty());
    let all = l.discrepancies(true).await.unwrap();
    assert_eq!(all[0].resolution_note.as_deref(), Some("checked"));
    assert_eq!(
        all[0].resolved_at.as_deref(),
        Some(ledger::time::to_db(t0).as_str())
    );
});

contract!(
    replicas_are_live_within_the_window_and_gone_when_they_stop,
    |l| {
        let t0 = Utc::now();
        let minute = chrono::Duration::minutes(1);
        assert_eq!(l.replica_seen("b", t0, t0 - minute).await.unwrap(), ["b"]);
        assert_eq!(
            l.replica_seen("a", t0, t0 - minute).await.unwrap(),
            ["a", "b"]
        );
        // Two minutes on, only a beats: b is no longer live, but its row stays until a day old.
        let t1 = t0 + minute * 2;
        assert_eq!(l.replica_seen("a", t1, t1 - minute).await.unwrap(), ["a"]);
        assert_eq!(
            l.replica_seen("b", t1, t1 - minute).await.unwrap(),
            ["a", "b"]
        );
        l.replica_gone("b").await.unwrap();
        assert_eq!(l.replica_seen("a", t1, t1 - minute).await.unwrap(), ["a"]);
        // A row not seen for a day is forgotten; a replica always counts itself.
        let t2 = t1 + chrono::Duration::days(2);
        assert_eq!(l.replica_seen("c", t2, t2).await.unwrap(), ["c"]);
        assert_eq!(
            l.replica_seen("a", t2, t0 - minute).await.unwrap(),
            ["a", "c"],
            "a's day-old row was deleted, and live_since before it cannot bring it back"
        );
    }
);

/// PostgreSQL only (SQLite has one writer at a time, and a frozen process's lock is its own
/// file lock): a replica frozen inside a fenced write holds the lease row `FOR SHARE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replica_frozen_in_a_fenced_write_neither_hangs_the_others_nor_keeps_the_account()
 {
    let l = pg_support::pg_ledger().await;
    let ttl = Duration::from_secs(1);
    let t0 = Utc::now();
    l.acquire_account("hk", "A", ttl, 400, t0)
        .await
        .unwrap()
        .expect("free");
    // A's write transaction has taken the fence's lock, and A freezes before committing.
    let mut frozen = l.pool().begin().await.unwrap();
    sqlx::query("SELECT token FROM account_leases WHERE account = 'hk' FOR SHARE")
        .fetch_one(&mut *frozen)
        .await
        .unwrap();
    // Past A's lease, B asks for the account: told at once that it is busy, not left waiting.
    let later = t0 + chrono::Duration::seconds(5);
    let busy = tokio::time::timeout(
        Duration::from_secs(2),
        l.acquire_account("hk", "B", ttl, 400, later),
    )
    .await
    .expect("an acquisition does not wait on a lease row locked by a write in flight")
    .unwrap()
    .expect_err("busy reads as held");
    assert_eq!(busy.holder, "A");
    // The server ends the frozen session (idle in a transaction too long): the lock is gone,
    // B takes the account, and A's write, when A wakes, is refused.
    let mut taken = None;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(b) = l.acquire_account("hk", "B", ttl, 400, later).await.unwrap() {
            taken = Some(b);
            break;
        }
    }
    let b = taken.expect("B takes the account once the frozen session is ended");
    assert_eq!(b.fence.token, 2);
    assert!(b.taken_over);
    assert!(
        frozen.commit().await.is_err(),
        "the frozen transaction was rolled back"
    );
}

/// PostgreSQL only (SQLite plans these queries without statistics): a large registration (an
/// import) is analyzed at once, so the first pass after it is not planned blind (a claim by
/// ids planned without statistics took 6 s a sweep page at 1,600 payments); a small one is
/// left to autovacuum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_large_registration_leaves_the_planner_its_statistics() {
    use pg_support::Raw;
    let l = pg_support::pg_ledger().await;
    let analyzed =
        "SELECT CAST(reltuples AS bigint) FROM pg_class WHERE oid = 'payments'::regclass";
    let now = Utc::now();
    l.register(&[payment("S1", 100)], now).await.unwrap();
    assert!(l.count(analyzed).await <= 0, "one payment: not analyzed");
    let batch: Vec<_> = (0..200).map(|i| payment(&format!("B{i}"), 100)).collect();
    assert_eq!(l.register(&batch, now).await.unwrap().inserted.len(), 200);
    assert_eq!(l.count(analyzed).await, 201, "analyzed after 200");
}
