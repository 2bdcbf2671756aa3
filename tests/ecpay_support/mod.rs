//! The ECPay side of the binary tests (`ecpay_truth`, `review12_regressions`): the built-in
//! sandbox in this process, a config with the ECPay account `tw` pointing the binary at it,
//! and readers of what the binary prints.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, EcpayOrder, RateLimits, Sandbox,
    SandboxConfig, SandboxHandle,
};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
pub const MID: &str = DEV_ECPAY_MERCHANT_ID;
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86_400);

pub struct Env {
    pub sandbox: SandboxHandle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

/// A wall-clock sandbox (limits off) and a config whose ECPay account `tw` points at it;
/// `extra` is added to the account.
pub async fn env(extra: &str) -> Env {
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
name = "tw"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{MID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
first_query_after = "1s"
nopay_interval = "1s"
rate_per_minute = 6000
retry_for = "300ms"
{extra}
"#,
            ledger = dir.path().join("l.db").display(),
            url = sandbox.base_url(),
        ),
    )
    .unwrap();
    Env {
        sandbox,
        dir,
        config,
    }
}

impl Env {
    pub fn try_run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.try_run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn seed(&self, order: EcpayOrder, created: DateTime<Utc>) {
        let no = order.merchant_trade_no.clone();
        let amount = order.amount;
        self.sandbox
            .state()
            .insert_ecpay(MID, order.at(created))
            .unwrap();
        let file = self.dir.path().join(format!("{no}.jsonl"));
        let row = json!({"account": "tw", "out_trade_no": no, "amount": amount,
            "currency": "TWD", "created_at": created.to_rfc3339()});
        std::fs::write(&file, format!("{row}\n")).unwrap();
        self.run(&["import", file.to_str().unwrap()]);
    }

    pub fn row(&self, no: &str) -> Value {
        let out = self.run(&["ledger", "list", "--format", "json"]);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        rows.into_iter()
            .find(|r| r["out_trade_no"] == no)
            .unwrap_or_else(|| panic!("{no} is not in the ledger"))
    }

    pub fn state(&self, no: &str) -> String {
        self.row(no)["state"].as_str().unwrap().to_string()
    }

    pub fn show(&self, no: &str) -> String {
        String::from_utf8_lossy(&self.run(&["ledger", "show", no]).stdout).into_owned()
    }
}

pub fn ago(d: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(d).unwrap()
}
