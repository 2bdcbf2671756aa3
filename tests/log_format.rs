//! Log lines as journald and log shippers receive them: `payrecon reconcile --once` on an empty
//! ledger logs one INFO line ("reconcile pass completed"); stderr goes to a file.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs one pass with stderr in a file and returns that file's text.
fn pass_log(dir: &Path, journal_stream: Option<&str>, extra: &[&str]) -> String {
    let config = dir.join("payrecon.toml");
    std::fs::write(
        &config,
        format!("[ledger]\npath = \"{}\"\n", dir.join("ledger.db").display()),
    )
    .unwrap();
    let log_path = dir.join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_payrecon"));
    cmd.arg("--config").arg(&config).args(extra);
    cmd.args(["reconcile", "--once"])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(v) = journal_stream {
        cmd.env("JOURNAL_STREAM", v);
    }
    let status = cmd.status().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "reconcile --once failed:\n{text}");
    assert!(
        text.contains("reconcile pass completed"),
        "no log line:\n{text}"
    );
    text
}

/// systemd's `JOURNAL_STREAM` value for a file: `device:inode`.
fn stream_id(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

#[test]
fn under_journald_lines_carry_a_priority_and_no_timestamp_or_colour() {
    let dir = tempfile::tempdir().unwrap();
    // The file must exist first so its inode is known; pass_log truncates, keeping the inode.
    std::fs::write(dir.path().join("stderr.log"), "").unwrap();
    let id = stream_id(&dir.path().join("stderr.log"));
    let text = pass_log(dir.path(), Some(&id), &[]);
    for line in text.lines() {
        assert!(line.starts_with("<6>"), "no <6> priority: {line:?}");
        assert!(!line.contains('\u{1b}'), "ANSI escape: {line:?}");
        assert!(
            !line.contains(&format!("{}-", chrono_year())),
            "a timestamp of our own: {line:?}"
        );
    }
}

#[test]
fn an_inherited_journal_stream_for_another_file_keeps_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let text = pass_log(dir.path(), Some("1:1"), &[]);
    let line = text.lines().next().unwrap();
    assert!(
        !line.starts_with('<'),
        "priority prefix off journald: {line:?}"
    );
    assert!(
        line.starts_with(&format!("{}-", chrono_year())),
        "no timestamp: {line:?}"
    );
    assert!(
        !line.contains('\u{1b}'),
        "ANSI escape off a terminal: {line:?}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = pass_log(dir.path(), None, &["--log-format", "json"]);
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert_eq!(v["level"], "INFO", "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
    }
}

/// This year, as the log timestamps (UTC) start with it.
fn chrono_year() -> i32 {
    use chrono::Datelike;
    chrono::Utc::now().year()
}

/// Runs payrecon with stderr in a file that JOURNAL_STREAM names, as systemd connects it.
fn under_journal(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let log_path = dir.join("journal.log");
    std::fs::write(&log_path, "").unwrap();
    let id = stream_id(&log_path);
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_payrecon"))
        .args(args)
        .env("JOURNAL_STREAM", id)
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    (status.code(), std::fs::read_to_string(&log_path).unwrap())
}

#[test]
fn an_invalid_configuration_is_reported_at_priority_error_under_journald() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("payrecon.toml");
    std::fs::write(
        &config,
        "[ledger]\npath = \"/tmp/x.db\"\n[reconcile]\nchunk_size = 0\n[[accounts]]\nname = \"hk\"\nprovider = \"nope\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for command in [&["config", "check"][..], &["run"], &["reconcile", "--once"]] {
        let args: Vec<&str> = ["--config", config]
            .iter()
            .chain(command)
            .copied()
            .collect();
        let (code, text) = under_journal(dir.path(), &args);
        assert_eq!(code, Some(78), "{command:?}: {text}");
        assert!(
            text.lines().count() >= 2,
            "{command:?}: no problem lines: {text}"
        );
        for line in text.lines() {
            assert!(
                line.starts_with("<3>"),
                "{command:?}: not at error: {line:?}"
            );
        }
    }
}

#[test]
fn command_errors_and_usage_errors_carry_priority_error_under_journald() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("payrecon.toml");
    std::fs::write(
        &config,
        format!(
            "[ledger]\npath = \"{}\"\n",
            dir.path().join("l.db").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, text) = under_journal(
        dir.path(),
        &[
            "--config",
            config,
            "reconcile",
            "--once",
            "--account",
            "nope",
        ],
    );
    assert_eq!(code, Some(1), "{text}");
    let failure = text
        .lines()
        .find(|l| l.contains("nope"))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert!(failure.starts_with("<3>payrecon: "), "{failure:?}");

    let (code, text) = under_journal(dir.path(), &["--config", config, "run", "--no-such-flag"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(!text.trim().is_empty());
    for line in text.lines() {
        assert!(
            line.starts_with("<3>"),
            "usage error not at error: {line:?}"
        );
    }
}
