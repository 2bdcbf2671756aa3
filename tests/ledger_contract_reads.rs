//! One contract, two stores (issue 18), continued: nudges (a requested check, a gateway's
//! notification, the payment a notification names, whether the ledger takes writes), the API's
//! keyset pages, the CLI's listing and stats, the metrics' gauges and the lanes. Each test runs
//! on the SQLite ledger and on the PostgreSQL ledger (`bash tests/run.sh`), with the same calls
//! and the same expectations. States the stores cannot reach yet through their common methods
//! are set by raw SQL that both accept ([`Raw`]).

#[macro_use]
mod pg_support;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, PaymentState, Provider, ProviderRef, RecordKind,
};
use payrecon::ledger::time::{from_db, to_db};
use payrecon::ledger::{
    self, CheckRequested, DiscrepancyPage, ListFilter, NewPayment, Nudged, PaymentPage,
};
use pg_support::{Raw, ms};
use serde_json::json;

/// Raw SQL on either store, for states the common methods do not reach (no parameters: the
/// text must mean the same to both).
/// `lanes` with each heartbeat age only present or not: PostgreSQL counts it on the server's
/// clock at each read, which moves by the statement's latency from one read to the next.
fn ageless(lanes: &[ledger::LaneRow]) -> Vec<ledger::LaneRow> {
    let mut lanes = lanes.to_vec();
    for lane in &mut lanes {
        lane.heartbeat_age_ms = lane.heartbeat_age_ms.map(|_| 0);
    }
    lanes
}

/// Whether `l` times leases on the server's clock (`Raw::LEASES_ON_SERVER_CLOCK`).
fn has_server_clock<L: Raw>(_: &L) -> bool {
    L::LEASES_ON_SERVER_CLOCK
}

/// Now with a fraction of a millisecond that PostgreSQL would keep (microseconds) and the
/// ledger must not: a store that writes it unrounded answers differently.
fn odd_now() -> DateTime<Utc> {
    ms(Utc::now()) + TimeDelta::microseconds(456)
}

fn payment(account: &str, no: &str, created_at: DateTime<Utc>) -> NewPayment {
    NewPayment {
        account: AccountName::parse(account).unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(100, Currency::parse("HKD").unwrap()).unwrap(),
        created_at,
        expires_at: None,
    }
}

fn kinds(events: &[ledger::EventRow]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

const LATER: &str = "'2999-01-01T00:00:00.000Z'";

contract!(
    a_requested_check_makes_an_observed_payment_due_and_refuses_a_final_one,
    |l| {
        let now = odd_now();
        let batch: Vec<_> = ["K1", "K2", "K3", "K4"]
            .iter()
            .map(|n| payment("hk", n, now))
            .collect();
        l.register(&batch, now).await.unwrap();
        l.exec(&format!(
            "UPDATE payments SET next_check_at = {LATER} WHERE id IN (1, 3)"
        ))
        .await;
        l.exec("UPDATE payments SET state = 'failed', next_check_at = NULL WHERE id = 2")
            .await;
        // Paid, and still observed (a refund may come).
        l.exec("UPDATE payments SET state = 'succeeded' WHERE id = 3")
            .await;
        let hk = || "hk".to_string();

        assert_eq!(
            l.request_check(1, now).await.unwrap(),
            CheckRequested::DueNow { account: hk() }
        );
        let p1 = l.payment(1).await.unwrap().unwrap();
        assert_eq!(p1.next_check_at.as_deref(), Some(to_db(now).as_str()));
        assert_eq!(p1.state, "pending");
        let events = l.events(1).await.unwrap();
        assert_eq!(kinds(&events), ["registered", "check_requested"]);
        assert_eq!(
            events[1].message.as_deref(),
            Some("check requested through the API")
        );
        assert_eq!(events[1].evidence, json!({}));
        assert_eq!(events[1].at, to_db(now));
        // Due from the millisecond it was made due: asked again within it, it is due already.
        assert_eq!(
            l.request_check(1, ms(now)).await.unwrap(),
            CheckRequested::AlreadyDue { account: hk() }
        );
        assert_eq!(l.events(1).await.unwrap().len(), 2, "nothing written");

        assert_eq!(
            l.request_check(2, now).await.unwrap(),
            CheckRequested::Final {
                state: "failed".into()
            }
        );
        assert_eq!(
            l.request_check(3, now).await.unwrap(),
            CheckRequested::DueNow { account: hk() }
        );
        let p3 = l.payment(3).await.unwrap().unwrap();
        assert_eq!(
            (p3.state.as_str(), p3.next_check_at.as_deref()),
            ("succeeded", Some(to_db(now).as_str()))
        );
        // Due since its registration.
        assert_eq!(
            l.request_check(4, now + TimeDelta::seconds(1))
                .await
                .unwrap(),
            CheckRequested::AlreadyDue { account: hk() }
        );
        assert_eq!(kinds(&l.events(4).await.unwrap()), ["registered"]);
        assert_eq!(
            l.request_check(99, now).await.unwrap(),
            CheckRequested::Unknown
        );
        assert_eq!(
            l.count("SELECT COUNT(*) FROM payments WHERE nudged_at IS NOT NULL")
                .await,
            2
        );
        assert_eq!(
            l.count("SELECT COUNT(*) FROM payments WHERE notified_at IS NOT NULL")
                .await,
            0,
            "a requested check is no notification"
        );
    }
);

contract!(
    a_notification_marks_once_keeps_an_earlier_time_and_flags_a_contradiction,
    |l| {
        let now = odd_now();
        let batch: Vec<_> = ["N1", "N2", "N3", "N4", "N5"]
            .iter()
            .map(|n| payment("hk", n, now))
            .collect();
        l.register(&batch, now).await.unwrap();
        l.exec(&format!(
            "UPDATE payments SET next_check_at = {LATER} WHERE id < 5"
        ))
        .await;
        l.exec("UPDATE payments SET state = 'succeeded' WHERE id = 2")
            .await;
        l.exec("UPDATE payments SET state = 'failed' WHERE id = 3")
            .await;
        l.exec("UPDATE payments SET state = 'needs_review', next_check_at = NULL WHERE id = 4")
            .await;
        let evidence = json!({"k": 1});
        let hk = || "hk".to_string();

        assert_eq!(
            l.notified_paid(1, "why", &evidence, now).await.unwrap(),
            Nudged::MadeDue { account: hk() }
        );
        assert_eq!(
            l.payment(1).await.unwrap().unwrap().next_check_at,
            Some(to_db(now))
        );
        // Replays write nothing and ask nothing.
        for _ in 0..2 {
            assert_eq!(
                l.notified_paid(1, "again", &evidence, now).await.unwrap(),
                Nudged::Repeated
            );
        }
        let events = l.events(1).await.unwrap();
        assert_eq!(kinds(&events), ["registered", "notified"]);
        assert_eq!(events[1].message.as_deref(), Some("why"));
        assert_eq!(events[1].evidence, evidence);
        assert_eq!(
            l.count("SELECT COUNT(*) FROM payments WHERE notified_at IS NOT NULL AND id = 1")
                .await,
            1
        );

        // Paid already: nothing written.
        assert_eq!(
            l.notified_paid(2, "why", &evidence, now).await.unwrap(),
            Nudged::Settled {
                state: "succeeded".into()
            }
        );
        assert_eq!(
            l.payment(2)
                .await
                .unwrap()
                .unwrap()
                .next_check_at
                .as_deref(),
            Some("2999-01-01T00:00:00.000Z")
        );
        assert_eq!(l.events(2).await.unwrap().len(), 1);
        // Failed, still observed: a discrepancy, and due now. In review, not observed: a
        // discrepancy only, and still not scheduled.
        assert_eq!(
            l.notified_paid(3, "why", &evidence, now).await.unwrap(),
            Nudged::Contradicts {
                account: hk(),
                state: "failed".into(),
                due: true
            }
        );
        assert_eq!(
            l.payment(3).await.unwrap().unwrap().next_check_at,
            Some(to_db(now))
        );
        assert_eq!(
            l.notified_paid(4, "why", &evidence, now).await.unwrap(),
            Nudged::Contradicts {
                account: hk(),
                state: "needs_review".into(),
                due: false
            }
        );
        assert_eq!(l.payment(4).await.unwrap().unwrap().next_check_at, None);
        assert_eq!(
            l.notified_paid(3, "why", &evidence, now).await.unwrap(),
            Nudged::Repeated
        );
        // Due since its registration, notified a second later: marked, and its earlier time kept.
        assert_eq!(
            l.notified_paid(5, "why", &evidence, now + TimeDelta::seconds(1))
                .await
                .unwrap(),
            Nudged::AlreadyDue { account: hk() }
        );
        assert_eq!(
            l.payment(5).await.unwrap().unwrap().next_check_at,
            Some(to_db(now))
        );
        assert_eq!(
            kinds(&l.events(5).await.unwrap()),
            ["registered", "notified"]
        );

        let found: Vec<_> = l
            .discrepancies(true)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.payment_id, d.account, d.kind, d.detail, d.found_at))
            .collect();
        let finding = |id: i64, no: &str, state: &str| {
            (
                Some(id),
                hk(),
                "notified_after_final".to_string(),
                format!(
                    "hk {no}: the gateway notified it as paid, but the ledger holds it as {state}"
                ),
                to_db(now),
            )
        };
        assert_eq!(
            found,
            [finding(3, "N3", "failed"), finding(4, "N4", "needs_review")]
        );
        let mut states = Vec::new();
        for id in 1..=5 {
            states.push(l.payment(id).await.unwrap().unwrap().state);
        }
        assert_eq!(
            states,
            ["pending", "succeeded", "failed", "needs_review", "pending"]
        );
        assert_eq!(
            l.notified_paid(99, "why", &evidence, now).await.unwrap(),
            Nudged::Unknown
        );
    }
);

contract!(notifications_arriving_at_once_mark_the_payment_once, |l| {
    let now = odd_now();
    let batch: Vec<_> = (0..12)
        .map(|i| payment("hk", &format!("R{i}"), now))
        .collect();
    l.register(&batch, now).await.unwrap();
    l.exec(&format!("UPDATE payments SET next_check_at = {LATER}"))
        .await;
    // Eight at once for each payment, all at once.
    let mut tries = Vec::new();
    for id in 1..=12 {
        for _ in 0..8 {
            let l = l.clone();
            tries.push(async move {
                let answer = l.notified_paid(id, "why", &json!({}), now).await.unwrap();
                (id, answer)
            });
        }
    }
    let answers = futures::future::join_all(tries).await;
    for id in 1..=12 {
        let written: Vec<_> = answers
            .iter()
            .filter(|(i, a)| *i == id && *a != Nudged::Repeated)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            written,
            [&Nudged::MadeDue {
                account: "hk".into()
            }],
            "{id}: {answers:?}"
        );
        assert_eq!(
            kinds(&l.events(id).await.unwrap()),
            ["registered", "notified"]
        );
    }
});

contract!(
    a_notification_names_its_payment_by_gateway_id_then_order_number,
    |l| {
        let now = odd_now();
        let with_ref = |account: &str, no: &str, r: &str| NewPayment {
            provider_ref: Some(ProviderRef::parse(r).unwrap()),
            ..payment(account, no, now)
        };
        let refund = NewPayment {
            kind: RecordKind::Refund,
            ..payment("hk", "P1", now)
        };
        let report = l
            .register(
                &[
                    with_ref("hk", "P1", "R1"),
                    with_ref("hk", "P2", "R2"),
                    with_ref("sg", "P1", "R1"),
                    refund,
                    // The same gateway id twice (a data error): the first registered answers.
                    with_ref("hk", "P3", "R3"),
                    with_ref("hk", "P4", "R3"),
                ],
                now,
            )
            .await
            .unwrap();
        let id: Vec<i64> = report.inserted.iter().map(|(_, id)| *id).collect();
        assert_eq!(id.len(), 6);
        let find = |account: &'static str, kind, no: &'static str, r: Option<&'static str>| {
            let l = l.clone();
            async move { l.find_notified(account, kind, no, r).await.unwrap() }
        };
        use RecordKind::{Payment, Refund};
        // The gateway id first, whatever the order number says.
        assert_eq!(find("hk", Payment, "P9", Some("R2")).await, Some(id[1]));
        assert_eq!(find("sg", Payment, "P9", Some("R1")).await, Some(id[2]));
        assert_eq!(find("hk", Payment, "P9", Some("R3")).await, Some(id[4]));
        // An unknown gateway id, or none: the order number among that kind of record.
        assert_eq!(find("hk", Payment, "P1", Some("R9")).await, Some(id[0]));
        assert_eq!(find("hk", Payment, "P1", None).await, Some(id[0]));
        assert_eq!(find("hk", Refund, "P1", None).await, Some(id[3]));
        assert_eq!(find("sg", Refund, "P1", None).await, None);
        assert_eq!(find("sg", Payment, "P2", Some("R2")).await, None);
        assert_eq!(find("hk", Payment, "P9", None).await, None);
    }
);

contract!(a_fresh_ledger_takes_writes, |l| {
    l.writable().await.unwrap();
    // It wrote nothing.
    l.register(&[payment("hk", "W1", odd_now())], odd_now())
        .await
        .unwrap();
    assert_eq!(l.count("SELECT COUNT(*) FROM payments").await, 1);
    l.writable().await.unwrap();
    assert_eq!(l.run_totals().await.unwrap(), (0, 0));
});

/// A PostgreSQL ledger that cannot take writes (here: its database made read-only, as a
/// standby or a provider's quota would) is not writable: `/readyz` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_postgresql_ledger_is_not_writable() {
    let (pool, url) = pg_support::fresh_ledger().await;
    pool.close().await;
    let l = ledger::pg::PgLedger::open(&url, Duration::from_secs(10))
        .await
        .unwrap();
    l.writable().await.unwrap();
    let admin = sqlx::PgPool::connect(&pg_support::server_url())
        .await
        .unwrap();
    let db = url::Url::parse(&url).unwrap().path()[1..].to_string();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    )))
    .execute(&admin)
    .await
    .unwrap();
    // The ledger's connections end; the next ones open read-only.
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .execute(&admin)
        .await
        .unwrap();
    for _ in 0..100 {
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(&db)
                .fetch_one(&admin)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = l.writable().await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("read-only")),
        "{refused:?}"
    );
    // Reads still work.
    assert!(l.payment(1).await.unwrap().is_none());
}

contract!(
    pages_list_every_matching_payment_once_in_creation_order,
    |l| {
        // Interleaved accounts; every third payment failed; created in an order unrelated to their
        // ids (id i+1 created (7i mod 20) minutes ago), two of them at the same time.
        let now = odd_now();
        let batch: Vec<NewPayment> = (0..20)
            .map(|i: i64| {
                let account = if i % 2 == 0 { "hk" } else { "sg" };
                let ago = TimeDelta::minutes((7 * i) % 20 + i64::from(i == 19));
                payment(account, &format!("P{i}"), now - ago)
            })
            .collect();
        l.register(&batch, now).await.unwrap();
        let mut order: Vec<(DateTime<Utc>, i64)> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| (p.created_at, i as i64 + 1))
            .collect();
        order.sort();
        assert!(order.windows(2).any(|w| w[0].0 == w[1].0), "a tie");
        l.exec("UPDATE payments SET state = 'failed', next_check_at = NULL WHERE id % 3 = 0")
            .await;
        let all: Vec<i64> = order.iter().map(|(_, id)| *id).collect();
        let expect =
            |f: &dyn Fn(i64) -> bool| all.iter().copied().filter(|&i| f(i)).collect::<Vec<_>>();
        // Every page of `page` (limit 3), in order: the ids, each row as the ledger holds it.
        let walk = async |mut page: PaymentPage| {
            page.limit = 3;
            let mut ids = Vec::new();
            loop {
                let rows = l.payments_page(&page).await.unwrap();
                for r in &rows {
                    assert_eq!(Some(r), l.payment(r.id).await.unwrap().as_ref());
                }
                ids.extend(rows.iter().map(|r| r.id));
                match rows.last() {
                    Some(last) if rows.len() == 3 => page.after = last.id,
                    _ => return ids,
                }
            }
        };

        assert_eq!(walk(PaymentPage::default()).await, all);
        let hk = PaymentPage {
            account: Some("hk".into()),
            ..Default::default()
        };
        assert_eq!(walk(hk.clone()).await, expect(&|i| i % 2 == 1));
        let failed = PaymentPage {
            state: Some(PaymentState::Failed),
            ..Default::default()
        };
        assert_eq!(walk(failed).await, expect(&|i| i % 3 == 0));
        let pending_sg = PaymentPage {
            state: Some(PaymentState::Pending),
            account: Some("sg".into()),
            ..Default::default()
        };
        assert_eq!(
            walk(pending_sg).await,
            expect(&|i| i % 2 == 0 && i % 3 != 0)
        );
        assert!(
            walk(PaymentPage {
                state: Some(PaymentState::Succeeded),
                ..Default::default()
            })
            .await
            .is_empty()
        );

        // After a payment of another account: from that payment's place in creation order.
        let k = (5..).find(|&k| all[k] % 2 == 0).unwrap();
        let page = l
            .payments_page(&PaymentPage {
                after: all[k],
                limit: 1000,
                ..hk.clone()
            })
            .await
            .unwrap();
        let ids: Vec<i64> = page.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            all[k + 1..]
                .iter()
                .copied()
                .filter(|i| i % 2 == 1)
                .collect::<Vec<_>>()
        );
        // After an id no payment has: nothing, never the start again.
        for account in [None, Some("hk".to_string())] {
            let page = PaymentPage {
                after: 999,
                limit: 1000,
                account,
                ..Default::default()
            };
            assert!(l.payments_page(&page).await.unwrap().is_empty());
        }
        // A limit of 0 is 1; more than the most is the most.
        let one = l
            .payments_page(&PaymentPage {
                limit: 0,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(one.iter().map(|r| r.id).collect::<Vec<_>>(), [all[0]]);
        let most = l
            .payments_page(&PaymentPage {
                limit: u32::MAX,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(most.len(), 20);
    }
);

contract!(
    discrepancy_pages_list_open_ones_across_accounts_and_resolved_ones_on_request,
    |l| {
        let now = odd_now();
        for (i, account) in ["hk", "sg", "hk", "sg", "hk"].iter().enumerate() {
            l.record_notified_unknown(account, &format!("S{i}"), "detail", &json!({}), now)
                .await
                .unwrap();
        }
        assert!(l.resolve_discrepancy(2, "checked", now).await.unwrap());
        let ids = |rows: Vec<ledger::DiscrepancyRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        let page = |account: Option<&str>, include_resolved, after| DiscrepancyPage {
            account: account.map(str::to_string),
            include_resolved,
            after,
            limit: 2,
        };
        let cases: [(Option<&str>, bool, i64, &[i64]); 9] = [
            (None, false, 0, &[1, 3]),
            (None, false, 3, &[4, 5]),
            (None, false, 5, &[]),
            (Some("sg"), false, 0, &[4]),
            (Some("sg"), true, 0, &[2, 4]),
            (Some("hk"), true, 1, &[3, 5]),
            (None, true, 1, &[2, 3]),
            (None, true, 4, &[5]),
            (Some("mo"), true, 0, &[]),
        ];
        for (account, resolved, after, expected) in cases {
            assert_eq!(
                ids(l
                    .discrepancies_page(&page(account, resolved, after))
                    .await
                    .unwrap()),
                expected,
                "{account:?} {resolved} {after}"
            );
        }
        // The rows are the ledger's, resolved ones with their resolution.
        let all = l
            .discrepancies_page(&DiscrepancyPage {
                include_resolved: true,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all, l.discrepancies(true).await.unwrap());
        assert_eq!(all[1].resolved_at.as_deref(), Some(to_db(now).as_str()));
        assert_eq!(all[1].resolution_note.as_deref(), Some("checked"));
        assert_eq!(all[0].found_at, to_db(now));
    }
);

contract!(the_listing_streams_the_matching_payments_in_id_order, |l| {
    let now = odd_now();
    let batch: Vec<NewPayment> = (0..6)
        .map(|i: i64| {
            let account = if i % 2 == 0 { "hk" } else { "sg" };
            // Created newest first: the listing is in id order all the same.
            payment(account, &format!("L{i}"), now - TimeDelta::minutes(i))
        })
        .collect();
    l.register(&batch, now).await.unwrap();
    l.exec("UPDATE payments SET state = 'failed', next_check_at = NULL WHERE id IN (2, 3)")
        .await;
    let list = async |filter: ListFilter| {
        let mut rows = Vec::new();
        l.for_each_payment(&filter, |r| {
            rows.push(r);
            Ok(())
        })
        .await
        .unwrap();
        for r in &rows {
            assert_eq!(Some(r), l.payment(r.id).await.unwrap().as_ref());
        }
        rows.iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(list(ListFilter::default()).await, [1, 2, 3, 4, 5, 6]);
    let hk = || Some("hk".to_string());
    assert_eq!(
        list(ListFilter {
            account: hk(),
            ..Default::default()
        })
        .await,
        [1, 3, 5]
    );
    assert_eq!(
        list(ListFilter {
            state: Some(PaymentState::Failed),
            ..Default::default()
        })
        .await,
        [2, 3]
    );
    assert_eq!(
        list(ListFilter {
            state: Some(PaymentState::Pending),
            account: hk(),
        })
        .await,
        [1, 5]
    );
    // A closed pipe ends the listing quietly; another error ends it with that error.
    let mut seen = 0;
    l.for_each_payment(&ListFilter::default(), |_| {
        seen += 1;
        Err(std::io::ErrorKind::BrokenPipe.into())
    })
    .await
    .unwrap();
    assert_eq!(seen, 1);
    let failed = l
        .for_each_payment(&ListFilter::default(), |_| {
            Err(std::io::Error::other("disk full"))
        })
        .await;
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("disk full")),
        "{failed:?}"
    );
});

contract!(
    stats_and_gauges_read_the_counts_and_the_oldest_open_payments,
    |l| {
        let t = odd_now();
        let hours = |h: i64| t - TimeDelta::hours(h);
        l.register(
            &[
                payment("hk", "A", hours(3)),
                payment("hk", "B", hours(2)),
                payment("hk", "C", hours(1)),
                payment("sg", "D", hours(4)),
                payment("sg", "E", t - TimeDelta::minutes(30)),
            ],
            t,
        )
        .await
        .unwrap();
        // A failed, D paid: the oldest open payment is B (hk) and E (sg).
        l.exec("UPDATE payments SET state = 'failed', next_check_at = NULL WHERE id = 1")
            .await;
        l.exec("UPDATE payments SET state = 'succeeded' WHERE id = 4")
            .await;
        // E paid and back in review: sg has no open payment left, and a pending count of 0.
        l.exec("UPDATE payments SET state = 'needs_review', next_check_at = NULL WHERE id = 5")
            .await;
        l.exec("UPDATE payments SET state = 'pending' WHERE id = 5")
            .await;
        l.exec("UPDATE payments SET state = 'needs_review' WHERE id = 5")
            .await;

        let run = l.start_run("me", "cron", t).await.unwrap();
        let counters = ledger::RunCounters {
            calls: 4,
            ..Default::default()
        };
        l.finish_run(run, "completed", counters, None, t)
            .await
            .unwrap();
        for (account, subject) in [("hk", "S1"), ("hk", "S2"), ("sg", "S3")] {
            l.record_notified_unknown(account, subject, "detail", &json!({}), t)
                .await
                .unwrap();
        }
        assert!(l.resolve_discrepancy(3, "checked", t).await.unwrap());
        let ttl = Duration::from_secs(30);
        let until = t + TimeDelta::hours(1);
        for (account, until) in [("hk", until), ("sg", t - TimeDelta::seconds(1))] {
            let fence = l
                .acquire_account(account, "lane", ttl, 400, t)
                .await
                .unwrap()
                .expect("free")
                .fence;
            l.pause_account(&fence, until, "rate limited", t)
                .await
                .unwrap();
        }

        let stats = l.stats(t).await.unwrap();
        let by_state: Vec<_> = stats
            .by_state
            .iter()
            .map(|c| (c.account.as_str(), c.state.as_str(), c.count))
            .collect();
        assert_eq!(
            by_state,
            [
                ("hk", "failed", 1),
                ("hk", "pending", 2),
                ("sg", "needs_review", 1),
                ("sg", "succeeded", 1)
            ]
        );
        assert_eq!(stats.oldest_open, l.payment(2).await.unwrap());
        assert_eq!((stats.runs, stats.gateway_calls), (1, 4));
        assert_eq!(stats.open_discrepancies, 2);
        assert_eq!(
            stats.paused_accounts,
            [("hk".to_string(), to_db(until), "rate limited".to_string())]
        );
        assert_eq!(ageless(&stats.lanes), ageless(&l.lanes(t).await.unwrap()));
        assert_eq!(stats.lanes.len(), 2);
        for lane in &stats.lanes {
            let age = lane
                .heartbeat_age_ms
                .expect("a held lane has a heartbeat age");
            assert!((0..2_000).contains(&age), "{lane:?}");
        }

        let g = l.gauges(t).await.unwrap();
        let s = |v: &[(String, String, i64)]| {
            v.iter()
                .map(|(a, b, n)| (a.clone(), b.clone(), *n))
                .collect::<Vec<_>>()
        };
        let own = |a: &str, b: &str, n: i64| (a.to_string(), b.to_string(), n);
        // Every (account, state) ever counted, emptied ones with 0.
        assert_eq!(
            s(&g.payments),
            [
                own("hk", "failed", 1),
                own("hk", "pending", 2),
                own("sg", "needs_review", 1),
                own("sg", "pending", 0),
                own("sg", "succeeded", 1)
            ]
        );
        assert_eq!(
            s(&g.open_discrepancies),
            [
                own("hk", "notified_unknown", 2),
                own("sg", "notified_unknown", 0)
            ]
        );
        assert_eq!(g.oldest_open, [("hk".to_string(), ms(hours(2)))]);
        assert_eq!(ageless(&g.lanes), ageless(&stats.lanes));

        // Another account with an open payment older than hk's: first in the stats, and a gauge
        // of its own (by account).
        l.register(&[payment("au", "F", hours(5))], t)
            .await
            .unwrap();
        let stats = l.stats(t).await.unwrap();
        assert_eq!(stats.oldest_open.map(|p| p.out_trade_no), Some("F".into()));
        assert_eq!(
            l.gauges(t).await.unwrap().oldest_open,
            [
                ("au".to_string(), ms(hours(5))),
                ("hk".to_string(), ms(hours(2)))
            ]
        );
    }
);

contract!(an_empty_ledger_has_empty_stats_and_gauges, |l| {
    let t = odd_now();
    let stats = l.stats(t).await.unwrap();
    assert!(stats.by_state.is_empty());
    assert_eq!(stats.oldest_open, None);
    assert_eq!(
        (stats.runs, stats.gateway_calls, stats.open_discrepancies),
        (0, 0, 0)
    );
    assert!(stats.paused_accounts.is_empty() && stats.lanes.is_empty());
    let g = l.gauges(t).await.unwrap();
    assert!(g.payments.is_empty() && g.open_discrepancies.is_empty());
    assert!(g.oldest_open.is_empty() && g.lanes.is_empty());
});

contract!(lanes_show_every_account_with_payments_or_a_lease, |l| {
    let t = odd_now();
    let ecpay = |no: &str| NewPayment {
        provider: Provider::Ecpay,
        out_trade_no: OutTradeNo::parse(no, Provider::Ecpay).unwrap(),
        amount: Money::new(100, Currency::parse("TWD").unwrap()).unwrap(),
        ..payment("tw", no, t)
    };
    l.register(
        &[
            payment("hk", "H1", t),
            payment("hk", "H2", t),
            payment("hk", "H3", t),
            payment("hk", "H4", t),
            payment("hk", "H5", t),
            ecpay("T1"),
        ],
        t,
    )
    .await
    .unwrap();
    // hk: H1 due (since registration), H2 later, H3 paid and still observed (due), H4 in
    // review (never due), H5 cancelled with a stale schedule (not counted).
    l.exec(&format!(
        "UPDATE payments SET next_check_at = {LATER} WHERE id = 2"
    ))
    .await;
    l.exec("UPDATE payments SET state = 'succeeded' WHERE id = 3")
        .await;
    l.exec("UPDATE payments SET state = 'needs_review', next_check_at = NULL WHERE id = 4")
        .await;
    l.exec("UPDATE payments SET state = 'cancelled' WHERE id = 5")
        .await;
    let ttl = Duration::from_secs(30);
    let hk = l
        .acquire_account("hk", "A", ttl, 400, t)
        .await
        .unwrap()
        .expect("free")
        .fence;
    let pause = t + TimeDelta::minutes(10);
    l.pause_account(&hk, pause, "rate limited", t)
        .await
        .unwrap();
    // A lease of an account without payments.
    let mo = l
        .acquire_account("mo", "B", ttl, 60, t)
        .await
        .unwrap()
        .expect("free")
        .fence;
    assert!(l.release_account(&mo, None).await.unwrap());
    let again = l
        .acquire_account("mo", "C", ttl, 60, t)
        .await
        .unwrap()
        .expect("free");
    assert_eq!(again.fence.token, 2);

    let lanes = l.lanes(t).await.unwrap();
    let summary: Vec<_> = lanes
        .iter()
        .map(|r| {
            (
                r.account.as_str(),
                r.provider.as_deref(),
                r.holder.as_deref(),
                r.token,
                r.pace_per_minute,
                r.due,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("hk", Some("qfpay"), Some("A"), 1, Some(400), 2),
            ("mo", None, Some("C"), 2, Some(60), 0),
            ("tw", Some("ecpay"), None, 0, None, 1)
        ]
    );
    let hk_lane = &lanes[0];
    // Taken at `t` by the store's clock: the host's on SQLite, the server's on PostgreSQL
    // (corrected by the moment between reading the clock and the server's answer).
    let beat = from_db(hk_lane.heartbeat_at.as_deref().unwrap()).unwrap();
    assert!(
        beat >= ms(t) && beat - t < TimeDelta::seconds(2),
        "heartbeat at {beat}, taken at {t}"
    );
    assert_eq!(
        hk_lane.expires_at,
        Some(to_db(beat + TimeDelta::seconds(30)))
    );
    assert_eq!(hk_lane.paused_until, Some(to_db(pause)));
    assert_eq!(
        (
            lanes[1].paused_until.as_ref(),
            lanes[2].heartbeat_at.as_ref()
        ),
        (None, None)
    );

    // Due counts at the millisecond: H1 and T1 were made due at `t`, to the millisecond.
    let before = l.lanes(ms(t) - TimeDelta::milliseconds(1)).await.unwrap();
    assert_eq!(before.iter().map(|r| r.due).collect::<Vec<_>>(), [0, 0, 0]);
    let at = l.lanes(ms(t)).await.unwrap();
    assert_eq!(at.iter().map(|r| r.due).collect::<Vec<_>>(), [2, 0, 1]);
    // When the leases ran out and the pause ended: no holder shown (the lease rows stay, with
    // their tokens), no pause. On PostgreSQL each lease's times are the server's when its
    // statement ran, so `mo`'s, taken after `hk`'s, may end a few milliseconds later (seen in
    // CI under load): its end is looked at a second on.
    let expired = beat + TimeDelta::seconds(30);
    let slack = if has_server_clock(&l) {
        TimeDelta::seconds(1)
    } else {
        TimeDelta::zero()
    };
    let late = l.lanes(expired + slack).await.unwrap();
    let holders: Vec<_> = late
        .iter()
        .map(|r| (r.holder.as_deref(), r.token))
        .collect();
    assert_eq!(holders, [(None, 1), (None, 2), (None, 0)]);
    assert_eq!(late[0].expires_at, hk_lane.expires_at);
    let after_pause = l.lanes(pause).await.unwrap();
    assert_eq!(after_pause[0].paused_until, None);
    // Renewed a millisecond before the end: held again.
    assert!(
        l.renew_account(&hk, ttl, expired - TimeDelta::milliseconds(1))
            .await
            .unwrap()
    );
    assert_eq!(
        l.lanes(expired).await.unwrap()[0].holder.as_deref(),
        Some("A")
    );
});
