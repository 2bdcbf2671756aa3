//! A smoke run of the benchmark's code path (`examples/bench`) in-process: the quick dense and
//! ECPay scenarios, seeded, registered and driven to quiescence against the sandbox with limits
//! off. It checks the call counts the benchmark reports, not timings (those are measured by
//! `cargo run --release --example bench`, see docs/PERFORMANCE.md).

#[path = "../examples/bench/scenario.rs"]
mod scenario;

use payrecon::reconcile::Strategy;
use payrecon::sandbox::{CallKind, RateLimits, Sandbox, SandboxConfig, StatsSnapshot};
use scenario::{EngineRun, Scenario};

async fn run(s: &Scenario, strategy: Strategy) -> (EngineRun, StatsSnapshot) {
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        rate_limits: RateLimits::off(),
        ..SandboxConfig::dev()
    };
    let (state, records) = scenario::seed(s, &config, chrono::Utc::now()).unwrap();
    let ledger_path = dir.path().join("ledger.db");
    let build = scenario::build_ledger(s, &records, &ledger_path)
        .await
        .unwrap();
    assert_eq!(build.registered, s.due);
    let sandbox = Sandbox::start_with_state(config, state).await.unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        scenario::config_toml(sandbox.base_url().as_str(), &ledger_path),
    )
    .unwrap();
    let settings = scenario::load_settings(&config_path, false).unwrap();
    let engine = scenario::drive(&settings, strategy).await.unwrap();
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    (engine, stats)
}

fn quick(name: &str) -> Scenario {
    scenario::scenarios(true)
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_dense_backlog_is_swept_in_about_records_over_100_calls() {
    let s = quick("dense");
    let (planned, stats) = run(&s, Strategy::Planned).await;
    assert_eq!((planned.finalized, planned.open_left), (s.due as u64, 0));
    // 1,250 records: pages of 100 until the first short page (13), nothing left for ids.
    assert_eq!(stats.count(CallKind::QfpayQueryWindow), 13);
    assert_eq!(stats.count(CallKind::QfpayQueryById), 0);
    assert_eq!(planned.engine_calls, 13);
    assert!(planned.peak_rss_kib.is_some());

    let (per_payment, stats) = run(&s, Strategy::PerPayment).await;
    assert_eq!(per_payment.finalized, s.due as u64);
    assert_eq!(stats.count(CallKind::QfpayQueryById), s.due as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_sparse_backlog_is_looked_up_in_batches_of_four() {
    let s = quick("sparse");
    let (planned, stats) = run(&s, Strategy::Planned).await;
    assert_eq!((planned.finalized, planned.open_left), (50, 0));
    assert_eq!(stats.count(CallKind::QfpayQueryWindow), 0);
    assert_eq!(stats.count(CallKind::QfpayQueryById), 13, "⌈50/4⌉");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_ecpay_orders_cost_one_call_each() {
    let s = quick("ecpay");
    let (planned, stats) = run(&s, Strategy::Planned).await;
    assert_eq!((planned.finalized, planned.open_left), (s.due as u64, 0));
    assert_eq!(stats.total(false), s.due as u64);
}
