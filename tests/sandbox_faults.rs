//! Rate limits, injected faults, counters and the loopback rule, seen through payrecon's real
//! adapters: each fault must surface as the adapter's documented error class.

mod sandbox_support;

use std::time::{Duration, Instant};

use payrecon::config::EcpayQueryApi;
use payrecon::domain::Outcome;
use payrecon::gateway::qfpay::WindowQuery;
use payrecon::gateway::{ErrorClass, GatewayError};
use payrecon::sandbox::{
    CallKind, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE, EcpayOrder, FaultScope, Faults,
    QfpayPayment, RateLimits, Sandbox, SandboxConfig, SandboxError, StatsSnapshot,
};
use sandbox_support::*;

async fn seeded() -> payrecon::sandbox::SandboxHandle {
    let sandbox = wall_sandbox().await;
    let now = sandbox.clock().now();
    sandbox
        .state()
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("Q1", 100, "HKD", "800101").at(now),
        )
        .unwrap();
    sandbox
        .state()
        .insert_ecpay(DEV_ECPAY_MERCHANT_ID, EcpayOrder::new("E1", 100))
        .unwrap();
    sandbox
}

#[tokio::test]
async fn qfpay_answers_429_with_retry_after_past_the_per_minute_limit() {
    let sandbox = seeded().await;
    sandbox.set_rate_limits(RateLimits {
        qfpay_per_second: Some(100),
        qfpay_per_minute: Some(5),
        ecpay_per_minute: None,
    });
    let client = dev_qfpay(&sandbox);
    let now = sandbox.clock().now();
    for _ in 0..5 {
        assert_eq!(
            lookup(&client, "Q1", now).await.unwrap().outcome,
            Outcome::Succeeded
        );
    }
    let err = lookup(&client, "Q1", now).await.unwrap_err();
    match &err {
        GatewayError::RateLimited {
            status: 429,
            retry_after: Some(wait),
            ..
        } => {
            assert!(
                *wait > Duration::from_secs(50) && *wait <= Duration::from_secs(60),
                "{wait:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::RateLimited);
    let stats = sandbox.stats();
    assert_eq!(
        (stats.http_429, stats.count(CallKind::QfpayQueryById)),
        (1, 6)
    );
    // Switched off, the next call passes.
    sandbox.set_rate_limits(RateLimits::off());
    assert!(lookup(&client, "Q1", now).await.is_ok());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn ecpay_answers_403_past_its_per_minute_limit_and_the_client_then_pauses() {
    let sandbox = seeded().await;
    sandbox.set_rate_limits(RateLimits {
        ecpay_per_minute: Some(3),
        ..RateLimits::off()
    });
    let client = dev_ecpay(&sandbox, EcpayQueryApi::CreditDetail);
    for _ in 0..3 {
        client.query(&ec_order("E1"), None).await.unwrap();
    }
    let err = client.query(&ec_order("E1"), None).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::RateLimited { status: 403, .. }),
        "{err:?}"
    );
    // The adapter now keeps quiet for 30 minutes: no further call reaches the sandbox.
    assert!(client.query(&ec_order("E1"), None).await.is_err());
    let stats = sandbox.stats();
    assert_eq!(
        (stats.http_403, stats.count(CallKind::EcpayCreditDetail)),
        (1, 4)
    );
    sandbox.shutdown().await;
}

fn only(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults {
        seed: 42,
        ..Faults::none()
    };
    f(&mut faults);
    faults
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_as_retryable_http_503() {
    let sandbox = seeded().await;
    sandbox.set_faults(only(|f| f.server_error_rate = 1.0));
    let now = sandbox.clock().now();
    let err = lookup(&dev_qfpay(&sandbox), "Q1", now).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::HttpStatus { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable);
    let err = dev_ecpay(&sandbox, EcpayQueryApi::CreditDetail)
        .query(&ec_order("E1"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::HttpStatus { status: 503, .. }),
        "{err:?}"
    );
    let stats = sandbox.stats();
    assert!(
        stats.count(CallKind::QfpayQueryById) > 1,
        "retried inside the call"
    );
    assert_eq!(stats.http_5xx, stats.total(true) + stats.total(false));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_held_request_times_out_in_the_client_as_a_transport_error() {
    let sandbox = seeded().await;
    sandbox.set_faults(only(|f| {
        f.timeout_rate = 1.0;
        f.timeout_hold = Duration::from_secs(30);
        f.scope = FaultScope::Ecpay;
    }));
    let started = Instant::now();
    let err = dev_ecpay(&sandbox, EcpayQueryApi::CreditDetail)
        .query(&ec_order("E1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Transport { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(sandbox.stats().timeouts >= 1);
    // QFPay is out of the fault's scope.
    let now = sandbox.clock().now();
    assert!(lookup(&dev_qfpay(&sandbox), "Q1", now).await.is_ok());
    // Shutdown releases the held requests instead of waiting 30 s.
    let stopping = Instant::now();
    sandbox.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn truncated_bodies_are_malformed_and_wrong_signatures_are_caught() {
    let sandbox = seeded().await;
    let now = sandbox.clock().now();
    let qfpay = dev_qfpay(&sandbox);
    let ecpay = dev_ecpay(&sandbox, EcpayQueryApi::CreditDetail);

    sandbox.set_faults(only(|f| f.malformed_rate = 1.0));
    let err = lookup(&qfpay, "Q1", now).await.unwrap_err();
    assert!(matches!(err, GatewayError::Malformed { .. }), "{err:?}");
    let err = ecpay.query(&ec_order("E1"), None).await.unwrap_err();
    assert!(matches!(err, GatewayError::Malformed { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retryable);

    sandbox.set_faults(only(|f| f.bad_signature_rate = 1.0));
    let err = lookup(&qfpay, "Q1", now).await.unwrap_err();
    assert!(matches!(err, GatewayError::BadSignature { .. }), "{err:?}");
    // ECPay has no response signature: its Data under another key does not decrypt.
    let err = ecpay.query(&ec_order("E1"), None).await.unwrap_err();
    assert!(matches!(err, GatewayError::Malformed { .. }), "{err:?}");

    let stats = sandbox.stats();
    assert_eq!((stats.malformed, stats.bad_signatures), (2, 2));
    sandbox.set_faults(Faults::none());
    assert!(lookup(&qfpay, "Q1", now).await.is_ok());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn added_latency_slows_answers_without_changing_them() {
    let sandbox = seeded().await;
    sandbox.set_faults(only(|f| f.latency = Duration::from_millis(150)));
    let started = Instant::now();
    let now = sandbox.clock().now();
    assert!(lookup(&dev_qfpay(&sandbox), "Q1", now).await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(150));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_counters_match_the_calls_made_and_the_stats_endpoint_agrees() {
    let sandbox = seeded().await;
    let now = sandbox.clock().now();
    let qfpay = dev_qfpay(&sandbox);
    lookup(&qfpay, "Q1", now).await.unwrap();
    lookup(&qfpay, "Q1", now).await.unwrap();
    let mut pager = qfpay.sweep(WindowQuery::new(
        now - chrono::TimeDelta::hours(1),
        now + chrono::TimeDelta::hours(1),
    ));
    while pager.next_page().await.unwrap().is_some() {}
    let ecpay = dev_ecpay(&sandbox, EcpayQueryApi::Cashier);
    ecpay.query(&ec_order("E1"), None).await.unwrap();

    let stats = sandbox.stats();
    assert_eq!(stats.count(CallKind::QfpayQueryById), 2);
    assert_eq!(stats.count(CallKind::QfpayQueryWindow), 1);
    assert_eq!(stats.count(CallKind::EcpayCashier), 1);
    assert_eq!(stats.count(CallKind::QfpayReversal), 0);
    assert_eq!((stats.total(true), stats.total(false)), (3, 1));
    assert_eq!(
        stats.merchant_count(DEV_QFPAY_APP_CODE, CallKind::QfpayQueryById),
        2
    );
    assert_eq!(
        stats.merchant_count(DEV_ECPAY_MERCHANT_ID, CallKind::EcpayCashier),
        1
    );
    assert_eq!(stats.qfpay_records_returned, 3);

    let url = format!("{}sandbox/stats", sandbox.base_url());
    let json: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(json, serde_json::to_value(&stats).unwrap());
    assert_eq!(json["calls"]["qfpay_query_by_id"], 2);
    // Reading the stats is not a gateway call.
    assert_eq!(sandbox.stats(), stats);
    sandbox.reset_stats();
    assert_eq!(sandbox.stats(), StatsSnapshot::default());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sweep_pages_read_twice_and_the_busiest_minute_of_qfpay_calls_are_counted() {
    let sandbox = seeded().await;
    let now = sandbox.clock().now();
    let qfpay = dev_qfpay(&sandbox);
    let window = || WindowQuery::new(now - chrono::TimeDelta::hours(1), now);
    let sweep = |w: WindowQuery| {
        let mut pager = qfpay.sweep(w);
        async move {
            let mut pages = 0;
            while pager.next_page().await?.is_some() {
                pages += 1;
            }
            Ok::<_, GatewayError>(pages)
        }
    };
    assert_eq!(sweep(window()).await.unwrap(), 1);
    // An id lookup is not a sweep page.
    lookup(&qfpay, "Q1", now).await.unwrap();
    assert!(sandbox.stats().pages_fetched_more_than_once().is_empty());
    // A page whose answer a fault cut in half was never read: asking it again is no repeat.
    sandbox.set_faults(only(|f| f.malformed_rate = 1.0));
    assert!(sweep(window()).await.is_err());
    sandbox.set_faults(Faults::none());
    assert!(sandbox.stats().pages_fetched_more_than_once().is_empty());
    // The same window's page 1, read a second time.
    assert_eq!(sweep(window()).await.unwrap(), 1);
    let stats = sandbox.stats();
    let twice = stats.pages_fetched_more_than_once();
    assert_eq!(twice.len(), 1, "{twice:?}");
    assert!(
        twice[0].starts_with(&format!("{DEV_QFPAY_APP_CODE} ")) && twice[0].ends_with(" page 1 ×2"),
        "{twice:?}"
    );
    assert_eq!(stats.sweep_pages_fetched_more_than_once, 1);

    // Every QFPay call reached the timeline (the refused malformed ones too), all within a
    // minute; the ECPay merchant has none.
    let qf_calls = stats.total(true);
    assert!(qf_calls >= 4, "{qf_calls}");
    let minute = Duration::from_secs(60);
    assert_eq!(
        stats.max_qfpay_calls_in(DEV_QFPAY_APP_CODE, minute),
        qf_calls
    );
    assert_eq!(
        stats.qfpay_max_calls_per_60s.get(DEV_QFPAY_APP_CODE),
        Some(&qf_calls)
    );
    assert_eq!(stats.max_qfpay_calls_in(DEV_ECPAY_MERCHANT_ID, minute), 0);
    let url = format!("{}sandbox/stats", sandbox.base_url());
    let json: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(
        json["qfpay_max_calls_per_60s"][DEV_QFPAY_APP_CODE],
        qf_calls
    );
    assert_eq!(json["sweep_pages_fetched_more_than_once"], 1);
    assert!(json.get("sweep_pages").is_none() && json.get("qfpay_call_times").is_none());

    // Calls refused with 429 are on the timeline too: it is what QFPay receives.
    sandbox.set_rate_limits(RateLimits {
        qfpay_per_second: Some(1),
        qfpay_per_minute: None,
        ecpay_per_minute: None,
    });
    sandbox.reset_stats();
    let _ = lookup(&qfpay, "Q1", now).await;
    let _ = lookup(&qfpay, "Q1", now).await;
    let stats = sandbox.stats();
    assert!(stats.http_429 >= 1, "{stats:?}");
    assert_eq!(
        stats.max_qfpay_calls_in(DEV_QFPAY_APP_CODE, minute),
        stats.total(true)
    );
    sandbox.reset_stats();
    let stats = sandbox.stats();
    assert_eq!(stats.max_qfpay_calls_in(DEV_QFPAY_APP_CODE, minute), 0);
    assert!(stats.pages_fetched_more_than_once().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_unless_forced() {
    let config = SandboxConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..SandboxConfig::dev()
    };
    let err = Sandbox::start(config.clone()).await.unwrap_err();
    assert!(matches!(err, SandboxError::NonLoopback(_)), "{err:?}");
    assert!(err.to_string().contains("loopback"), "{err}");
    let forced = Sandbox::start(SandboxConfig {
        allow_non_loopback: true,
        ..config
    })
    .await
    .unwrap();
    assert!(!forced.addr().ip().is_loopback());
    forced.shutdown().await;
    let v6 = Sandbox::start(SandboxConfig {
        listen: "[::1]:0".parse().unwrap(),
        ..SandboxConfig::dev()
    })
    .await;
    // ::1 is loopback; a machine without IPv6 fails to bind, which is not a refusal.
    assert!(!matches!(v6, Err(SandboxError::NonLoopback(_))));
    if let Ok(h) = v6 {
        h.shutdown().await;
    }
}
