//! The environment of the lane tests (`tests/lanes.rs`, issue 13 "one lane per merchant
//! account"): the built-in sandbox in this process (so a test reads the gateways' truth and
//! call counters), a config pointing the real binary at it, seeding and importing, processes
//! that can be stopped and continued, and readers of the ledger's `account_leases` table and of
//! what the binary prints.
//!
//! The ledger is a SQLite file, or with `PAYRECON_TEST_STORE=postgres` a fresh PostgreSQL
//! database (`pg_support::ledger_store`); the readers below go through [`Db`] and read both
//! alike (`$1` parameters, times decoded as `DateTime<Utc>`). On PostgreSQL the lease times
//! come from the server's clock (one host: the same clock, to within [`CLOCK_SLACK`]).
//!
//! The engine's public surface these tests are written against (issue 13):
//! - `[reconcile] lease` (the account lease's time-to-live, renewed every lease/3) and
//!   `[reconcile] lane_wait` (how long a one-off pass waits for an account another process
//!   holds before skipping it);
//! - the ledger table `account_leases(account, holder, token, acquired_at, heartbeat_at,
//!   expires_at, pace_per_minute)`, `holder` = `<hostname>:<pid>:<8 hex>` or NULL;
//! - `reconcile --once --json` with `skipped_accounts`, `ledger stats --json` with `lanes`
//!   ([`ONCE_JSON`], [`STATS_JSON`]: the flags' names in one place).

#![allow(dead_code)]

#[path = "../pg_support/mod.rs"]
pub mod pg_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use payrecon::sandbox::{
    BulkOutcome, BulkSpec, DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID,
    DEV_QFPAY_APP_CODE, DEV_QFPAY_CLIENT_KEY, EcpayStatus, Faults, OutcomeMix, RateLimits, Sandbox,
    SandboxConfig, SandboxHandle, SeededRecord,
};
pub use pg_support::Db;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
/// The QFPay account's name in the config, and its sandbox merchant.
pub const QF: &str = "hk";
pub const APP: &str = DEV_QFPAY_APP_CODE;
/// The ECPay account's name in the config, and its sandbox merchant.
pub const EC: &str = "tw";
pub const MID: &str = DEV_ECPAY_MERCHANT_ID;

/// `reconcile --once` with its JSON summary (`skipped_accounts`). Issue 13 names the flag
/// `--json`; it does not exist before the engine of issue 13.
pub const ONCE_JSON: [&str; 3] = ["reconcile", "--once", "--json"];
/// `ledger stats` as JSON (`lanes`). Assumed `--json`, like `discrepancies list --json`.
pub const STATS_JSON: [&str; 3] = ["ledger", "stats", "--json"];

/// The lane tests measure time (paces, leases, heartbeats): two of them at once on a 2-core
/// machine would measure each other. Every test holds this for its whole run (each test has
/// its own runtime; tokio's mutex works across them, and a failed test does not poison it).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A seed from `PAYRECON_TEST_SEED`, or `default`; printed so a failure can be replayed.
pub fn seed(default: u64) -> u64 {
    let s = std::env::var("PAYRECON_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {s} (replay with PAYRECON_TEST_SEED={s})");
    s
}

/// What a test's world looks like.
pub struct Setup {
    pub limits: RateLimits,
    pub faults: Faults,
    /// Lines under `[reconcile]` (e.g. `lease = "6s"`).
    pub reconcile: String,
    /// Lines under `[reversal]` besides `mode = "auto"` (the default: CPM payments are
    /// reversible 5 s after creation; QR/online orders keep QFPay's 30-minute expiry).
    pub reversal: String,
    /// `schedule.reconcile` (6-field cron) for the daemon.
    pub cron: String,
    /// Extra keys of the QFPay account `hk`; `None`: no QFPay account.
    pub qfpay: Option<String>,
    /// Extra keys of the ECPay account `tw` (give `rate_per_minute`); `None`: no ECPay account.
    pub ecpay: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            limits: RateLimits::off(),
            faults: Faults::none(),
            reconcile: String::new(),
            reversal: "cpm_in_progress_limit = \"5s\"\n".into(),
            cron: "* * * * * *".into(),
            qfpay: Some(String::new()),
            ecpay: Some(String::new()),
        }
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub sandbox: SandboxHandle,
    pub config: PathBuf,
    /// The SQLite ledger file (none is written when the config names a PostgreSQL database).
    pub ledger: PathBuf,
    /// The PostgreSQL database the config names, with `PAYRECON_TEST_STORE=postgres`.
    pub ledger_url: Option<String>,
}

/// Starts the sandbox and writes the config (no payments yet).
pub async fn lab(setup: Setup) -> Lab {
    let mut cfg = SandboxConfig::dev();
    cfg.faults = setup.faults.clone();
    cfg.rate_limits = setup.limits;
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let (store, ledger_url) = pg_support::ledger_store(&ledger);
    let url = sandbox.base_url();
    let mut toml = format!(
        r#"[ledger]
{store}
busy_timeout = "30s"

[schedule]
reconcile = "{cron}"
sweep = "0 0 0 1 1 *"

[reconcile]
{reconcile}
[reversal]
mode = "auto"
{reversal}
[log]
level = "warn"
"#,
        cron = setup.cron,
        reconcile = setup.reconcile,
        reversal = setup.reversal,
    );
    if let Some(extra) = &setup.qfpay {
        toml.push_str(&format!(
            r#"
[[accounts]]
name = "{QF}"
provider = "qfpay"
base_url = "{url}"
app_code = "{APP}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"
in_progress_interval = "1s"
{retry}{extra}
"#,
            retry = defaults_unless(extra, &[("retry_for", "2s"), ("request_timeout", "5s")]),
        ));
    }
    if let Some(extra) = &setup.ecpay {
        toml.push_str(&format!(
            r#"
[[accounts]]
name = "{EC}"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{MID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
first_query_after = "1s"
nopay_interval = "2s"
# Seeded declines (Unauthorized) are minutes old: past this horizon, failed at the first answer.
unauthorized_horizon = "1m"
{retry}{extra}
"#,
            retry = defaults_unless(extra, &[("retry_for", "2s"), ("request_timeout", "5s")]),
        ));
    }
    let config = dir.path().join("payrecon.toml");
    std::fs::write(&config, toml).unwrap();
    Lab {
        dir,
        sandbox,
        config,
        ledger,
        ledger_url,
    }
}

/// `key = "value"` lines for the keys `extra` does not set itself.
fn defaults_unless(extra: &str, keys: &[(&str, &str)]) -> String {
    keys.iter()
        .filter(|(k, _)| !extra.lines().any(|l| l.trim_start().starts_with(k)))
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect()
}

/// Seeds `count` records created uniformly in `[now - from_ago, now - from_ago + span)`.
pub fn spec(
    prefix: &str,
    count: usize,
    from_ago: Duration,
    span: Duration,
    mix: OutcomeMix,
    seed: u64,
) -> BulkSpec {
    let start = Utc::now() - chrono::Duration::from_std(from_ago).unwrap();
    let mut s = BulkSpec::new(prefix, count, start, span);
    s.seed = seed;
    s.mix = mix;
    s
}

/// Settled at the first answer: paid or failed (QFPay `1205`, ECPay `Unauthorized` past its
/// horizon), nothing left in progress.
pub fn final_at_once() -> OutcomeMix {
    OutcomeMix {
        paid: 88,
        failed: 12,
        pending_then_paid: 0,
        never_completes: 0,
    }
}

pub const MINUTE: Duration = Duration::from_secs(60);

/// How far a time the ledger's store wrote may be ahead of this process's clock when both
/// are read at once: PostgreSQL times leases on the server's clock (here the same host's) and
/// keeps milliseconds; SQLite's times are this host's.
pub const CLOCK_SLACK: Duration = Duration::from_millis(50);

impl Lab {
    pub fn seed_qfpay(&self, spec: &BulkSpec) -> Vec<SeededRecord> {
        self.sandbox.state().seed_qfpay_bulk(APP, spec).unwrap()
    }

    pub fn seed_ecpay(&self, spec: &BulkSpec) -> Vec<SeededRecord> {
        self.sandbox.state().seed_ecpay_bulk(MID, spec).unwrap()
    }

    /// Registers the records through `payrecon import` (every other QFPay row with its
    /// `syssn`, the rest by order number only, as merchants register them).
    pub fn import(&self, qfpay: &[SeededRecord], ecpay: &[SeededRecord]) {
        let file = self.dir.path().join("import.jsonl");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for (i, r) in qfpay.iter().enumerate() {
            let mut row = serde_json::json!({
                "account": QF, "out_trade_no": r.out_trade_no, "amount": r.amount_minor,
                "currency": "HKD", "pay_type": r.pay_type.clone().unwrap(),
                "created_at": r.created_at.to_rfc3339(),
            });
            if i % 2 == 0 {
                row["syssn"] = r.provider_ref.clone().into();
            }
            writeln!(out, "{row}").unwrap();
        }
        for r in ecpay {
            let row = serde_json::json!({
                "account": EC, "out_trade_no": r.out_trade_no, "amount": r.amount_minor,
                "currency": "TWD", "created_at": r.created_at.to_rfc3339(),
            });
            writeln!(out, "{row}").unwrap();
        }
        out.flush().unwrap();
        drop(out);
        let o = self.run(&["import", file.to_str().unwrap()]);
        assert!(o.status.success(), "import failed: {}", text(&o));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).args(args);
        c
    }

    /// Runs the binary to completion (short commands only: it blocks this thread).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts the binary; stdout and stderr go to `<name>.out` / `<name>.log` in the test's
    /// directory.
    pub fn spawn(&self, args: &[&str], name: &str) -> Proc {
        let out = self.dir.path().join(format!("{name}.out"));
        let log = self.dir.path().join(format!("{name}.log"));
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Proc {
            child,
            out,
            log,
            name: name.to_string(),
            started: Instant::now(),
        }
    }

    /// The ledger, SQLite or PostgreSQL, for reading (the binary created it).
    pub async fn db(&self) -> Db {
        Db::open(self.ledger_url.as_deref(), &self.ledger).await
    }

    /// `ledger stats --json`, parsed.
    pub fn stats_json(&self) -> Value {
        let o = self.run(&STATS_JSON);
        assert!(o.status.success(), "ledger stats --json: {}", text(&o));
        json_of(&o.stdout)
    }

    /// `ledger stats` as a person reads it.
    pub fn stats_text(&self) -> String {
        let o = self.run(&["ledger", "stats"]);
        assert!(o.status.success(), "ledger stats: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// One row of `account_leases`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub account: String,
    pub holder: Option<String>,
    pub token: i64,
    pub acquired_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub pace_per_minute: Option<i64>,
}

impl Lease {
    pub fn heartbeat(&self) -> Option<DateTime<Utc>> {
        self.heartbeat_at
    }

    pub fn expires(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
}

type LeaseRow = (
    String,
    Option<String>,
    i64,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i64>,
);

const LEASE_COLUMNS: &str =
    "SELECT account, holder, token, acquired_at, heartbeat_at, expires_at, pace_per_minute
     FROM account_leases";

fn lease_of(r: LeaseRow) -> Lease {
    let (account, holder, token, acquired_at, heartbeat_at, expires_at, pace_per_minute) = r;
    Lease {
        account,
        holder,
        token,
        acquired_at,
        heartbeat_at,
        expires_at,
        pace_per_minute,
    }
}

/// The account's lease row, if it has one.
pub async fn lease(db: &Db, account: &str) -> Option<Lease> {
    let rows: Vec<LeaseRow> = db
        .fetch_all_with(&format!("{LEASE_COLUMNS} WHERE account = $1"), &[account])
        .await;
    rows.into_iter().next().map(lease_of)
}

/// Every lease row.
pub async fn leases(db: &Db) -> Vec<Lease> {
    let rows: Vec<LeaseRow> = db
        .fetch_all(&format!("{LEASE_COLUMNS} ORDER BY account"))
        .await;
    rows.into_iter().map(lease_of).collect()
}

/// One payment as the ledger holds it, with its history's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    pub id: i64,
    pub state: String,
    pub attempts: i64,
    /// `observed` events: gateway answers applied.
    pub observed: i64,
    pub reversal_intents: i64,
    pub updated_at: DateTime<Utc>,
    pub next_check_at: Option<DateTime<Utc>>,
    pub provider_code: Option<String>,
}

/// `out_trade_no` → the payment, for one account.
pub async fn rows(db: &Db, account: &str) -> BTreeMap<String, PaymentRow> {
    type Row = (
        i64,
        String,
        String,
        i64,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<String>,
        i64,
        i64,
    );
    let rows: Vec<Row> = db.fetch_all_with(
        "SELECT p.id, p.out_trade_no, p.state, p.attempts, p.updated_at, p.next_check_at, p.provider_code,
                (SELECT COUNT(*) FROM events e WHERE e.payment_id = p.id AND e.kind = 'observed') AS obs,
                (SELECT COUNT(*) FROM events e WHERE e.payment_id = p.id AND e.kind = 'reversal_intent') AS intents
         FROM payments p WHERE p.account = $1",
        &[account],
    )
    .await;
    rows.into_iter()
        .map(
            |(id, no, state, attempts, updated_at, next_check_at, provider_code, obs, intents)| {
                (
                    no,
                    PaymentRow {
                        id,
                        state,
                        attempts,
                        observed: obs,
                        reversal_intents: intents,
                        updated_at,
                        next_check_at,
                        provider_code,
                    },
                )
            },
        )
        .collect()
}

/// `observed` events of one account's payments so far.
pub async fn observed_count(db: &Db, account: &str) -> i64 {
    db.scalar(
        "SELECT COUNT(*) FROM events e JOIN payments p ON p.id = e.payment_id
         WHERE p.account = $1 AND e.kind = 'observed'",
        &[account],
    )
    .await
}

/// When the first and the last of one account's `observed` events were written.
pub async fn observed_span(db: &Db, account: &str) -> (DateTime<Utc>, DateTime<Utc>) {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>)> = db
        .fetch_all_with(
            "SELECT MIN(e.at), MAX(e.at) FROM events e JOIN payments p ON p.id = e.payment_id
             WHERE p.account = $1 AND e.kind = 'observed'",
            &[account],
        )
        .await;
    rows[0]
}

/// Payments of one account in a final state.
pub async fn final_count(db: &Db, account: &str) -> i64 {
    db.scalar(
        "SELECT COUNT(*) FROM payments WHERE account = $1
         AND state NOT IN ('pending', 'in_progress', 'reversing')",
        &[account],
    )
    .await
}

pub async fn max_event_id(db: &Db) -> i64 {
    db.scalar("SELECT COALESCE(MAX(id), 0) FROM events", &[])
        .await
}

pub async fn discrepancy_count(db: &Db) -> i64 {
    db.scalar("SELECT COUNT(*) FROM discrepancies", &[]).await
}

/// The ledger state the sandbox's truth calls for (QFPay).
pub fn qfpay_truth(sandbox: &SandboxHandle, out_trade_no: &str) -> &'static str {
    let v = sandbox.state().qfpay_payment(APP, out_trade_no).unwrap();
    match (v.cancel, v.respcd.as_str()) {
        (1 | 2, _) => "reversed",
        (_, "0000") => "succeeded",
        (_, "1205") => "failed",
        _ => "open",
    }
}

/// The ledger state the sandbox's truth calls for (ECPay).
pub fn ecpay_truth(sandbox: &SandboxHandle, out_trade_no: &str) -> &'static str {
    let v = sandbox.state().ecpay_order(MID, out_trade_no).unwrap();
    match v.status {
        Some(s) if s.is_paid() => "succeeded",
        Some(EcpayStatus::Unauthorized) => "failed",
        _ => "open",
    }
}

/// QFPay id lookups that named this payment (by `syssn` or by order number).
pub fn qfpay_lookups(stats: &payrecon::sandbox::StatsSnapshot, r: &SeededRecord) -> u64 {
    stats.lookups(APP, &r.provider_ref) + stats.lookups(APP, &r.out_trade_no)
}

pub fn is_final(state: &str) -> bool {
    !matches!(state, "pending" | "in_progress" | "reversing")
}

pub fn settled_at_once(r: &SeededRecord) -> bool {
    matches!(r.outcome, BulkOutcome::Paid | BulkOutcome::Failed)
}

/// A started binary.
pub struct Proc {
    pub child: Child,
    pub out: PathBuf,
    pub log: PathBuf,
    pub name: String,
    pub started: Instant,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -SIG pid` (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} ({})", self.pid(), self.name);
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (without blocking the runtime) for the process to end; panics with its log
    /// after `timeout`, killing it.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} (pid {}) did not end within {timeout:?}:\n{}",
                    self.name,
                    self.pid(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a clean exit (status 0) and returns stdout.
    pub async fn success(&mut self, timeout: Duration) -> String {
        let status = self.wait(timeout).await;
        assert!(
            status.success(),
            "{} exited {status:?}:\n{}",
            self.name,
            self.log_text()
        );
        self.stdout_text()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failed assertion must not leave a daemon (or a stopped process) behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A lease holder id, `<hostname>:<pid>:<8 hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub tag: String,
}

impl Holder {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.rsplitn(3, ':');
        let tag = parts.next()?;
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next()?;
        let hex = tag.len() == 8 && tag.chars().all(|c| c.is_ascii_hexdigit());
        (hex && !host.is_empty()).then(|| Self {
            host: host.to_string(),
            pid,
            tag: tag.to_string(),
        })
    }
}

/// This machine's host name, as a process here names itself in a holder id.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            Command::new("hostname")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_default()
}

/// Asserts that `holder` is a well-formed holder id of process `pid` on this machine.
pub fn assert_holder_of(holder: &str, pid: u32) {
    let h = Holder::parse(holder)
        .unwrap_or_else(|| panic!("holder {holder:?} is not <hostname>:<pid>:<8 hex>"));
    assert_eq!(h.pid, pid, "holder {holder:?} names another process");
    assert_eq!(h.host, hostname(), "holder {holder:?} names another host");
}

/// A time as the ledger writes it (RFC 3339).
pub fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not an RFC 3339 time: {e}"))
        .to_utc()
}

/// The JSON document a command printed: all of stdout, or else its last line that is one.
pub fn json_of(stdout: &[u8]) -> Value {
    let s = String::from_utf8_lossy(stdout);
    serde_json::from_str(s.trim())
        .ok()
        .or_else(|| {
            s.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
                .filter(Value::is_object)
        })
        .unwrap_or_else(|| panic!("no JSON document in stdout:\n{s}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What no process of these tests may ever print.
pub fn assert_clean(name: &str, log: &str) {
    let lower = log.to_lowercase();
    for bad in [
        "database is locked",
        "sqlite_busy",
        "database table is locked",
        // PostgreSQL's: a write given up as a deadlock victim, a lock or statement timeout.
        "deadlock detected",
        "canceling statement due to",
        "panicked",
    ] {
        assert!(!lower.contains(bad), "{name} reported {bad:?}:\n{log}");
    }
}

/// The lines of `log` that contain every one of `words`.
pub fn lines_with<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .collect()
}
