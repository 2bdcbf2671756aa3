//! Replicas share the lanes (issue 18): a daemon among live replicas holds at most its fair
//! share of the accounts' lanes at once, its own slice first, and a one-off pass is unbounded.

mod common;

use common::fake_qfpay::{FakeQfpay, FakeRecord};
use common::{harness_with, minutes_ago, qf_payment, qfpay_account, syssn};
use payrecon::domain::AccountName;

const ACCOUNTS: [&str; 4] = ["hk", "hk2", "hk3", "hk4"];

/// Four QFPay accounts at one fake gateway, one paid payment each (pending in the ledger).
async fn four_accounts() -> (FakeQfpay, common::Harness) {
    let records: Vec<_> = (0..4)
        .map(|i| {
            FakeRecord::new(
                &syssn(i),
                &format!("S{i}"),
                "800101",
                700,
                &["0000"],
                minutes_ago(30),
            )
        })
        .collect();
    let qf = FakeQfpay::start(records).await;
    let accounts: String = ACCOUNTS
        .iter()
        .map(|name| {
            qfpay_account(&qf.url(), 100, 400, "")
                .replace("name = \"hk\"", &format!("name = \"{name}\""))
        })
        .collect();
    let h = harness_with("", &accounts).await;
    let payments: Vec<_> = (0..4)
        .map(|i| {
            let mut p = qf_payment(
                &format!("S{i}"),
                Some(&syssn(i)),
                "800101",
                700,
                minutes_ago(30),
            );
            p.account = AccountName::parse(ACCOUNTS[i]).unwrap();
            p
        })
        .collect();
    h.register(&payments).await;
    (qf, h)
}

/// The accounts whose payment the ledger holds as succeeded.
async fn settled(h: &common::Harness) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (i, name) in ACCOUNTS.iter().enumerate() {
        if h.payment(&format!("S{i}")).await.state == "succeeded" {
            out.push(*name);
        }
    }
    out
}

#[tokio::test]
async fn a_replica_among_two_works_its_own_half_and_the_other_the_rest() {
    let (_qf, h) = four_accounts().await;
    let (a, b) = (h.engine(), h.engine());
    let live = vec![a.owner().to_string(), b.owner().to_string()];
    // Ranks follow the list: a is first, so its slice is the first two accounts.
    a.set_share(&live);
    b.set_share(&live);
    h.pass(&a).await;
    assert_eq!(
        settled(&h).await,
        ["hk", "hk2"],
        "a took only its share, its own slice"
    );
    h.pass(&b).await;
    assert_eq!(settled(&h).await, ACCOUNTS, "b took the other half");
}

#[tokio::test]
async fn a_replica_alone_and_a_one_off_pass_take_every_lane() {
    let (_qf, h) = four_accounts().await;
    let alone = h.engine();
    alone.set_share(&[alone.owner().to_string()]);
    h.pass(&alone).await;
    assert_eq!(settled(&h).await, ACCOUNTS);

    let (_qf, h) = four_accounts().await;
    h.pass(&h.engine()).await;
    assert_eq!(settled(&h).await, ACCOUNTS, "a one-off pass is not bounded");
}

#[tokio::test]
async fn with_more_replicas_than_accounts_each_takes_at_most_one() {
    let (_qf, h) = four_accounts().await;
    let engines: Vec<_> = (0..6).map(|_| h.engine()).collect();
    let live: Vec<String> = engines.iter().map(|e| e.owner().to_string()).collect();
    for e in &engines {
        e.set_share(&live);
    }
    h.pass(&engines[0]).await;
    assert_eq!(settled(&h).await.len(), 1);
}

/// Review 18: the hourly sweep enters every QFPay account's lane at once and waits up to 30
/// minutes for an account another process holds. A lane waiting for a lease must not sit on
/// one of this replica's share slots: before the fix, b's sweeps of the two accounts a works
/// took both of b's slots while they waited, so b's passes left its own slice (hk3, hk4)
/// unworked for the whole wait, every hour, and b never swept hk3 or hk4 either.
#[tokio::test]
async fn a_sweep_waiting_for_another_replicas_account_does_not_starve_the_own_slice() {
    let (_qf, h) = four_accounts().await;
    let (a, b) = (h.engine(), h.engine());
    let mut live = vec![a.owner().to_string(), b.owner().to_string()];
    live.sort();
    a.set_share(&live);
    b.set_share(&live);
    // Whichever of the two is ranked first works hk and hk2 (its slice), for a long time.
    let (first, second) = if live[0] == a.owner() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    for account in ["hk", "hk2"] {
        h.ledger
            .acquire_account(
                account,
                first.owner(),
                std::time::Duration::from_secs(600),
                400,
                chrono::Utc::now(),
            )
            .await
            .unwrap()
            .expect("free");
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let sweep = second.sweep_closed_windows(chrono::Utc::now(), &stop);
    let pass = async {
        // Ticks while the sweep waits (its lanes of hk3 and hk4 sweep first, in turn with
        // the passes: the lane of an account is one at a time in a process).
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            h.pass(second).await;
            if settled(&h).await.len() == 2 {
                break;
            }
        }
        stop.cancel();
    };
    tokio::join!(sweep, pass);
    assert_eq!(
        settled(&h).await,
        ["hk3", "hk4"],
        "the second replica works its own slice while its sweep waits for the first's accounts"
    );
}

/// Found by the replica test: a replica's own slice held by another replica (the holder took
/// it before this one joined), and free accounts further on. A pass tries its slice first, all
/// lanes at once; the tries that find their account held must give their places back before
/// the free accounts are refused for a full share, else the free ones are never worked.
#[tokio::test]
async fn a_replica_whose_slice_another_holds_works_the_free_accounts() {
    let (_qf, h) = four_accounts().await;
    let now = chrono::Utc::now();
    for account in ["hk", "hk2"] {
        h.ledger
            .acquire_account(
                account,
                "other-replica",
                std::time::Duration::from_secs(60),
                400,
                now,
            )
            .await
            .unwrap()
            .expect("free");
    }
    let a = h.engine();
    // Ranked first of two: its slice is hk and hk2, which the other replica holds.
    a.set_share(&[a.owner().to_string(), "other-replica".to_string()]);
    h.pass(&a).await;
    assert_eq!(settled(&h).await, ["hk3", "hk4"]);
}
