//! Secrets and exposure (issue 8 item 5): full passes at `trace` log level, through the binary,
//! with the right keys and with wrong ones, and every CLI view of the ledger: no client key,
//! hash key or hash IV appears on stderr or stdout, in any ledger row, or anywhere in the
//! ledger's files; the ledger is created 0600. TLS verification has no configuration switch
//! (tests/bad_input.rs refuses the plausible keys as unknown fields); the sandbox refuses a
//! non-loopback bind unless forced (tests/sandbox_faults.rs,
//! `a_non_loopback_address_is_refused_unless_forced`).

mod reliability_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use reliability_support::*;
use sqlx::{Column, Row, TypeInfo, ValueRef};

const WRONG: [&str; 3] = [
    "WRONGCLIENTKEY000000000000000000",
    "wrongHashKey0000",
    "wrongHashIV00000",
];

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !text.contains(s),
            "{what} contains a secret ({} chars in)",
            text.find(s).unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_or_the_ledger_even_at_trace_level() {
    let mix = Mix {
        qf_old: 150,
        qf_fresh: 10,
        ec_old: 60,
        ec_fresh: 10,
        open_ones: true,
    };
    let w = world(mix, Knobs::default(), seed(0x5EC)).await;
    let all_secrets: Vec<&str> = SECRETS.iter().chain(WRONG.iter()).copied().collect();
    let trace = |args: &[&str], cfg: &std::path::Path| {
        Command::new(BIN)
            .arg("--config")
            .arg(cfg)
            .args(args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    };
    let mut log_bytes = 0;
    let mut outputs = 0;
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let o = trace(&["reconcile", "--once"], &w.config);
        assert!(o.status.success(), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("TRACE") || t.contains("DEBUG"),
            "not at trace level:\n{t}"
        );
        assert_clean("reconcile --once at trace", &t, &all_secrets);
        log_bytes += t.len();
        outputs += 1;
        let (bad, _) = w.mismatches().await;
        if bad.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < until, "not settled: {bad:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every CLI view of the ledger, and the error paths.
    for args in [
        &["ledger", "list", "--format", "json"][..],
        &["ledger", "stats"][..],
        &["discrepancies", "list"][..],
        &["config", "check"][..],
        &["reconcile", "--once", "--all", "--dry-run"][..],
        &[
            "sweep",
            "--account",
            "hk",
            "--from",
            "2026-01-01T00:00:00Z",
            "--to",
            "2026-01-01T01:00:00Z",
        ][..],
        &[
            "track",
            "--account",
            "hk",
            "--out-trade-no",
            "",
            "--amount",
            "x",
            "--currency",
            "HKD",
        ][..],
    ] {
        let o = trace(args, &w.config);
        let t = text(&o);
        assert!(!t.contains("panicked"), "{args:?}: {t}");
        assert_clean(&format!("{args:?}"), &t, &all_secrets);
        log_bytes += t.len();
        outputs += 1;
    }

    // Wrong keys: the gateways refuse them; the refusal is reported without either key.
    let wrong = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace(SECRETS[0], WRONG[0])
        .replace(SECRETS[1], WRONG[1])
        .replace(SECRETS[2], WRONG[2]);
    let wrong_cfg = w.dir.path().join("wrong.toml");
    std::fs::write(&wrong_cfg, wrong).unwrap();
    let track = trace(
        &[
            "track",
            "--account",
            "hk",
            "--out-trade-no",
            "WRONGKEY1",
            "--amount",
            "100",
            "--currency",
            "HKD",
            "--pay-type",
            "800101",
        ],
        &wrong_cfg,
    );
    assert!(track.status.success(), "{}", text(&track));
    for args in [
        &["reconcile", "--once", "--all"][..],
        &[
            "pay",
            "--account",
            "hk",
            "--amount",
            "100",
            "--currency",
            "HKD",
            "--pay-type",
            "801512",
        ][..],
    ] {
        let o = trace(args, &wrong_cfg);
        let t = text(&o);
        assert_clean(&format!("wrong keys {args:?}"), &t, &all_secrets);
        log_bytes += t.len();
        outputs += 1;
    }

    // Every row of every table, and the raw bytes of the database and its journal files.
    let pool = w.pool().await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut cells = 0;
    for table in &tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
            .fetch_all(&pool)
            .await
            .unwrap();
        for r in &rows {
            for c in r.columns() {
                let raw = r.try_get_raw(c.ordinal()).unwrap();
                if raw.is_null() || raw.type_info().name() != "TEXT" {
                    continue;
                }
                let v: String = r.get(c.ordinal());
                cells += 1;
                assert_clean(&format!("{table}.{}", c.name()), &v, &all_secrets);
            }
        }
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let mut files = 0;
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("ledger.db") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).unwrap();
        for s in &all_secrets {
            assert!(
                !bytes.windows(s.len()).any(|win| win == s.as_bytes()),
                "{name} holds a secret"
            );
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{name} is readable by others: {mode:o}");
    }
    let mode = std::fs::metadata(&w.ledger).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the ledger file mode");
    eprintln!(
        "secrets: {outputs} runs at trace level ({log_bytes} bytes of output), {cells} text cells in {} tables, {files} ledger files: no secret found",
        tables.len()
    );
}
