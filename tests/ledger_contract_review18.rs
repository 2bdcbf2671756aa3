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

/// A replica stalls (SIGSTOP, a paused VM, a partition) in the middle of a fenced write: its
/// transaction holds the lease row `FOR SHARE` and then the client says nothing more. Once the
/// lease has expired another replica must be able to take the account; the stalled write must
/// never commit after that. Before the fix the acquisition waited for the row lock for as long
/// as the server kept the stalled session (TCP keepalive: hours), the lane, its connection and
/// the reaper with it, and the account was worked by nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stalled_inside_a_fenced_write_does_not_hold_the_account_forever() {
    let (a, b) = two_replicas().await;
    let ttl = Duration::from_secs(30);
    let t0 = Utc::now();
    let fence = a
        .acquire_account("hk", "A", ttl, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    // A's fenced write, stalled after its check (what `PgLedger::fenced` runs).
    let mut stalled = a.pool().begin().await.unwrap();
    sqlx::query(
        "SELECT token FROM account_leases WHERE account = $1 AND holder = $2 AND token = $3
         FOR SHARE",
    )
    .bind(&fence.account)
    .bind(&fence.holder)
    .bind(fence.token)
    .fetch_one(&mut *stalled)
    .await
    .unwrap();

    // The lease has run out: B takes the account, in bounded time.
    let later = t0 + chrono::Duration::seconds(31);
    let taken = tokio::time::timeout(
        Duration::from_secs(40),
        b.acquire_account("hk", "B", ttl, 400, later),
    )
    .await
    .expect("B's acquisition must not wait for the stalled replica's session to die")
    .unwrap()
    .expect("the lease expired");
    assert!(taken.taken_over);
    // The stalled replica wakes: its write does not commit.
    let woke = sqlx::query("UPDATE account_pauses SET reason = 'late' WHERE false")
        .execute(&mut *stalled)
        .await;
    let committed = match woke {
        Ok(_) => stalled.commit().await.is_ok(),
        Err(_) => false,
    };
    assert!(!committed, "a write of the stalled replica committed after B took over");
}
