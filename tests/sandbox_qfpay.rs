//! The QFPay sandbox's queries driven through payrecon's real QFPay adapter: time-evolving
//! payments, window paging, month windows, signatures.

mod sandbox_support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, TimeZone};
use payrecon::config::SignType;
use payrecon::domain::Outcome;
use payrecon::gateway::qfpay::WindowQuery;
use payrecon::gateway::{ErrorClass, GatewayError};
use payrecon::sandbox::{
    CallKind, DEV_QFPAY_APP_CODE, PAID, QfpayPayment, QfpayTimeline, qfpay_account,
};
use sandbox_support::*;

const APP: &str = DEV_QFPAY_APP_CODE;

#[tokio::test]
async fn a_payment_answers_1143_until_its_settle_time_and_0000_after() {
    let sandbox = frozen_sandbox().await;
    let syssn = sandbox
        .state()
        .insert_qfpay(
            APP,
            QfpayPayment::new("ORDER-1", 1500, "HKD", "800208")
                .timeline(QfpayTimeline::pending_then(Duration::from_secs(30), PAID)),
        )
        .unwrap();
    assert_eq!(syssn.len(), 26);
    assert!(syssn.starts_with("20261110"), "{syssn}");
    let client = dev_qfpay(&sandbox);

    let obs = lookup(&client, "ORDER-1", t0()).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::InProgress, "1143")
    );
    assert_eq!(obs.provider_ref.unwrap().as_str(), syssn);
    assert_eq!(obs.amount_minor, Some(1500));
    assert_eq!(obs.gateway_time.as_deref(), Some("2026-11-10 10:00:00"));

    sandbox.clock().advance(Duration::from_secs(29));
    let obs = lookup(&client, "ORDER-1", t0()).await.unwrap();
    assert_eq!(obs.outcome, Outcome::InProgress);

    sandbox.clock().advance(Duration::from_secs(1));
    let obs = lookup(&client, "ORDER-1", t0()).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::Succeeded, "0000")
    );
    assert_eq!(obs.evidence["paydtm"], "2026-11-10 10:00:30");
    assert_eq!(sandbox.stats().count(CallKind::QfpayQueryById), 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_window_of_250_records_is_read_in_pages_of_100_100_and_a_short_50() {
    let sandbox = frozen_sandbox().await;
    for i in 0..250 {
        let at = t0() + TimeDelta::seconds(i * 60);
        sandbox
            .state()
            .insert_qfpay(
                APP,
                QfpayPayment::new(&format!("W{i:04}"), 100 + i, "HKD", "800101").at(at),
            )
            .unwrap();
    }
    // Outside the window: the day before, and one created in the sandbox's future.
    let state = sandbox.state();
    state
        .insert_qfpay(
            APP,
            QfpayPayment::new("BEFORE", 1, "HKD", "800101").at(t0() - TimeDelta::days(1)),
        )
        .unwrap();
    sandbox.clock().advance(Duration::from_secs(250 * 60));
    state
        .insert_qfpay(
            APP,
            QfpayPayment::new("LATER", 1, "HKD", "800101").at(t0() + TimeDelta::days(2)),
        )
        .unwrap();

    let client = dev_qfpay(&sandbox);
    let day = WindowQuery::new(t0() - TimeDelta::hours(10), t0() + TimeDelta::hours(14));
    let mut pager = client.sweep(day);
    let mut sizes = Vec::new();
    let mut seen = HashSet::new();
    while let Some(page) = pager.next_page().await.unwrap() {
        sizes.push(page.observations.len());
        for o in page.observations {
            assert_eq!(o.outcome, Outcome::Succeeded);
            seen.insert(o.out_trade_no.unwrap().to_string());
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(seen.len(), 250);
    assert!(!seen.contains("BEFORE") && !seen.contains("LATER"));
    let stats = sandbox.stats();
    assert_eq!(stats.count(CallKind::QfpayQueryWindow), 3);
    assert_eq!(stats.qfpay_records_returned, 250);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_window_crossing_a_month_is_refused_with_1104_but_the_adapter_splits_it() {
    let sandbox = frozen_sandbox().await;
    let oct = crate::hk()
        .with_ymd_and_hms(2026, 10, 31, 23, 0, 0)
        .unwrap()
        .to_utc();
    let state = sandbox.state();
    state
        .insert_qfpay(APP, QfpayPayment::new("OCT", 100, "HKD", "800101").at(oct))
        .unwrap();
    state
        .insert_qfpay(APP, QfpayPayment::new("NOV", 100, "HKD", "800101").at(t0()))
        .unwrap();

    let answer = raw_qfpay(
        &sandbox,
        "/trade/v1/query",
        &[
            ("start_time", "2026-10-31 00:00:00"),
            ("end_time", "2026-11-01 23:59:59"),
            ("page_size", "100"),
        ],
    )
    .await;
    assert_eq!(answer["respcd"], "1104", "{answer}");
    assert!(answer.get("data").is_none());
    let answer = raw_qfpay(
        &sandbox,
        "/trade/v1/query",
        &[
            ("start_time", "2026-11-01 00:00:00"),
            ("end_time", "2026-11-30 23:59:59"),
            ("page_size", "101"),
        ],
    )
    .await;
    assert_eq!(answer["respcd"], "1104", "page_size above 100: {answer}");

    let client = dev_qfpay(&sandbox);
    let mut pager = client.sweep(WindowQuery::new(
        oct - TimeDelta::hours(1),
        t0() + TimeDelta::hours(1),
    ));
    assert_eq!(pager.windows().len(), 2);
    let mut found = Vec::new();
    while let Some(page) = pager.next_page().await.unwrap() {
        found.extend(
            page.observations
                .into_iter()
                .map(|o| o.out_trade_no.unwrap().to_string()),
        );
    }
    assert_eq!(found, ["OCT", "NOV"]);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_request_signed_with_the_wrong_key_is_answered_1108_an_account_error() {
    let sandbox = frozen_sandbox().await;
    let wrong = qfpay_account(
        "hk",
        sandbox.base_url(),
        APP,
        "NOT-THE-KEY-000000000000000000000",
    );
    let err = lookup(&qfpay_client(&wrong), "ORDER-1", t0())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Account, "{err}");
    assert!(
        matches!(&err, GatewayError::Account { code, .. } if code == "1108"),
        "{err}"
    );
    // An unknown app code is refused the same way.
    let stranger = qfpay_account("hk", sandbox.base_url(), "SOMEONEELSE", "KEY");
    let err = lookup(&qfpay_client(&stranger), "ORDER-1", t0())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Account, "{err}");
    assert_eq!(sandbox.stats().signature_rejected, 2);

    // SHA-256 signatures (X-QF-SIGNTYPE: SHA256) are verified too.
    sandbox
        .state()
        .insert_qfpay(APP, QfpayPayment::new("ORDER-1", 1, "HKD", "800101"))
        .unwrap();
    let mut sha = sandbox.dev_qfpay_account("hk");
    sha.sign_type = SignType::Sha256;
    let obs = lookup(&qfpay_client(&sha), "ORDER-1", t0()).await.unwrap();
    assert_eq!(obs.outcome, Outcome::Succeeded);
    sandbox.shutdown().await;
}
