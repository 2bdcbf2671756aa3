//! Review 18: the PostgreSQL store under replicas that stall, lose their connection or race,
//! against the SQLite ledger's contract and the money rules. `bash tests/run.sh --test
//! ledger_contract_review18`.

#[macro_use]
mod pg_support;

use std::time::Duration;

use chrono::Utc;
use payrecon::ledger::pg::PgLedger;

async fn two_replicas() -> (PgLedger, PgLedger) {
    let (pool, url) = pg_support::fresh_ledger().await;
    pool.close().await;
    let a = PgLedger::open(&url, Duration::from_secs(10)).await.unwrap();
    let b = PgLedger::open(&url, Duration::from_secs(10)).await.unwrap();
    (a, b)
}

fn new_payment(no: &str, t: chrono::DateTime<Utc>) -> payrecon::ledger::NewPayment {
    use payrecon::domain::{AccountName, Currency, Money, OutTradeNo, Provider, RecordKind};
    payrecon::ledger::NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(500, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: t - chrono::TimeDelta::hours(1),
        expires_at: None,
    }
}

fn update(
    id: payrecon::domain::PaymentId,
    state: payrecon::domain::PaymentState,
) -> payrecon::ledger::PaymentUpdate {
    payrecon::ledger::PaymentUpdate {
        id,
        state,
        provider_code: None,
        provider_ref: None,
        checked: true,
        retry: None,
        next_check_at: None,
        in_progress_since: None,
        seen_nudged_at: None,
        events: Vec::new(),
        discrepancies: Vec::new(),
    }
}

/// Two writers of one account's payments at once, which SQLite serialises: a lane's answer
/// (one payment in progress → succeeded, another pending → failed) and `pay`'s answer about
/// the payment it created (pending → succeeded). The trigger-kept `payment_counts` rows are
/// locked row by row as each payment changes state, so the lane locks `in_progress`,
/// `succeeded`, then waits for `pending`, which `pay` locked first and then waits for
/// `succeeded`: a deadlock, and PostgreSQL aborts one of them. The learned answer must still be
/// written (the store retries a transaction PostgreSQL aborted as a deadlock victim), not
/// lost with a failed lane. `pay`'s statement is played here as the row locks it takes, with a
/// pause between them so the interleaving is certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_answer_deadlocked_with_pay_on_the_counts_is_still_written() {
    use payrecon::domain::{PaymentId, PaymentState};
    use payrecon::ledger::WriteGuard;
    let (l, _b) = two_replicas().await;
    let t = Utc::now();
    let r = l
        .register(&[new_payment("P1", t), new_payment("P2", t)], t)
        .await
        .unwrap();
    let (p1, p2) = (PaymentId(r.inserted[0].1), PaymentId(r.inserted[1].1));
    let fence = l
        .acquire_account("hk", "A", Duration::from_secs(60), 400, t)
        .await
        .unwrap()
        .expect("free")
        .fence;
    l.apply(
        WriteGuard::Lane(&fence),
        None,
        &[update(p1, PaymentState::InProgress)],
        t,
    )
    .await
    .unwrap();
    // A payment `succeeded` already, so its counts row exists (as it would in a live ledger).
    sqlx::query(
        "INSERT INTO payment_counts (account, provider, state, n) VALUES ('hk', 'qfpay', 'succeeded', 0)
         ON CONFLICT DO NOTHING",
    )
    .execute(l.pool())
    .await
    .unwrap();

    // `pay`'s write, first half: the `pending` count.
    let mut pay = l.pool().begin().await.unwrap();
    sqlx::query("UPDATE payment_counts SET n = n WHERE account = 'hk' AND state = 'pending'")
        .execute(&mut *pay)
        .await
        .unwrap();
    let lane = {
        let (l, fence) = (l.clone(), fence.clone());
        tokio::spawn(async move {
            l.apply(
                WriteGuard::Lane(&fence),
                None,
                &[
                    update(p1, PaymentState::Succeeded),
                    update(p2, PaymentState::Failed),
                ],
                Utc::now(),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Second half: the `succeeded` count, which the lane holds.
    let second =
        sqlx::query("UPDATE payment_counts SET n = n WHERE account = 'hk' AND state = 'succeeded'")
            .execute(&mut *pay)
            .await;
    match second {
        Ok(_) => pay.commit().await.unwrap(),
        Err(_) => pay.rollback().await.unwrap(),
    }
    let written = lane.await.unwrap();
    assert!(
        written.is_ok(),
        "the lane's answer was lost to a deadlock: {written:?}"
    );
    assert_eq!(l.payment(p1.0).await.unwrap().unwrap().state, "succeeded");
    assert_eq!(l.payment(p2.0).await.unwrap().unwrap().state, "failed");
}

/// Replicas on hosts whose clocks disagree still agree on when a lease runs out: the PostgreSQL
/// store times leases and replica liveness on the server's clock (`pg::on_server_clock`).
/// Without that, B, whose clock runs 45 s ahead, took the lease A renewed 16 s earlier, while
/// A's own lease clock still let it call the merchant: two replicas calling one merchant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_ahead_cannot_take_a_lease_renewed_on_time() {
    let (a, b) = two_replicas().await;
    let b = b.with_clock(|| Utc::now() + chrono::Duration::seconds(45));
    let ttl = Duration::from_secs(60);
    let t0 = Utc::now();
    let fence = a
        .acquire_account("hk", "A", ttl, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    // A's heartbeat, on time (every third of the lease).
    let beat = t0 + chrono::Duration::seconds(20);
    assert!(a.renew_account(&fence, ttl, beat).await.unwrap());
    // 16 s later by the true clock, B tries the account, reading its own clock.
    let b_clock = t0 + chrono::Duration::seconds(36 + 45);
    let taken = b
        .acquire_account("hk", "B", ttl, 400, b_clock)
        .await
        .unwrap();
    assert!(
        taken.is_err(),
        "B took a lease A renewed 16 s ago and may call on for 24 s more"
    );
    // Nor does B's reaper clear it.
    assert_eq!(b.reap_expired_leases(b_clock).await.unwrap(), 0);
    // Once the lease truly ran out, B takes it, by its own clock still.
    let past = t0 + chrono::Duration::seconds(81 + 45);
    assert!(
        b.acquire_account("hk", "B", ttl, 400, past)
            .await
            .unwrap()
            .is_ok()
    );
}

/// A holder whose clock lags keeps its lease the whole lease: another replica cannot take it
/// early, since the lease's expiry was set on the server's clock, not on the holder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_by_a_replica_whose_clock_lags_lasts_its_whole_time() {
    let (a, b) = two_replicas().await;
    let a = a.with_clock(|| Utc::now() - chrono::Duration::seconds(45));
    let ttl = Duration::from_secs(60);
    let t0 = Utc::now();
    a.acquire_account("hk", "A", ttl, 400, t0 - chrono::Duration::seconds(45))
        .await
        .unwrap()
        .expect("free");
    // 30 s later by the true clock (and by B's, which is right), A still holds it.
    let taken = b
        .acquire_account("hk", "B", ttl, 400, t0 + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        taken.is_err(),
        "B took a lease A took 30 s ago for 60 s (A's clock lags by 45 s)"
    );
}

/// A replica whose clock lags by more than the liveness window is still counted live, and one
/// whose clock runs ahead does not count the others as gone: the fair share of the lanes
/// (`reconcile::share`) stays fair across hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_clocks_that_disagree_count_each_other_live() {
    let (a, b) = two_replicas().await;
    let skew = chrono::Duration::minutes(3);
    let a = a.with_clock(|| Utc::now() - chrono::Duration::minutes(3));
    let b = b.with_clock(|| Utc::now() + chrono::Duration::minutes(3));
    let window = chrono::Duration::minutes(1);
    let now = Utc::now();
    a.replica_seen("a", now - skew, now - skew - window)
        .await
        .unwrap();
    assert_eq!(
        b.replica_seen("b", now + skew, now + skew - window)
            .await
            .unwrap(),
        ["a", "b"]
    );
    assert_eq!(
        a.replica_seen("a", now - skew, now - skew - window)
            .await
            .unwrap(),
        ["a", "b"]
    );
}

/// A replica whose every pooled connection is busy (its lanes planning window pages, a slow
/// disk) still renews its leases and beats: those have connections of their own. Waiting
/// behind the lanes, a renewal would wait for the pool's whole acquire timeout and the lease
/// could run out, or the others count the replica gone and take more than their share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_and_replicas_beat_while_every_pooled_connection_is_busy() {
    let (a, _b) = two_replicas().await;
    let ttl = Duration::from_secs(60);
    let now = Utc::now();
    let fence = a
        .acquire_account("hk", "A", ttl, 400, now)
        .await
        .unwrap()
        .expect("free")
        .fence;
    // Every connection of the pool held, as by lanes in long statements.
    let mut busy = Vec::new();
    for _ in 0..a.pool().options().get_max_connections() {
        busy.push(a.pool().acquire().await.unwrap());
    }
    let quick = Duration::from_secs(3);
    let renewed = tokio::time::timeout(quick, a.renew_account(&fence, ttl, Utc::now())).await;
    assert!(
        matches!(renewed, Ok(Ok(true))),
        "the renewal waited for the busy pool: {renewed:?}"
    );
    let now = Utc::now();
    let seen = tokio::time::timeout(
        quick,
        a.replica_seen("A", now, now - chrono::Duration::minutes(1)),
    )
    .await;
    assert!(
        matches!(&seen, Ok(Ok(live)) if live == &["A"]),
        "the beat waited for the busy pool: {seen:?}"
    );
    drop(busy);
}

/// Leases `accounts` to A, and has B lock the rows of the first `locked` of them as a replica
/// frozen inside its acquisition (between `SELECT … FOR UPDATE SKIP LOCKED` and its commit)
/// does, until the server ends its session (`busy_timeout`, 10 s by default).
async fn frozen_acquisitions(
    a: &PgLedger,
    b: &PgLedger,
    accounts: &[&str],
    locked: usize,
) -> (
    Vec<payrecon::ledger::Fence>,
    sqlx::Transaction<'static, sqlx::Postgres>,
) {
    let now = Utc::now();
    let mut fences = Vec::new();
    for account in accounts {
        let got = a.acquire_account(account, "A", LEASE, 400, now).await;
        fences.push(got.unwrap().expect("free").fence);
    }
    let mut stalled = b.pool().begin().await.unwrap();
    sqlx::query("SELECT holder FROM account_leases WHERE account = ANY($1) FOR UPDATE")
        .bind(&accounts[..locked])
        .fetch_all(&mut *stalled)
        .await
        .unwrap();
    (fences, stalled)
}

const LEASE: Duration = Duration::from_secs(60);

/// Renewals waiting on rows a frozen replica locked give their connection up after the beats'
/// lock timeout (2 s; the lane tries again a second later), with an error, not as a lease
/// lost: the other lanes' renewals, on the same few connections, are not held up behind them
/// until the frozen session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_stuck_behind_a_frozen_replica_do_not_hold_up_the_others() {
    let (a, b) = two_replicas().await;
    let locked = ["x1", "x2", "x3", "x4", "x5", "x6"];
    let accounts = [&locked[..], &["free"]].concat();
    let (fences, stalled) = frozen_acquisitions(&a, &b, &accounts, locked.len()).await;
    let blocked: Vec<_> = fences[..locked.len()]
        .iter()
        .map(|f| {
            let (a, f) = (a.clone(), f.clone());
            tokio::spawn(async move { a.renew_account(&f, LEASE, Utc::now()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let free = tokio::time::timeout(
        Duration::from_secs(6),
        a.renew_account(&fences[locked.len()], LEASE, Utc::now()),
    )
    .await;
    let waited = started.elapsed();
    for h in blocked {
        let renewed = h.await.unwrap();
        assert!(renewed.is_err(), "a renewal behind a lock: {renewed:?}");
    }
    stalled.rollback().await.unwrap();
    assert!(
        matches!(free, Ok(Ok(true))) && waited < Duration::from_secs(5),
        "the renewal of an account no one else touches waited {waited:?}: {free:?}"
    );
}

/// A beat that waited for a connection does not count the wait as a clock difference: a host
/// 1.5 s behind the server (under the 2 s that warns) whose beat waited ~2 s for a connection
/// is not told its clock is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beat_that_waited_for_a_connection_counts_no_clock_difference() {
    let (a, b) = two_replicas().await;
    let a = a.with_clock(|| Utc::now() - chrono::Duration::milliseconds(1_500));
    let locked = ["x1", "x2", "x3", "x4"];
    let (fences, stalled) = frozen_acquisitions(&a, &b, &locked, locked.len()).await;
    // Every beat connection waits on a lock until the lock timeout.
    let blocked: Vec<_> = fences
        .iter()
        .map(|f| {
            let (a, f) = (a.clone(), f.clone());
            tokio::spawn(async move { a.renew_account(&f, LEASE, Utc::now()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = Captured::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish(),
    );
    let started = std::time::Instant::now();
    let now = Utc::now() - chrono::Duration::milliseconds(1_500);
    let live = a
        .replica_seen("A", now, now - chrono::Duration::minutes(1))
        .await;
    let waited = started.elapsed();
    stalled.rollback().await.unwrap();
    for h in blocked {
        let _ = h.await.unwrap();
    }
    assert_eq!(live.unwrap(), ["A"]);
    assert!(
        waited > Duration::from_secs(1),
        "the beat did not wait: {waited:?}"
    );
    let text = log.text();
    assert!(!text.contains("this host's clock is"), "{text}");
}

/// The heartbeat age a host reports (`payrecon_lane_heartbeat_age_seconds`) is counted on the
/// server's clock, as the lease is timed: a host whose clock runs 30 s ahead does not show a
/// lease renewed a moment ago as 30 s old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_age_is_counted_on_the_servers_clock() {
    let (a, m) = two_replicas().await;
    let m = m.with_clock(|| Utc::now() + chrono::Duration::seconds(30));
    a.acquire_account("hk", "A", LEASE, 400, Utc::now())
        .await
        .unwrap()
        .expect("free");
    let ahead = Utc::now() + chrono::Duration::seconds(30);
    let text = payrecon::metrics::render(&payrecon::ledger::Ledger::Postgres(m), ahead)
        .await
        .unwrap();
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"payrecon_lane_heartbeat_age_seconds{account="hk"} "#))
        .expect("a held lane has an age")
        .parse()
        .unwrap();
    assert!(age < 5.0, "a lease taken a moment ago is {age} s old");
}

/// Pauses, schedules and the pace handed over stay on the replicas' clocks: a host whose clock
/// is off the server's by more than a moment says so at every beat, with the difference.
#[tokio::test]
async fn a_replica_whose_clock_is_off_says_so_when_it_beats() {
    let (a, b) = two_replicas().await;
    let a = a.with_clock(|| Utc::now() + chrono::Duration::seconds(30));
    let log = Captured::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish(),
    );
    let now = Utc::now();
    b.replica_seen("b", now, now - chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(log.text(), "", "a host on the server's clock warned");
    let ahead = now + chrono::Duration::seconds(30);
    a.replica_seen("a", ahead, ahead - chrono::Duration::minutes(1))
        .await
        .unwrap();
    let text = log.text();
    let said = text
        .split_once("this host's clock is ")
        .and_then(|(_, rest)| rest.split_once(" s ahead of the PostgreSQL server's"))
        .and_then(|(seconds, _)| seconds.parse::<f64>().ok());
    // 30 s less the moment the statement took to arrive.
    assert!(said.is_some_and(|s| (29.0..=30.0).contains(&s)), "{text}");
}

/// What a test's subscriber wrote.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
