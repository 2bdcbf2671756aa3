//! One contract, two stores (issue 18), for what the engine does with the ledger: which
//! payments are due (a lane's units, a sweep page's payments, the planning input), the leases a
//! dead process left, and writing decisions (`apply`, `mark_reversing`, `register_held`). Each
//! test runs on the SQLite ledger and on the PostgreSQL ledger (a server: `bash tests/run.sh`)
//! with the same calls and the same expectations.

#[macro_use]
mod pg_support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use payrecon::domain::{
    AccountName, Currency, DiscrepancyKind, Money, OutTradeNo, PaymentId, PaymentState, Provider,
    ProviderRef, RecordKind, RetryReason,
};
use payrecon::ledger::time::to_db;
use payrecon::ledger::{
    self, ClaimScope, Claimed, DuePosition, LedgerError, NewDiscrepancy, NewEvent, NewPayment,
    PaymentUpdate, WriteGuard,
};
use pg_support::{Raw, ms};

/// Raw SQL on either store, for the set-ups the contract's methods do not write (a schedule, a
/// notification) and for columns no method reads. The statements are plain SQL both accept;
/// times are written as `time::to_db` literals.
fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

/// A 5.00 HKD QFPay payment `no` of account `hk`, created an hour before `t`.
fn payment(no: &str, t: DateTime<Utc>) -> NewPayment {
    NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(500, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: t - TimeDelta::hours(1),
        expires_at: None,
    }
}

fn in_account(p: NewPayment, account: &str) -> NewPayment {
    NewPayment {
        account: AccountName::parse(account).unwrap(),
        ..p
    }
}

fn with_ref(p: NewPayment, syssn: &str) -> NewPayment {
    NewPayment {
        provider_ref: Some(ProviderRef::parse(syssn).unwrap()),
        ..p
    }
}

fn no(c: &Claimed) -> &str {
    c.out_trade_no.as_str()
}

fn event(kind: &'static str, from: PaymentState, to: PaymentState, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        at,
        kind,
        from_state: Some(from),
        to_state: Some(to),
        provider_code: Some("0000".into()),
        message: Some(format!("{kind} message")),
        evidence: serde_json::json!({"kind": kind}),
    }
}

/// An answer about payment `id`: `state`, checked, nothing else.
fn update(id: PaymentId, state: PaymentState) -> PaymentUpdate {
    PaymentUpdate {
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

fn finding(detail: &str) -> NewDiscrepancy {
    NewDiscrepancy {
        kind: DiscrepancyKind::NotifiedAfterFinal,
        detail: detail.to_string(),
        evidence: serde_json::json!({"detail": detail}),
    }
}

const TTL: Duration = Duration::from_secs(60);

contract!(
    due_units_walk_the_due_payments_in_schedule_order_once,
    |l| {
        let t0 = Utc::now();
        let ids: Vec<i64> = l
            .register(
                &[
                    payment("P1", t0),
                    payment("P2", t0),
                    payment("P3", t0),
                    payment("P4", t0),
                    payment("P5", t0),
                    payment("LATER", t0),
                    payment("DONE", t0),
                    payment("WATCHED", t0),
                    payment("CLOSED", t0),
                    payment("HELD", t0),
                    payment("STALE", t0),
                    in_account(payment("ELSEWHERE", t0), "other"),
                ],
                t0 - secs(60),
            )
            .await
            .unwrap()
            .inserted
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        assert_eq!(ids.len(), 12);
        let at = |d: i64| to_db(t0 + TimeDelta::milliseconds(d));
        for (no, next) in [
            ("P1", at(-3000)),
            ("P2", at(-1000)),
            ("P3", at(-2000)),
            ("P4", at(-2000)),
            ("P5", at(-1)),
            ("LATER", at(3_600_000)),
            ("WATCHED", at(-500)),
            ("CLOSED", at(-500)),
            ("HELD", at(-4000)),
            ("STALE", at(-4000)),
        ] {
            l.exec(&format!(
                "UPDATE payments SET next_check_at = '{next}' WHERE out_trade_no = '{no}'"
            ))
            .await;
        }
        // Final: not due; settled and still observed: due; cancelled is never observed.
        l.exec("UPDATE payments SET state = 'succeeded', next_check_at = NULL WHERE out_trade_no = 'DONE'")
        .await;
        l.exec("UPDATE payments SET state = 'succeeded' WHERE out_trade_no = 'WATCHED'")
            .await;
        l.exec("UPDATE payments SET state = 'cancelled' WHERE out_trade_no = 'CLOSED'")
            .await;
        // A live hold hides a payment; an expired one does not.
        l.exec(&format!(
            "UPDATE payments SET lease_owner = 'pay-1', lease_expires_at = '{}'
         WHERE out_trade_no = 'HELD'",
            at(60_000)
        ))
        .await;
        l.exec(&format!(
            "UPDATE payments SET lease_owner = 'pay-2', lease_expires_at = '{}'
         WHERE out_trade_no = 'STALE'",
            at(-1)
        ))
        .await;

        // The walk, two at a time: by next check, then id; each payment once; then nothing more.
        let scope = ClaimScope::account("hk");
        let mut position = DuePosition::default();
        let mut walked = Vec::new();
        for _ in 0..20 {
            let (unit, next) = l.due_unit(&scope, &position, 2, t0).await.unwrap();
            assert!(unit.len() <= 2);
            if unit.is_empty() {
                assert_eq!(next, position, "an empty unit keeps the position");
                break;
            }
            assert_ne!(next, position);
            walked.extend(unit.iter().map(|c| no(c).to_string()));
            position = next;
        }
        assert_eq!(
            walked,
            ["STALE", "P1", "P3", "P4", "P2", "WATCHED", "P5"],
            "schedule order, ties by id"
        );
        // A payment the walk passed and a unit rescheduled (here: due again right now) is not met
        // again from the position reached.
        l.exec(&format!(
            "UPDATE payments SET next_check_at = '{}' WHERE out_trade_no = 'P1'",
            at(-2)
        ))
        .await;
        assert!(
            l.due_unit(&scope, &position, 10, t0)
                .await
                .unwrap()
                .0
                .is_empty()
        );
        // The same walk at once, from the start: the unit reads the claimed columns.
        let (unit, _) = l
            .due_unit(&scope, &DuePosition::default(), 100, t0)
            .await
            .unwrap();
        let p3 = unit.iter().find(|c| no(c) == "P3").unwrap();
        assert_eq!(p3.id.0, ids[2]);
        assert_eq!(
            (p3.state, p3.amount_minor, p3.currency.as_str()),
            (PaymentState::Pending, 500, "HKD")
        );
        assert_eq!(p3.account.as_str(), "hk");
        assert_eq!(p3.created_at, ms(t0 - TimeDelta::hours(1)));
        assert_eq!(p3.registered_at, ms(t0 - secs(60)));
        assert_eq!(
            (p3.nudged_at, p3.notified_at, p3.reversal_requested_at),
            (None, None, None)
        );

        // `--all`: every open payment whatever its schedule, and the observed ones, by id.
        let all = ClaimScope {
            ignore_schedule: true,
            ..ClaimScope::account("hk")
        };
        let mut position = DuePosition::default();
        let mut walked = Vec::new();
        for _ in 0..20 {
            let (unit, next) = l.due_unit(&all, &position, 3, t0).await.unwrap();
            if unit.is_empty() {
                break;
            }
            walked.extend(unit.iter().map(|c| no(c).to_string()));
            position = next;
        }
        assert_eq!(
            walked,
            ["P1", "P2", "P3", "P4", "P5", "LATER", "WATCHED", "STALE"]
        );

        // The payments a run already decided are not its again; another run's are.
        let run = l.start_run("me", "cron", t0).await.unwrap();
        l.exec(&format!(
            "UPDATE payments SET last_run_id = {run} WHERE out_trade_no IN ('P1', 'P2')"
        ))
        .await;
        let this_run = ClaimScope {
            run_id: Some(run),
            ..ClaimScope::account("hk")
        };
        let (unit, _) = l
            .due_unit(&this_run, &DuePosition::default(), 100, t0)
            .await
            .unwrap();
        assert_eq!(
            unit.iter().map(no).collect::<Vec<_>>(),
            ["STALE", "P3", "P4", "WATCHED", "P5"]
        );
        let next_run = ClaimScope {
            run_id: Some(run + 1),
            ..ClaimScope::account("hk")
        };
        let (unit, _) = l
            .due_unit(&next_run, &DuePosition::default(), 100, t0)
            .await
            .unwrap();
        assert_eq!(unit.len(), 7);

        // The other account's unit is its own.
        let (unit, _) = l
            .due_unit(
                &ClaimScope::account("other"),
                &DuePosition::default(),
                100,
                t0,
            )
            .await
            .unwrap();
        assert_eq!(unit.iter().map(no).collect::<Vec<_>>(), ["ELSEWHERE"]);

        // A paused account has nothing due until the pause ends.
        let fence = l
            .acquire_account("hk", "lane", TTL, 400, t0)
            .await
            .unwrap()
            .unwrap()
            .fence;
        l.pause_account(&fence, t0 + secs(30), "rate limited", t0)
            .await
            .unwrap();
        for scope in [&scope, &all] {
            let (unit, _) = l
                .due_unit(scope, &DuePosition::default(), 100, t0)
                .await
                .unwrap();
            assert!(unit.is_empty(), "paused: {unit:?}");
        }
        let (unit, _) = l
            .due_unit(&all, &DuePosition::default(), 100, t0 + secs(30))
            .await
            .unwrap();
        assert_eq!(unit.len(), 8);
    }
);

contract!(
    planning_reads_the_due_qfpay_payments_and_counts_by_creation,
    |l| {
        let t0 = Utc::now();
        let created = |m: i64| t0 - TimeDelta::minutes(m);
        let ecpay = NewPayment {
            provider: Provider::Ecpay,
            out_trade_no: OutTradeNo::parse("E1", Provider::Ecpay).unwrap(),
            created_at: created(30),
            ..payment("x", t0)
        };
        l.register(
            &[
                NewPayment {
                    created_at: created(50),
                    ..with_ref(payment("Q1", t0), "20261101000300020000000001")
                },
                NewPayment {
                    created_at: created(40),
                    ..payment("Q2", t0)
                },
                NewPayment {
                    created_at: created(20),
                    ..payment("LATER", t0)
                },
                ecpay,
                NewPayment {
                    created_at: created(10),
                    ..in_account(payment("Q3", t0), "other")
                },
            ],
            t0,
        )
        .await
        .unwrap();
        l.exec(&format!(
            "UPDATE payments SET next_check_at = '{}' WHERE out_trade_no = 'LATER'",
            to_db(t0 + TimeDelta::hours(1))
        ))
        .await;

        let mut seen = Vec::new();
        l.for_each_due(&ClaimScope::account("hk"), t0, |created, has_ref| {
            seen.push((created, has_ref))
        })
        .await
        .unwrap();
        seen.sort();
        assert_eq!(
            seen,
            [(ms(created(50)), true), (ms(created(40)), false)],
            "the due QFPay payments of the account"
        );
        let all = ClaimScope {
            ignore_schedule: true,
            ..ClaimScope::account("hk")
        };
        let mut n = 0;
        l.for_each_due(&all, t0, |_, _| n += 1).await.unwrap();
        assert_eq!(n, 3);

        // Creation times in [from, to], both ends included, any state, this account only.
        let count = |from: i64, to: i64| l.count_created_between("hk", created(from), created(to));
        assert_eq!(count(60, 0).await.unwrap(), 4);
        assert_eq!(count(50, 40).await.unwrap(), 2);
        assert_eq!(count(49, 41).await.unwrap(), 0);
        assert_eq!(count(40, 20).await.unwrap(), 3);
        l.exec(
            "UPDATE payments SET state = 'failed', next_check_at = NULL WHERE out_trade_no = 'Q2'",
        )
        .await;
        assert_eq!(count(60, 0).await.unwrap(), 4);
        assert_eq!(
            l.count_created_between("other", created(60), t0)
                .await
                .unwrap(),
            1
        );
    }
);

contract!(
    a_page_reads_the_due_payments_it_names_by_gateway_id_or_order_number,
    |l| {
        let t0 = Utc::now();
        l.register(
            &[
                with_ref(payment("A", t0), "20261101000300020000000001"),
                payment("B", t0),
                NewPayment {
                    kind: RecordKind::Refund,
                    ..payment("R", t0)
                },
                with_ref(payment("DONE", t0), "20261101000300020000000004"),
                payment("NOTASKED", t0),
                payment("LATER", t0),
                with_ref(
                    in_account(payment("B", t0), "other"),
                    "20261101000300020000000006",
                ),
            ],
            t0,
        )
        .await
        .unwrap();
        l.exec("UPDATE payments SET state = 'succeeded', next_check_at = NULL WHERE out_trade_no = 'DONE'")
        .await;
        l.exec(&format!(
            "UPDATE payments SET next_check_at = '{}' WHERE out_trade_no = 'LATER'",
            to_db(t0 + TimeDelta::hours(1))
        ))
        .await;
        let refs = [
            // A by gateway id, DONE (final, not due), the other account's, an unknown one.
            "20261101000300020000000001",
            "20261101000300020000000004",
            "20261101000300020000000006",
            "20261101000300029999999999",
        ];
        // B (also an order number of account "other"), the refund R, A again, LATER (not due yet).
        let orders = ["B", "R", "A", "LATER"];
        let keys = |c: &[Claimed]| -> Vec<(String, RecordKind, String)> {
            c.iter()
                .map(|c| (no(c).to_string(), c.kind, c.account.to_string()))
                .collect()
        };
        let page = l
            .due_for_keys(&ClaimScope::account("hk"), &refs, &orders, t0)
            .await
            .unwrap();
        assert_eq!(
            keys(&page),
            [
                ("A".to_string(), RecordKind::Payment, "hk".to_string()),
                ("B".to_string(), RecordKind::Payment, "hk".to_string()),
                ("R".to_string(), RecordKind::Refund, "hk".to_string()),
            ],
            "by id, each once"
        );
        assert_eq!(
            page[0].provider_ref.as_ref().map(ProviderRef::as_str),
            Some(refs[0])
        );
        // With `--all` the schedule does not matter.
        let all = ClaimScope {
            ignore_schedule: true,
            ..ClaimScope::account("hk")
        };
        let page = l.due_for_keys(&all, &refs, &orders, t0).await.unwrap();
        assert_eq!(
            page.iter().map(no).collect::<Vec<_>>(),
            ["A", "B", "R", "LATER"]
        );
        // No keys, no payments; the other account's page.
        assert!(l.due_for_keys(&all, &[], &[], t0).await.unwrap().is_empty());
        let page = l
            .due_for_keys(&ClaimScope::account("other"), &refs, &["A"], t0)
            .await
            .unwrap();
        assert_eq!(page.iter().map(no).collect::<Vec<_>>(), ["B"]);
    }
);

contract!(
    a_payment_held_for_its_creation_call_is_read_by_no_lane_until_the_hold_ends,
    |l| {
        let now = Utc::now();
        let hold_until = now + secs(75);
        let p = NewPayment {
            pay_type: Some(payrecon::domain::PayType::parse("800101").unwrap()),
            expires_at: Some(now + TimeDelta::minutes(30)),
            ..payment("W1", now)
        };
        let held = l
            .register_held(&p, "pay-1", hold_until, now)
            .await
            .unwrap()
            .expect("a new payment");
        assert_eq!(
            (no(&held), held.state, held.kind, held.provider),
            (
                "W1",
                PaymentState::Pending,
                RecordKind::Payment,
                Provider::Qfpay
            )
        );
        assert_eq!(held.pay_type.as_ref().map(|p| p.as_str()), Some("800101"));
        assert_eq!(held.expires_at, Some(ms(now + TimeDelta::minutes(30))));
        assert_eq!(
            (held.created_at, held.registered_at),
            (ms(p.created_at), ms(now))
        );
        assert_eq!(
            (held.attempts, held.retry_reason, held.retry_repeats),
            (0, None, 0)
        );
        let row = l.payment(held.id.0).await.unwrap().unwrap();
        assert_eq!(
            row.next_check_at,
            Some(to_db(hold_until)),
            "not due while held"
        );
        assert_eq!(
            l.text(&format!(
                "SELECT lease_owner FROM payments WHERE id = {}",
                held.id.0
            ))
            .await
            .as_deref(),
            Some("pay-1")
        );
        let events = l.events(held.id.0).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["registered"]
        );
        assert!(
            l.register_held(&payment("W1", now), "pay-2", hold_until, now)
                .await
                .unwrap()
                .is_none(),
            "a duplicate is not registered twice"
        );
        assert_eq!(l.events(held.id.0).await.unwrap().len(), 1);

        // Read by no lane, not even with `--all`, nor by a sweep page.
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
        assert!(
            l.due_for_keys(&all, &[], &["W1"], now)
                .await
                .unwrap()
                .is_empty()
        );
        // Another holder's update is refused; the holder's applies and releases the row.
        let answer = payrecon::reconcile::update::postpone(&held, now);
        assert!(
            l.apply(
                WriteGuard::Hold("pay-2"),
                None,
                std::slice::from_ref(&answer),
                now
            )
            .await
            .unwrap()
            .is_empty()
        );
        assert_eq!(
            l.payment(held.id.0).await.unwrap().unwrap().next_check_at,
            Some(to_db(hold_until))
        );
        assert!(
            l.apply(WriteGuard::Hold("pay-1"), None, &[answer], now)
                .await
                .unwrap()
                .contains(&held.id)
        );
        assert_eq!(l.due_unit(&all, &start, 100, now).await.unwrap().0.len(), 1);
        assert_eq!(
            l.text(&format!(
                "SELECT lease_owner FROM payments WHERE id = {}",
                held.id.0
            ))
            .await,
            None
        );

        // A holder that died: its hold expires and the payment is due again...
        l.register_held(&payment("W2", now), "pay-3", hold_until, now)
            .await
            .unwrap()
            .unwrap();
        let after = hold_until + secs(1);
        let (unit, _) = l
            .due_unit(&ClaimScope::account("hk"), &start, 100, after)
            .await
            .unwrap();
        let w2 = unit.iter().find(|c| no(c) == "W2").expect("due again");
        // ... and the dead holder's late answer is not written over the lane's work.
        let late = payrecon::reconcile::update::postpone(w2, after);
        assert!(
            l.apply(WriteGuard::Hold("pay-3"), None, &[late], after)
                .await
                .unwrap()
                .is_empty()
        );
    }
);

contract!(
    the_reaper_clears_only_dead_leases_and_a_holder_gives_its_own_back,
    |l| {
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
        // Expires exactly when the reaper runs: reaped (an expired lease is one whose time has come).
        l.acquire_account("also", "A", ttl, 30, t0 + secs(2))
            .await
            .unwrap()
            .unwrap();
        // A `pay` command's hold that ends before the reap, and one that does not.
        l.register_held(&payment("H1", t0), "pay-1", t0 + secs(12), t0)
            .await
            .unwrap()
            .unwrap();
        l.register_held(&payment("H2", t0), "pay-2", t0 + secs(60), t0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.reap_expired_leases(t0).await.unwrap(), 0, "all alive");
        // Only A keeps beating (for "live"; its "also" lapses with B's "dead").
        let t1 = t0 + secs(8);
        assert!(l.renew_account(&live, ttl, t1).await.unwrap());
        let t2 = t0 + secs(12);
        assert_eq!(l.reap_expired_leases(t2).await.unwrap(), 3);
        let holder = |a: &str| format!("SELECT holder FROM account_leases WHERE account = '{a}'");
        assert_eq!(l.text(&holder("live")).await.as_deref(), Some("A"));
        assert_eq!(l.text(&holder("dead")).await, None);
        assert_eq!(l.text(&holder("also")).await, None);
        assert_eq!(
            l.count("SELECT COUNT(*) FROM payments WHERE lease_owner IS NOT NULL")
                .await,
            1
        );
        assert_eq!(
            l.text("SELECT lease_owner FROM payments WHERE lease_owner IS NOT NULL")
                .await
                .as_deref(),
            Some("pay-2")
        );
        assert!(l.renew_account(&live, ttl, t2).await.unwrap());
        assert_eq!(l.reap_expired_leases(t2).await.unwrap(), 0, "nothing twice");

        // Shutdown: A gives back what it holds, and nothing of another holder's.
        l.acquire_account("dead", "C", ttl, 30, t2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.release_leases("A").await.unwrap(), 1);
        assert_eq!(l.text(&holder("live")).await, None);
        assert_eq!(l.text(&holder("dead")).await.as_deref(), Some("C"));
        assert_eq!(l.release_leases("A").await.unwrap(), 0);
        assert!(!l.renew_account(&live, ttl, t2).await.unwrap());
    }
);

contract!(
    apply_moves_states_with_their_events_in_the_order_they_came,
    |l| {
        let t0 = Utc::now();
        let ids: Vec<PaymentId> = l
            .register(
                &[
                    payment("A", t0),
                    with_ref(payment("B", t0), "SYS-OLD"),
                    payment("C", t0),
                ],
                t0,
            )
            .await
            .unwrap()
            .inserted
            .into_iter()
            .map(|(_, id)| PaymentId(id))
            .collect();
        let fence = l
            .acquire_account("hk", "lane", TTL, 400, t0)
            .await
            .unwrap()
            .unwrap()
            .fence;
        let run = l.start_run("lane", "cron", t0).await.unwrap();
        let t1 = t0 + TimeDelta::milliseconds(1500);
        // Evidence whose text a JSON round trip through jsonb would change: kept byte for byte.
        let evidence: serde_json::Value = serde_json::from_str(
            r#"{"amt":1.0,"big":123456789012345678901,"s":"quote \" tab \t 中文"}"#,
        )
        .unwrap();
        let observed = |to| NewEvent {
            evidence: evidence.clone(),
            ..event("observed", PaymentState::Pending, to, t1)
        };
        let written = l
            .apply(
                WriteGuard::Lane(&fence),
                Some(run),
                &[
                    PaymentUpdate {
                        provider_code: Some("1143".into()),
                        provider_ref: Some(ProviderRef::from_trusted("SYS-A".into())),
                        retry: Some((RetryReason::InProgress, 2)),
                        next_check_at: Some(t1 + secs(30)),
                        in_progress_since: Some(t1),
                        events: vec![observed(PaymentState::InProgress)],
                        ..update(ids[0], PaymentState::InProgress)
                    },
                    PaymentUpdate {
                        provider_code: Some("1205".into()),
                        // A gateway id only fills an empty column.
                        provider_ref: Some(ProviderRef::from_trusted("SYS-NEW".into())),
                        events: vec![observed(PaymentState::Failed)],
                        ..update(ids[1], PaymentState::Failed)
                    },
                    // The same payment again: written after the first, as it came.
                    PaymentUpdate {
                        provider_code: Some("0000".into()),
                        in_progress_since: Some(t1 + secs(1)),
                        events: vec![
                            event(
                                "settled",
                                PaymentState::InProgress,
                                PaymentState::Succeeded,
                                t1,
                            ),
                            event(
                                "noted",
                                PaymentState::Succeeded,
                                PaymentState::Succeeded,
                                t1,
                            ),
                        ],
                        ..update(ids[0], PaymentState::Succeeded)
                    },
                    // A final payment never opens again: refused, and its event not written.
                    PaymentUpdate {
                        next_check_at: Some(t1),
                        events: vec![event(
                            "reopened",
                            PaymentState::Failed,
                            PaymentState::Pending,
                            t1,
                        )],
                        ..update(ids[1], PaymentState::Pending)
                    },
                ],
                t1,
            )
            .await
            .unwrap();
        assert_eq!(written, HashSet::from([ids[0], ids[1]]));
        let row = |id: PaymentId| l.payment(id.0);
        let a = row(ids[0]).await.unwrap().unwrap();
        assert_eq!(
            (a.state.as_str(), a.attempts, a.provider_code.as_deref()),
            ("succeeded", 2, Some("0000"))
        );
        assert_eq!(
            (a.provider_ref.as_deref(), a.next_check_at.as_deref()),
            (Some("SYS-A"), None)
        );
        assert_eq!(a.updated_at, to_db(t1));
        let b = row(ids[1]).await.unwrap().unwrap();
        assert_eq!(
            (b.state.as_str(), b.attempts, b.provider_code.as_deref()),
            ("failed", 1, Some("1205"))
        );
        assert_eq!(b.provider_ref.as_deref(), Some("SYS-OLD"));
        let c = row(ids[2]).await.unwrap().unwrap();
        assert_eq!((c.state.as_str(), c.attempts), ("pending", 0));
        // The first `in_progress_since` stays; the run that decided is recorded.
        assert_eq!(
        l.count(&format!(
            "SELECT COUNT(*) FROM payments WHERE last_run_id = {run} AND in_progress_since IS NOT NULL"
        ))
        .await,
        1
    );
        let mut events: Vec<(i64, String, Option<String>)> = Vec::new();
        for id in &ids {
            for e in l.events(id.0).await.unwrap() {
                if e.kind != "registered" {
                    events.push((e.id, e.kind, e.to_state));
                }
            }
        }
        events.sort();
        let events: Vec<(String, Option<String>)> =
            events.into_iter().map(|(_, k, to)| (k, to)).collect();
        let ev = |k: &str, to: &str| (k.to_string(), Some(to.to_string()));
        assert_eq!(
            events,
            [
                ev("observed", "in_progress"),
                ev("observed", "failed"),
                ev("settled", "succeeded"),
                ev("noted", "succeeded"),
            ],
            "in the order they came"
        );
        let first = l.events(ids[0].0).await.unwrap();
        assert_eq!(first[1].at, to_db(t1));
        assert_eq!(first[1].provider_code.as_deref(), Some("0000"));
        assert_eq!(first[1].message.as_deref(), Some("observed message"));
        assert_eq!(first[1].from_state.as_deref(), Some("pending"));
        assert_eq!(
            l.text(&format!(
                "SELECT evidence FROM events WHERE payment_id = {} AND kind = 'observed'",
                ids[0].0
            ))
            .await
            .as_deref(),
            Some(evidence.to_string().as_str()),
            "byte for byte"
        );
        assert_eq!(
            l.count(&format!("SELECT COUNT(*) FROM events WHERE run_id = {run}"))
                .await,
            4
        );

        // An open payment keeps its retry reason and schedule; the lane reads them back. A
        // second answer without a code, without a check and without a run keeps the stored
        // code, attempts, first `in_progress_since` and run.
        let written = l
            .apply(
                WriteGuard::Lane(&fence),
                Some(run),
                &[PaymentUpdate {
                    provider_code: Some("1143".into()),
                    retry: Some((RetryReason::InProgress, 1)),
                    next_check_at: Some(t1 + secs(60)),
                    in_progress_since: Some(t1),
                    ..update(ids[2], PaymentState::InProgress)
                }],
                t1,
            )
            .await
            .unwrap();
        assert_eq!(written, HashSet::from([ids[2]]));
        let written = l
            .apply(
                WriteGuard::Lane(&fence),
                None,
                &[PaymentUpdate {
                    checked: false,
                    retry: Some((RetryReason::NotFound, 3)),
                    next_check_at: Some(t1 - secs(1)),
                    in_progress_since: Some(t1 + secs(5)),
                    ..update(ids[2], PaymentState::InProgress)
                }],
                t1,
            )
            .await
            .unwrap();
        assert_eq!(written, HashSet::from([ids[2]]));
        let c = row(ids[2]).await.unwrap().unwrap();
        assert_eq!(
            (c.provider_code.as_deref(), c.next_check_at),
            (Some("1143"), Some(to_db(t1 - secs(1))))
        );
        let (unit, _) = l
            .due_unit(&ClaimScope::account("hk"), &DuePosition::default(), 10, t1)
            .await
            .unwrap();
        assert_eq!(unit.len(), 1);
        assert_eq!(
            (unit[0].id, unit[0].state, unit[0].attempts),
            (ids[2], PaymentState::InProgress, 1)
        );
        assert_eq!(
            (unit[0].retry_reason, unit[0].retry_repeats),
            (Some(RetryReason::NotFound), 3)
        );
        assert_eq!(unit[0].in_progress_since, Some(ms(t1)));
        // The run's mark is kept when a later write names no run.
        assert_eq!(
            l.count(&format!(
                "SELECT COUNT(*) FROM payments WHERE last_run_id = {run}"
            ))
            .await,
            3
        );
        // A's first `in_progress_since` stayed too.
        assert_eq!(
            l.count(&format!(
                "SELECT COUNT(*) FROM payments WHERE id = {} AND in_progress_since = '{}'",
                ids[0].0,
                to_db(t1)
            ))
            .await,
            1
        );
    }
);

contract!(a_final_state_never_becomes_open_again, |l| {
    let t0 = Utc::now();
    let ids: Vec<PaymentId> = l
        .register(&[payment("F1", t0), payment("F2", t0)], t0)
        .await
        .unwrap()
        .inserted
        .into_iter()
        .map(|(_, id)| PaymentId(id))
        .collect();
    let fence = l
        .acquire_account("hk", "lane", TTL, 400, t0)
        .await
        .unwrap()
        .unwrap()
        .fence;
    let done = l
        .apply(
            WriteGuard::Lane(&fence),
            None,
            &[
                update(ids[0], PaymentState::Succeeded),
                update(ids[1], PaymentState::Reversing),
            ],
            t0,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    for open in [
        PaymentState::Pending,
        PaymentState::InProgress,
        PaymentState::Reversing,
    ] {
        let refused = l
            .apply(
                WriteGuard::Lane(&fence),
                None,
                &[PaymentUpdate {
                    provider_code: Some("9999".into()),
                    next_check_at: Some(t0),
                    events: vec![event("reopened", PaymentState::Succeeded, open, t0)],
                    discrepancies: vec![finding("reopened")],
                    ..update(ids[0], open)
                }],
                t0,
            )
            .await
            .unwrap();
        assert!(refused.is_empty(), "{open:?}");
    }
    let row = l.payment(ids[0].0).await.unwrap().unwrap();
    assert_eq!(
        (
            row.state.as_str(),
            row.attempts,
            row.provider_code,
            row.next_check_at
        ),
        ("succeeded", 1, None, None)
    );
    assert_eq!(
        l.events(ids[0].0).await.unwrap().len(),
        1,
        "registered only"
    );
    assert!(l.discrepancies(true).await.unwrap().is_empty());
    // Final to final (a person's review, a refund) and open to open are written.
    let done = l
        .apply(
            WriteGuard::Lane(&fence),
            None,
            &[
                update(ids[0], PaymentState::NeedsReview),
                update(ids[1], PaymentState::InProgress),
            ],
            t0,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(
        l.payment(ids[0].0).await.unwrap().unwrap().state,
        "needs_review"
    );
});

contract!(a_lane_whose_account_was_taken_over_writes_nothing, |l| {
    let t0 = Utc::now();
    let ids: Vec<PaymentId> = l
        .register(
            &[payment("F1", t0), in_account(payment("X1", t0), "other")],
            t0,
        )
        .await
        .unwrap()
        .inserted
        .into_iter()
        .map(|(_, id)| PaymentId(id))
        .collect();
    let a = l
        .acquire_account("hk", "A", Duration::from_secs(30), 400, t0)
        .await
        .unwrap()
        .unwrap()
        .fence;
    // A stalls past its lease; B takes the account over.
    let later = t0 + secs(31);
    let b = l
        .acquire_account("hk", "B", Duration::from_secs(30), 400, later)
        .await
        .unwrap()
        .unwrap()
        .fence;
    let answer = PaymentUpdate {
        events: vec![event(
            "observed",
            PaymentState::Pending,
            PaymentState::Succeeded,
            later,
        )],
        discrepancies: vec![finding("late")],
        ..update(ids[0], PaymentState::Succeeded)
    };
    let refused = l
        .apply(
            WriteGuard::Lane(&a),
            None,
            std::slice::from_ref(&answer),
            later,
        )
        .await;
    assert!(
        matches!(refused, Err(LedgerError::FencedOut { ref account, token }) if account == "hk" && token == a.token),
        "{refused:?}"
    );
    let row = l.payment(ids[0].0).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 0));
    assert_eq!(l.events(ids[0].0).await.unwrap().len(), 1);
    assert!(l.discrepancies(true).await.unwrap().is_empty());
    let refused = l.mark_reversing(&a, None, ids[0], &[], later).await;
    assert!(
        matches!(refused, Err(LedgerError::FencedOut { .. })),
        "{refused:?}"
    );
    assert_eq!(
        l.count("SELECT COUNT(*) FROM payments WHERE reversal_requested_at IS NOT NULL")
            .await,
        0
    );
    // B's lease does not write another account's payment; its own answer goes through.
    let written = l
        .apply(
            WriteGuard::Lane(&b),
            None,
            &[update(ids[1], PaymentState::Failed), answer],
            later,
        )
        .await
        .unwrap();
    assert_eq!(written, HashSet::from([ids[0]]));
    assert_eq!(l.payment(ids[1].0).await.unwrap().unwrap().state, "pending");
    assert_eq!(
        l.payment(ids[0].0).await.unwrap().unwrap().state,
        "succeeded"
    );
    assert_eq!(l.discrepancies(true).await.unwrap().len(), 1);
    // Once B released the account, its fence writes nothing either.
    assert!(l.release_account(&b, None).await.unwrap());
    assert!(matches!(
        l.apply(
            WriteGuard::Lane(&b),
            None,
            &[update(ids[0], PaymentState::Succeeded)],
            later
        )
        .await,
        Err(LedgerError::FencedOut { .. })
    ));
});

contract!(
    a_reversal_is_marked_once_and_never_for_a_notified_payment,
    |l| {
        let t0 = Utc::now();
        let ids: Vec<PaymentId> = l
            .register(
                &[
                    payment("R1", t0),
                    payment("N1", t0),
                    payment("D1", t0),
                    in_account(payment("X1", t0), "other"),
                ],
                t0,
            )
            .await
            .unwrap()
            .inserted
            .into_iter()
            .map(|(_, id)| PaymentId(id))
            .collect();
        let fence = l
            .acquire_account("hk", "lane", TTL, 400, t0)
            .await
            .unwrap()
            .unwrap()
            .fence;
        let t1 = t0 + secs(1);
        let intent = [
            event("expired", PaymentState::Pending, PaymentState::Pending, t1),
            event(
                "reversal_requested",
                PaymentState::Pending,
                PaymentState::Reversing,
                t1,
            ),
        ];
        assert!(
            l.mark_reversing(&fence, None, ids[0], &intent, t1)
                .await
                .unwrap()
        );
        let row = l.payment(ids[0].0).await.unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.updated_at),
            ("reversing", to_db(t1))
        );
        let kinds = |events: Vec<ledger::EventRow>| -> Vec<String> {
            events.into_iter().map(|e| e.kind).collect()
        };
        assert_eq!(
            kinds(l.events(ids[0].0).await.unwrap()),
            ["registered", "expired", "reversal_requested"]
        );
        let (unit, _) = l
            .due_unit(
                &ClaimScope {
                    ignore_schedule: true,
                    ..ClaimScope::account("hk")
                },
                &DuePosition::default(),
                10,
                t1,
            )
            .await
            .unwrap();
        let r1 = unit.iter().find(|c| c.id == ids[0]).unwrap();
        assert_eq!(r1.reversal_requested_at, Some(ms(t1)));
        // Never twice: not while reversing, nor once the payment is open again.
        let t2 = t1 + secs(1);
        assert!(
            !l.mark_reversing(&fence, None, ids[0], &intent, t2)
                .await
                .unwrap()
        );
        l.apply(
            WriteGuard::Lane(&fence),
            None,
            &[update(ids[0], PaymentState::Pending)],
            t2,
        )
        .await
        .unwrap();
        assert!(
            !l.mark_reversing(&fence, None, ids[0], &intent, t2)
                .await
                .unwrap()
        );
        let row = l.payment(ids[0].0).await.unwrap().unwrap();
        assert_eq!(row.state, "pending");
        assert_eq!(
            l.events(ids[0].0).await.unwrap().len(),
            3,
            "no second intent"
        );

        // A payment a notification said is paid is never reversed.
        l.exec(&format!(
            "UPDATE payments SET notified_at = '{}', nudged_at = '{}' WHERE id = {}",
            to_db(t1),
            to_db(t1),
            ids[1].0
        ))
        .await;
        assert!(
            !l.mark_reversing(&fence, None, ids[1], &intent, t2)
                .await
                .unwrap()
        );
        let row = l.payment(ids[1].0).await.unwrap().unwrap();
        assert_eq!(row.state, "pending");
        assert_eq!(l.events(ids[1].0).await.unwrap().len(), 1);
        // Nor a final one, nor another account's.
        l.apply(
            WriteGuard::Lane(&fence),
            None,
            &[update(ids[2], PaymentState::Succeeded)],
            t2,
        )
        .await
        .unwrap();
        assert!(
            !l.mark_reversing(&fence, None, ids[2], &intent, t2)
                .await
                .unwrap()
        );
        assert!(
            !l.mark_reversing(&fence, None, ids[3], &intent, t2)
                .await
                .unwrap()
        );
        assert_eq!(
            l.count("SELECT COUNT(*) FROM payments WHERE reversal_requested_at IS NOT NULL")
                .await,
            1
        );
        assert_eq!(
            l.count("SELECT COUNT(*) FROM payments WHERE state = 'reversing'")
                .await,
            0
        );
    }
);

contract!(a_nudge_while_the_lane_queries_keeps_the_payment_due, |l| {
    let t0 = Utc::now();
    let ids: Vec<PaymentId> = l
        .register(
            &[payment("N1", t0), payment("N2", t0), payment("N3", t0)],
            t0,
        )
        .await
        .unwrap()
        .inserted
        .into_iter()
        .map(|(_, id)| PaymentId(id))
        .collect();
    let fence = l
        .acquire_account("hk", "lane", TTL, 400, t0)
        .await
        .unwrap()
        .unwrap()
        .fence;
    // N3 was nudged before the lane read it: the lane's answer is about that news.
    let t_before = t0 - TimeDelta::microseconds(1500);
    l.exec(&format!(
        "UPDATE payments SET nudged_at = '{}' WHERE id = {}",
        to_db(t_before),
        ids[2].0
    ))
    .await;
    let (unit, _) = l
        .due_unit(&ClaimScope::account("hk"), &DuePosition::default(), 10, t0)
        .await
        .unwrap();
    assert_eq!(unit.len(), 3);
    let seen = |id: PaymentId| unit.iter().find(|c| c.id == id).unwrap().nudged_at;
    assert_eq!(seen(ids[2]), Some(ms(t_before)));
    // A notification about N1 and N2 arrives while the lane's queries are in flight.
    let t1 = t0 + TimeDelta::microseconds(200_300);
    l.exec(&format!(
        "UPDATE payments SET nudged_at = '{}' WHERE id IN ({}, {})",
        to_db(t1),
        ids[0].0,
        ids[1].0
    ))
    .await;
    // The answers, sent before the news: N1 and N3 not found (ask in 10 minutes), N2 final.
    let t2 = t0 + TimeDelta::microseconds(400_700);
    let later = t2 + TimeDelta::minutes(10);
    let not_found = |id: PaymentId| PaymentUpdate {
        retry: Some((RetryReason::NotFound, 0)),
        next_check_at: Some(later),
        seen_nudged_at: seen(id),
        ..update(id, PaymentState::Pending)
    };
    l.apply(
        WriteGuard::Lane(&fence),
        None,
        &[
            not_found(ids[0]),
            PaymentUpdate {
                seen_nudged_at: seen(ids[1]),
                ..update(ids[1], PaymentState::Failed)
            },
            not_found(ids[2]),
        ],
        t2,
    )
    .await
    .unwrap();
    let next = |id: PaymentId| l.payment(id.0);
    assert_eq!(
        next(ids[0]).await.unwrap().unwrap().next_check_at,
        Some(to_db(t2)),
        "the news that came during the query keeps it due now"
    );
    assert_eq!(
        next(ids[1]).await.unwrap().unwrap().next_check_at,
        None,
        "a final payment has no next check"
    );
    assert_eq!(
        next(ids[2]).await.unwrap().unwrap().next_check_at,
        Some(to_db(later)),
        "news the lane had read: the answer's schedule"
    );
});

contract!(
    a_discrepancy_is_recorded_once_per_payment_and_finding,
    |l| {
        let t0 = Utc::now();
        let ids: Vec<PaymentId> = l
            .register(&[payment("D1", t0), payment("D2", t0)], t0)
            .await
            .unwrap()
            .inserted
            .into_iter()
            .map(|(_, id)| PaymentId(id))
            .collect();
        let fence = l
            .acquire_account("hk", "lane", TTL, 400, t0)
            .await
            .unwrap()
            .unwrap()
            .fence;
        let with = |id: PaymentId, findings: Vec<NewDiscrepancy>| PaymentUpdate {
            discrepancies: findings,
            ..update(id, PaymentState::NeedsReview)
        };
        // Twice in one answer (the same payment twice), and for two payments: once per payment.
        l.apply(
            WriteGuard::Lane(&fence),
            None,
            &[
                with(
                    ids[0],
                    vec![finding("paid after failed"), finding("paid after failed")],
                ),
                with(ids[1], vec![finding("paid after failed")]),
                with(
                    ids[0],
                    vec![finding("paid after failed"), finding("other detail")],
                ),
            ],
            t0,
        )
        .await
        .unwrap();
        let found = l.discrepancies(true).await.unwrap();
        let mut keys: Vec<(Option<i64>, String, String, String)> = found
            .iter()
            .map(|d| {
                (
                    d.payment_id,
                    d.kind.clone(),
                    d.detail.clone(),
                    d.account.clone(),
                )
            })
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                (
                    Some(ids[0].0),
                    "notified_after_final".into(),
                    "other detail".into(),
                    "hk".into()
                ),
                (
                    Some(ids[0].0),
                    "notified_after_final".into(),
                    "paid after failed".into(),
                    "hk".into()
                ),
                (
                    Some(ids[1].0),
                    "notified_after_final".into(),
                    "paid after failed".into(),
                    "hk".into()
                ),
            ]
        );
        assert!(found.iter().all(|d| d.found_at == to_db(t0)));
        // Seen again on every poll: still once, also once resolved.
        let first = found
            .iter()
            .find(|d| d.payment_id == Some(ids[1].0))
            .unwrap()
            .id;
        assert!(l.resolve_discrepancy(first, "checked", t0).await.unwrap());
        let t1 = t0 + secs(60);
        l.apply(
            WriteGuard::Lane(&fence),
            None,
            &[
                with(ids[0], vec![finding("paid after failed")]),
                with(ids[1], vec![finding("paid after failed")]),
            ],
            t1,
        )
        .await
        .unwrap();
        assert_eq!(l.discrepancies(true).await.unwrap().len(), 3);
        assert_eq!(l.discrepancies(false).await.unwrap().len(), 2);
        // Several replicas recording the same finding at once: once.
        let raced = ids[1];
        let tries = (0..4).map(|_| {
            let l = l.clone();
            let fence = fence.clone();
            async move {
                l.apply(
                    WriteGuard::Lane(&fence),
                    None,
                    &[with(raced, vec![finding("raced")])],
                    t1,
                )
                .await
                .unwrap()
            }
        });
        for written in futures::future::join_all(tries).await {
            assert_eq!(written, HashSet::from([ids[1]]));
        }
        assert_eq!(l.discrepancies(true).await.unwrap().len(), 4);
    }
);
