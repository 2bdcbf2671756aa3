//! One contract, two stores (issue 18): what window sweeps read and write (`ledger::sweeps`),
//! run on the SQLite ledger and on the PostgreSQL ledger (a server: `bash tests/run.sh`) with
//! the same calls and the same expectations: cursors and the schedule's position, the payments
//! a page's records name, a finding applied (never over a changed state, never by a holder that
//! lost the account), refunds found, linked and totalled, open payments made due, the payments
//! a window should contain, and the findings about them recorded once.

#[macro_use]
mod pg_support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use payrecon::domain::{
    AccountName, Currency, DiscrepancyKind, Money, OutTradeNo, PaymentId, PaymentState, Provider,
    ProviderRef, RecordKind,
};
use payrecon::ledger::time::{from_db, to_db};
use payrecon::ledger::{
    Fence, FoundRefund, LedgerError, NewDiscrepancy, NewEvent, NewPayment, SchedulePosition,
    SweepCursor, SweepDiscrepancy, SweepRound,
};

const TTL: Duration = Duration::from_secs(30);

/// A time with sub-millisecond digits, which both stores keep to the millisecond.
fn odd_now() -> DateTime<Utc> {
    kept(Utc::now()) + chrono::Duration::nanoseconds(123_456)
}

/// `t` as the ledger keeps it (milliseconds).
fn kept(t: DateTime<Utc>) -> DateTime<Utc> {
    from_db(&to_db(t)).unwrap()
}

fn new_payment(
    account: &str,
    kind: RecordKind,
    no: &str,
    syssn: Option<&str>,
    amount: i64,
    created_at: DateTime<Utc>,
) -> NewPayment {
    NewPayment {
        account: AccountName::parse(account).unwrap(),
        provider: Provider::Qfpay,
        kind,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: syssn.map(|s| ProviderRef::parse(s).unwrap()),
        pay_type: None,
        amount: Money::new(amount, Currency::parse("HKD").unwrap()).unwrap(),
        created_at,
        expires_at: None,
    }
}

fn event(at: DateTime<Utc>, from: PaymentState, to: PaymentState, code: &str) -> NewEvent {
    NewEvent {
        at,
        kind: "observed",
        from_state: Some(from),
        to_state: Some(to),
        provider_code: Some(code.to_string()),
        message: Some(format!("a sweep found the gateway record: {to}")),
        evidence: serde_json::json!({"respcd": code, "note": "z before a"}),
    }
}

fn discrepancy(kind: DiscrepancyKind, detail: &str) -> NewDiscrepancy {
    NewDiscrepancy {
        kind,
        detail: detail.to_string(),
        evidence: serde_json::json!({"detail": detail}),
    }
}

fn finding(payment: Option<i64>, kind: DiscrepancyKind, subject: &str) -> SweepDiscrepancy {
    SweepDiscrepancy {
        payment: payment.map(PaymentId),
        subject: subject.to_string(),
        found: discrepancy(kind, &format!("{} {subject}", kind.as_str())),
    }
}

fn fenced_out(r: &Result<impl std::fmt::Debug, LedgerError>, lost: &Fence) -> bool {
    matches!(r, Err(LedgerError::FencedOut { account, token })
        if *account == lost.account && *token == lost.token)
}

contract!(cursors_and_the_schedule_position_round_trip, |l| {
    let t0 = odd_now();
    let a = l
        .acquire_account("hk", "A", TTL, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let (start, end) = (t0 - chrono::Duration::days(30), t0);
    assert_eq!(
        l.sweep_cursor("hk", start, end, SweepRound::Fresh)
            .await
            .unwrap(),
        None
    );
    let mid = SweepCursor {
        next_page: 3,
        records_seen: 250,
        completed: false,
    };
    l.save_sweep_cursor(&a, start, end, SweepRound::Fresh, mid, t0)
        .await
        .unwrap();
    // Read back with the same (sub-millisecond) bounds, and with the bounds as kept.
    for (s, e) in [(start, end), (kept(start), kept(end))] {
        assert_eq!(
            l.sweep_cursor("hk", s, e, SweepRound::Fresh).await.unwrap(),
            Some(mid)
        );
    }
    // Another round, another window, another account: their own cursors.
    assert_eq!(
        l.sweep_cursor("hk", start, end, SweepRound::LookBack)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        l.sweep_cursor(
            "hk",
            start,
            end + chrono::Duration::seconds(1),
            SweepRound::Fresh
        )
        .await
        .unwrap(),
        None
    );
    assert_eq!(
        l.sweep_cursor("tw", start, end, SweepRound::Fresh)
            .await
            .unwrap(),
        None
    );
    let back = SweepCursor {
        next_page: 0,
        records_seen: 7,
        completed: false,
    };
    l.save_sweep_cursor(&a, start, end, SweepRound::LookBack, back, t0)
        .await
        .unwrap();
    let done = SweepCursor {
        next_page: 9,
        records_seen: 800,
        completed: true,
    };
    l.save_sweep_cursor(&a, start, end, SweepRound::Fresh, done, t0)
        .await
        .unwrap();
    assert_eq!(
        l.sweep_cursor("hk", start, end, SweepRound::Fresh)
            .await
            .unwrap(),
        Some(done)
    );
    // Page 0 reads as page 1; the other round's cursor is untouched by the update.
    assert_eq!(
        l.sweep_cursor("hk", start, end, SweepRound::LookBack)
            .await
            .unwrap(),
        Some(SweepCursor {
            next_page: 1,
            ..back
        })
    );

    assert_eq!(l.schedule_position("hk").await.unwrap(), None);
    let first = SchedulePosition {
        swept_until: t0 - chrono::Duration::hours(1),
        rechecked_from: t0 - chrono::Duration::days(3),
    };
    l.save_schedule_position(&a, first, t0).await.unwrap();
    let kept_first = SchedulePosition {
        swept_until: kept(first.swept_until),
        rechecked_from: kept(first.rechecked_from),
    };
    assert_eq!(l.schedule_position("hk").await.unwrap(), Some(kept_first));
    assert_eq!(l.schedule_position("tw").await.unwrap(), None);
    let second = SchedulePosition {
        swept_until: t0,
        rechecked_from: t0 - chrono::Duration::days(2),
    };
    l.save_schedule_position(&a, second, t0).await.unwrap();
    assert_eq!(
        l.schedule_position("hk").await.unwrap(),
        Some(SchedulePosition {
            swept_until: kept(second.swept_until),
            rechecked_from: kept(second.rechecked_from),
        })
    );

    // B takes the account over: A's cursor and position writes are refused and change nothing.
    let later = t0 + chrono::Duration::seconds(31);
    let b = l
        .acquire_account("hk", "B", TTL, 400, later)
        .await
        .unwrap()
        .expect("expired")
        .fence;
    let refused = l
        .save_sweep_cursor(&a, start, end, SweepRound::Fresh, mid, later)
        .await;
    assert!(fenced_out(&refused, &a), "{refused:?}");
    let refused = l.save_schedule_position(&a, first, later).await;
    assert!(fenced_out(&refused, &a), "{refused:?}");
    assert_eq!(
        l.sweep_cursor("hk", start, end, SweepRound::Fresh)
            .await
            .unwrap(),
        Some(done)
    );
    assert_eq!(
        l.schedule_position("hk")
            .await
            .unwrap()
            .map(|p| p.swept_until),
        Some(kept(t0))
    );
    l.save_schedule_position(&b, first, later).await.unwrap();
    assert_eq!(l.schedule_position("hk").await.unwrap(), Some(kept_first));
});

contract!(
    known_payments_are_found_by_gateway_id_or_order_number,
    |l| {
        let now = Utc::now();
        let made = now - chrono::Duration::hours(1);
        let report = l
            .register(
                &[
                    new_payment("hk", RecordKind::Payment, "P1", Some("S1"), 100, made),
                    new_payment("hk", RecordKind::Payment, "P2", Some("S2"), 200, made),
                    new_payment("hk", RecordKind::Payment, "P3", None, 300, made),
                    new_payment("hk", RecordKind::Refund, "R1", Some("RS1"), 50, made),
                    new_payment("tw", RecordKind::Payment, "P1", Some("S1"), 400, made),
                ],
                now,
            )
            .await
            .unwrap();
        let ids: Vec<i64> = report.inserted.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), 5);

        let mut found = l
            .known_payments("hk", &["S1", "S9", "RS1"], &["P3", "P2", "nope"])
            .await
            .unwrap();
        found.sort_by_key(|k| k.id);
        // P2 matches both ways and is listed once; tw's P1 is another account's.
        assert_eq!(
            found.iter().map(|k| k.id).collect::<Vec<_>>(),
            [ids[0], ids[1], ids[2], ids[3]]
        );
        let p1 = &found[0];
        assert_eq!(
            (
                p1.kind.as_str(),
                p1.out_trade_no.as_str(),
                p1.provider_ref.as_deref(),
                p1.original_ref.as_deref(),
                p1.state.as_str(),
                p1.amount,
                p1.currency.as_str()
            ),
            ("payment", "P1", Some("S1"), None, "pending", 100, "HKD")
        );
        assert_eq!(
            (found[3].kind.as_str(), found[3].out_trade_no.as_str()),
            ("refund", "R1")
        );
        // A refund's order number finds it too; a gateway id is not an order number.
        let by_order = l.known_payments("hk", &[], &["R1", "S1"]).await.unwrap();
        assert_eq!(by_order.iter().map(|k| k.id).collect::<Vec<_>>(), [ids[3]]);
        let tw = l.known_payments("tw", &["S1"], &[]).await.unwrap();
        assert_eq!((tw.len(), tw[0].id, tw[0].amount), (1, ids[4], 400));
        assert!(l.known_payments("hk", &[], &[]).await.unwrap().is_empty());
        assert!(
            l.known_payments("xx", &["S1"], &["P1"])
                .await
                .unwrap()
                .is_empty()
        );
    }
);

contract!(
    a_sweep_finding_is_applied_once_and_never_over_a_changed_state,
    |l| {
        let t0 = odd_now();
        let a = l
            .acquire_account("hk", "A", TTL, 400, t0)
            .await
            .unwrap()
            .expect("free")
            .fence;
        let made = t0 - chrono::Duration::hours(1);
        let report = l
            .register(
                &[
                    new_payment("hk", RecordKind::Payment, "P1", Some("S1"), 100, made),
                    new_payment("hk", RecordKind::Payment, "P2", Some("S2"), 200, made),
                    new_payment("tw", RecordKind::Payment, "P9", Some("S9"), 900, made),
                ],
                t0,
            )
            .await
            .unwrap();
        let (p1, p2, p9) = (
            report.inserted[0].1,
            report.inserted[1].1,
            report.inserted[2].1,
        );
        let amount = discrepancy(DiscrepancyKind::AmountMismatch, "amount P1: 100 vs 101");
        let currency = discrepancy(DiscrepancyKind::CurrencyMismatch, "currency P1: HKD vs TWD");
        let seen = event(t0, PaymentState::Pending, PaymentState::Succeeded, "0000");
        let (changed, recorded) = l
            .apply_sweep_finding(
                &a,
                p1,
                PaymentState::Pending,
                PaymentState::Succeeded,
                &seen,
                &[amount.clone(), amount.clone(), currency.clone()],
                t0,
            )
            .await
            .unwrap();
        // The same finding twice in one call is recorded once, at its first place.
        assert!(changed);
        assert_eq!(recorded, [0, 2]);
        let row = l.payment(p1).await.unwrap().unwrap();
        assert_eq!(
            (
                row.state.as_str(),
                row.provider_code.as_deref(),
                row.next_check_at.as_deref(),
                row.updated_at.clone()
            ),
            ("succeeded", Some("0000"), None, to_db(t0))
        );
        let events = l.events(p1).await.unwrap();
        assert_eq!(events.len(), 2);
        let e = &events[1];
        assert_eq!(
            (
                e.kind.as_str(),
                e.from_state.as_deref(),
                e.to_state.as_deref(),
                e.provider_code.as_deref(),
                e.message.as_deref(),
                e.at.clone(),
            ),
            (
                "observed",
                Some("pending"),
                Some("succeeded"),
                Some("0000"),
                Some("a sweep found the gateway record: succeeded"),
                to_db(t0),
            )
        );
        assert_eq!(e.evidence, seen.evidence);
        let found = l.discrepancies(true).await.unwrap();
        assert_eq!(
            found
                .iter()
                .map(|d| (
                    d.payment_id,
                    d.account.as_str(),
                    d.kind.as_str(),
                    d.detail.as_str()
                ))
                .collect::<Vec<_>>(),
            [
                (Some(p1), "hk", "amount_mismatch", amount.detail.as_str()),
                (
                    Some(p1),
                    "hk",
                    "currency_mismatch",
                    currency.detail.as_str()
                ),
            ]
        );
        assert_eq!(found[0].found_at, to_db(t0));

        // Read as pending before the change: a stale finding writes nothing, so the final state
        // stays (and its discrepancy is not recorded).
        let stale = event(t0, PaymentState::Pending, PaymentState::Failed, "1143");
        let other = discrepancy(DiscrepancyKind::GatewayReopened, "reopened P1");
        assert_eq!(
            l.apply_sweep_finding(
                &a,
                p1,
                PaymentState::Pending,
                PaymentState::Failed,
                &stale,
                std::slice::from_ref(&other),
                t0,
            )
            .await
            .unwrap(),
            (false, vec![])
        );
        assert_eq!(l.payment(p1).await.unwrap().unwrap().state, "succeeded");
        assert_eq!(l.events(p1).await.unwrap().len(), 2);
        assert_eq!(l.discrepancies(true).await.unwrap().len(), 2);

        // No change of state: no event, no update; only the findings not recorded yet (a new
        // detail of a recorded kind is another finding).
        let same = event(t0, PaymentState::Succeeded, PaymentState::Succeeded, "0000");
        let amount2 = discrepancy(DiscrepancyKind::AmountMismatch, "amount P1: 100 vs 102");
        let t1 = t0 + chrono::Duration::seconds(5);
        assert_eq!(
            l.apply_sweep_finding(
                &a,
                p1,
                PaymentState::Succeeded,
                PaymentState::Succeeded,
                &same,
                &[amount.clone(), other.clone(), amount2.clone()],
                t1,
            )
            .await
            .unwrap(),
            (false, vec![1, 2])
        );
        assert_eq!(l.events(p1).await.unwrap().len(), 2);
        assert_eq!(l.payment(p1).await.unwrap().unwrap().updated_at, to_db(t0));
        assert_eq!(l.discrepancies(true).await.unwrap().len(), 4);

        // Another account's payment is not this fence's to write.
        assert_eq!(
            l.apply_sweep_finding(
                &a,
                p9,
                PaymentState::Pending,
                PaymentState::Succeeded,
                &seen,
                std::slice::from_ref(&other),
                t1,
            )
            .await
            .unwrap(),
            (false, vec![])
        );
        assert_eq!(l.payment(p9).await.unwrap().unwrap().state, "pending");

        // B takes the account over: A's finding is refused and writes nothing.
        let later = t0 + chrono::Duration::seconds(31);
        let b = l
            .acquire_account("hk", "B", TTL, 400, later)
            .await
            .unwrap()
            .expect("expired")
            .fence;
        let refused = l
            .apply_sweep_finding(
                &a,
                p2,
                PaymentState::Pending,
                PaymentState::Succeeded,
                &seen,
                std::slice::from_ref(&other),
                later,
            )
            .await;
        assert!(fenced_out(&refused, &a), "{refused:?}");
        let row = l.payment(p2).await.unwrap().unwrap();
        assert_eq!(row.state, "pending");
        assert!(row.next_check_at.is_some());
        assert_eq!(l.events(p2).await.unwrap().len(), 1);
        assert_eq!(l.discrepancies(true).await.unwrap().len(), 4);
        // B's is written; a code the event lacks keeps the stored one.
        let mut quiet = event(later, PaymentState::Pending, PaymentState::Cancelled, "x");
        quiet.provider_code = None;
        assert_eq!(
            l.apply_sweep_finding(
                &b,
                p2,
                PaymentState::Pending,
                PaymentState::Cancelled,
                &quiet,
                &[],
                later,
            )
            .await
            .unwrap(),
            (true, vec![])
        );
        let row = l.payment(p2).await.unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.provider_code, row.next_check_at),
            ("cancelled", None, None)
        );
    }
);

contract!(refunds_are_found_linked_and_totalled, |l| {
    let t0 = odd_now();
    let a = l
        .acquire_account("hk", "A", TTL, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let made = t0 - chrono::Duration::hours(2);
    let report = l
        .register(
            &[
                new_payment("hk", RecordKind::Payment, "P1", Some("S1"), 1000, made),
                new_payment("hk", RecordKind::Refund, "R0", None, 100, made),
                new_payment("tw", RecordKind::Refund, "T0", None, 100, made),
            ],
            t0,
        )
        .await
        .unwrap();
    let (p1, r0, t_refund) = (
        report.inserted[0].1,
        report.inserted[1].1,
        report.inserted[2].1,
    );
    let evidence = serde_json::json!({"syssn": "RS1", "orig_syssn": "S1", "respcd": "0000"});
    let refund_made = t0 - chrono::Duration::minutes(30);
    let found = |no: &'static str, syssn: Option<&'static str>, amount, state| FoundRefund {
        out_trade_no: no,
        syssn,
        original_ref: "S1",
        pay_type: Some("800101"),
        amount,
        currency: "HKD",
        created_at: refund_made,
        state,
        provider_code: "0000",
        evidence: &evidence,
    };
    assert_eq!(l.refunded_total("hk", "S1").await.unwrap(), 0);
    let r1 = l
        .register_found_refund(
            &a,
            &found("R1", Some("RS1"), 300, PaymentState::Succeeded),
            t0,
        )
        .await
        .unwrap()
        .expect("new");
    // The same order number again: nothing registered.
    assert_eq!(
        l.register_found_refund(
            &a,
            &found("R1", Some("RS1"), 300, PaymentState::Succeeded),
            t0
        )
        .await
        .unwrap(),
        None
    );
    let row = l.payment(r1).await.unwrap().unwrap();
    assert_eq!(
        (
            row.account.as_str(),
            row.provider.as_str(),
            row.kind.as_str(),
            row.out_trade_no.as_str(),
            row.provider_ref.as_deref(),
            row.original_ref.as_deref(),
            row.pay_type.as_deref(),
            row.amount,
            row.state.as_str(),
            row.provider_code.as_deref(),
            row.next_check_at.as_deref(),
        ),
        (
            "hk",
            "qfpay",
            "refund",
            "R1",
            Some("RS1"),
            Some("S1"),
            Some("800101"),
            300,
            "succeeded",
            Some("0000"),
            None
        )
    );
    assert_eq!(
        (row.created_at.clone(), row.updated_at.clone()),
        (to_db(refund_made), to_db(t0))
    );
    let events = l.events(r1).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].kind.as_str(),
            events[0].from_state.as_deref(),
            events[0].to_state.as_deref(),
            events[0].message.as_deref(),
            events[0].at.clone(),
        ),
        (
            "registered",
            None,
            Some("succeeded"),
            Some("refund of payment S1 found by a sweep"),
            to_db(t0)
        )
    );
    assert_eq!(events[0].evidence, evidence);

    // An open refund is due now; only succeeded refunds count.
    let r2 = l
        .register_found_refund(&a, &found("R2", None, 200, PaymentState::Pending), t0)
        .await
        .unwrap()
        .expect("new");
    assert_eq!(
        l.payment(r2).await.unwrap().unwrap().next_check_at,
        Some(to_db(t0))
    );
    l.register_found_refund(&a, &found("R3", Some("RS3"), 50, PaymentState::Failed), t0)
        .await
        .unwrap()
        .expect("new");
    l.register_found_refund(
        &a,
        &found("R4", Some("RS4"), 150, PaymentState::Succeeded),
        t0,
    )
    .await
    .unwrap()
    .expect("new");
    assert_eq!(l.refunded_total("hk", "S1").await.unwrap(), 450);
    assert_eq!(l.refunded_total("hk", "S9").await.unwrap(), 0);
    assert_eq!(l.refunded_total("tw", "S1").await.unwrap(), 0);

    // Linking: only an unlinked refund row of the fence's account, once.
    l.link_refund(&a, r0, "S1").await.unwrap();
    l.link_refund(&a, r0, "S9").await.unwrap();
    l.link_refund(&a, p1, "S7").await.unwrap();
    l.link_refund(&a, t_refund, "S1").await.unwrap();
    assert_eq!(
        l.payment(r0)
            .await
            .unwrap()
            .unwrap()
            .original_ref
            .as_deref(),
        Some("S1")
    );
    assert_eq!(l.payment(p1).await.unwrap().unwrap().original_ref, None);
    assert_eq!(
        l.payment(t_refund).await.unwrap().unwrap().original_ref,
        None
    );
    let linked = l.known_payments("hk", &["S1"], &[]).await.unwrap();
    assert_eq!(linked.len(), 1, "a gateway id, not an original: {linked:?}");
    // R0 is pending: linked, but not refunded money.
    assert_eq!(l.refunded_total("hk", "S1").await.unwrap(), 450);

    // B takes the account over: A registers and links nothing.
    let later = t0 + chrono::Duration::seconds(31);
    let b = l
        .acquire_account("hk", "B", TTL, 400, later)
        .await
        .unwrap()
        .expect("expired")
        .fence;
    let refused = l
        .register_found_refund(&a, &found("R5", None, 500, PaymentState::Succeeded), later)
        .await;
    assert!(fenced_out(&refused, &a), "{refused:?}");
    assert!(l.find_payments("R5").await.unwrap().is_empty());
    assert_eq!(l.refunded_total("hk", "S1").await.unwrap(), 450);
    let refused = l.link_refund(&a, t_refund, "S1").await;
    assert!(fenced_out(&refused, &a), "{refused:?}");
    l.register_found_refund(&b, &found("R5", None, 550, PaymentState::Succeeded), later)
        .await
        .unwrap()
        .expect("new");
    assert_eq!(l.refunded_total("hk", "S1").await.unwrap(), 1000);
});

contract!(make_due_pulls_open_payments_of_the_account_forward, |l| {
    let t0 = odd_now();
    let a = l
        .acquire_account("hk", "A", TTL, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let made = t0 - chrono::Duration::hours(1);
    let hour = t0 + chrono::Duration::hours(1);
    // Registered "in an hour": their next check is then.
    let later = l
        .register(
            &[
                new_payment("hk", RecordKind::Payment, "P1", None, 100, made),
                new_payment("hk", RecordKind::Payment, "P2", None, 100, made),
                new_payment("hk", RecordKind::Payment, "P3", None, 100, made),
                new_payment("tw", RecordKind::Payment, "P4", None, 100, made),
            ],
            hour,
        )
        .await
        .unwrap();
    let ids: Vec<i64> = later.inserted.iter().map(|(_, id)| *id).collect();
    // Already due before now.
    let early = l
        .register(
            &[new_payment(
                "hk",
                RecordKind::Payment,
                "P5",
                None,
                100,
                made,
            )],
            made,
        )
        .await
        .unwrap()
        .inserted[0]
        .1;
    // P3 is final.
    let seen = event(t0, PaymentState::Pending, PaymentState::Succeeded, "0000");
    l.apply_sweep_finding(
        &a,
        ids[2],
        PaymentState::Pending,
        PaymentState::Succeeded,
        &seen,
        &[],
        t0,
    )
    .await
    .unwrap();

    l.make_due(&a, &[ids[0], ids[2], ids[3], early, 99_999], t0)
        .await
        .unwrap();
    let next = |id: i64| {
        let l = l.clone();
        async move { l.payment(id).await.unwrap().unwrap().next_check_at }
    };
    assert_eq!(next(ids[0]).await, Some(to_db(t0)));
    assert_eq!(next(ids[1]).await, Some(to_db(hour)), "not in the list");
    assert_eq!(next(ids[2]).await, None, "final");
    assert_eq!(next(ids[3]).await, Some(to_db(hour)), "another account's");
    assert_eq!(next(early).await, Some(to_db(made)), "due earlier already");
    l.make_due(&a, &[], t0).await.unwrap();

    let after = t0 + chrono::Duration::seconds(31);
    l.acquire_account("hk", "B", TTL, 400, after)
        .await
        .unwrap()
        .expect("expired");
    let refused = l.make_due(&a, &[ids[1]], t0).await;
    assert!(fenced_out(&refused, &a), "{refused:?}");
    assert_eq!(next(ids[1]).await, Some(to_db(hour)));
});

contract!(payments_created_in_a_window_bounds_included, |l| {
    let t0 = odd_now();
    let a = l
        .acquire_account("hk", "A", TTL, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let base = kept(t0 - chrono::Duration::days(1));
    let ms = chrono::Duration::milliseconds;
    let at = |d| base + d;
    let report = l
        .register(
            &[
                new_payment("hk", RecordKind::Payment, "B0", None, 100, at(ms(-1))),
                new_payment("hk", RecordKind::Payment, "B1", None, 100, at(ms(0))),
                new_payment("hk", RecordKind::Payment, "B2", None, 100, at(ms(5_000))),
                new_payment("hk", RecordKind::Payment, "B3", None, 100, at(ms(10_000))),
                new_payment("hk", RecordKind::Payment, "B4", None, 100, at(ms(10_001))),
                new_payment("hk", RecordKind::Refund, "BR", None, 100, at(ms(5_000))),
                new_payment("tw", RecordKind::Payment, "BT", None, 100, at(ms(5_000))),
            ],
            t0,
        )
        .await
        .unwrap();
    let ids: Vec<i64> = report.inserted.iter().map(|(_, id)| *id).collect();
    let evidence = serde_json::json!({});
    l.register_found_refund(
        &a,
        &FoundRefund {
            out_trade_no: "BF",
            syssn: None,
            original_ref: "S1",
            pay_type: None,
            amount: 100,
            currency: "HKD",
            created_at: at(ms(5_000)),
            state: PaymentState::Succeeded,
            provider_code: "0000",
            evidence: &evidence,
        },
        t0,
    )
    .await
    .unwrap()
    .expect("new");
    // Bounds with sub-millisecond digits are taken to the millisecond, as the ledger keeps
    // times: the payments at both ends are in.
    let sub = chrono::Duration::microseconds(700);
    let inside = l
        .payments_created_in("hk", base + sub, at(ms(10_000)) + sub)
        .await
        .unwrap();
    assert_eq!(
        inside,
        [
            (ids[1], "B1".to_string()),
            (ids[2], "B2".to_string()),
            (ids[3], "B3".to_string()),
        ]
    );
    assert!(
        l.payments_created_in("hk", at(ms(1)), at(ms(4_999)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        l.payments_created_in("tw", base, at(ms(10_000)))
            .await
            .unwrap(),
        [(ids[6], "BT".to_string())]
    );
});

contract!(sweep_discrepancies_are_recorded_once, |l| {
    let t0 = odd_now();
    let a = l
        .acquire_account("hk", "A", TTL, 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let made = t0 - chrono::Duration::hours(1);
    let report = l
        .register(
            &[
                new_payment("hk", RecordKind::Payment, "P1", None, 100, made),
                new_payment("hk", RecordKind::Payment, "P2", None, 100, made),
            ],
            t0,
        )
        .await
        .unwrap();
    let (p1, p2) = (report.inserted[0].1, report.inserted[1].1);
    // A finding about P2 written with a sweep finding (amount_mismatch).
    l.apply_sweep_finding(
        &a,
        p2,
        PaymentState::Pending,
        PaymentState::Pending,
        &event(t0, PaymentState::Pending, PaymentState::Pending, "1143"),
        &[discrepancy(DiscrepancyKind::AmountMismatch, "amount P2")],
        t0,
    )
    .await
    .unwrap();
    use DiscrepancyKind::{AmountMismatch, MissingAtGateway, MissingInLedger, UnreadableRecord};
    let first = [
        finding(None, MissingInLedger, "S1"),
        finding(None, MissingInLedger, "S2"),
        finding(None, MissingInLedger, "S1"),
        finding(None, UnreadableRecord, "S1"),
        finding(Some(p1), MissingAtGateway, "P1"),
        finding(Some(p1), MissingAtGateway, "P1 again"),
        // P2 has an amount_mismatch recorded: once per payment and kind, whatever the detail.
        finding(Some(p2), AmountMismatch, "P2"),
        finding(Some(p2), MissingAtGateway, "S1"),
    ];
    assert_eq!(
        l.record_sweep_discrepancies(&a, &first, t0).await.unwrap(),
        [0, 1, 3, 4, 7]
    );
    let rows = l.discrepancies(true).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|d| (
                d.payment_id,
                d.account.as_str(),
                d.kind.as_str(),
                d.detail.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            (Some(p2), "hk", "amount_mismatch", "amount P2"),
            (None, "hk", "missing_in_ledger", "missing_in_ledger S1"),
            (None, "hk", "missing_in_ledger", "missing_in_ledger S2"),
            (None, "hk", "unreadable_record", "unreadable_record S1"),
            (
                Some(p1),
                "hk",
                "missing_at_gateway",
                "missing_at_gateway P1"
            ),
            (
                Some(p2),
                "hk",
                "missing_at_gateway",
                "missing_at_gateway S1"
            ),
        ]
    );
    assert!(rows.iter().all(|d| d.found_at == to_db(t0)));

    // A resolved finding is not reported again either; a new subject is.
    assert!(l.resolve_discrepancy(rows[2].id, "seen", t0).await.unwrap());
    let t1 = t0 + chrono::Duration::seconds(1);
    let again = [
        finding(None, MissingInLedger, "S2"),
        finding(Some(p1), MissingAtGateway, "P1"),
        finding(None, MissingInLedger, "S3"),
        finding(None, MissingInLedger, "S"),
    ];
    assert_eq!(
        l.record_sweep_discrepancies(&a, &again, t1).await.unwrap(),
        [2, 3]
    );
    assert!(
        l.record_sweep_discrepancies(&a, &[], t1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(l.discrepancies(true).await.unwrap().len(), 8);
    assert_eq!(l.discrepancies(false).await.unwrap().len(), 7);

    // Another account's holder records its own subjects; A, having lost hk, records nothing.
    let tw = l
        .acquire_account("tw", "A", TTL, 400, t1)
        .await
        .unwrap()
        .expect("free")
        .fence;
    assert_eq!(
        l.record_sweep_discrepancies(&tw, &first[..2], t1)
            .await
            .unwrap(),
        [0, 1]
    );
    let later = t0 + chrono::Duration::seconds(31);
    l.acquire_account("hk", "B", TTL, 400, later)
        .await
        .unwrap()
        .expect("expired");
    let refused = l
        .record_sweep_discrepancies(&a, &[finding(None, MissingInLedger, "S4")], later)
        .await;
    assert!(fenced_out(&refused, &a), "{refused:?}");
    assert_eq!(l.discrepancies(true).await.unwrap().len(), 10);
});

contract!(
    findings_written_at_once_about_one_payment_are_applied_once,
    |l| {
        let t0 = odd_now();
        let a = l
            .acquire_account("hk", "A", TTL, 400, t0)
            .await
            .unwrap()
            .expect("free")
            .fence;
        let made = t0 - chrono::Duration::hours(1);
        let p1 = l
            .register(
                &[new_payment(
                    "hk",
                    RecordKind::Payment,
                    "P1",
                    None,
                    100,
                    made,
                )],
                t0,
            )
            .await
            .unwrap()
            .inserted[0]
            .1;
        // Eight writers read P1 pending and each apply a finding: one state change wins, the
        // others see the changed state and write nothing.
        let targets = [
            PaymentState::Succeeded,
            PaymentState::Failed,
            PaymentState::Cancelled,
        ];
        let writers = (0..8).map(|i| {
            let (l, a) = (l.clone(), a.clone());
            let to = targets[i % targets.len()];
            async move {
                let e = event(t0, PaymentState::Pending, to, "0000");
                let d = discrepancy(DiscrepancyKind::GatewayReopened, &format!("writer {i}"));
                l.apply_sweep_finding(&a, p1, PaymentState::Pending, to, &e, &[d], t0)
                    .await
                    .unwrap()
            }
        });
        let done = futures::future::join_all(writers).await;
        assert_eq!(
            done.iter().filter(|(changed, _)| *changed).count(),
            1,
            "{done:?}"
        );
        assert_eq!(l.events(p1).await.unwrap().len(), 2);
        assert_eq!(l.discrepancies(true).await.unwrap().len(), 1);

        // Eight batches about P1 at once, each with its own detail: recorded once.
        let writers = (0..8).map(|i| {
            let (l, a) = (l.clone(), a.clone());
            async move {
                let mut f = finding(Some(p1), DiscrepancyKind::MissingAtGateway, "P1");
                f.found.detail = format!("missing at gateway, batch {i}");
                l.record_sweep_discrepancies(&a, &[f], t0).await.unwrap()
            }
        });
        let done = futures::future::join_all(writers).await;
        assert_eq!(done.iter().filter(|r| !r.is_empty()).count(), 1, "{done:?}");
        assert_eq!(l.discrepancies(true).await.unwrap().len(), 2);
    }
);
