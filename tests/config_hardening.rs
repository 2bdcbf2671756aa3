//! `payrecon config check` against what operators actually do (issue 14 items 4 and 5),
//! through the binary: per-account environment overrides, and secret files that are readable
//! by others or carry stray whitespace.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_payrecon");
const KEY: &str = "QF-KEY-FROM-A-FILE-0001";
const ENV_SECRET: &str = "QF-KEY-FROM-THE-ENVIRONMENT";

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// A config with one QFPay account `hk-main` whose key is in `key` (mode 0600).
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = Self { dir };
        s.secret("key", &format!("{KEY}\n"), 0o600);
        std::fs::write(
            s.path("payrecon.toml"),
            format!(
                r#"
[ledger]
path = "{}"

[[accounts]]
name = "hk-main"
provider = "qfpay"
base_url = "https://test-openapi-hk.qfapi.com"
app_code = "APPCODE"
client_key_file = "{}"
"#,
                s.path("ledger.db").display(),
                s.path("key").display()
            ),
        )
        .unwrap();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn secret(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn check(&self, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(self.path("payrecon.toml"))
            .args(["config", "check"])
            .env_remove("CREDENTIALS_DIRECTORY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let all = format!("{}{}", out(&o.stdout), out(&o.stderr));
        for secret in [KEY, ENV_SECRET] {
            assert!(!all.contains(secret), "a secret was printed:\n{all}");
        }
        o
    }
}

fn out(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn refused(o: &Output, needles: &[&str]) {
    let err = out(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(78),
        "expected exit 78; stderr:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from:\n{err}");
    }
}

#[test]
fn a_positional_account_override_is_refused_with_the_variable_and_the_supported_form() {
    let s = Setup::new();
    let o = s.check(&[("PAYRECON__ACCOUNTS__0__CLIENT_KEY", ENV_SECRET)]);
    refused(
        &o,
        &[
            "PAYRECON__ACCOUNTS__0__CLIENT_KEY:",
            "no configured account is named \"0\"",
            "PAYRECON__ACCOUNTS__HK_MAIN__CLIENT_KEY",
        ],
    );
    assert!(
        !out(&o.stderr).contains("invalid type"),
        "{}",
        out(&o.stderr)
    );
}

#[test]
fn an_account_is_overridden_by_its_name_from_the_environment() {
    let s = Setup::new();
    let other = s.secret("other-key", "OTHER-KEY\n", 0o600);
    let o = s.check(&[
        ("PAYRECON__ACCOUNTS__HK_MAIN__BATCH_SIZE", "2"),
        (
            "PAYRECON__ACCOUNTS__HK_MAIN__CLIENT_KEY_FILE",
            other.to_str().unwrap(),
        ),
    ]);
    assert!(o.status.success(), "{}", out(&o.stderr));
    assert!(out(&o.stdout).contains("batch 2"), "{}", out(&o.stdout));

    // The key file really comes from the variable: an empty one is reported by its path.
    let empty = s.secret("empty-key", "", 0o600);
    let o = s.check(&[(
        "PAYRECON__ACCOUNTS__hk-main__CLIENT_KEY_FILE",
        empty.to_str().unwrap(),
    )]);
    refused(&o, &[&format!("{} is empty", empty.display())]);

    let o = s.check(&[("PAYRECON__ACCOUNTS__TW__MERCHANT_ID", "3002607")]);
    refused(
        &o,
        &[
            "PAYRECON__ACCOUNTS__TW__MERCHANT_ID:",
            "no configured account is named \"TW\"",
        ],
    );
}

#[test]
fn a_secret_file_others_can_read_is_refused_outside_the_credentials_directory() {
    let s = Setup::new();
    for mode in [0o644, 0o640, 0o604, 0o666] {
        std::fs::set_permissions(s.path("key"), std::fs::Permissions::from_mode(mode)).unwrap();
        let o = s.check(&[]);
        refused(
            &o,
            &[
                "client_key_file",
                &s.path("key").display().to_string(),
                &format!("accessible to group or others (mode {mode:04o})"),
                "chmod 600",
            ],
        );
    }
    // systemd's credentials directory is private to the service whatever the file's mode.
    std::fs::set_permissions(s.path("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = std::fs::read_to_string(s.path("payrecon.toml"))
        .unwrap()
        .replace(&s.path("key").display().to_string(), "key");
    std::fs::write(s.path("payrecon.toml"), cfg).unwrap();
    let o = s.check(&[("CREDENTIALS_DIRECTORY", s.dir.path().to_str().unwrap())]);
    assert!(o.status.success(), "{}", out(&o.stderr));
}

#[test]
fn one_final_newline_is_dropped_and_any_other_whitespace_is_refused_naming_the_file() {
    let s = Setup::new();
    for good in [format!("{KEY}\n"), format!("{KEY}\r\n"), KEY.to_string()] {
        s.secret("key", &good, 0o600);
        let o = s.check(&[]);
        assert!(o.status.success(), "{good:?}: {}", out(&o.stderr));
    }
    for bad in [
        format!("{KEY} \n"),
        format!("{KEY} "),
        format!(" {KEY}\n"),
        format!("{KEY}\n\n"),
        format!("{KEY}\t\n"),
    ] {
        s.secret("key", &bad, 0o600);
        let o = s.check(&[]);
        refused(
            &o,
            &[
                "client_key_file",
                &s.path("key").display().to_string(),
                "whitespace before or after the secret",
            ],
        );
    }
}
