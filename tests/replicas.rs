//! Replicas on one PostgreSQL ledger (issue 18 item 4), at the binary's level: three `payrecon
//! run` daemons share one PostgreSQL database and four merchant accounts (three QFPay
//! merchants, one ECPay) with a few thousand payments, stuck CPM ones among them, against the
//! sandbox with its rate limits on (QFPay 100/s and 400/min per merchant → 429, ECPay 60/min →
//! 403). One replica is SIGKILLed mid-run and started again later; another is SIGSTOPped past
//! its lease and then SIGCONTinued.
//!
//! At the end: every payment equals the sandbox's truth and none was lost; no payment was
//! reversed or closed twice; no final state was reopened; no write of the stopped replica's
//! stalled passes reached an account after another replica had taken it (a write committed
//! after the takeover would show as an event of those passes the ledger did not hold when the
//! takeover was seen); no 60-second window holds more than 400 QFPay calls of one merchant and
//! no call was answered 429; and the replicas shared the lanes (several wrote, none held more than
//! its share of the lanes longer than a beat and a unit).
//!
//! Needs PostgreSQL: run it with `bash tests/run.sh --test replicas` (without
//! `PAYRECON_TEST_PG_URL` it fails, saying so).

mod pg_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use payrecon::sandbox::{
    BulkOutcome, BulkSpec, CallKind, DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID,
    EcpayMerchant, EcpayStatus, OutcomeMix, QfpayMerchant, RateLimits, Sandbox, SandboxConfig,
    SandboxHandle,
};
use sqlx::{PgPool, Row};

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
const LEASE_S: u64 = 6;
/// The three QFPay merchants: account name, app code, client key.
const QF: [(&str, &str, &str); 3] = [
    (
        "hk1",
        "REPAPPCODE100000000000000000000A",
        "REPCLIENTKEY1000000000000000000A",
    ),
    (
        "hk2",
        "REPAPPCODE200000000000000000000B",
        "REPCLIENTKEY2000000000000000000B",
    ),
    (
        "hk3",
        "REPAPPCODE300000000000000000000C",
        "REPCLIENTKEY3000000000000000000C",
    ),
];
const EC: &str = "tw";
const ACCOUNTS: usize = 4;

/// Old QFPay payments per merchant (final from the start, or never completing: reversed).
const QF_OLD: usize = 1_200;
/// QFPay payments per merchant in progress for a while, then paid.
const QF_FRESH: usize = 40;
const EC_OLD: usize = 30;
const EC_FRESH: usize = 6;

struct Seeded {
    account: &'static str,
    /// The QFPay app code, or the ECPay merchant id.
    merchant: &'static str,
    out_trade_no: String,
    provider_ref: String,
    pay_type: Option<String>,
    amount: i64,
    created_at: DateTime<Utc>,
    outcome: BulkOutcome,
}

/// The replicas' processes; any still running when the test ends (or panics) is continued
/// and killed.
struct Replicas {
    dir: PathBuf,
    config: PathBuf,
    procs: Vec<Option<Child>>,
    /// Every log written, `(replica, generation)` → path.
    logs: Vec<PathBuf>,
}

impl Replicas {
    fn spawn(&mut self, i: usize) -> u32 {
        let log = self
            .dir
            .join(format!("replica-{i}-{}.log", self.logs.len()));
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        self.logs.push(log);
        let pid = child.id();
        self.procs[i] = Some(child);
        pid
    }

    /// The log of replica `i`'s current process.
    fn current_log(&self, i: usize) -> PathBuf {
        let tag = format!("replica-{i}-");
        self.logs
            .iter()
            .rev()
            .find(|l| l.file_name().unwrap().to_string_lossy().starts_with(&tag))
            .unwrap()
            .clone()
    }

    fn pid(&self, i: usize) -> u32 {
        self.procs[i].as_ref().unwrap().id()
    }

    fn signal(&self, i: usize, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid(i).to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} replica {i}");
    }

    fn sigkill(&mut self, i: usize) {
        let mut child = self.procs[i].take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and the exit status within `grace`.
    fn stop(&mut self, i: usize, grace: Duration) -> std::process::ExitStatus {
        self.signal(i, "TERM");
        let mut child = self.procs[i].take().unwrap();
        let until = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!("replica {i} did not stop within {grace:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn assert_alive(&mut self) {
        for (i, p) in self.procs.iter_mut().enumerate() {
            if let Some(c) = p
                && let Some(status) = c.try_wait().unwrap()
            {
                panic!(
                    "replica {i} exited on its own ({status:?}):\n{}",
                    self.all_logs()
                );
            }
        }
    }

    fn all_logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| {
                let text = std::fs::read_to_string(l).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {}\n{}", l.display(), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(p.id().to_string())
                .status();
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn sandbox_config() -> SandboxConfig {
    let mut cfg = SandboxConfig::dev();
    cfg.qfpay_merchants = QF
        .iter()
        .map(|(_, app, key)| {
            let mut m = QfpayMerchant::new(app, key);
            // Small pages: no window sweep is cheaper than the id lookups, so the lanes make
            // hundreds of calls per merchant and their pace, not the work, bounds them.
            m.max_page_size = Some(4);
            m
        })
        .collect();
    cfg.ecpay_merchants = vec![EcpayMerchant::new(
        DEV_ECPAY_MERCHANT_ID,
        DEV_ECPAY_HASH_KEY,
        DEV_ECPAY_HASH_IV,
    )];
    // The documented limits: QFPay 100/s and 400/min per merchant, ECPay 60/min.
    cfg.rate_limits = RateLimits::default();
    assert_eq!(cfg.rate_limits.qfpay_per_minute, Some(400));
    assert_eq!(cfg.rate_limits.qfpay_per_second, Some(100));
    assert_eq!(cfg.rate_limits.ecpay_per_minute, Some(60));
    cfg
}

fn spec(
    prefix: &str,
    count: usize,
    start: DateTime<Utc>,
    span_s: u64,
    mix: OutcomeMix,
) -> BulkSpec {
    let mut s = BulkSpec::new(prefix, count, start, Duration::from_secs(span_s));
    s.seed = 0x5EED_0018;
    s.mix = mix;
    s
}

fn seed(sandbox: &SandboxHandle) -> Vec<Seeded> {
    let state = sandbox.state();
    let now = Utc::now();
    let old = now - chrono::Duration::minutes(25);
    let mut out = Vec::new();
    let mut push = |account, merchant, recs: Vec<payrecon::sandbox::SeededRecord>| {
        out.extend(recs.into_iter().map(|r| Seeded {
            account,
            merchant,
            out_trade_no: r.out_trade_no,
            provider_ref: r.provider_ref,
            pay_type: r.pay_type,
            amount: r.amount_minor,
            created_at: r.created_at,
            outcome: r.outcome,
        }));
    };
    for (k, (account, app, _)) in QF.iter().enumerate() {
        let mut s = spec(
            &format!("Q{k}O"),
            QF_OLD,
            old,
            20 * 60,
            OutcomeMix {
                paid: 85,
                failed: 12,
                pending_then_paid: 0,
                // Stuck: CPM (800108) ones are reversed past `cpm_in_progress_limit`, QR ones
                // (800101) closed past their expiry.
                never_completes: 3,
            },
        );
        s.pay_types = vec!["800101".into(), "800108".into()];
        push(account, app, state.seed_qfpay_bulk(app, &s).unwrap());
        let mut s = spec(
            &format!("Q{k}F"),
            QF_FRESH,
            now - chrono::Duration::seconds(3),
            3,
            OutcomeMix {
                paid: 0,
                failed: 0,
                pending_then_paid: 1,
                never_completes: 0,
            },
        );
        s.pay_types = vec!["800108".into()];
        // Paid before `cpm_in_progress_limit` runs out: never a reversal candidate.
        s.pending_for = Duration::from_secs(25);
        push(account, app, state.seed_qfpay_bulk(app, &s).unwrap());
    }
    let s = spec(
        "EO",
        EC_OLD,
        old,
        20 * 60,
        OutcomeMix {
            paid: 85,
            failed: 15,
            pending_then_paid: 0,
            never_completes: 0,
        },
    );
    push(
        EC,
        DEV_ECPAY_MERCHANT_ID,
        state.seed_ecpay_bulk(DEV_ECPAY_MERCHANT_ID, &s).unwrap(),
    );
    let mut s = spec(
        "EF",
        EC_FRESH,
        now - chrono::Duration::seconds(2),
        2,
        OutcomeMix {
            paid: 0,
            failed: 0,
            pending_then_paid: 1,
            never_completes: 0,
        },
    );
    s.pending_for = Duration::from_secs(12);
    push(
        EC,
        DEV_ECPAY_MERCHANT_ID,
        state.seed_ecpay_bulk(DEV_ECPAY_MERCHANT_ID, &s).unwrap(),
    );
    out
}

fn write_config(dir: &Path, ledger_url: &str, sandbox: &SandboxHandle) -> PathBuf {
    let url = sandbox.base_url();
    let mut toml = format!(
        r#"[ledger]
url = "{ledger_url}"

[schedule]
reconcile = "*/2 * * * * *"
sweep = "0 0 0 1 1 *"

[reconcile]
lease = "{LEASE_S}s"
chunk_size = 100

[reversal]
mode = "auto"
cpm_in_progress_limit = "40s"
default_expiry = "1m"
expiry_grace = "1s"

[log]
level = "warn"
"#
    );
    for (name, app, key) in QF {
        toml.push_str(&format!(
            r#"
[[accounts]]
name = "{name}"
provider = "qfpay"
base_url = "{url}"
app_code = "{app}"
client_key = "{key}"
in_progress_interval = "1s"
retry_for = "2s"
request_timeout = "2s"
"#
        ));
    }
    toml.push_str(&format!(
        r#"
[[accounts]]
name = "{EC}"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{DEV_ECPAY_MERCHANT_ID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
first_query_after = "1s"
nopay_interval = "4s"
unauthorized_horizon = "1m"
rate_per_minute = 50
retry_for = "2s"
request_timeout = "2s"
"#
    ));
    let path = dir.join("payrecon.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Imports every payment through the binary (half the QFPay rows with their `syssn`).
fn import(dir: &Path, config: &Path, payments: &[Seeded]) {
    let file = dir.join("import.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for (i, p) in payments.iter().enumerate() {
        let mut row = serde_json::json!({
            "account": p.account, "out_trade_no": p.out_trade_no,
            "amount": p.amount, "created_at": p.created_at.to_rfc3339(),
        });
        if p.account == EC {
            row["currency"] = "TWD".into();
        } else {
            row["currency"] = "HKD".into();
            row["pay_type"] = p.pay_type.clone().unwrap().into();
            if i % 2 == 0 {
                row["syssn"] = p.provider_ref.clone().into();
            }
        }
        writeln!(out, "{row}").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let o = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["import", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "import failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What the sandbox says a payment ended as (`None`: not final there yet).
fn truth(sandbox: &SandboxHandle, p: &Seeded) -> Option<&'static str> {
    let state = sandbox.state();
    if p.account == EC {
        let v = state.ecpay_order(p.merchant, &p.out_trade_no).unwrap();
        match v.status {
            Some(s) if s.is_paid() => Some("succeeded"),
            Some(EcpayStatus::Unauthorized) => Some("failed"),
            _ => None,
        }
    } else {
        let v = state.qfpay_payment(p.merchant, &p.out_trade_no).unwrap();
        match (v.cancel, v.respcd.as_str()) {
            (1 | 2, _) => Some("reversed"),
            (_, "0000") => Some("succeeded"),
            (_, "1205") => Some("failed"),
            _ => None,
        }
    }
}

async fn ledger_states(pool: &PgPool) -> BTreeMap<(String, String), String> {
    sqlx::query("SELECT account, out_trade_no, state FROM payments")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get("account"), r.get("out_trade_no")), r.get("state")))
        .collect()
}

/// Every payment whose ledger state is not the sandbox's truth (or that is lost).
async fn mismatches(pool: &PgPool, sandbox: &SandboxHandle, payments: &[Seeded]) -> Vec<String> {
    let ledger = ledger_states(pool).await;
    let mut bad = Vec::new();
    if ledger.len() != payments.len() {
        bad.push(format!(
            "the ledger holds {} payments, {} were registered",
            ledger.len(),
            payments.len()
        ));
    }
    for p in payments {
        let Some(got) = ledger.get(&(p.account.to_string(), p.out_trade_no.clone())) else {
            bad.push(format!("{} {}: lost", p.account, p.out_trade_no));
            continue;
        };
        let want = truth(sandbox, p).unwrap_or("(open at the gateway)");
        if got != want {
            bad.push(format!(
                "{} {}: sandbox {want}, ledger {got}",
                p.account, p.out_trade_no
            ));
        }
    }
    bad
}

/// `account` → (holder, token) of the live leases now.
async fn leases(pool: &PgPool) -> BTreeMap<String, (String, i64)> {
    sqlx::query(
        "SELECT account, holder, token FROM account_leases
         WHERE holder IS NOT NULL AND expires_at > now()",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("account"), (r.get("holder"), r.get("token"))))
    .collect()
}

/// `account` → (holder, token) of every lease row, held or released (a release keeps the token,
/// so a lease taken and given back between two looks still shows as a higher token).
async fn tokens(pool: &PgPool) -> BTreeMap<String, (Option<String>, i64)> {
    sqlx::query("SELECT account, holder, token FROM account_leases")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("account"), (r.get("holder"), r.get("token"))))
        .collect()
}

/// The holder ids (`host:pid:tag`) of the process `pid` seen in the ledger.
async fn holder_of(pool: &PgPool, pid: u32) -> Option<String> {
    let pat = format!("%:{pid}:%");
    sqlx::query_scalar(
        "SELECT holder FROM replicas WHERE holder LIKE $1
         UNION SELECT owner FROM runs WHERE owner LIKE $1 LIMIT 1",
    )
    .bind(&pat)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn wait_for_holder(pool: &PgPool, pid: u32) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(h) = holder_of(pool, pid).await {
            return h;
        }
        assert!(Instant::now() < until, "process {pid} never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until one of `candidates` (replica index, holder id) holds a live lease (a lane
/// mid-run); returns which, and the accounts it holds with their tokens.
async fn wait_until_holding(
    pool: &PgPool,
    candidates: &[(usize, String)],
    within: Duration,
) -> (usize, BTreeMap<String, i64>) {
    let until = Instant::now() + within;
    loop {
        let now_held = leases(pool).await;
        for (i, holder) in candidates {
            let held: BTreeMap<String, i64> = now_held
                .iter()
                .filter(|(_, (h, _))| h == holder)
                .map(|(a, (_, t))| (a.clone(), *t))
                .collect();
            if !held.is_empty() {
                return (*i, held);
            }
        }
        assert!(
            Instant::now() < until,
            "none of {candidates:?} held a lane within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events written by the passes `runs` for payments of `account`.
async fn events_of_runs(pool: &PgPool, runs: &[i64], account: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM events e JOIN payments p ON p.id = e.payment_id
         WHERE e.run_id = ANY($1::bigint[]) AND p.account = $2",
    )
    .bind(runs)
    .bind(account)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn is_final(state: &str) -> bool {
    !matches!(state, "pending" | "in_progress" | "reversing")
}

/// No event takes a payment from a final state back to an open one, and every row agrees with
/// its history. Returns the number of events.
async fn assert_history(pool: &PgPool) -> usize {
    let rows = sqlx::query(
        "SELECT payment_id, kind, from_state, to_state FROM events ORDER BY payment_id, id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut reopened = Vec::new();
    let mut current: Option<(i64, bool)> = None;
    for r in &rows {
        let pid: i64 = r.get("payment_id");
        let to: Option<String> = r.get("to_state");
        let from: Option<String> = r.get("from_state");
        let was_final = matches!(current, Some((p, true)) if p == pid);
        if (was_final || from.as_deref().is_some_and(is_final))
            && to.as_deref().is_some_and(|s| !is_final(s))
        {
            let kind: String = r.get("kind");
            reopened.push(format!("payment {pid}: {kind} {from:?} -> {to:?}"));
        }
        current = Some((pid, was_final || to.as_deref().is_some_and(is_final)));
    }
    assert!(
        reopened.is_empty(),
        "final states reopened:\n{}",
        reopened.join("\n")
    );
    let disagree: Vec<String> = sqlx::query(
        "SELECT p.id, p.state, (SELECT to_state FROM events e WHERE e.payment_id = p.id
             AND e.to_state IS NOT NULL ORDER BY e.id DESC LIMIT 1) AS last_to
         FROM payments p WHERE p.state <> 'pending'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .filter_map(|r| {
        let state: String = r.get("state");
        let last: Option<String> = r.get("last_to");
        (last.as_deref() != Some(state.as_str())).then(|| {
            let id: i64 = r.get("id");
            format!("payment {id}: row {state}, history {last:?}")
        })
    })
    .collect();
    assert!(
        disagree.is_empty(),
        "rows and history disagree:\n{}",
        disagree.join("\n")
    );
    rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_postgres_survive_a_kill_and_a_stall_without_a_double_reversal() {
    let started = Instant::now();
    let (pool, ledger_url) = pg_support::fresh_ledger().await;
    let sandbox = Sandbox::start(sandbox_config()).await.unwrap();
    let payments = seed(&sandbox);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &ledger_url, &sandbox);
    import(dir.path(), &config, &payments);
    let stuck = payments
        .iter()
        .filter(|p| p.account != EC && p.outcome == BulkOutcome::NeverCompletes)
        .count();
    eprintln!(
        "{} payments on {ACCOUNTS} accounts ({stuck} stuck QFPay ones), 3 replicas",
        payments.len()
    );

    let mut r = Replicas {
        dir: dir.path().to_path_buf(),
        config: config.clone(),
        procs: vec![None, None, None],
        logs: Vec::new(),
    };
    for i in 0..3 {
        r.spawn(i);
    }
    // Each replica's holder ids (`host:pid:tag`), one per process it ran as.
    let mut holders: Vec<Vec<String>> = Vec::new();
    for i in 0..3 {
        holders.push(vec![wait_for_holder(&pool, r.pid(i)).await]);
    }

    // Phase 1: all three live. Sample who holds which lane.
    let mut most_held_by_one = 0;
    // The longest stretch in which one replica held more lanes than its share.
    let share = ACCOUNTS.div_ceil(3);
    let (mut over_since, mut longest_over) = (None::<Instant>, Duration::ZERO);
    let mut lanes_held_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let phase1 = Instant::now();
    while phase1.elapsed() < Duration::from_secs(10) {
        let now_held = leases(&pool).await;
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for (account, (h, _)) in &now_held {
            *per.entry(h.as_str()).or_default() += 1;
            lanes_held_by
                .entry(h.clone())
                .or_default()
                .insert(account.clone());
        }
        let most_now = per.values().copied().max().unwrap_or(0);
        most_held_by_one = most_held_by_one.max(most_now);
        if most_now > share {
            let since = *over_since.get_or_insert_with(Instant::now);
            longest_over = longest_over.max(since.elapsed());
        } else {
            over_since = None;
        }
        r.assert_alive();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGKILL a replica while it works a lane. (With four accounts, three replicas and a
    // share of two, one replica may stand by while the other two hold every lane.)
    let current = |holders: &Vec<Vec<String>>, except: Option<usize>| -> Vec<(usize, String)> {
        (0..3)
            .filter(|i| Some(*i) != except)
            .map(|i| (i, holders[i].last().unwrap().clone()))
            .collect()
    };
    let (victim, killed_held) =
        wait_until_holding(&pool, &current(&holders, None), Duration::from_secs(30)).await;
    r.sigkill(victim);
    eprintln!(
        "SIGKILL replica {victim} holding {killed_held:?} at {:.1?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    r.assert_alive();
    r.spawn(victim);
    let h = wait_for_holder(&pool, r.pid(victim)).await;
    holders[victim].push(h);
    eprintln!("replica {victim} restarted at {:.1?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;

    // SIGSTOP another replica while it works a lane, past its lease.
    let (sleeper, held) = wait_until_holding(
        &pool,
        &current(&holders, Some(victim)),
        Duration::from_secs(30),
    )
    .await;
    let stalled = holders[sleeper].last().unwrap().clone();
    let stalled_log = r.current_log(sleeper);
    r.signal(sleeper, "STOP");
    let stopped_at = Instant::now();
    let stalled_runs: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE owner = $1")
        .bind(&stalled)
        .fetch_all(&pool)
        .await
        .unwrap();
    eprintln!(
        "SIGSTOP replica {sleeper} holding {held:?} at {:.1?}",
        started.elapsed()
    );
    // Watch its accounts being taken: the events its stalled passes had written by then.
    // Only another process can raise a token while the holder is stopped.
    let mut taken: BTreeMap<String, (Option<String>, i64, i64)> = BTreeMap::new();
    while stopped_at.elapsed() < Duration::from_secs(3 * LEASE_S) {
        let now_held = tokens(&pool).await;
        for (account, token) in &held {
            if taken.contains_key(account) {
                continue;
            }
            if let Some((h, t)) = now_held.get(account)
                && t > token
            {
                let before = events_of_runs(&pool, &stalled_runs, account).await;
                taken.insert(account.clone(), (h.clone(), *t, before));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if taken.is_empty() {
        // What held the accounts: the sessions, their locks and the lease and replica rows.
        let dump = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query(sql)
                    .fetch_all(&pool)
                    .await
                    .map(|rows| {
                        rows.iter()
                            .map(|r| r.get::<String, _>(0))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_else(|e| e.to_string())
            }
        };
        eprintln!(
            "sessions:\n{}\nlocks:\n{}\nleases:\n{}\nreplicas:\n{}",
            dump(
                "SELECT concat_ws(' | ', pid, application_name, state, wait_event_type, \
                  wait_event, now() - state_change, left(query, 120)) FROM pg_stat_activity \
                  WHERE datname = current_database()"
            )
            .await,
            dump(
                "SELECT concat_ws(' | ', l.pid, l.locktype, l.relation::regclass, l.mode, \
                  l.granted) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                  WHERE a.datname = current_database() AND l.locktype <> 'virtualxid'"
            )
            .await,
            dump(
                "SELECT concat_ws(' | ', account, holder, token, expires_at, now()) \
                  FROM account_leases"
            )
            .await,
            dump("SELECT concat_ws(' | ', holder, seen_at) FROM replicas").await,
        );
        for i in 0..3 {
            eprintln!(
                "replica {i} log tail:\n{}",
                std::fs::read_to_string(r.current_log(i))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    assert!(
        !taken.is_empty(),
        "no replica took any of {held:?} while their holder was stopped for {:?}",
        stopped_at.elapsed()
    );
    r.signal(sleeper, "CONT");
    eprintln!(
        "SIGCONT replica {sleeper} after {:.1?}; taken meanwhile: {taken:?}",
        stopped_at.elapsed()
    );

    // Until the ledger is the sandbox's truth.
    let until = Instant::now() + Duration::from_secs(150);
    loop {
        r.assert_alive();
        let bad = mismatches(&pool, &sandbox, &payments).await;
        if bad.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "not settled after {:.1?}: {} mismatches, e.g.\n{}\n{}",
            started.elapsed(),
            bad.len(),
            bad.iter().take(15).cloned().collect::<Vec<_>>().join("\n"),
            r.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_after = started.elapsed();
    // A few more ticks: nothing may move once settled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        let status = r.stop(i, Duration::from_secs(40));
        assert!(
            status.success(),
            "replica {i} exited {status:?}\n{}",
            r.all_logs()
        );
    }
    let bad = mismatches(&pool, &sandbox, &payments).await;
    assert!(bad.is_empty(), "after the stop: {bad:?}");

    // The stalled passes wrote nothing to an account after it was taken from them.
    for (account, (_, _, before)) in &taken {
        let after = events_of_runs(&pool, &stalled_runs, account).await;
        assert_eq!(
            after,
            *before,
            "the stopped replica's stalled passes wrote {} event(s) to {account} after another \
             replica had taken it",
            after - before
        );
    }
    let stalled_log = std::fs::read_to_string(&stalled_log).unwrap();
    let fenced_lines = stalled_log.matches("fenced out").count();
    let clock_lines = stalled_log.matches("could not be renewed in time").count();
    assert!(
        fenced_lines + clock_lines > 0,
        "the stopped replica never noticed it had lost its lanes:\n{stalled_log}"
    );

    // Every log: no panic.
    for l in &r.logs {
        let text = std::fs::read_to_string(l).unwrap();
        assert!(!text.contains("panicked"), "{}:\n{text}", l.display());
    }

    // History, reversals, rate limits.
    let events = assert_history(&pool).await;
    let stats = sandbox.stats();
    let mut reversals = 0;
    for (_, app, _) in QF {
        let twice = sandbox.state().qfpay_cancelled_more_than_once(app);
        assert!(
            twice.is_empty(),
            "reversed/closed more than once: {twice:?}"
        );
    }
    for p in payments.iter().filter(|p| p.account != EC) {
        let v = sandbox
            .state()
            .qfpay_payment(p.merchant, &p.out_trade_no)
            .unwrap();
        reversals += v.reversal_calls + v.close_calls;
        if p.outcome != BulkOutcome::NeverCompletes {
            assert_eq!(
                v.reversal_calls + v.close_calls,
                0,
                "{} was cancelled though it completed",
                p.out_trade_no
            );
        }
    }
    let per_window: BTreeMap<&str, u64> = QF
        .iter()
        .map(|(name, app, _)| {
            (
                *name,
                stats.max_qfpay_calls_in(app, Duration::from_secs(60)),
            )
        })
        .collect();
    eprintln!(
        "settled after {settled_after:.1?}, {events} events; QFPay calls {} (most per merchant \
         in 60 s: {per_window:?}), ECPay calls {}, 429s {}, 403s {}; reversals/closes sent \
         {reversals} for {stuck} stuck payments (reversal calls {}, close calls {}); stopped \
         replica's log: {fenced_lines} fenced-out line(s), {clock_lines} lease-clock line(s); \
         most lanes one replica held with all three live: {most_held_by_one}; lanes per holder \
         in phase 1: {lanes_held_by:?}",
        stats.total(true),
        stats.total(false),
        stats.http_429,
        stats.http_403,
        stats.count(CallKind::QfpayReversal),
        stats.count(CallKind::QfpayClose),
    );
    assert_eq!(stats.qfpay_call_times_dropped, 0);
    for (name, n) in &per_window {
        assert!(*n <= 400, "{name}: {n} QFPay calls in one 60-second window");
    }
    assert_eq!(stats.http_429, 0, "QFPay answered 429");
    assert_eq!(stats.http_403, 0, "ECPay answered 403");
    assert_eq!(
        reversals as usize, stuck,
        "one reversal or close per stuck payment"
    );

    // The lanes were shared: with all three live, at least two replicas held lanes, none held
    // every lane, and none held more than its share for longer than a beat and a unit (a
    // replica that started before the others had beaten takes lanes beyond it, and gives the
    // excess back between units and between the pages of a window); and several replicas wrote.
    let writers: Vec<(String, i64)> = sqlx::query(
        "SELECT r.owner, COUNT(*) AS n FROM events e JOIN runs r ON r.id = e.run_id
         GROUP BY r.owner ORDER BY r.owner",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get("owner"), row.get("n")))
    .collect();
    eprintln!("events per writer: {writers:?}; replicas: {holders:?}");
    assert!(
        lanes_held_by.len() >= 2,
        "one replica held every lane while the others idled: {lanes_held_by:?}"
    );
    eprintln!(
        "phase 1: at most {most_held_by_one} lanes held by one replica (share {share}); \
         longest stretch over the share {longest_over:.1?}"
    );
    assert!(
        most_held_by_one < ACCOUNTS,
        "one replica held all {ACCOUNTS} lanes at once while all three were live"
    );
    assert!(
        longest_over <= Duration::from_secs(6),
        "a replica held more than its share of {share} lanes for {longest_over:?} (it gives the \
         excess back after the unit or window page in flight, once its next beat, every 2 s, \
         counts the others)"
    );
    assert!(
        writers.len() >= 2,
        "a single replica wrote everything: {writers:?}"
    );
    pool.close().await;
    sandbox.shutdown().await;
    eprintln!("replica test done in {:.1?}", started.elapsed());
}
