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

/// OPEN (review 18, not fixed): every time the PostgreSQL store compares is the calling
/// process's `Utc::now()`, so lease expiry is decided on the clock of whoever asks. Replicas on
/// different hosts have different clocks: one whose clock runs ahead by more than the lease
/// less a heartbeat interval (40 s with the defaults) takes a lease its holder renewed on time,
/// while the holder's own `LeaseClock` still lets it call the merchant, so two replicas call
/// one merchant at once until the holder's next heartbeat (fencing keeps its writes out). The
/// same skew makes the reaper of a fast replica clear live leases, and a replica whose clock
/// is a lease behind is never counted live by the others. A fix decides lease times on the
/// server's clock (or corrects each replica by its measured offset from it, refusing to run
/// past a bound); the contract tests that move time by passing `now` need that first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "review 18 open issue: lease expiry uses each replica's own clock (see the doc comment)"]
async fn a_replica_whose_clock_runs_ahead_cannot_take_a_lease_renewed_on_time() {
    let (a, b) = two_replicas().await;
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
    // 16 s later by the true clock, B, whose clock is 45 s ahead, tries the account.
    let b_clock = t0 + chrono::Duration::seconds(36 + 45);
    let taken = b
        .acquire_account("hk", "B", ttl, 400, b_clock)
        .await
        .unwrap();
    assert!(
        taken.is_err(),
        "B took a lease A renewed 16 s ago and may call on for 24 s more"
    );
}
