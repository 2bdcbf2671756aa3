//! Bad input (issue 8 item 4): a corpus of broken configuration files, import files and ECPay
//! answers. Each gives a clear error naming what is wrong, no panic, and nothing half-written:
//! the ledger's row counts are unchanged after every rejected import. (QFPay answers are
//! tested beside their parser: src/gateway/qfpay/robustness_tests.rs.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use payrecon::domain::{OutTradeNo, Provider};
use payrecon::gateway::ecpay::cashier::classify_cashier;
use payrecon::gateway::ecpay::credit_detail::classify_credit_detail;
use payrecon::gateway::ecpay::{DataKey, ResponseEnvelope, encrypt_data, encrypt_json};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
const KEY: &str = "QF-SECRET-KEY-0000000000000000000";

fn run(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_no_panic(what: &str, o: &Output) {
    let e = stderr(o);
    assert!(
        !e.contains("panicked") && o.status.code().is_some(),
        "{what}: crashed ({:?}):\n{e}",
        o.status
    );
}

fn good_config(dir: &Path) -> PathBuf {
    let path = dir.join("good.toml");
    std::fs::write(
        &path,
        format!(
            r#"[ledger]
path = "{}"
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "http://127.0.0.1:9"
app_code = "APP"
client_key = "{KEY}"
"#,
            dir.join("l.db").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn broken_config_files_are_refused_with_the_field_named_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.db");
    let account = |extra: &str| {
        format!(
            "[ledger]\npath = \"{}\"\n[[accounts]]\nname = \"hk\"\nprovider = \"qfpay\"\nbase_url = \"http://127.0.0.1:9\"\napp_code = \"APP\"\nclient_key = \"{KEY}\"\n{extra}\n",
            ledger.display()
        )
    };
    // (file contents, a word the error must contain)
    let corpus: Vec<(Vec<u8>, &str)> = vec![
        (b"[ledger\npath = 1".to_vec(), "ledger"),
        (b"[ledger]\npath = [1, 2]\n".to_vec(), "path"),
        (
            account("rate_per_minute = \"fast\"").into_bytes(),
            "rate_per_minute",
        ),
        (
            account("rate_per_minute = 100000").into_bytes(),
            "rate_per_minute",
        ),
        (account("retry_for = \"soon\"").into_bytes(), "retry_for"),
        (account("batch_size = -3").into_bytes(), "batch_size"),
        (
            account("hash_key = \"pwFHCqoQZGmho4w6\"").into_bytes(),
            "hash_key",
        ),
        (account("colour = \"blue\"").into_bytes(), "colour"),
        (
            format!("[schedule]\nreconcile = \"every minute\"\n{}", account("")).into_bytes(),
            "reconcile",
        ),
        (
            format!("[reconcile]\nchunk_size = \"lots\"\n{}", account("")).into_bytes(),
            "chunk_size",
        ),
        (
            b"[[accounts]]\nname = \"hk\"\nprovider = \"qfpay\"\n".to_vec(),
            "base_url",
        ),
        (
            b"[[accounts]]\nname = \"x\"\nprovider = \"paypal\"\n".to_vec(),
            "provider",
        ),
        (
            account("base_url = \"not a url\"")
                .replace("base_url = \"http://127.0.0.1:9\"\n", "")
                .into_bytes(),
            "base_url",
        ),
        (
            account("")
                .replace(
                    "name = \"hk\"",
                    &format!("name = \"{}\"", "h".repeat(100_000)),
                )
                .into_bytes(),
            "name",
        ),
        (vec![0xff, 0xfe, 0x00, b'[', 0x80], "config"),
        (b"\x00\x01\x02binary".to_vec(), "config"),
        // TLS verification has no switch: plausible keys are unknown fields.
        (
            account("danger_accept_invalid_certs = true").into_bytes(),
            "danger_accept_invalid_certs",
        ),
        (account("insecure = true").into_bytes(), "insecure"),
        (account("tls_verify = false").into_bytes(), "tls_verify"),
        (
            account("accept_invalid_certs = true").into_bytes(),
            "accept_invalid_certs",
        ),
        (
            format!("[tls]\nverify = false\n{}", account("")).into_bytes(),
            "tls",
        ),
    ];
    let mut tried = 0;
    for (i, (text, word)) in corpus.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text)
            .unwrap();
        for args in [&["config", "check"][..], &["reconcile", "--once"][..]] {
            let o = run(&path, args);
            tried += 1;
            assert_no_panic(&format!("config {i}"), &o);
            let e = stderr(&o);
            assert_eq!(
                o.status.code(),
                Some(78),
                "config {i} ({word}) {args:?}: {e}"
            );
            assert!(
                e.contains(word),
                "config {i}: the error does not name {word:?}:\n{e}"
            );
            assert!(!e.contains(KEY), "config {i}: the client key leaked:\n{e}");
            assert!(
                !e.contains("pwFHCqoQZGmho4w6"),
                "config {i}: the hash key leaked"
            );
            assert!(e.len() < 4_000, "config {i}: {} bytes of error", e.len());
        }
    }
    assert!(
        !ledger.exists(),
        "a refused configuration created the ledger"
    );
    eprintln!(
        "config corpus: {tried} runs over {} broken files",
        corpus.len()
    );
}

/// (payments, events) in the ledger next to `cfg`, read directly.
fn count(cfg: &Path) -> (i64, i64) {
    let db = cfg.parent().unwrap().join("l.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let p: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments")
            .fetch_one(&pool)
            .await
            .unwrap();
        let e: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (p, e)
    })
}

const GOOD_ROW: &str = r#"{"account":"hk","out_trade_no":"G1","pay_type":"800101","amount":1000,"currency":"HKD","created_at":"2026-11-22T10:00:00+08:00"}"#;

#[test]
fn broken_import_files_are_refused_whole_with_the_line_and_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = good_config(dir.path());
    let seed = dir.path().join("seed.jsonl");
    std::fs::write(&seed, format!("{GOOD_ROW}\n")).unwrap();
    assert!(
        run(&cfg, &["import", seed.to_str().unwrap()])
            .status
            .success()
    );
    let before = count(&cfg);
    assert_eq!(before.0, 1);

    let row = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(GOOD_ROW).unwrap();
        v["out_trade_no"] = json!("N1");
        f(&mut v);
        v.to_string()
    };
    let good2 = row(&|_| {});
    let long = "X".repeat(10_000);
    // (file name, contents, a word the error must contain)
    let corpus: Vec<(&str, Vec<u8>, &str)> = vec![
        ("amount-text.jsonl", row(&|v| v["amount"] = json!("ten")).into_bytes(), "amount"),
        ("amount-float.jsonl", row(&|v| v["amount"] = json!(10.5)).into_bytes(), "amount"),
        ("amount-bool.jsonl", row(&|v| v["amount"] = json!(true)).into_bytes(), "amount"),
        ("amount-negative.jsonl", row(&|v| v["amount"] = json!(-100)).into_bytes(), "amount"),
        ("amount-huge.jsonl", row(&|v| v["amount"] = json!(u64::MAX)).into_bytes(), "amount"),
        ("no-account.jsonl", row(&|v| { v.as_object_mut().unwrap().remove("account"); }).into_bytes(), "account"),
        ("unknown-account.jsonl", row(&|v| v["account"] = json!("nope")).into_bytes(), "account"),
        ("no-order.jsonl", row(&|v| { v.as_object_mut().unwrap().remove("out_trade_no"); }).into_bytes(), "out_trade_no"),
        ("long-order.jsonl", row(&|v| v["out_trade_no"] = json!(long)).into_bytes(), "out_trade_no"),
        ("order-object.jsonl", row(&|v| v["out_trade_no"] = json!({"a": 1})).into_bytes(), "out_trade_no"),
        ("bad-currency.jsonl", row(&|v| v["currency"] = json!("HKDOLLARS")).into_bytes(), "currency"),
        ("bad-date.jsonl", row(&|v| v["created_at"] = json!("yesterday")).into_bytes(), "created_at"),
        ("bad-pay-type.jsonl", row(&|v| v["pay_type"] = json!("alipay")).into_bytes(), "pay_type"),
        ("long-syssn.jsonl", row(&|v| v["syssn"] = json!(long)).into_bytes(), "syssn"),
        ("not-json.jsonl", b"{\"account\": \"hk\", \"amount\": 10".to_vec(), "JSON"),
        ("array.jsonl", b"[1,2,3]\n".to_vec(), "object"),
        ("bad-utf8.jsonl", [b"{\"account\":\"hk\",\"out_trade_no\":\"".as_slice(), &[0xff, 0xfe], b"\"}\n"].concat(), "UTF-8"),
        ("good-then-bad.jsonl", format!("{good2}\n{}\n", row(&|v| { v["out_trade_no"] = json!("N2"); v["amount"] = json!("x"); })).into_bytes(), "line 2"),
        ("duplicate.jsonl", format!("{good2}\n{good2}\n").into_bytes(), "twice"),
        ("conflict.jsonl", row(&|v| { v["out_trade_no"] = json!("G1"); v["amount"] = json!(999); }).into_bytes(), "already registered"),
        ("empty.jsonl", Vec::new(), "no records"),
        ("binary.jsonl", (0u8..=255).cycle().take(4096).collect(), "line"),
        ("wrong-ext.txt", GOOD_ROW.as_bytes().to_vec(), "file type"),
        ("unterminated.csv", b"account,out_trade_no,pay_type,amount,currency,created_at\nhk,\"N1,800101,1000,HKD,2026-11-22T10:00:00+08:00\n".to_vec(), "malformed CSV"),
        ("ragged.csv", b"account,out_trade_no,pay_type,amount,currency,created_at\nhk,N1,800101,1000\n".to_vec(), "CSV"),
        ("csv-bad-utf8.csv", [b"account,out_trade_no,pay_type,amount,currency,created_at\nhk,N".as_slice(), &[0xc3, 0x28], b",800101,1000,HKD,2026-11-22T10:00:00+08:00\n"].concat(), "UTF-8"),
        ("csv-amount.csv", b"account,out_trade_no,pay_type,amount,currency,created_at\nhk,N1,800101,1e3,HKD,2026-11-22T10:00:00+08:00\n".to_vec(), "amount"),
        ("csv-header-only.csv", b"account,out_trade_no,pay_type,amount,currency,created_at\n".to_vec(), "no records"),
    ];
    for (name, contents, word) in &corpus {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let o = run(&cfg, &["import", path.to_str().unwrap()]);
        assert_no_panic(name, &o);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(65), "{name}: {e}");
        assert!(
            e.contains(word),
            "{name}: the error does not mention {word:?}:\n{e}"
        );
        assert!(e.contains("nothing was imported"), "{name}: {e}");
        assert!(e.len() < 64_000, "{name}: {} bytes of errors", e.len());
        assert_eq!(count(&cfg), before, "{name}: the ledger changed");
    }
    let missing = run(
        &cfg,
        &["import", dir.path().join("absent.jsonl").to_str().unwrap()],
    );
    assert_eq!(missing.status.code(), Some(66));
    eprintln!(
        "import corpus: {} broken files refused, ledger unchanged",
        corpus.len() + 1
    );
}

/// Peak RSS of a finished child in KiB, read by `/usr/bin/time -v` when it is installed.
fn timed(cfg: &Path, args: &[&str]) -> (Output, Option<u64>) {
    if Path::new("/usr/bin/time").exists() {
        let o = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(BIN)
            .arg("--config")
            .arg(cfg)
            .args(args)
            .output()
            .unwrap();
        let rss = stderr(&o)
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .and_then(|v| v.trim().parse().ok());
        (o, rss)
    } else {
        (run(cfg, args), None)
    }
}

#[test]
fn a_100_mb_import_file_is_answered_in_bounded_time_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = good_config(dir.path());
    let seed = dir.path().join("seed.jsonl");
    std::fs::write(&seed, format!("{GOOD_ROW}\n")).unwrap();
    assert!(
        run(&cfg, &["import", seed.to_str().unwrap()])
            .status
            .success()
    );
    let before = count(&cfg);

    // ~100 MB of well-formed rows with one bad row at the very end: all-or-nothing means the
    // whole file must be read and refused.
    let path = dir.path().join("big.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut n = 0u64;
    let mut written = 0u64;
    while written < 100 * 1024 * 1024 {
        let line = format!(
            r#"{{"account":"hk","out_trade_no":"BIG{n:09}","pay_type":"800101","amount":{},"currency":"HKD","created_at":"2026-11-22T10:00:00+08:00","note":"{}"}}"#,
            100 + n % 9000,
            "p".repeat(40)
        );
        writeln!(out, "{line}").unwrap();
        written += line.len() as u64 + 1;
        n += 1;
    }
    writeln!(
        out,
        r#"{{"account":"hk","out_trade_no":"LAST","amount":"broken"}}"#
    )
    .unwrap();
    out.flush().unwrap();
    drop(out);
    let t = Instant::now();
    let (o, rss) = timed(&cfg, &["import", path.to_str().unwrap()]);
    let took = t.elapsed();
    assert_no_panic("100 MB import", &o);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(65), "{}", &e[..e.len().min(2000)]);
    assert!(e.contains("amount"), "{}", &e[..e.len().min(2000)]);
    assert_eq!(count(&cfg), before, "the ledger changed");
    eprintln!("100 MB import ({n} rows + 1 bad): refused in {took:.1?}, peak RSS {rss:?} KiB");
    assert!(took < Duration::from_secs(120), "took {took:?}");
    if let Some(kib) = rss {
        // Measured 188 MB after validating while reading (656 MB when the whole file was
        // held as parsed JSON first).
        assert!(kib < 400 * 1_024, "peak RSS {kib} KiB for a 100 MB file");
    }

    // A file that is wrong on every line is summarised, not echoed line by line.
    let path = dir.path().join("all-bad.jsonl");
    let bad_row = r#"{"account":"hk","out_trade_no":"B","amount":"x"}"#;
    std::fs::write(&path, format!("{bad_row}\n").repeat(200_000)).unwrap();
    let o = run(&cfg, &["import", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65));
    let e = stderr(&o);
    assert!(e.contains("more problem(s)"), "{}", &e[..e.len().min(2000)]);
    assert!(
        e.lines().count() < 200,
        "{} lines of errors",
        e.lines().count()
    );
    assert_eq!(count(&cfg), before);

    // One 100 MB line (no newline at all): refused as a whole, no panic, bounded.
    let path = dir.path().join("one-line.jsonl");
    std::fs::write(&path, vec![b'a'; 100 * 1024 * 1024]).unwrap();
    let t = Instant::now();
    let (o, rss) = timed(&cfg, &["import", path.to_str().unwrap()]);
    assert_no_panic("100 MB line", &o);
    assert_eq!(o.status.code(), Some(65));
    assert_eq!(count(&cfg), before);
    eprintln!(
        "100 MB single line: refused in {:.1?}, peak RSS {rss:?} KiB",
        t.elapsed()
    );
    if let Some(kib) = rss {
        assert!(kib < 400 * 1_024, "peak RSS {kib} KiB for a 100 MB line");
    }
}

fn key() -> DataKey {
    DataKey::new(b"pwFHCqoQZGmho4w6", b"EkRm7iFT261dpevs").unwrap()
}

fn envelope(data: &str) -> String {
    json!({"MerchantID": "3002607", "RpHeader": {"Timestamp": 1_700_000_000}, "TransCode": 1, "TransMsg": "", "Data": data}).to_string()
}

#[test]
fn broken_ecpay_answers_give_clear_errors_that_hold_no_secret() {
    let order = OutTradeNo::parse("EC0001", Provider::Ecpay).unwrap();
    let other = DataKey::new(b"AAAAAAAAAAAAAAAA", b"BBBBBBBBBBBBBBBB").unwrap();
    let good = encrypt_json(
        &json!({"RtnMsg": "", "RtnValue": {"TradeID": 1, "Amount": 100, "Status": "已授權"}}),
        &key(),
    );
    let corpus: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("html", "<html>500</html>".into()),
        ("truncated", envelope(&good)[..40].to_string()),
        ("no TransCode", json!({"Data": good}).to_string()),
        (
            "TransCode text",
            json!({"TransCode": "one", "Data": good}).to_string(),
        ),
        (
            "TransCode 999",
            json!({"TransCode": 999, "TransMsg": "Timestamp Error", "Data": ""}).to_string(),
        ),
        ("empty Data", envelope("")),
        ("Data not base64", envelope("!!!not base64!!!")),
        ("Data 15 bytes", envelope("AAAAAAAAAAAAAAAAAAAA")),
        (
            "Data wrong key",
            envelope(&encrypt_json(&json!({"RtnMsg": ""}), &other)),
        ),
        (
            "Data not JSON",
            envelope(&encrypt_data("this is not json", &key())),
        ),
        (
            "Data not UTF-8",
            envelope(&payrecon::gateway::ecpay::crypto::encrypt_urlencoded(
                "%FF%FE",
                &key(),
            )),
        ),
        ("Data a number", envelope(&encrypt_data("42", &key()))),
        ("huge Data", envelope(&"QUFB".repeat(2_000_000))),
        (
            "Data object",
            json!({"TransCode": 1, "Data": {"a": 1}}).to_string(),
        ),
    ];
    for (name, body) in &corpus {
        let result = ResponseEnvelope::parse(body)
            .and_then(|e| e.open(&key()))
            .and_then(|data| {
                classify_credit_detail(&data, &order, None)?;
                classify_cashier(&data, &order)
            });
        let e = result.expect_err(name);
        let text = e.to_string();
        assert!(!text.is_empty() && text.len() < 2_000, "{name}: {text}");
        for secret in ["pwFHCqoQZGmho4w6", "EkRm7iFT261dpevs"] {
            assert!(!text.contains(secret), "{name}: {text}");
        }
    }
    // Decrypted answers with wrong field types: classified or refused, never a panic.
    for data in [
        json!({"RtnMsg": 5, "RtnValue": "x"}),
        json!({"RtnMsg": "", "RtnValue": {"Amount": "lots", "Status": 7, "TradeID": []}}),
        json!({"RtnCode": "x", "TradeStatus": {"a": 1}, "TradeAmt": -1}),
        json!([]),
        json!(null),
    ] {
        let _ = classify_credit_detail(&data, &order, None);
        let _ = classify_cashier(&data, &order);
    }
    eprintln!(
        "ECPay body corpus: {} bodies + 5 wrong-typed answers",
        corpus.len()
    );
}
