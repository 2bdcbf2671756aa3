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
