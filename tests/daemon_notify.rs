//! `payrecon run` speaks the systemd notify protocol: the test plays systemd's part with a Unix
//! datagram socket in a temp dir (`NOTIFY_SOCKET`) and a 2 s watchdog (`WATCHDOG_USEC`), and
//! checks READY=1, periodic WATCHDOG=1, and STOPPING=1 plus exit 0 after SIGTERM.
//!
//! systemd sets `WATCHDOG_PID` to the service's main pid, and the sd-notify crate ignores the
//! watchdog when that pid is not its own. The child is started through `sh -c 'WATCHDOG_PID=$$
//! exec payrecon …'`: `exec` keeps the shell's pid, so the variable holds payrecon's own pid,
//! exactly as under systemd.

mod pg_support;

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Kills the daemon if the test fails before it exits on its own.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Receives notify datagrams until one contains `line` or `deadline` passes; returns every
/// line received meanwhile (`seen` keeps the history for failure messages).
fn wait_for(sock: &UnixDatagram, line: &str, deadline: Instant, seen: &mut Vec<String>) -> bool {
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == line);
                seen.extend(msg.lines().map(str::to_string));
                if hit {
                    return true;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    false
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("payrecon.log")).unwrap_or_default()
}

#[test]
fn run_notifies_ready_pings_the_watchdog_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("payrecon.toml");
    // One QFPay account at a loopback port nobody listens on: the daemon builds its clients,
    // and with an empty ledger no pass ever calls it.
    std::fs::write(
        &config,
        format!(
            r#"
[ledger]
{}

[schedule]
reconcile = "*/2 * * * * *"

[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "http://127.0.0.1:9"
app_code = "TESTAPPCODE"
client_key = "test-client-key"
timezone = "+08:00"
"#,
            pg_support::ledger_store_toml(&dir.path().join("ledger.db"))
        ),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(dir.path().join("payrecon.log")).unwrap();

    let child = Command::new("/bin/sh")
        .args(["-c", r#"WATCHDOG_PID=$$ exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_payrecon"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let pid = daemon.0.id().to_string();
    let mut seen = Vec::new();

    // A debug build on a busy CI machine may take a moment to open and migrate the ledger.
    let ready = wait_for(
        &sock,
        "READY=1",
        Instant::now() + Duration::from_secs(20),
        &mut seen,
    );
    assert!(
        ready,
        "no READY=1; got {seen:?}; log:\n{}",
        log_of(dir.path())
    );

    // Pings every WATCHDOG_USEC/2 = 1 s: two of them within 4 s show they repeat.
    let deadline = Instant::now() + Duration::from_secs(4);
    for n in 1..=2 {
        assert!(
            wait_for(&sock, "WATCHDOG=1", deadline, &mut seen),
            "WATCHDOG=1 #{n} missing; got {seen:?}; log:\n{}",
            log_of(dir.path())
        );
    }

    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success(), "kill -TERM {pid} failed");
    assert!(
        wait_for(
            &sock,
            "STOPPING=1",
            Instant::now() + Duration::from_secs(5),
            &mut seen
        ),
        "no STOPPING=1 after SIGTERM; got {seen:?}; log:\n{}",
        log_of(dir.path())
    );
    let status = wait_exit(&mut daemon.0, Duration::from_secs(5));
    let log = log_of(dir.path());
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "payrecon run did not exit 0 within 5 s of SIGTERM; log:\n{log}"
    );
    assert!(
        seen.iter().position(|l| l == "READY=1") < seen.iter().position(|l| l == "STOPPING=1"),
        "READY=1 must come before STOPPING=1: {seen:?}"
    );
    // Not a terminal: plain text without colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the log:\n{log}");
    assert!(log.contains("payrecon daemon started"), "log:\n{log}");
}
