//! The intake and inspection commands, driven through the binary as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
const CLIENT_KEY: &str = "QF-CLIENT-KEY-DO-NOT-PRINT";
const HASH_KEY: &str = "pwFHCqoQZGmho4w6";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            r#"
[ledger]
path = "{ledger}"

[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "https://test-openapi-hk.qfapi.com"
app_code = "APPCODE"
client_key = "{CLIENT_KEY}"

[[accounts]]
name = "tw"
provider = "ecpay"
base_url = "https://ecpayment-stage.ecpay.com.tw"
merchant_id = "3002607"
hash_key = "{HASH_KEY}"
hash_iv = "EkRm7iFT261dpevs"
"#,
            ledger = dir.path().join("ledger.db").display()
        );
        std::fs::write(dir.path().join("payrecon.toml"), cfg).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.path("payrecon.toml"))
            .args(args)
            .env_remove("RUST_LOG")
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !all.contains(CLIENT_KEY) && !all.contains(HASH_KEY),
            "secret in output: {all}"
        );
        out
    }

    fn list_json(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["ledger", "list", "--format", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GOOD: &str = r#"{"account":"hk","kind":"payment","out_trade_no":"A1","syssn":"20191227000200020061752831","pay_type":"800101","amount":1000,"currency":"HKD","created_at":"2026-11-22 10:00:00"}
{"account":"hk","out_trade_no":"A2","pay_type":"800108","amount":2500,"currency":"HKD","created_at":"2026-11-22T01:00:00Z"}

{"account":"tw","out_trade_no":"T1","trade_no":"2311011234567890","amount":500,"currency":"TWD"}
"#;

#[test]
fn an_imported_file_shows_up_as_pending_payments_in_json() {
    let env = Env::new();
    let file = env.file("sample.jsonl", GOOD);
    let out = env.run(&["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("imported 3 new payment(s)"));

    let rows = env.list_json();
    assert_eq!(rows.len(), 3);
    for key in [
        "id",
        "account",
        "provider",
        "kind",
        "out_trade_no",
        "provider_ref",
        "pay_type",
        "amount",
        "currency",
        "state",
        "provider_code",
        "attempts",
        "next_check_at",
        "created_at",
        "updated_at",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    assert!(rows.iter().all(|r| r["state"] == "pending"));
    assert_eq!(rows[0]["provider_ref"], "20191227000200020061752831");
    // Provider-local time (+08:00) is stored as UTC.
    assert_eq!(rows[0]["created_at"], "2026-11-22T02:00:00.000Z");
    assert_eq!(rows[2]["provider"], "ecpay");
    assert_eq!(rows[2]["amount"], 500);
}

#[test]
fn importing_the_same_file_twice_adds_nothing_and_says_so() {
    let env = Env::new();
    let file = env.file("sample.jsonl", GOOD);
    assert!(
        env.run(&["import", file.to_str().unwrap()])
            .status
            .success()
    );
    let out = env.run(&["import", file.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("imported 0 new payment(s); 3 already in the ledger"),
        "{stdout}"
    );
    assert!(stdout.contains("line 4: already tracked"), "{stdout}");
    assert_eq!(env.list_json().len(), 3);
}

#[test]
fn a_file_with_bad_rows_is_rejected_whole_with_every_line_named() {
    let env = Env::new();
    let file = env.file(
        "bad.jsonl",
        r#"{"account":"hk","out_trade_no":"OK1","amount":100,"currency":"HKD"}
{"account":"hk","out_trade_no":"B1","amount":10.5,"currency":"HKD"}
{"account":"nowhere","out_trade_no":"B2","amount":100,"currency":"HKD"}
{"account":"hk","out_trade_no":"B3","currency":"HKD"}
{"account":"hk","out_trade_no":"B4","amount":100,"currency":"HK"}
{"account":"hk","out_trade_no":"B5","amount":100,"currency":"HKD","created_at":"yesterday"}
{"account":"tw","out_trade_no":"ABCDEFGHIJKLMNOPQRSTU","amount":100,"currency":"TWD"}
{"account":"hk","out_trade_no":"OK1","amount":100,"currency":"HKD"}
{"account":"hk" "out_trade_no":"B8"}
"#,
    );
    let out = env.run(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let err = text(&out.stderr);
    for expected in [
        "line 2: amount: 10.5 is not a whole number",
        "line 3: account: \"nowhere\" is not a configured account",
        "line 4: amount: missing",
        "line 5: currency: \"HK\" is not an ISO 4217 currency code",
        "line 6: created_at: \"yesterday\"",
        "line 7: out_trade_no: longer than 20 characters",
        "line 8: out_trade_no: \"OK1\" appears twice for account hk (first on line 1)",
        "line 9: record: not valid JSON",
        "nothing was imported",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        env.list_json().is_empty(),
        "a rejected file must write nothing"
    );
}

#[test]
fn csv_files_use_the_same_columns_and_count_the_header_as_line_one() {
    let env = Env::new();
    let good = env.file(
        "p.csv",
        "account,kind,out_trade_no,syssn,pay_type,amount,currency,created_at\n\
         hk,payment,C1,,800108,1200,HKD,2026-11-22 09:00:00\n\
         hk,refund,C1R,,,300,HKD,\n",
    );
    assert!(
        env.run(&["import", good.to_str().unwrap()])
            .status
            .success()
    );
    let rows = env.list_json();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["kind"], "refund");

    let bad = env.file(
        "q.csv",
        "account,out_trade_no,amount,currency\nhk,C2,12x,HKD\nhk,C3,5\n",
    );
    let out = env.run(&["import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let err = text(&out.stderr);
    assert!(err.contains("line 2: amount"), "{err}");
    assert!(err.contains("line 3: record: malformed CSV"), "{err}");
}

#[test]
fn track_registers_one_payment_and_names_the_bad_flag() {
    let env = Env::new();
    let ok = env.run(&[
        "track",
        "--account",
        "hk",
        "--out-trade-no",
        "T-1",
        "--amount",
        "1500",
        "--currency",
        "HKD",
        "--pay-type",
        "800108",
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("tracking payment 1"));
    let again = env.run(&[
        "track",
        "--account",
        "hk",
        "--out-trade-no",
        "T-1",
        "--amount",
        "1500",
        "--currency",
        "HKD",
    ]);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("already tracked"));
    let conflict = env.run(&[
        "track",
        "--account",
        "hk",
        "--out-trade-no",
        "T-1",
        "--amount",
        "999",
        "--currency",
        "HKD",
    ]);
    assert_eq!(conflict.status.code(), Some(65));
    assert!(text(&conflict.stderr).contains("amount is 15.00 HKD in the ledger"));

    let bad = env.run(&[
        "track",
        "--account",
        "hk",
        "--out-trade-no",
        "T-2",
        "--amount",
        "-5",
        "--currency",
        "HKD",
    ]);
    assert_eq!(bad.status.code(), Some(65));
    assert!(
        text(&bad.stderr).contains("--amount"),
        "{}",
        text(&bad.stderr)
    );
    assert_eq!(env.list_json().len(), 1);

    let show = env.run(&["ledger", "show", "T-1"]);
    assert!(text(&show.stdout).contains("registered"));
}

#[test]
fn the_ledger_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    assert!(env.run(&["migrate"]).status.success());
    let mode = std::fs::metadata(env.path("ledger.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn config_check_exits_78_and_names_the_missing_secret() {
    let env = Env::new();
    let cfg = std::fs::read_to_string(env.path("payrecon.toml"))
        .unwrap()
        .replace(&format!("client_key = \"{CLIENT_KEY}\""), "");
    let path = env.file("broken.toml", &cfg);
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains("accounts[0] (hk).client_key: missing"),
        "{err}"
    );
    assert!(!err.contains(HASH_KEY));

    let ok = env.run(&["config", "check"]);
    assert!(ok.status.success());
    assert!(text(&ok.stdout).contains("client_key ********"));
}

#[test]
fn environment_variables_override_the_file() {
    let env = Env::new();
    let other = env.path("other.db");
    let out = Command::new(BIN)
        .args([
            "--config",
            env.path("payrecon.toml").to_str().unwrap(),
            "migrate",
        ])
        .env("PAYRECON__LEDGER__PATH", &other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(Path::new(&other).exists());
    assert!(!env.path("ledger.db").exists());
}

#[test]
fn output_into_a_closed_pipe_is_not_an_error() {
    use std::process::Stdio;
    let env = Env::new();
    let file = env.file("sample.jsonl", GOOD);
    assert!(
        env.run(&["import", file.to_str().unwrap()])
            .status
            .success()
    );
    for args in [
        vec!["ledger", "show", "A1"],
        vec!["ledger", "list", "--format", "json"],
        vec!["ledger", "stats"],
    ] {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(env.path("payrecon.toml"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before anything is read, like `| head -0`.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}
