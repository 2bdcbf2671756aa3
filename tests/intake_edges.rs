//! The edges of intake (issue 14 item 6), through the binary: one gateway id on two rows, dates
//! and amounts no gateway can have, import files that cannot be read, usage errors, and the
//! README's promises about them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("payrecon.toml"),
            format!(
                r#"
[ledger]
path = "{}"

[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "https://test-openapi-hk.qfapi.com"
app_code = "APPCODE"
client_key = "not-a-real-key"

[[accounts]]
name = "tw"
provider = "ecpay"
base_url = "https://ecpayment-stage.ecpay.com.tw"
merchant_id = "3002607"
hash_key = "pwFHCqoQZGmho4w6"
hash_iv = "EkRm7iFT261dpevs"
"#,
                dir.path().join("ledger.db").display()
            ),
        )
        .unwrap();
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
        Command::new(BIN)
            .arg("--config")
            .arg(self.path("payrecon.toml"))
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    fn import(&self, file: &Path) -> Output {
        self.run(&["import", file.to_str().unwrap()])
    }

    /// How many payments the ledger holds.
    fn count(&self) -> usize {
        let o = self.run(&["ledger", "list", "--format", "json"]);
        assert!(o.status.success(), "{}", err(&o));
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
            .unwrap()
            .len()
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn refused(o: &Output, code: i32, needles: &[&str]) {
    let e = err(o);
    assert_eq!(o.status.code(), Some(code), "stderr:\n{e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} missing from:\n{e}");
    }
}

fn now_local() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8) - chrono::Duration::minutes(5))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[test]
fn one_gateway_id_on_two_rows_of_a_file_is_refused_with_both_lines_named() {
    let env = Env::new();
    let t = now_local();
    let qf = env.file(
        "qf.jsonl",
        &format!(
            r#"{{"account":"hk","out_trade_no":"A1","syssn":"20261122000200020061752831","pay_type":"800101","amount":1000,"currency":"HKD","created_at":"{t}"}}
{{"account":"hk","out_trade_no":"A2","syssn":"20261122000200020061752999","pay_type":"800101","amount":1000,"currency":"HKD","created_at":"{t}"}}
{{"account":"hk","out_trade_no":"A3","syssn":"20261122000200020061752831","pay_type":"800101","amount":2000,"currency":"HKD","created_at":"{t}"}}
"#
        ),
    );
    refused(
        &env.import(&qf),
        65,
        &[
            "line 3: syssn: \"20261122000200020061752831\" appears twice for account hk (first on line 1)",
            "nothing was imported",
        ],
    );
    let ec = env.file(
        "ec.csv",
        &format!(
            "account,out_trade_no,trade_no,amount,currency,created_at\n\
             tw,E1,2611221234567890,500,TWD,{t}\n\
             tw,E2,2611221234567890,600,TWD,{t}\n"
        ),
    );
    refused(
        &env.import(&ec),
        65,
        &["line 3: trade_no: \"2611221234567890\" appears twice for account tw (first on line 2)"],
    );
    assert_eq!(env.count(), 0, "nothing may be written");
}

#[test]
fn dates_and_amounts_no_gateway_can_have_are_refused() {
    let env = Env::new();
    let row = |created: &str, amount: &str| {
        format!(
            r#"{{"account":"hk","out_trade_no":"B1","pay_type":"800101","amount":{amount},"currency":"HKD","created_at":"{created}"}}"#
        )
    };
    let f = env.file("epoch.jsonl", &row("1970-01-01 08:00:00", "1000"));
    refused(
        &env.import(&f),
        65,
        &["line 1: created_at: \"1970-01-01 08:00:00\" is more than 366 days ago"],
    );
    let year_ago = (chrono::Utc::now() - chrono::Duration::days(367)).to_rfc3339();
    let o = env.run(&[
        "track",
        "--account",
        "hk",
        "--out-trade-no",
        "B2",
        "--amount",
        "1000",
        "--currency",
        "HKD",
        "--created-at",
        &year_ago,
    ]);
    refused(&o, 65, &["--created-at:", "more than 366 days ago"]);

    // docs/PROTOCOLS.md §Q4.3: txamt is Int(11), so 11 digits at most.
    let f = env.file("big.jsonl", &row(&now_local(), "100000000000"));
    refused(
        &env.import(&f),
        65,
        &[
            "line 1: amount: 100000000000 is more than QFPay accepts (txamt is Int(11): at most 99999999999 minor units)",
        ],
    );
    assert_eq!(env.count(), 0);
    let f = env.file("largest.jsonl", &row(&now_local(), "99999999999"));
    let o = env.import(&f);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(env.count(), 1);
}

#[test]
fn an_import_file_that_cannot_be_read_exits_66_and_says_why() {
    let env = Env::new();
    refused(
        &env.import(&env.path("missing.jsonl")),
        66,
        &["missing.jsonl: no such file"],
    );
    let dir = env.path("dir.jsonl");
    std::fs::create_dir(&dir).unwrap();
    refused(&env.import(&dir), 66, &["dir.jsonl: is a directory"]);
    // A file whose reads fail (as on a bad sector): /proc/self/mem cannot be read at offset 0,
    // for root too (CI runs as root, for whom a mode 000 file is readable).
    let broken = env.path("broken.jsonl");
    std::os::unix::fs::symlink("/proc/self/mem", &broken).unwrap();
    refused(
        &env.import(&broken),
        66,
        &["broken.jsonl: cannot read: Input/output error"],
    );
    let csv = env.path("broken.csv");
    std::os::unix::fs::symlink("/proc/self/mem", &csv).unwrap();
    refused(&env.import(&csv), 66, &["broken.csv: cannot read:"]);
    assert_eq!(env.count(), 0);
}

#[test]
fn the_readme_documents_every_exit_code_and_the_amount_unit() {
    let env = Env::new();
    // A usage error is clap's exit 2.
    let o = env.run(&["import"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let o = env.run(&["ledger", "list", "--format", "xlsx"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let codes = readme
        .lines()
        .skip_while(|l| !l.starts_with("Exit codes:"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for code in ["`0`", "`1`", "`2`", "`65`", "`66`", "`75`", "`78`"] {
        assert!(
            codes.contains(code),
            "README exit codes lack {code}: {codes}"
        );
    }
    // `track --help` and the README agree on what an amount is.
    let help = env.run(&["track", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("TWD and JPY have no minor unit"));
    // The bullet and its continuation lines.
    let amount = readme
        .lines()
        .skip_while(|l| !l.starts_with("- `amount`"))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("  "))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        amount.contains("TWD") && amount.contains("JPY"),
        "README's amount line must name the currencies without minor units: {amount}"
    );
}
