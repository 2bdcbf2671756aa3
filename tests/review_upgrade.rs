//! Regression test from the review of issue 11's first cut: the upgrade to migration 0003 must
//! keep where the earlier scheduled sweep stood.

mod common;

use chrono::{DurationRound, TimeDelta};
use common::fake_qfpay::FakeQfpay;
use common::*;
use payrecon::ledger::time::to_db;

/// Before 0003 the schedule resumed from the end of the latest completed sweep_cursors row.
/// 0003 copies those rows but does not seed `sweep_schedule`, so the first scheduled sweep after
/// the upgrade starts at `closed_until - 1 day`: everything between the old cursor and that
/// point (here two days of a daemon stopped for the upgrade) is never swept, fresh or
/// look-back, because the new cursor only moves forward.
#[tokio::test]
async fn review_the_upgrade_skips_the_backlog_of_the_old_schedule() {
    let fake = FakeQfpay::start(Vec::new()).await;
    let h = harness(&fake.url(), "http://127.0.0.1:9", "").await;
    let now = chrono::Utc::now();
    let closed_until = (now - TimeDelta::hours(1))
        .duration_trunc(TimeDelta::hours(1))
        .unwrap();
    // A ledger at the schema before 0003, where the earlier scheduler stood: its last completed
    // window ended three days ago.
    let old_end = closed_until - TimeDelta::days(3);
    let path = h.dir.path().join("before-0003.db");
    let pool = ledger_at_migration(&path, 2).await;
    sqlx::query(
        "INSERT INTO sweep_cursors (account, window_start, window_end, next_page,
                                    records_seen, completed_at, updated_at)
         VALUES ('hk', ?1, ?2, 2, 0, ?2, ?2)",
    )
    .bind(to_db(old_end - TimeDelta::days(1)))
    .bind(to_db(old_end))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    // The upgraded ledger, worked by the current engine.
    let ledger = payrecon::ledger::open(&path, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let engine = payrecon::reconcile::Reconciler::new(ledger.clone(), &h.settings).unwrap();
    for _ in 0..5 {
        engine
            .sweep_closed_windows(now, &tokio_util::sync::CancellationToken::new())
            .await;
    }
    let starts: Vec<String> = sqlx::query_scalar(
        "SELECT window_start FROM sweep_cursors WHERE completed_at IS NOT NULL ORDER BY 1",
    )
    .fetch_all(ledger.as_sqlite().unwrap().pool())
    .await
    .unwrap();
    assert!(
        starts.contains(&to_db(old_end)),
        "the schedule resumes where it stood before the upgrade: {starts:?}"
    );
}
