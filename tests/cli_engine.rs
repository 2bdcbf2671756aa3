//! `pay`, `reconcile --once` and `run` driven through the binary against scripted gateways.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_qfpay::{FakeQfpay, FakeRecord};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");

/// A config in `dir` for the QFPay account `hk` at `qf_url`. Every config written in one `dir`
/// names the same ledger (SQLite `dir/l.db`, or one PostgreSQL database with
/// `PAYRECON_TEST_STORE=postgres`).
fn config(dir: &std::path::Path, qf_url: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    let store_file = dir.join("store.toml");
    let store = std::fs::read_to_string(&store_file).unwrap_or_else(|_| {
        let s = pg_support::ledger_store_toml(&dir.join("l.db"));
        std::fs::write(&store_file, &s).unwrap();
        s
    });
    std::fs::write(
        &path,
        format!(
            r#"
[ledger]
{store}
{extra}
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{qf_url}"
app_code = "APP"
client_key = "{QF_KEY}"
retry_for = "300ms"
"#
        ),
    )
    .unwrap();
    path
}

fn payrecon(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(QF_KEY), "the client key leaked: {all}");
    out
}

fn list(cfg: &std::path::Path) -> Vec<serde_json::Value> {
    let out = payrecon(cfg, &["ledger", "list", "--format", "json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn pay_registers_first_then_records_the_answer_and_prints_the_link() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", "/trade/v1/payment")
        .match_body(mockito::Matcher::Regex("pay_type=801512".into()))
        .with_body(r#"{"respcd":"0000","resperr":"ok","syssn":"20261122000100020000000042","pay_url":"https://qr.example/abc","txamt":"1500","txcurrcd":"HKD","out_trade_no":"W1","pay_type":"801512"}"#)
        .create_async()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &server.url(), "");
    let out = payrecon(
        &cfg,
        &[
            "pay",
            "--account",
            "hk",
            "--amount",
            "1500",
            "--currency",
            "HKD",
            "--pay-type",
            "801512",
            "--out-trade-no",
            "W1",
            "--expires",
            "30m",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pay_url: https://qr.example/abc"));
    m.assert_async().await;
    let rows = list(&cfg);
    assert_eq!(
        rows[0]["state"], "in_progress",
        "a created order is not yet paid"
    );
    assert_eq!(rows[0]["provider_ref"], "20261122000100020000000042");

    // A gateway that never answers still leaves the payment tracked.
    let dead = config(dir.path(), "http://127.0.0.1:9", "");
    let out = payrecon(
        &dead,
        &[
            "pay",
            "--account",
            "hk",
            "--amount",
            "900",
            "--currency",
            "HKD",
            "--pay-type",
            "801512",
            "--out-trade-no",
            "W2",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is registered, but the gateway call failed")
    );
    let rows = list(&cfg);
    assert_eq!(rows[1]["out_trade_no"], "W2");
    assert_eq!(rows[1]["state"], "pending");

    let bad = payrecon(
        &cfg,
        &[
            "pay",
            "--account",
            "hk",
            "--amount",
            "900",
            "--currency",
            "HKD",
            "--pay-type",
            "801512",
            "--expires",
            "3m",
        ],
    );
    assert_eq!(bad.status.code(), Some(65));
    assert_eq!(list(&cfg).len(), 2, "an invalid request registers nothing");
}

#[tokio::test]
async fn reconcile_once_settles_due_payments_and_prints_a_summary() {
    let t = minutes_ago(1);
    let fake = FakeQfpay::start(vec![
        FakeRecord::new(
            "20261122000100020000000001",
            "R1",
            "800101",
            1000,
            &["0000"],
            t,
        ),
        FakeRecord::new(
            "20261122000100020000000002",
            "R2",
            "800101",
            1000,
            &["1205"],
            t,
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &fake.url(), "");
    for (no, syssn) in [
        ("R1", "20261122000100020000000001"),
        ("R2", "20261122000100020000000002"),
    ] {
        let out = payrecon(
            &cfg,
            &[
                "track",
                "--account",
                "hk",
                "--out-trade-no",
                no,
                "--amount",
                "1000",
                "--currency",
                "HKD",
                "--syssn",
                syssn,
                "--pay-type",
                "800101",
            ],
        );
        assert!(out.status.success());
    }
    let dry = payrecon(&cfg, &["reconcile", "--once", "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run (nothing written)"));
    assert!(
        list(&cfg).iter().all(|r| r["state"] == "pending"),
        "--dry-run writes nothing"
    );

    let out = payrecon(&cfg, &["reconcile", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 claimed") && stdout.contains("2 finalized"),
        "{stdout}"
    );
    let states: Vec<_> = list(&cfg)
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["succeeded", "failed"]);

    let unknown = payrecon(&cfg, &["reconcile", "--once", "--account", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("no configured account is named \"nope\"")
    );
}

#[tokio::test]
async fn the_daemon_reconciles_on_schedule_and_stops_cleanly_on_sigterm() {
    let t = minutes_ago(1);
    let fake = FakeQfpay::start(vec![FakeRecord::new(
        "20261122000100020000000007",
        "D1",
        "800101",
        1000,
        &["1143", "0000"],
        t,
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &fake.url(),
        "[schedule]\nreconcile = \"* * * * * *\"\n",
    );
    let out = payrecon(
        &cfg,
        &[
            "track",
            "--account",
            "hk",
            "--out-trade-no",
            "D1",
            "--amount",
            "1000",
            "--currency",
            "HKD",
            "--syssn",
            "20261122000100020000000007",
        ],
    );
    assert!(out.status.success());
    // A 1143 is asked again 4 s later; a 1 s cron ticks until then.
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while list(&cfg)[0]["state"] != "succeeded" {
        assert!(
            Instant::now() < deadline,
            "the daemon did not settle the payment"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("payrecon daemon stopped"), "{stderr}");
    assert!(!stderr.contains(QF_KEY));
    assert_eq!(fake.query_calls(), 2, "one call per due check, no overlap");
}
