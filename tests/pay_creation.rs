//! Issue 12 item 5 through the binary against the built-in sandbox: `pay` creates only what it
//! can (no CPM: a till must scan the customer's code), and the answer of the creation call is
//! always recorded, because no pass may query (or take) a payment whose creation call is still
//! in flight.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use payrecon::sandbox::{
    CallKind, DEV_QFPAY_APP_CODE, DEV_QFPAY_CLIENT_KEY, FaultScope, Faults, RateLimits, Sandbox,
    SandboxConfig, SandboxHandle,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");

async fn setup() -> (SandboxHandle, tempfile::TempDir, PathBuf) {
    let sandbox = Sandbox::start(SandboxConfig {
        rate_limits: RateLimits::off(),
        ..SandboxConfig::dev()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            r#"[ledger]
path = "{ledger}"
[log]
level = "warn"
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{url}"
app_code = "{DEV_QFPAY_APP_CODE}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"
"#,
            ledger = dir.path().join("l.db").display(),
            url = sandbox.base_url(),
        ),
    )
    .unwrap();
    (sandbox, dir, config)
}

fn payrecon(config: &PathBuf, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn rows(config: &PathBuf) -> Vec<Value> {
    serde_json::from_slice(&payrecon(config, &["ledger", "list", "--format", "json"]).stdout)
        .unwrap()
}

const PAY: [&str; 7] = [
    "pay",
    "--account",
    "hk",
    "--amount",
    "1500",
    "--currency",
    "HKD",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_refuses_pay_types_it_cannot_create_and_names_those_it_can() {
    let (sandbox, _dir, config) = setup().await;
    for pay_type in ["800108", "801008", "999999"] {
        let mut args = PAY.to_vec();
        args.extend(["--pay-type", pay_type]);
        let out = payrecon(&config, &args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(65), "{pay_type}: {all}");
        assert!(all.contains(pay_type), "{all}");
        assert!(all.contains("801512") && all.contains("800201"), "{all}");
    }
    let mut cpm = PAY.to_vec();
    cpm.extend(["--pay-type", "800108"]);
    assert!(text(&payrecon(&config, &cpm)).contains("till"));
    assert!(rows(&config).is_empty(), "nothing registered");
    assert_eq!(sandbox.stats().count(CallKind::QfpayPayment), 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_never_queries_a_payment_whose_creation_call_is_in_flight_and_its_answer_is_recorded()
 {
    let (sandbox, _dir, config) = setup().await;
    // Every QFPay answer takes 3 s: the creation call is in flight for that long.
    sandbox.set_faults(Faults {
        scope: FaultScope::Qfpay,
        latency: Duration::from_secs(3),
        ..Faults::default()
    });
    let mut args = PAY.to_vec();
    args.extend(["--pay-type", "801512", "--out-trade-no", "W1"]);
    let pay = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rows(&config).len(), 1, "the row is written before the call");
    // A pass over every open payment, while the call is in flight.
    let pass = payrecon(&config, &["reconcile", "--once", "--all"]);
    assert!(pass.status.success(), "{}", text(&pass));
    let pay = pay.wait_with_output().unwrap();
    assert!(pay.status.success(), "{}", text(&pay));
    let stats = sandbox.stats();
    assert_eq!(
        stats.count(CallKind::QfpayQueryById) + stats.count(CallKind::QfpayQueryWindow),
        0,
        "a pass queried a payment whose creation call was in flight: {}",
        text(&pass)
    );
    // The creation answer is in the ledger: QFPay's syssn and an observed event with it.
    let syssn = sandbox
        .state()
        .qfpay_payment(DEV_QFPAY_APP_CODE, "W1")
        .unwrap()
        .syssn;
    let row = &rows(&config)[0];
    assert_eq!(row["provider_ref"], syssn.as_str(), "{row}");
    assert_eq!(row["provider_code"], "0000", "{row}");
    let shown = text(&payrecon(&config, &["ledger", "show", "W1"]));
    assert!(shown.contains("observed"), "{shown}");
    assert!(text(&pay).contains(&syssn), "{}", text(&pay));
    sandbox.shutdown().await;
}
