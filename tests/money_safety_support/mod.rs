//! A small world for the money-safety tests (docs/RELIABILITY.md): the built-in sandbox in this
//! process (so the test can seed odd records, inject faults and read the gateway's truth and
//! counters), a config pointing the real binary at it, and readers of the ledger file. The
//! binary runs blocking (`Command::output`), so tests use a multi-threaded runtime to keep the
//! sandbox serving meanwhile.

#![allow(dead_code)]

#[path = "../pg_support/mod.rs"]
pub mod pg_support;

use std::path::PathBuf;
use std::process::{Command, Output};

use chrono::{DateTime, FixedOffset, Utc};
use payrecon::ledger::{EventRow, Ledger, PaymentRow};
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, Faults, RateLimits, Sandbox, SandboxConfig, SandboxHandle,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
pub const QF: &str = "hk";
pub const EC: &str = "tw";

pub struct World {
    pub dir: tempfile::TempDir,
    pub sandbox: SandboxHandle,
    pub config: PathBuf,
}

/// The sandbox's QFPay merchant time (+08:00).
pub fn hk() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

/// `t` as `--created-at` wants it.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl World {
    /// A sandbox (limits off, wall clock) changed by `tweak`, and a config with the QFPay
    /// account `hk` and the ECPay account `tw`, plus `qf_keys` / `ec_keys` for each.
    pub async fn start(
        tweak: impl FnOnce(&mut SandboxConfig),
        faults: Faults,
        qf_keys: &str,
        ec_keys: &str,
    ) -> World {
        let mut cfg = SandboxConfig {
            rate_limits: RateLimits::off(),
            faults,
            ..SandboxConfig::dev()
        };
        tweak(&mut cfg);
        let sandbox = Sandbox::start(cfg).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = pg_support::ledger_store_toml(&dir.path().join("ledger.db"));
        let url = sandbox.base_url();
        let toml = format!(
            r#"[ledger]
{ledger}

[log]
level = "info"

[[accounts]]
name = "{QF}"
provider = "qfpay"
base_url = "{url}"
app_code = "{DEV_QFPAY_APP_CODE}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"
request_timeout = "1s"
{qf_retry}{qf_keys}

[[accounts]]
name = "{EC}"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{DEV_ECPAY_MERCHANT_ID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
first_query_after = "1s"
request_timeout = "2s"
retry_for = "1s"
{ec_keys}
"#,
            qf_retry = if qf_keys.contains("retry_for") {
                ""
            } else {
                "retry_for = \"1s\"\n"
            },
        );
        let config = dir.path().join("payrecon.toml");
        std::fs::write(&config, toml).unwrap();
        World {
            dir,
            sandbox,
            config,
        }
    }

    /// Runs the binary; panics with its output unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "payrecon {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for secret in [DEV_QFPAY_CLIENT_KEY, DEV_ECPAY_HASH_KEY, DEV_ECPAY_HASH_IV] {
            assert!(!all.contains(secret), "a secret leaked: {all}");
        }
        out
    }

    /// `payrecon track` of a QFPay payment.
    pub fn track_qfpay(
        &self,
        out_trade_no: &str,
        amount: i64,
        pay_type: &str,
        syssn: Option<&str>,
        created_at: DateTime<Utc>,
    ) {
        let amount = amount.to_string();
        let created = rfc3339(created_at);
        let mut args = vec![
            "track",
            "--account",
            QF,
            "--out-trade-no",
            out_trade_no,
            "--amount",
            &amount,
            "--currency",
            "HKD",
            "--pay-type",
            pay_type,
            "--created-at",
            &created,
        ];
        if let Some(s) = syssn {
            args.extend(["--syssn", s]);
        }
        self.ok(&args);
    }

    pub fn reconcile(&self, extra: &[&str]) -> Output {
        let mut args = vec!["reconcile", "--once"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    async fn open(&self) -> Ledger {
        open_configured(&self.config).await
    }

    pub async fn payment(&self, key: &str) -> PaymentRow {
        let ledger = self.open().await;
        let mut rows = ledger.find_payments(key).await.unwrap();
        ledger.close().await;
        assert_eq!(rows.len(), 1, "one payment {key}");
        rows.remove(0)
    }

    pub async fn events(&self, key: &str) -> Vec<EventRow> {
        let id = self.payment(key).await.id;
        let ledger = self.open().await;
        let events = ledger.events(id).await.unwrap();
        ledger.close().await;
        events
    }

    pub async fn event_kinds(&self, key: &str) -> Vec<String> {
        self.events(key).await.into_iter().map(|e| e.kind).collect()
    }

    /// `(kind, payment's out_trade_no or None, detail)` of every discrepancy.
    pub async fn discrepancies(&self) -> Vec<(String, Option<String>, String)> {
        let ledger = self.open().await;
        let sql = "SELECT d.kind, p.out_trade_no, d.detail FROM discrepancies d
             LEFT JOIN payments p ON p.id = d.payment_id ORDER BY d.id";
        let rows: Vec<(String, Option<String>, String)> = match &ledger {
            Ledger::Sqlite(l) => sqlx::query_as(sql).fetch_all(l.pool()).await,
            Ledger::Postgres(l) => sqlx::query_as(sql).fetch_all(l.pool()).await,
        }
        .unwrap();
        ledger.close().await;
        rows
    }

    /// How many reversal and close requests reached the sandbox for this payment.
    pub fn cancels(&self, out_trade_no: &str) -> u32 {
        let v = self
            .sandbox
            .state()
            .qfpay_payment(DEV_QFPAY_APP_CODE, out_trade_no)
            .unwrap();
        v.reversal_calls + v.close_calls
    }
}

/// The ledger the config at `config` names (SQLite or PostgreSQL), opened as the binary opens it.
pub async fn open_configured(config: &std::path::Path) -> Ledger {
    let settings = payrecon::config::load(Some(config)).unwrap();
    payrecon::ledger::open_store(&settings.ledger)
        .await
        .unwrap()
}

/// The client key of [`Scripted`]'s account, which its answers are signed with.
pub const SCRIPTED_KEY: &str = "TESTCLIENTKEY0000000000000000000";

/// `X-QF-SIGN` of an answer body under [`SCRIPTED_KEY`] (MD5(body + key), as QFPay signs).
pub fn signed(body: &str) -> String {
    use md5::Digest;
    hex::encode_upper(md5::Md5::digest(format!("{body}{SCRIPTED_KEY}").as_bytes()))
}

/// The binary pointed at a scripted QFPay (a mockito server): the QFPay account `hk`, plus
/// `extra` account keys.
pub struct Scripted {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Scripted {
    pub fn new(url: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                r#"[ledger]
{}
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{url}"
app_code = "APP"
client_key = "{SCRIPTED_KEY}"
retry_for = "1s"
{extra}
"#,
                pg_support::ledger_store_toml(&dir.path().join("l.db")),
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    /// Runs the binary; panics with its stderr unless it exits 0. Returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "payrecon {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `payrecon track` of a QFPay payment of `pay_type` created at `created_at`.
    pub fn track(&self, no: &str, amount: i64, pay_type: &str, created_at: DateTime<Utc>) {
        let amount = amount.to_string();
        self.ok(&[
            "track",
            "--account",
            "hk",
            "--out-trade-no",
            no,
            "--amount",
            &amount,
            "--currency",
            "HKD",
            "--pay-type",
            pay_type,
            "--created-at",
            &rfc3339(created_at),
        ]);
    }

    /// The ledger, opened.
    pub async fn ledger(&self) -> Ledger {
        open_configured(&self.config).await
    }
}
