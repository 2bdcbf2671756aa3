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
