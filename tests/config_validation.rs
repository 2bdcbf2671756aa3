//! Each invalid configuration is reported with the field it is about, and never leaks a secret.

use std::io::Write;

use payrecon::config::{self, Account, ConfigError};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

const QFPAY: &str = r#"
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "https://test-openapi-hk.qfapi.com"
app_code = "APPCODE"
client_key = "QF-SECRET-KEY-VALUE"
"#;

const ECPAY: &str = r#"
[[accounts]]
name = "tw"
provider = "ecpay"
base_url = "https://ecpayment-stage.ecpay.com.tw"
merchant_id = "3002607"
hash_key = "pwFHCqoQZGmho4w6"
hash_iv = "EkRm7iFT261dpevs"
"#;

/// Loads `text` and returns the problem lines (panics if it loads fine).
fn problems(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.toml", text);
    match config::load(Some(&path)) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(e) => {
            let lines = e.lines();
            for l in &lines {
                for secret in [
                    "QF-SECRET-KEY-VALUE",
                    "pwFHCqoQZGmho4w6",
                    "EkRm7iFT261dpevs",
                ] {
                    assert!(!l.contains(secret), "secret leaked in {l:?}");
                }
            }
            lines
        }
    }
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn a_good_configuration_loads_with_both_providers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.toml", &format!("{QFPAY}{ECPAY}"));
    let s = config::load(Some(&path)).unwrap();
    assert_eq!(s.accounts.len(), 2);
    assert!(matches!(&s.accounts[0], Account::Qfpay(q) if q.batch_size == 4));
    assert!(matches!(&s.accounts[1], Account::Ecpay(e) if e.nopay_interval.as_secs() == 600));
    let debug = format!("{s:?}");
    assert!(!debug.contains("QF-SECRET-KEY-VALUE") && !debug.contains("pwFHCqoQZGmho4w6"));
}

#[test]
fn duplicate_account_names_are_reported() {
    let lines = problems(&format!("{QFPAY}{}", QFPAY));
    assert!(
        has(&lines, "accounts[1] (hk).name: duplicate account name"),
        "{lines:?}"
    );
}

#[test]
fn an_unknown_provider_is_reported() {
    let lines = problems(&QFPAY.replace("\"qfpay\"", "\"stripe\""));
    assert!(
        has(
            &lines,
            "accounts[0] (hk).provider: \"stripe\" is not a provider"
        ),
        "{lines:?}"
    );
}

#[test]
fn a_bad_url_is_reported() {
    let lines = problems(&QFPAY.replace("https://test-openapi-hk.qfapi.com", "not a url"));
    assert!(
        has(
            &lines,
            "accounts[0] (hk).base_url: \"not a url\" is not a URL"
        ),
        "{lines:?}"
    );
    let lines = problems(&QFPAY.replace("https://", "http://"));
    assert!(has(&lines, "must use https"), "{lines:?}");
}

#[test]
fn a_missing_secret_is_reported() {
    let lines = problems(&QFPAY.replace("client_key = \"QF-SECRET-KEY-VALUE\"", ""));
    assert!(
        has(&lines, "accounts[0] (hk).client_key: missing"),
        "{lines:?}"
    );
}

#[test]
fn an_unreadable_secret_file_is_reported() {
    let lines = problems(&QFPAY.replace(
        "client_key = \"QF-SECRET-KEY-VALUE\"",
        "client_key_file = \"/nonexistent/payrecon-key\"",
    ));
    assert!(
        has(
            &lines,
            "accounts[0] (hk).client_key_file: cannot read /nonexistent/payrecon-key"
        ),
        "{lines:?}"
    );
}

#[test]
fn a_secret_file_is_read_and_its_trailing_newline_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let key = write(&dir, "key", "FROM-FILE-KEY\n");
    // Secret files must be private (issue 14).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = QFPAY.replace(
        "client_key = \"QF-SECRET-KEY-VALUE\"",
        &format!("client_key_file = {:?}", key.display().to_string()),
    );
    let path = write(&dir, "c.toml", &cfg);
    let s = config::load(Some(&path)).unwrap();
    let Account::Qfpay(q) = &s.accounts[0] else {
        panic!()
    };
    use secrecy::ExposeSecret;
    assert_eq!(q.client_key.expose_secret(), "FROM-FILE-KEY");
}

#[test]
fn ecpay_key_and_iv_must_be_sixteen_bytes() {
    let lines = problems(
        &ECPAY
            .replace("pwFHCqoQZGmho4w6", "short")
            .replace("EkRm7iFT261dpevs", "EkRm7iFT261dpevsXX"),
    );
    assert!(
        has(
            &lines,
            "accounts[0] (tw).hash_key: must be exactly 16 bytes (AES-128), got 5"
        ),
        "{lines:?}"
    );
    assert!(
        has(
            &lines,
            "accounts[0] (tw).hash_iv: must be exactly 16 bytes (AES-128), got 18"
        ),
        "{lines:?}"
    );
}

#[test]
fn a_bad_cron_expression_is_reported() {
    let lines = problems("[schedule]\nreconcile = \"every minute\"\n");
    assert!(
        has(
            &lines,
            "schedule.reconcile: \"every minute\" is not a 6-field cron expression"
        ),
        "{lines:?}"
    );
    // Five fields (no seconds) is the classic mistake.
    let lines = problems("[schedule]\nsweep = \"*/15 * * * *\"\n");
    assert!(has(&lines, "schedule.sweep"), "{lines:?}");
}

#[test]
fn a_bad_timezone_is_reported() {
    let lines = problems(&format!("{QFPAY}timezone = \"Asia/Hong_Kong\"\n"));
    assert!(
        has(
            &lines,
            "accounts[0] (hk).timezone: \"Asia/Hong_Kong\" is not a UTC offset"
        ),
        "{lines:?}"
    );
}

#[test]
fn an_account_lease_shorter_than_a_second_is_refused() {
    let lines = problems("[reconcile]\nlease = \"500ms\"\n");
    assert!(
        has(&lines, "reconcile.lease: must be at least 1s"),
        "{lines:?}"
    );
}

#[test]
fn bad_durations_and_modes_are_reported_together() {
    let lines = problems("[reconcile]\nlease = \"soon\"\n[reversal]\nmode = \"maybe\"\n");
    assert!(
        has(&lines, "reconcile.lease: \"soon\" is not a duration"),
        "{lines:?}"
    );
    assert!(
        has(
            &lines,
            "reversal.mode: \"maybe\" is not one of: auto, dry-run, off"
        ),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 2);
}

#[test]
fn keys_of_the_other_provider_are_reported() {
    let lines = problems(&format!("{QFPAY}hash_key = \"x\"\n"));
    assert!(
        has(&lines, "accounts[0] (hk).hash_key: is not a qfpay setting"),
        "{lines:?}"
    );
}

#[test]
fn an_unknown_key_or_missing_file_fails_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.toml", "[ledger]\npaht = \"x\"\n");
    let err = config::load(Some(&path)).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Load(m) if m.contains("paht")),
        "{err}"
    );
    let err = config::load(Some(&dir.path().join("missing.toml"))).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn an_over_long_account_name_is_reported_without_echoing_it_whole() {
    let long = "h".repeat(10_000);
    let lines = problems(&QFPAY.replace("name = \"hk\"", &format!("name = \"{long}\"")));
    assert!(has(&lines, "longer than 64 characters"), "{lines:?}");
    assert!(lines.iter().all(|l| l.len() < 400), "{lines:?}");
}

#[test]
fn ecpay_patience_is_configurable_and_must_end_before_the_give_up_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let tuned = format!(
        "{ECPAY}nopay_steady_checks = 2\nnopay_max_interval = \"1h\"\nnopay_horizon = \"1d\"\nunauthorized_horizon = \"12h\"\n"
    );
    let s = config::load(Some(&write(&dir, "c.toml", &tuned))).unwrap();
    let Account::Ecpay(e) = &s.accounts[0] else {
        panic!("an ECPay account")
    };
    assert_eq!(e.nopay_patience.steady_checks, 2);
    assert_eq!(e.nopay_patience.rule.max.as_secs(), 3600);
    assert_eq!(e.nopay_patience.horizon.as_secs(), 86_400);
    assert_eq!(e.unauthorized_patience.horizon.as_secs(), 43_200);

    let lines = problems(&format!(
        "[reconcile]\ngive_up_after = \"2d\"\n{ECPAY}nopay_max_interval = \"1m\"\n"
    ));
    assert!(
        has(
            &lines,
            "accounts[0] (tw).nopay_horizon: plus its max interval must be shorter than reconcile.give_up_after"
        ),
        "{lines:?}"
    );
    let lines = problems(&format!(
        "{ECPAY}nopay_max_interval = \"1m\"\nunauthorized_max_interval = \"0s\"\n"
    ));
    assert!(
        has(
            &lines,
            "nopay_max_interval: must not be shorter than nopay_interval"
        ),
        "{lines:?}"
    );
    assert!(
        has(
            &lines,
            "unauthorized_max_interval: must be longer than zero"
        ),
        "{lines:?}"
    );
}

#[test]
fn the_api_is_off_unless_configured_and_never_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let off = config::load(Some(&write(&dir, "off.toml", QFPAY))).unwrap();
    assert!(off.api.is_none());

    let lines = problems(&format!("[api]\nlisten = \"127.0.0.1:8177\"\n{QFPAY}"));
    assert!(
        has(
            &lines,
            "api.token: missing (set token_file, or token for development)"
        ),
        "{lines:?}"
    );
    let lines = problems("[api]\nlisten = \"localhost\"\ntoken = \"t\"\nmax_body = 0\n");
    assert!(has(&lines, "api.listen:"), "{lines:?}");
    assert!(
        has(&lines, "api.max_body: must be between 1 and"),
        "{lines:?}"
    );
    let lines = problems("[api]\ntoken = \"short\"\n");
    assert!(
        has(&lines, "api.token: is shorter than 16 characters"),
        "{lines:?}"
    );
    let lines = problems("[api]\nmax_body = 10\n");
    assert!(has(&lines, "api.max_body: has no effect"), "{lines:?}");

    // A token file alone turns the API on, on loopback.
    let token = write(&dir, "token", "s3cret-token-0123456789\n");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let on = config::load(Some(&write(
        &dir,
        "on.toml",
        &format!("[api]\ntoken_file = \"{}\"\n", token.display()),
    )))
    .unwrap();
    let api = on.api.expect("on");
    assert_eq!(api.listen.to_string(), config::DEFAULT_LISTEN);
    assert!(!format!("{api:?}").contains("s3cret-token-0123456789"));
    // A token file others can read is refused, like every secret file.
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let lines = problems(&format!("[api]\ntoken_file = \"{}\"\n", token.display()));
    assert!(has(&lines, "api.token_file:"), "{lines:?}");
}

#[test]
fn a_postgres_url_selects_postgresql_and_its_password_comes_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = write(&dir, "pg-password", "PG-SECRET-PASSWORD\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = format!(
        "[ledger]\nurl = \"postgres://payrecon@db.example:5432/ledger\"\npassword_file = {:?}\n\
         max_connections = 12\n{QFPAY}",
        pw.display().to_string()
    );
    let path = write(&dir, "c.toml", &cfg);
    let s = config::load(Some(&path)).unwrap();
    let config::LedgerStore::Postgres(pg) = &s.ledger.store else {
        panic!("{:?}", s.ledger)
    };
    assert_eq!(pg.url, "postgres://payrecon@db.example:5432/ledger");
    assert_eq!(pg.max_connections, 12);
    use secrecy::ExposeSecret;
    assert_eq!(
        pg.password.as_ref().unwrap().expose_secret(),
        "PG-SECRET-PASSWORD"
    );
    assert_eq!(
        s.ledger.shown(),
        "postgres://payrecon@db.example:5432/ledger"
    );
    assert!(!format!("{s:?}").contains("PG-SECRET-PASSWORD"));
}

#[test]
fn a_sqlite_path_stays_the_default_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.toml", QFPAY);
    let s = config::load(Some(&path)).unwrap();
    assert!(matches!(
        &s.ledger.store,
        config::LedgerStore::Sqlite { path } if path.ends_with("payrecon-ledger.db")
    ));
}

#[test]
fn a_postgres_url_with_a_password_is_refused_without_showing_it() {
    for url in [
        "postgres://payrecon:PG-SECRET-PASSWORD@db.example/ledger",
        "postgres://payrecon@db.example/ledger?password=PG-SECRET-PASSWORD",
    ] {
        let lines = problems(&format!("[ledger]\nurl = {url:?}\n{QFPAY}"));
        assert!(has(&lines, "ledger.url: carries a password"), "{lines:?}");
        assert!(
            lines.iter().all(|l| !l.contains("PG-SECRET-PASSWORD")),
            "{lines:?}"
        );
    }
}

#[test]
fn a_ledger_url_that_is_not_postgresql_is_reported() {
    let lines = problems(&format!("[ledger]\nurl = \"mysql://db/ledger\"\n{QFPAY}"));
    assert!(
        has(
            &lines,
            "ledger.url: scheme \"mysql\" is not a PostgreSQL one"
        ),
        "{lines:?}"
    );
    let lines = problems(&format!("[ledger]\nurl = \"db.example/ledger\"\n{QFPAY}"));
    assert!(has(&lines, "ledger.url: is not a URL"), "{lines:?}");
    let lines = problems(&format!("[ledger]\npassword_file = \"pw\"\n{QFPAY}"));
    assert!(
        has(&lines, "ledger.password_file: is set but url is not"),
        "{lines:?}"
    );
}

/// Review 18: the driver decodes the query's keys (`url::Url::query_pairs`), so
/// `?pass%77ord=…` is the password `password=…` is, and a URL carrying it was accepted and then
/// shown by `config check`, in errors and in logs. Any spelling of a password parameter is
/// refused, and the secret is never shown.
#[test]
fn a_postgres_url_with_an_encoded_or_differently_cased_password_is_refused() {
    for url in [
        "postgres://payrecon@db.example/ledger?pass%77ord=PG-SECRET-PASSWORD",
        "postgres://payrecon@db.example/ledger?%70assword=PG-SECRET-PASSWORD",
        "postgres://payrecon@db.example/ledger?sslmode=disable&PASSWORD=PG-SECRET-PASSWORD",
        "postgres://payrecon@db.example/ledger?sslpassword=PG-SECRET-PASSWORD",
    ] {
        let lines = problems(&format!("[ledger]\nurl = {url:?}\n{QFPAY}"));
        assert!(
            has(&lines, "ledger.url: carries a password"),
            "{url}: {lines:?}"
        );
        assert!(
            lines.iter().all(|l| !l.contains("PG-SECRET-PASSWORD")),
            "{lines:?}"
        );
    }
    // The driver does take the encoded key as the password.
    let o: sqlx::postgres::PgConnectOptions =
        "postgres://payrecon@db.example/ledger?pass%77ord=PG-SECRET-PASSWORD"
            .parse()
            .unwrap();
    assert!(format!("{o:?}").contains("PG-SECRET-PASSWORD"));
}
