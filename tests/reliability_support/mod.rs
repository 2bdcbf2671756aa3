//! Shared pieces of the reliability suite (docs/RELIABILITY.md): an in-process sandbox seeded
//! with a few thousand payments whose truth the test can read, a config pointing the binary
//! at it, the binary itself, and the checks every scenario ends with (ledger = sandbox truth,
//! history never reopens a final state, no double reversal, `PRAGMA integrity_check`).

#![allow(dead_code)]

#[path = "../pg_support/mod.rs"]
pub mod pg_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use payrecon::sandbox::{
    BulkOutcome, BulkSpec, DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID,
    DEV_QFPAY_APP_CODE, DEV_QFPAY_CLIENT_KEY, EcpayStatus, Faults, OutcomeMix, RateLimits, Sandbox,
    SandboxConfig, SandboxHandle,
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
pub const QF: &str = "hk";
pub const EC: &str = "tw";
/// Every secret the sandbox accounts use: none may appear in any output or ledger row.
pub const SECRETS: [&str; 3] = [DEV_QFPAY_CLIENT_KEY, DEV_ECPAY_HASH_KEY, DEV_ECPAY_HASH_IV];

/// The long versions run when this is set (documented in docs/RELIABILITY.md).
pub fn long_tests() -> bool {
    std::env::var_os("PAYRECON_LONG_TESTS").is_some_and(|v| v != "0")
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

/// One seeded payment and what the sandbox decided for it.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub account: &'static str,
    pub out_trade_no: String,
    pub provider_ref: String,
    pub outcome: BulkOutcome,
    pub pay_type: Option<String>,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub sandbox: SandboxHandle,
    pub config: PathBuf,
    /// The SQLite ledger file (none is written when the config names a PostgreSQL database).
    pub ledger: PathBuf,
    /// The PostgreSQL database the config names, with `PAYRECON_TEST_STORE=postgres`.
    pub ledger_url: Option<String>,
    pub payments: Vec<Seeded>,
}

/// The ledger's database, whichever store holds it, for the checks' own queries.
pub use pg_support::Db;

/// How many payments of each kind a world holds.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// QFPay, created 5–25 minutes ago: final from the start, a few CPM ones never complete
    /// (reversed as a last resort) or complete while the test runs.
    pub qf_old: usize,
    /// QFPay created seconds ago: in progress, then paid or failed while the test runs.
    pub qf_fresh: usize,
    /// ECPay, created 5–25 minutes ago, mostly final from the start.
    pub ec_old: usize,
    /// ECPay `error_nopay` for a few seconds, then answered.
    pub ec_fresh: usize,
    /// Whether old payments may include never-completing (reversal) and pending ones.
    pub open_ones: bool,
}

impl Mix {
    pub fn total(&self) -> usize {
        self.qf_old + self.qf_fresh + self.ec_old + self.ec_fresh
    }
}

pub struct Knobs {
    pub faults: Faults,
    pub limits: RateLimits,
    /// Extra TOML for `[reconcile]`.
    pub reconcile: String,
    /// Extra keys for both accounts (timeouts, retry_for).
    pub account: String,
    /// Extra keys for the ECPay account only.
    pub ecpay: String,
    /// Where the ledger lives (a small tmpfs for the full-disk test); the world's temp dir if
    /// `None`.
    pub ledger_dir: Option<PathBuf>,
    /// Extra TOML for `[schedule]`.
    pub schedule: String,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            faults: Faults::none(),
            limits: RateLimits::off(),
            reconcile: "lease = \"5s\"\nchunk_size = 100\n".into(),
            account: "retry_for = \"2s\"\nrequest_timeout = \"2s\"\n".into(),
            ecpay: String::new(),
            ledger_dir: None,
            schedule: String::new(),
        }
    }
}

fn write_config(dir: &Path, url: &str, knobs: &Knobs) -> (PathBuf, PathBuf, Option<String>) {
    let ledger = knobs.ledger_dir.as_deref().unwrap_or(dir).join("ledger.db");
    let (store, ledger_url) = pg_support::ledger_store(&ledger);
    let toml = format!(
        r#"[ledger]
{store}
busy_timeout = "30s"

[schedule]
reconcile = "* * * * * *"
sweep = "0 0 0 1 1 *"
{schedule}
[reconcile]
{reconcile}
[reversal]
mode = "auto"
cpm_in_progress_limit = "5s"
default_expiry = "1m"
expiry_grace = "1s"

[log]
level = "warn"

[[accounts]]
name = "{QF}"
provider = "qfpay"
base_url = "{url}"
app_code = "{DEV_QFPAY_APP_CODE}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"
in_progress_interval = "1s"
{account}
[[accounts]]
name = "{EC}"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{DEV_ECPAY_MERCHANT_ID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
first_query_after = "1s"
nopay_interval = "2s"
# The seeded declines (Unauthorized) are 5-25 minutes old: past this horizon, failed at once.
unauthorized_horizon = "1m"
{ecpay_rate}{account}{ecpay}
"#,
        reconcile = knobs.reconcile,
        schedule = knobs.schedule,
        account = knobs.account,
        ecpay = knobs.ecpay,
        ecpay_rate = if knobs.ecpay.contains("rate_per_minute") {
            ""
        } else {
            "rate_per_minute = 6000\n"
        },
    );
    let path = dir.join("payrecon.toml");
    std::fs::write(&path, toml).unwrap();
    (path, ledger, ledger_url)
}

fn spec(prefix: &str, count: usize, start: DateTime<Utc>, span_s: u64, seed: u64) -> BulkSpec {
    let mut s = BulkSpec::new(prefix, count, start, Duration::from_secs(span_s));
    s.seed = seed;
    s
}

/// Starts a sandbox, seeds it, writes the config and imports every payment through the binary.
pub async fn world(mix: Mix, knobs: Knobs, seed: u64) -> World {
    let mut cfg = SandboxConfig::dev();
    cfg.faults = knobs.faults.clone();
    cfg.rate_limits = knobs.limits;
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let state = sandbox.state();
    let now = Utc::now();
    let old = now - chrono::Duration::minutes(25);
    let mut payments = Vec::new();
    let mut push = |account: &'static str, recs: Vec<payrecon::sandbox::SeededRecord>| {
        for r in recs {
            payments.push(Seeded {
                account,
                out_trade_no: r.out_trade_no,
                provider_ref: r.provider_ref,
                outcome: r.outcome,
                pay_type: r.pay_type,
                amount: r.amount_minor,
                created_at: r.created_at,
            });
        }
    };

    let mut qf_old = spec("QO", mix.qf_old, old, 20 * 60, seed);
    qf_old.pay_types = vec!["800101".into(), "800108".into()];
    qf_old.mix = if mix.open_ones {
        OutcomeMix {
            paid: 85,
            failed: 12,
            pending_then_paid: 0,
            never_completes: 1,
        }
    } else {
        OutcomeMix {
            paid: 88,
            failed: 12,
            pending_then_paid: 0,
            never_completes: 0,
        }
    };
    push(
        QF,
        state.seed_qfpay_bulk(DEV_QFPAY_APP_CODE, &qf_old).unwrap(),
    );

    let mut qf_fresh = spec(
        "QF",
        mix.qf_fresh,
        now - chrono::Duration::seconds(4),
        3,
        seed,
    );
    qf_fresh.mix = OutcomeMix {
        paid: 0,
        failed: 0,
        pending_then_paid: 1,
        never_completes: 0,
    };
    qf_fresh.pending_for = Duration::from_secs(12);
    push(
        QF,
        state
            .seed_qfpay_bulk(DEV_QFPAY_APP_CODE, &qf_fresh)
            .unwrap(),
    );

    let mut ec_old = spec("EO", mix.ec_old, old, 20 * 60, seed ^ 0xEC);
    ec_old.mix = OutcomeMix {
        paid: 88,
        failed: 12,
        pending_then_paid: 0,
        never_completes: 0,
    };
    push(
        EC,
        state
            .seed_ecpay_bulk(DEV_ECPAY_MERCHANT_ID, &ec_old)
            .unwrap(),
    );
    let mut ec_fresh = spec(
        "EF",
        mix.ec_fresh,
        now - chrono::Duration::seconds(2),
        2,
        seed,
    );
    ec_fresh.mix = OutcomeMix {
        paid: 0,
        failed: 0,
        pending_then_paid: 1,
        never_completes: 0,
    };
    ec_fresh.pending_for = Duration::from_secs(6);
    push(
        EC,
        state
            .seed_ecpay_bulk(DEV_ECPAY_MERCHANT_ID, &ec_fresh)
            .unwrap(),
    );

    let dir = tempfile::tempdir().unwrap();
    let (config, ledger, ledger_url) =
        write_config(dir.path(), sandbox.base_url().as_str(), &knobs);
    let w = World {
        dir,
        sandbox,
        config,
        ledger,
        ledger_url,
        payments,
    };
    w.import_all();
    w
}

impl World {
    /// Writes the import file (half the QFPay rows with their `syssn`, half with only the order
    /// number) and runs `payrecon import`.
    fn import_all(&self) {
        let file = self.dir.path().join("import.jsonl");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for (i, p) in self.payments.iter().enumerate() {
            let mut row = serde_json::json!({
                "account": p.account, "out_trade_no": p.out_trade_no,
                "amount": p.amount, "created_at": p.created_at.to_rfc3339(),
            });
            if p.account == QF {
                row["currency"] = "HKD".into();
                row["pay_type"] = p.pay_type.clone().unwrap().into();
                if i % 2 == 0 {
                    row["syssn"] = p.provider_ref.clone().into();
                }
            } else {
                row["currency"] = "TWD".into();
            }
            writeln!(out, "{row}").unwrap();
        }
        out.flush().unwrap();
        drop(out);
        let o = self.run(&["import", file.to_str().unwrap()]);
        assert!(o.status.success(), "import failed: {}", text(&o));
    }

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts the binary with piped stderr (for the secret and lock checks) and null stdout.
    pub fn spawn(&self, args: &[&str], stderr: &Path) -> Child {
        let err = std::fs::File::create(stderr).unwrap();
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap()
    }

    /// The ledger's database, SQLite or PostgreSQL.
    pub async fn db(&self) -> Db {
        Db::open(self.ledger_url.as_deref(), &self.ledger).await
    }

    /// The SQLite ledger file's pool (tests of the file itself; see [`World::db`]).
    pub async fn pool(&self) -> SqlitePool {
        assert!(
            self.ledger_url.is_none(),
            "this test reads the SQLite file itself: it does not run on PostgreSQL"
        );
        let opts = SqliteConnectOptions::new()
            .filename(&self.ledger)
            .busy_timeout(Duration::from_secs(30));
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap()
    }

    /// `(account, out_trade_no)` → (state, reversal_requested).
    pub async fn ledger_states(&self) -> BTreeMap<(String, String), (String, bool)> {
        let db = self.db().await;
        let rows: Vec<(String, String, String, bool)> = db
            .fetch_all(
                "SELECT account, out_trade_no, state, reversal_requested_at IS NOT NULL AS rr
                 FROM payments",
            )
            .await;
        db.close().await;
        rows.into_iter()
            .map(|(account, no, state, rr)| ((account, no), (state, rr)))
            .collect()
    }

    /// Every payment whose ledger state disagrees with the sandbox's truth, one line each,
    /// plus how many are legitimately stranded in `reversing` (a kill between writing the
    /// reversal intent and sending the call: never sent twice, so only a person can settle it).
    pub async fn mismatches(&self) -> (Vec<String>, usize) {
        let ledger = self.ledger_states().await;
        let state = self.sandbox.state();
        let mut bad = Vec::new();
        let mut stranded = 0;
        if ledger.len() != self.payments.len() {
            bad.push(format!(
                "the ledger holds {} payments, {} were registered",
                ledger.len(),
                self.payments.len()
            ));
        }
        for p in &self.payments {
            let key = (p.account.to_string(), p.out_trade_no.clone());
            let Some((got, reversal_requested)) = ledger.get(&key) else {
                bad.push(format!("{} {}: lost", p.account, p.out_trade_no));
                continue;
            };
            let want: &str = if p.account == QF {
                let v = state
                    .qfpay_payment(DEV_QFPAY_APP_CODE, &p.out_trade_no)
                    .unwrap();
                match (v.cancel, v.respcd.as_str()) {
                    (1 | 2, _) => "reversed",
                    (_, "0000") => "succeeded",
                    (_, "1205") => "failed",
                    // Never completed and never cancelled: only a payment whose reversal
                    // intent was written before a kill may be here, and it must wait.
                    (_, "1143") if *reversal_requested && got == "reversing" => {
                        stranded += 1;
                        continue;
                    }
                    (_, code) => {
                        bad.push(format!(
                            "{} {}: gateway still says {code}, ledger {got}",
                            p.account, p.out_trade_no
                        ));
                        continue;
                    }
                }
            } else {
                let v = state
                    .ecpay_order(DEV_ECPAY_MERCHANT_ID, &p.out_trade_no)
                    .unwrap();
                match v.status {
                    Some(s) if s.is_paid() => "succeeded",
                    Some(EcpayStatus::Unauthorized) => "failed",
                    other => {
                        bad.push(format!(
                            "{} {}: gateway status {other:?}, ledger {got}",
                            p.account, p.out_trade_no
                        ));
                        continue;
                    }
                }
            };
            if got != want {
                bad.push(format!(
                    "{} {}: sandbox says {want}, ledger {got}",
                    p.account, p.out_trade_no
                ));
            }
            // A payment that was paid from the start must never have seen a reversal call.
            if p.account == QF && p.outcome == BulkOutcome::Paid {
                let v = state
                    .qfpay_payment(DEV_QFPAY_APP_CODE, &p.out_trade_no)
                    .unwrap();
                if v.reversal_calls + v.close_calls > 0 {
                    bad.push(format!("{}: a paid payment was reversed", p.out_trade_no));
                }
            }
        }
        (bad, stranded)
    }

    /// Runs `reconcile --once` until the ledger matches the sandbox (or `deadline` passes).
    /// Returns how many passes it took.
    pub async fn settle(&self, deadline: Duration) -> usize {
        let until = std::time::Instant::now() + deadline;
        let mut passes = 0;
        loop {
            let (bad, _) = self.mismatches().await;
            if bad.is_empty() {
                return passes;
            }
            assert!(
                std::time::Instant::now() < until,
                "not settled after {passes} passes; {} mismatches, e.g.\n{}",
                bad.len(),
                bad.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
            );
            let o = self.run(&["reconcile", "--once"]);
            assert!(o.status.success(), "reconcile --once failed: {}", text(&o));
            passes += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The invariants every scenario ends with. Returns the number of events checked.
    pub async fn assert_invariants(&self) -> usize {
        let db = self.db().await;
        // SQLite's own checks of the file. (PostgreSQL enforces the foreign keys itself and
        // has no file-level check to ask for.)
        if let Db::Sqlite(pool) = &db {
            let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(ok, "ok", "PRAGMA integrity_check");
            let fk: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
                .fetch_all(pool)
                .await
                .unwrap();
            assert!(fk.is_empty(), "foreign key violations: {}", fk.len());
        }

        // History: once a payment reached a final state, no event takes it back to an open one.
        let rows: Vec<(i64, String, Option<String>, Option<String>)> = db
            .fetch_all(
                "SELECT payment_id, kind, from_state, to_state FROM events
                 ORDER BY payment_id, id",
            )
            .await;
        let mut reopened = Vec::new();
        let mut current: Option<(i64, bool)> = None;
        for (pid, kind, from, to) in &rows {
            let (pid, kind) = (*pid, kind.clone());
            let (from, to) = (from.clone(), to.clone());
            let was_final = match current {
                Some((p, f)) if p == pid => f,
                _ => false,
            };
            let from_final = from.as_deref().is_some_and(is_final);
            let to_open = to.as_deref().is_some_and(|s| !is_final(s));
            if (was_final || from_final) && to_open {
                reopened.push(format!("payment {pid}: event {kind} {from:?} -> {to:?}"));
            }
            let now_final = was_final || to.as_deref().is_some_and(is_final);
            current = Some((pid, now_final));
        }
        assert!(
            reopened.is_empty(),
            "final states reopened:\n{}",
            reopened.join("\n")
        );

        // The row agrees with its history, and nothing final is still scheduled or leased.
        // id, state, scheduled, provider, retry_reason, the last event's to_state
        type RowAndHistory = (i64, String, bool, String, Option<String>, Option<String>);
        let rows: Vec<RowAndHistory> = db
            .fetch_all(
                "SELECT p.id, p.state, p.next_check_at IS NOT NULL AS scheduled, p.provider,
                    p.retry_reason,
                    (SELECT to_state FROM events e WHERE e.payment_id = p.id AND e.to_state IS NOT NULL
                     ORDER BY e.id DESC LIMIT 1) AS last_to
                 FROM payments p",
            )
            .await;
        for (id, state, scheduled, provider, reason, last) in rows {
            if state != "pending" {
                assert_eq!(
                    last.as_deref(),
                    Some(state.as_str()),
                    "payment {id}: row and history disagree"
                );
            }
            if is_final(&state) {
                // The one exception: a paid ECPay order watched within its look-back.
                let watched = provider == "ecpay"
                    && matches!(
                        state.as_str(),
                        "succeeded" | "partially_refunded" | "failed"
                    )
                    && matches!(reason.as_deref(), Some("after_final" | "call_failed"));
                assert!(
                    !scheduled || watched,
                    "payment {id} is {state} but still scheduled"
                );
            }
        }
        let cancelled_twice = self
            .sandbox
            .state()
            .qfpay_cancelled_more_than_once(DEV_QFPAY_APP_CODE);
        assert!(
            cancelled_twice.is_empty(),
            "reversed/closed more than once: {cancelled_twice:?}"
        );
        let events: Vec<(i64,)> = db.fetch_all("SELECT COUNT(*) FROM events").await;
        db.close().await;
        events[0].0 as usize
    }

    /// How many reversal/close calls the sandbox served.
    pub fn reversals(&self) -> u64 {
        let s = self.sandbox.stats();
        s.count(payrecon::sandbox::CallKind::QfpayReversal)
            + s.count(payrecon::sandbox::CallKind::QfpayClose)
    }
}

pub fn is_final(state: &str) -> bool {
    !matches!(state, "pending" | "in_progress" | "reversing")
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
