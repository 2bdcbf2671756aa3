//! Account leases (issue 13): one holder per account at a time, a fencing token that grows with
//! every acquisition, a heartbeat that fails once another holder took over, and writes refused
//! to a holder whose token is no longer the account's.

use std::time::Duration;

use chrono::Utc;
use payrecon::domain::{AccountName, Currency, Money, OutTradeNo, Provider, RecordKind};
use payrecon::ledger::{self, ClaimScope, LedgerError, NewPayment, WriteGuard};

fn payment(no: &str) -> NewPayment {
    NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(500, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: Utc::now(),
        expires_at: None,
    }
}

#[tokio::test]
async fn a_stalled_holder_is_fenced_out_once_another_takes_the_account_over() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    l.register(&[payment("F1")], Utc::now()).await.unwrap();
    let ttl = Duration::from_secs(30);
    let t0 = Utc::now();
    let a = l
        .acquire_account("hk", "A", ttl, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    // Held: B is told who holds it.
    let held = l
        .acquire_account("hk", "B", ttl, 400, t0)
        .await
        .unwrap()
        .expect_err("held by A");
    assert_eq!(held.holder, "A");
    // A's heartbeat keeps it; the reaper leaves a live lease alone.
    assert!(l.renew_account(&a, ttl, t0).await.unwrap());
    assert_eq!(l.reap_expired_leases(t0).await.unwrap(), 0);

    // A stalls past its lease; B takes over with a higher token.
    let later = t0 + chrono::Duration::seconds(31);
    let b = l
        .acquire_account("hk", "B", ttl, 400, later)
        .await
        .unwrap()
        .expect("A's lease expired")
        .fence;
    assert!(b.token > a.token);

    // A wakes up: its heartbeat fails, and every write it tries is refused whole.
    assert!(!l.renew_account(&a, ttl, later).await.unwrap());
    let (unit, _) = l
        .due_unit(&ClaimScope::account("hk"), &Default::default(), 10, later)
        .await
        .unwrap();
    let update = payrecon::reconcile::update::postpone(&unit[0], later);
    let refused = l
        .apply(
            WriteGuard::Lane(&a),
            None,
            std::slice::from_ref(&update),
            later,
        )
        .await;
    assert!(
        matches!(refused, Err(LedgerError::FencedOut { ref account, token }) if account == "hk" && token == a.token),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().to_string().contains("fenced out"));
    assert!(matches!(
        l.mark_reversing(&a, None, unit[0].id, &[], later).await,
        Err(LedgerError::FencedOut { .. })
    ));
    // A's release does not free B's account; B's writes go through.
    assert!(!l.release_account(&a, None).await.unwrap());
    let written = l
        .apply(WriteGuard::Lane(&b), None, &[update], later)
        .await
        .unwrap();
    assert!(written.contains(&unit[0].id));
    // B releases, saying when its pacer allows the next call; the next holder learns it, and
    // its token is higher still.
    let next_call = later + chrono::Duration::milliseconds(150);
    assert!(l.release_account(&b, Some(next_call)).await.unwrap());
    let c = l
        .acquire_account("hk", "C", ttl, 400, later)
        .await
        .unwrap()
        .expect("released");
    assert_eq!(c.fence.token, b.token + 1);
    assert_eq!(
        c.next_call_at.map(|t| t.timestamp_millis()),
        Some(next_call.timestamp_millis())
    );
}

#[tokio::test]
async fn the_reaper_clears_only_leases_whose_heartbeat_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let ttl = Duration::from_secs(10);
    let t0 = Utc::now();
    let live = l
        .acquire_account("live", "A", ttl, 30, t0)
        .await
        .unwrap()
        .unwrap()
        .fence;
    l.acquire_account("dead", "B", ttl, 30, t0)
        .await
        .unwrap()
        .unwrap();
    // Only the live lane keeps beating.
    let t1 = t0 + chrono::Duration::seconds(8);
    assert!(l.renew_account(&live, ttl, t1).await.unwrap());
    let t2 = t0 + chrono::Duration::seconds(12);
    assert_eq!(l.reap_expired_leases(t2).await.unwrap(), 1);
    let lanes = l.lanes(t2).await.unwrap();
    let holder = |a: &str| {
        lanes
            .iter()
            .find(|r| r.account == a)
            .and_then(|r| r.holder.clone())
    };
    assert_eq!(holder("live").as_deref(), Some("A"));
    assert_eq!(holder("dead"), None);
    assert!(l.renew_account(&live, ttl, t2).await.unwrap());
}
