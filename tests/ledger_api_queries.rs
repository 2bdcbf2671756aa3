//! The ledger side of the service API: keyset pages (no row skipped or repeated, merged in id
//! order across accounts), and nudges (a check or a notification makes a payment due now,
//! never changes its state; a notification marks a payment once, and a repeat writes nothing).

use std::time::Duration;

use chrono::Utc;
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, PaymentState, Provider, RecordKind,
};
use payrecon::ledger::{
    self, CheckRequested, DiscrepancyPage, Ledger, NewPayment, Nudged, PaymentPage,
};
use serde_json::json;

fn payment(account: &str, no: &str) -> NewPayment {
    NewPayment {
        account: AccountName::parse(account).unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(100, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: Utc::now(),
        expires_at: None,
    }
}

async fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    (dir, l)
}

async fn set(l: &Ledger, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(l.as_sqlite().unwrap().pool())
        .await
        .unwrap();
}

/// Every page of `page` (limit 3) in order: the ids.
async fn walk(l: &Ledger, mut page: PaymentPage) -> Vec<i64> {
    page.limit = 3;
    let mut ids = Vec::new();
    loop {
        let rows = l.payments_page(&page).await.unwrap();
        ids.extend(rows.iter().map(|r| r.id));
        match rows.last() {
            Some(last) if rows.len() == 3 => page.after = last.id,
            _ => return ids,
        }
    }
}

#[tokio::test]
async fn pages_list_every_matching_payment_once_in_creation_order() {
    let (_dir, l) = ledger().await;
    // Interleaved accounts; every third payment failed; created in an order unrelated to their
    // ids (id i+1 created (7i mod 20) minutes ago), two of them at the same time.
    let now = Utc::now();
    let batch: Vec<NewPayment> = (0..20)
        .map(|i: i64| NewPayment {
            created_at: now - chrono::Duration::minutes((7 * i) % 20 + i64::from(i == 19)),
            ..payment(if i % 2 == 0 { "hk" } else { "sg" }, &format!("P{i}"))
        })
        .collect();
    l.register(&batch, now).await.unwrap();
    // Creation order (oldest first, ties by id).
    let mut order: Vec<(chrono::DateTime<Utc>, i64)> = batch
        .iter()
        .enumerate()
        .map(|(i, p)| (p.created_at, i as i64 + 1))
        .collect();
    order.sort();
    set(
        &l,
        "UPDATE payments SET state = 'failed', next_check_at = NULL WHERE id % 3 = 0",
    )
    .await;
    let all: Vec<i64> = order.iter().map(|(_, id)| *id).collect();
    let expect =
        |f: &dyn Fn(i64) -> bool| all.iter().copied().filter(|&i| f(i)).collect::<Vec<_>>();

    assert_eq!(walk(&l, PaymentPage::default()).await, all);
    let hk = PaymentPage {
        account: Some("hk".into()),
        ..Default::default()
    };
    assert_eq!(walk(&l, hk).await, expect(&|i| i % 2 == 1));
    let failed = PaymentPage {
        state: Some(PaymentState::Failed),
        ..Default::default()
    };
    assert_eq!(walk(&l, failed).await, expect(&|i| i % 3 == 0));
    let pending_sg = PaymentPage {
        state: Some(PaymentState::Pending),
        account: Some("sg".into()),
        ..Default::default()
    };
    assert_eq!(
        walk(&l, pending_sg).await,
        expect(&|i| i % 2 == 0 && i % 3 != 0)
    );
}

#[tokio::test]
async fn discrepancy_pages_list_open_ones_across_accounts_and_resolved_ones_on_request() {
    let (_dir, l) = ledger().await;
    for (i, account) in ["hk", "sg", "hk", "sg", "hk"].iter().enumerate() {
        l.record_notified_unknown(account, &format!("S{i}"), "detail", &json!({}), Utc::now())
            .await
            .unwrap();
    }
    assert!(
        l.resolve_discrepancy(2, "checked", Utc::now())
            .await
            .unwrap()
    );
    let ids = |rows: Vec<ledger::DiscrepancyRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    let page = |account: Option<&str>, include_resolved, after| DiscrepancyPage {
        account: account.map(str::to_string),
        include_resolved,
        after,
        limit: 2,
    };
    assert_eq!(
        ids(l.discrepancies_page(&page(None, false, 0)).await.unwrap()),
        [1, 3]
    );
    assert_eq!(
        ids(l.discrepancies_page(&page(None, false, 3)).await.unwrap()),
        [4, 5]
    );
    assert_eq!(
        ids(l
            .discrepancies_page(&page(Some("sg"), false, 0))
            .await
            .unwrap()),
        [4]
    );
    assert_eq!(
        ids(l
            .discrepancies_page(&page(Some("sg"), true, 0))
            .await
            .unwrap()),
        [2, 4]
    );
    assert_eq!(
        ids(l.discrepancies_page(&page(None, true, 1)).await.unwrap()),
        [2, 3]
    );
    // Recorded once per (account, subject): a repeated notification adds nothing.
    assert!(
        !l.record_notified_unknown("hk", "S0", "detail", &json!({}), Utc::now())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_notification_marks_once_changes_when_not_what_and_flags_a_contradiction() {
    let (_dir, l) = ledger().await;
    let batch: Vec<NewPayment> = ["N1", "N2", "N3", "N4"]
        .iter()
        .map(|n| payment("hk", n))
        .collect();
    l.register(&batch, Utc::now()).await.unwrap();
    set(
        &l,
        "UPDATE payments SET next_check_at = '2999-01-01T00:00:00.000Z'",
    )
    .await;
    set(&l, "UPDATE payments SET state = 'succeeded' WHERE id = 2").await;
    set(&l, "UPDATE payments SET state = 'failed' WHERE id = 3").await;
    set(
        &l,
        "UPDATE payments SET state = 'needs_review', next_check_at = NULL WHERE id = 4",
    )
    .await;
    let notified = |id| {
        let l = l.clone();
        async move {
            l.notified_paid(id, "why", &json!({"k": 1}), Utc::now())
                .await
                .unwrap()
        }
    };
    let hk = || "hk".to_string();
    assert_eq!(notified(1).await, Nudged::MadeDue { account: hk() });
    // Replays write nothing and ask nothing.
    assert_eq!(notified(1).await, Nudged::Repeated);
    assert_eq!(notified(1).await, Nudged::Repeated);
    let kinds = |id: i64| {
        let l = l.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT kind FROM events WHERE payment_id = ? ORDER BY id",
            )
            .bind(id)
            .fetch_all(l.as_sqlite().unwrap().pool())
            .await
            .unwrap()
        }
    };
    assert_eq!(kinds(1).await, ["registered", "notified"]);
    let (state, notified_at): (String, Option<String>) =
        sqlx::query_as("SELECT state, notified_at FROM payments WHERE id = 1")
            .fetch_one(l.as_sqlite().unwrap().pool())
            .await
            .unwrap();
    assert_eq!(state, "pending");
    assert!(notified_at.is_some());
    // Paid already: nothing. Failed (still observed): a discrepancy and due now. In review
    // (not observed): a discrepancy only.
    assert_eq!(
        notified(2).await,
        Nudged::Settled {
            state: "succeeded".into()
        }
    );
    assert_eq!(
        notified(3).await,
        Nudged::Contradicts {
            account: hk(),
            state: "failed".into(),
            due: true
        }
    );
    assert_eq!(
        notified(4).await,
        Nudged::Contradicts {
            account: hk(),
            state: "needs_review".into(),
            due: false
        }
    );
    assert_eq!(notified(3).await, Nudged::Repeated);
    let found: Vec<(i64, String)> =
        sqlx::query_as("SELECT payment_id, kind FROM discrepancies ORDER BY id")
            .fetch_all(l.as_sqlite().unwrap().pool())
            .await
            .unwrap();
    assert_eq!(
        found,
        [
            (3, "notified_after_final".to_string()),
            (4, "notified_after_final".to_string())
        ]
    );
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM payments ORDER BY id")
        .fetch_all(l.as_sqlite().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(states, ["pending", "succeeded", "failed", "needs_review"]);
    assert_eq!(notified(99).await, Nudged::Unknown);
}

#[tokio::test]
async fn a_requested_check_makes_an_observed_payment_due_and_refuses_a_final_one() {
    let (_dir, l) = ledger().await;
    l.register(&[payment("hk", "K1"), payment("hk", "K2")], Utc::now())
        .await
        .unwrap();
    set(
        &l,
        "UPDATE payments SET next_check_at = '2999-01-01T00:00:00.000Z' WHERE id = 1",
    )
    .await;
    set(
        &l,
        "UPDATE payments SET state = 'failed', next_check_at = NULL WHERE id = 2",
    )
    .await;
    let hk = || "hk".to_string();
    let check = |id| {
        let l = l.clone();
        async move { l.request_check(id, Utc::now()).await.unwrap() }
    };
    assert_eq!(check(1).await, CheckRequested::DueNow { account: hk() });
    assert_eq!(check(1).await, CheckRequested::AlreadyDue { account: hk() });
    assert_eq!(
        check(2).await,
        CheckRequested::Final {
            state: "failed".into()
        }
    );
    assert_eq!(check(3).await, CheckRequested::Unknown);
}
