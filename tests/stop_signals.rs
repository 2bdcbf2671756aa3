//! A stop request (SIGTERM, as systemd sends at `systemctl stop` or shutdown) during
//! `reconcile --once`: the pass stops between chunks, releases its leases and exits 0, so
//! stopping payrecon-reconcile.service does not mark the unit failed.

mod pg_support;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
const KEY: &str = "TESTCLIENTKEY0000000000000000000";

/// A gateway that accepts connections and never answers: every call lasts request_timeout.
fn silent_gateway() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = stream.read(&mut buf);
            held.push(stream);
        }
    });
    url
}

#[test]
fn sigterm_during_a_one_off_pass_exits_0_and_leaves_the_rest_for_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[ledger]
{}
[reconcile]
chunk_size = 1
concurrency = 1
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{}"
app_code = "APP"
client_key = "{KEY}"
request_timeout = "1s"
retry_for = "100ms"
"#,
            pg_support::ledger_store_toml(&dir.path().join("l.db")),
            silent_gateway()
        ),
    )
    .unwrap();
    let rows: String = (0..20)
        .map(|i| {
            format!(
                "{{\"account\":\"hk\",\"kind\":\"payment\",\"out_trade_no\":\"S{i}\",\"syssn\":\"202611220001000200000000{i:02}\",\"pay_type\":\"800101\",\"amount\":1000,\"currency\":\"HKD\"}}\n"
            )
        })
        .collect();
    let file = dir.path().join("p.jsonl");
    std::fs::write(&file, rows).unwrap();
    let import = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("import")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["reconcile", "--once", "--all", "--strategy", "per-payment"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 20 payments at about a second each: the pass is well under way after 2.5 s.
    std::thread::sleep(Duration::from_millis(2500));
    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the pass did not stop promptly"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("stopped by a signal"),
        "no word of the stop: {stderr}"
    );
    let claimed: u32 = stdout
        .split(" claimed")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert!(
        claimed < 20,
        "the pass was not interrupted (claimed {claimed}): {stdout}"
    );
}
