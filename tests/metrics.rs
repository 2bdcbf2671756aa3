//! The metrics of issue 17 against the built-in sandbox, in this process: a pass's gateway
//! calls as the sandbox counted them, the ledger's gauges as the ledger says, a last-resort
//! reversal sent and confirmed, the exposition text well-formed, and every metric the alert
//! rules and the dashboard in `contrib/` use served.
//!
//! The recorder is global to the process: each test uses account names of its own.

mod common;
mod metrics_support;

use std::time::Duration;

use chrono::Utc;
use metrics_support::{metric_names_in, parse, promtool_check};
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, PayType, Provider, ProviderRef, RecordKind,
};
use payrecon::ledger::NewPayment;
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, EcpayOrder, PAID, QfpayPayment, QfpayTimeline, RateLimits, Sandbox,
    SandboxConfig,
};

const QF: &str = "metrics-hk";
const EC: &str = "metrics-tw";

fn qfpay(no: &str, syssn: &str, pay_type: &str, minutes_ago: i64) -> NewPayment {
    NewPayment {
        account: AccountName::parse(QF).unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: Some(ProviderRef::parse(syssn).unwrap()),
        pay_type: Some(PayType::parse(pay_type).unwrap()),
        amount: Money::new(1000, Currency::parse("HKD").unwrap()).unwrap(),
        created_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
        expires_at: None,
    }
}

fn ecpay(no: &str, minutes_ago: i64) -> NewPayment {
    NewPayment {
        account: AccountName::parse(EC).unwrap(),
        provider: Provider::Ecpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Ecpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(100, Currency::parse("TWD").unwrap()).unwrap(),
        created_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
        expires_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_against_the_sandbox_is_measured_as_the_sandbox_and_the_ledger_count_it() {
    payrecon::metrics::install();
    let sandbox = Sandbox::start(SandboxConfig {
        rate_limits: RateLimits::off(),
        ..SandboxConfig::dev()
    })
    .await
    .unwrap();
    let url = sandbox.base_url();
    let h = common::harness_with(
        "",
        &format!(
            r#"
[[accounts]]
name = "{QF}"
provider = "qfpay"
base_url = "{url}"
app_code = "{DEV_QFPAY_APP_CODE}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"

[[accounts]]
name = "{EC}"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{DEV_ECPAY_MERCHANT_ID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
rate_per_minute = 6000
"#
        ),
    )
    .await;

    // QFPay: one paid, one not found, and one CPM payment that never completes: past its
    // 2-minute deadline it is reversed as a last resort. ECPay: one authorized order.
    let state = sandbox.state();
    let created = Utc::now() - chrono::Duration::minutes(10);
    let paid = state
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("MQ-PAID", 1000, "HKD", "800101")
                .at(created)
                .timeline(QfpayTimeline::fixed(PAID)),
        )
        .unwrap();
    let stuck = state
        .insert_qfpay(
            DEV_QFPAY_APP_CODE,
            QfpayPayment::new("MQ-STUCK", 1000, "HKD", "800208")
                .at(created)
                .timeline(QfpayTimeline::never_completes()),
        )
        .unwrap();
    state
        .insert_ecpay(
            DEV_ECPAY_MERCHANT_ID,
            EcpayOrder::new("MQTW1", 100).at(Utc::now() - chrono::Duration::minutes(20)),
        )
        .unwrap();
    h.register(&[
        qfpay("MQ-PAID", &paid, "800101", 10),
        qfpay("MQ-STUCK", &stuck, "800208", 10),
        qfpay("MQ-LOST", "20261110000100020000009999", "800101", 10),
        ecpay("MQTW1", 20),
    ])
    .await;

    let engine = h.engine();
    // The reversal, then the query that finds the payment cancelled.
    h.pass(&engine).await;
    h.pass(&engine).await;
    assert_eq!(h.payment("MQ-STUCK").await.state, "reversed");

    let text = payrecon::metrics::render(&h.ledger, Utc::now())
        .await
        .unwrap();
    let exp = parse(&text);
    promtool_check(&text);

    // Every request the sandbox saw, retries included, and no other.
    let stats = sandbox.stats();
    let seen = |merchant: &str| stats.by_merchant[merchant].values().sum::<u64>() as f64;
    let calls = |account| exp.sum("payrecon_gateway_calls_total", &[("account", account)]);
    assert_eq!(calls(QF), seen(DEV_QFPAY_APP_CODE), "{text}");
    assert_eq!(calls(EC), seen(DEV_ECPAY_MERCHANT_ID), "{text}");
    assert!(
        calls(QF) >= 4.0,
        "lookups, the fresh query, the reversal, the check"
    );
    let reversals = exp.sum(
        "payrecon_gateway_calls_total",
        &[
            ("account", QF),
            ("endpoint", "qfpay_reversal"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(reversals, 1.0);
    // One duration per call.
    assert_eq!(
        exp.sum(
            "payrecon_gateway_call_duration_seconds_count",
            &[("account", QF)]
        ),
        calls(QF)
    );

    for (outcome, n) in [("sent", 1.0), ("confirmed", 1.0), ("refused", 0.0)] {
        assert_eq!(
            exp.sum(
                "payrecon_reversals_total",
                &[("account", QF), ("outcome", outcome)]
            ),
            n,
            "{outcome}"
        );
    }

    // The payments gauges are the ledger's counts, every state written.
    let stats = h.ledger.stats(Utc::now()).await.unwrap();
    for account in [QF, EC] {
        for state in payrecon::domain::PaymentState::ALL {
            let counted = stats
                .by_state
                .iter()
                .find(|c| c.account == account && c.state == state.as_str())
                .map_or(0, |c| c.count);
            assert_eq!(
                exp.sum(
                    "payrecon_payments",
                    &[("account", account), ("state", state.as_str())]
                ),
                counted as f64,
                "{account} {state:?}"
            );
        }
    }
    // Lanes were released: no heartbeat age, and no pause.
    assert_eq!(
        exp.samples
            .iter()
            .filter(|s| s.name == "payrecon_lane_heartbeat_age_seconds")
            .count(),
        0
    );
    assert_eq!(exp.sum("payrecon_account_paused", &[("account", QF)]), 0.0);
    assert!(
        exp.samples
            .iter()
            .any(|s| s.name == "payrecon_pass_duration_seconds_count"
                && s.labels["trigger"] == "test"
                && s.value >= 2.0)
    );
    assert!(exp.sum("payrecon_unit_duration_seconds_count", &[("account", EC)]) >= 1.0);

    // Every metric the alert rules and the dashboard use is served.
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "contrib/prometheus/payrecon-rules.yml",
        "contrib/grafana/payrecon.json",
    ] {
        let content = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let names = metric_names_in(&content);
        assert!(!names.is_empty(), "{file} names no payrecon metric");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| exp.types.get(*base).is_some_and(|t| t == "histogram"))
                .unwrap_or(&name);
            assert!(
                exp.types.contains_key(family),
                "{file} uses {name}, which payrecon does not serve"
            );
        }
    }
    sandbox.shutdown().await;
}

/// What the recorder counted for `account`'s gateway calls, all outcomes or one.
fn recorded_calls(account: &str, outcome: Option<&str>) -> f64 {
    let text = payrecon::metrics::install().render();
    let mut labels = vec![("account", account)];
    labels.extend(outcome.map(|o| ("outcome", o)));
    parse(&text).sum("payrecon_gateway_calls_total", &labels)
}

#[tokio::test]
async fn a_call_withheld_by_the_gate_is_not_counted_and_a_timeout_is_told_apart() {
    use payrecon::gateway::GatewayError;
    use payrecon::gateway::qfpay::{IdLookup, OrderLookup};
    use payrecon::gateway::transport::{CallGate, http_client};
    use payrecon::sandbox::{FaultScope, Faults};

    const GATED: &str = "metrics-gate";
    payrecon::metrics::install();
    let sandbox = Sandbox::start(SandboxConfig {
        rate_limits: RateLimits::off(),
        ..SandboxConfig::dev()
    })
    .await
    .unwrap();
    let mut account = sandbox.dev_qfpay_account(GATED);
    account.request_timeout = Duration::from_millis(300);
    account.retry_for = Duration::ZERO;
    let client = account.client(http_client(Duration::from_secs(2)).unwrap());
    let lookup = |no: &str| {
        IdLookup::OutTradeNo(vec![OrderLookup {
            out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
            created_at: Some(Utc::now()),
        }])
    };

    client.pacer().set_gate(Some(CallGate::new(|| false)));
    let results = client.query_ids(&lookup("G1")).await;
    assert!(matches!(results[0].1, Err(GatewayError::Withheld { .. })));
    assert_eq!(sandbox.stats().total(true), 0);
    assert_eq!(recorded_calls(GATED, None), 0.0);

    client.pacer().set_gate(None);
    let mut faults = Faults::none();
    faults.timeout_rate = 1.0;
    faults.timeout_hold = Duration::from_secs(5);
    faults.scope = FaultScope::Qfpay;
    sandbox.set_faults(faults);
    let results = client.query_ids(&lookup("G2")).await;
    assert!(results[0].1.is_err());
    assert!(recorded_calls(GATED, Some("timeout")) >= 1.0);
    assert_eq!(
        recorded_calls(GATED, None),
        sandbox.stats().total(true) as f64
    );
    sandbox.shutdown().await;
}
