//! What an operator reads about a rate limit: the pause runs from when the 429 arrived (not
//! from the start of the chunk, which may be long gone), and the wait is said in words.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
const KEY: &str = "TESTCLIENTKEY0000000000000000000";
/// How long the gateway takes before it answers 429.
const SLOW: Duration = Duration::from_secs(3);

/// A QFPay that answers every call, after SLOW, with 429 and `Retry-After: 120`.
fn slow_rate_limiting_gateway() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = stream.read(&mut buf);
                std::thread::sleep(SLOW);
                let _ = stream.write_all(
                    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 120\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    url
}

#[test]
fn a_429_pauses_the_account_from_its_arrival_and_the_log_says_the_wait_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[ledger]
path = "{}"
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{}"
app_code = "APP"
client_key = "{KEY}"
retry_for = "100ms"
"#,
            dir.path().join("l.db").display(),
            slow_rate_limiting_gateway()
        ),
    )
    .unwrap();
    let payrecon = |args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    };
    let track = payrecon(&[
        "track",
        "--account",
        "hk",
        "--out-trade-no",
        "R1",
        "--amount",
        "1000",
        "--currency",
        "HKD",
        "--syssn",
        "20261122000100020000000001",
    ]);
    assert!(
        track.status.success(),
        "{}",
        String::from_utf8_lossy(&track.stderr)
    );

    let before = Utc::now();
    let pass = payrecon(&["reconcile", "--once", "--all"]);
    let log = String::from_utf8_lossy(&pass.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("rate limited: pausing the account"))
        .unwrap_or_else(|| panic!("no pause logged:\n{log}"));
    assert!(line.contains("retry after 2m"), "{line}");
    assert!(!line.contains("Some("), "Debug form: {line}");

    let stats = payrecon(&["ledger", "stats"]);
    let stats = String::from_utf8_lossy(&stats.stdout);
    let until = stats
        .lines()
        .find_map(|l| l.strip_prefix("paused account: hk until "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        .unwrap_or_else(|| panic!("no pause in the ledger:\n{stats}"));
    // The 429 arrived SLOW after the pass began; the 120 s count from then.
    let earliest =
        before + chrono::Duration::from_std(SLOW).unwrap() + chrono::Duration::seconds(120);
    assert!(
        until >= earliest - chrono::Duration::milliseconds(500),
        "paused until {until}, earlier than the 429's arrival + 120 s ({earliest})"
    );
}
