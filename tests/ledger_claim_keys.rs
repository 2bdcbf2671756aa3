//! `Ledger::due_for_keys`, the payments of a sweep page: exactly the due payments of the
//! account whose gateway id or order number is on the page, found through the key indexes
//! rather than by walking every due payment (docs/PERFORMANCE.md); and `pay`'s held row, which
//! no lane reads until the hold ends.

use std::time::Duration;

use chrono::Utc;
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, Provider, ProviderRef, RecordKind,
};
use payrecon::ledger::{self, ClaimScope, DuePosition, NewPayment, WriteGuard};

fn payment(account: &str, no: &str, syssn: Option<&str>, kind: RecordKind) -> NewPayment {
    NewPayment {
        account: AccountName::parse(account).unwrap(),
        provider: Provider::Qfpay,
        kind,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: syssn.map(|s| ProviderRef::parse(s).unwrap()),
        pay_type: None,
        amount: Money::new(500, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: Utc::now(),
        expires_at: None,
    }
}

#[tokio::test]
async fn a_page_reads_the_due_payments_it_names_by_syssn_or_order_number_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let r = l
        .register(
            &[
                payment(
                    "hk",
                    "A",
                    Some("20261101000300020000000001"),
                    RecordKind::Payment,
                ),
                payment("hk", "B", None, RecordKind::Payment),
                payment("hk", "R", None, RecordKind::Refund),
                payment(
                    "hk",
                    "DONE",
                    Some("20261101000300020000000004"),
                    RecordKind::Payment,
                ),
                payment("hk", "NOTASKED", None, RecordKind::Payment),
                payment(
                    "other",
                    "B",
                    Some("20261101000300020000000006"),
                    RecordKind::Payment,
                ),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(r.inserted.len(), 6);
    sqlx::query(
        "UPDATE payments SET state = 'succeeded', next_check_at = NULL WHERE out_trade_no = 'DONE'",
    )
    .execute(l.as_sqlite().unwrap().pool())
    .await
    .unwrap();
    let scope = ClaimScope::account("hk");
    let now = Utc::now();
    let claimed = l
        .due_for_keys(
            &scope,
            // A by syssn, DONE (final, not due), the other account's syssn, an unknown one.
            &[
                "20261101000300020000000001",
                "20261101000300020000000004",
                "20261101000300020000000006",
                "20261101000300029999999999",
            ],
            // B (also named in account "other"), the refund R, and A again by order number.
            &["B", "R", "A"],
            now,
        )
        .await
        .unwrap();
    let mut got: Vec<(String, &str)> = claimed
        .iter()
        .map(|c| (c.out_trade_no.as_str().to_string(), c.account.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("A".to_string(), "hk"),
            ("B".to_string(), "hk"),
            ("R".to_string(), "hk")
        ]
    );
}

/// `pay`'s row while its creation call is in flight (issue 12 item 5): held by the caller, so
/// neither a lane's unit (even `--all`) nor a sweep page reads it until the hold ends; only the
/// holder's own update applies.
#[tokio::test]
async fn a_payment_held_for_its_creation_call_is_read_by_no_lane_until_the_hold_ends() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let now = Utc::now();
    let hold_until = now + chrono::Duration::seconds(75);
    let held = l
        .register_held(
            &payment("hk", "W1", None, RecordKind::Payment),
            "pay-1",
            hold_until,
            now,
        )
        .await
        .unwrap()
        .expect("a new payment");
    assert!(
        l.register_held(
            &payment("hk", "W1", None, RecordKind::Payment),
            "pay-2",
            hold_until,
            now
        )
        .await
        .unwrap()
        .is_none(),
        "a duplicate is not registered twice"
    );
    let all = ClaimScope {
        ignore_schedule: true,
        ..ClaimScope::account("hk")
    };
    let start = DuePosition::default();
    assert!(
        l.due_unit(&all, &start, 100, now)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let page = l.due_for_keys(&all, &[], &["W1"], now).await.unwrap();
    assert!(page.is_empty());
    // Another holder's update is refused; the holder's applies and releases the row.
    let update = payrecon::reconcile::update::postpone(&held, now);
    assert!(
        l.apply(
            WriteGuard::Hold("pay-2"),
            None,
            std::slice::from_ref(&update),
            now
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert!(
        l.apply(WriteGuard::Hold("pay-1"), None, &[update], now)
            .await
            .unwrap()
            .contains(&held.id)
    );
    assert_eq!(l.due_unit(&all, &start, 100, now).await.unwrap().0.len(), 1);

    // A holder that died: its hold expires and the payment is due again.
    l.register_held(
        &payment("hk", "W2", None, RecordKind::Payment),
        "pay-3",
        hold_until,
        now,
    )
    .await
    .unwrap();
    let after = hold_until + chrono::Duration::seconds(1);
    let due = ClaimScope::account("hk");
    let (unit, _) = l.due_unit(&due, &start, 100, after).await.unwrap();
    assert!(unit.iter().any(|c| c.out_trade_no.as_str() == "W2"));
    // ... and the dead holder's late answer is not written over the lane's work.
    let late = payrecon::reconcile::update::postpone(&unit[0], after);
    assert!(
        l.apply(WriteGuard::Hold("pay-3"), None, &[late], after)
            .await
            .unwrap()
            .is_empty()
    );
}
