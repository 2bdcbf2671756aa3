//! Secrets: given inline (development) or read from a file (production, e.g. a systemd
//! credential). The value lives in a `SecretString` whose `Debug` is redacted.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::problems::Problems;

/// Where a relative `*_file` path is looked up: systemd's `$CREDENTIALS_DIRECTORY` when set
/// (so `client_key_file = "hk-key"` finds a `LoadCredential=hk-key:…`), else as given.
fn resolve(path: &str) -> PathBuf {
    let p = Path::new(path);
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if p.is_relative() => Path::new(&dir).join(p),
        _ => p.to_path_buf(),
    }
}

/// Reads `key` or `key_file` (exactly one must be set). Trailing newlines of a file are
/// dropped, since editors and `echo` add them. The secret never appears in a problem message.
pub(crate) fn secret(
    problems: &mut Problems<'_>,
    key: &str,
    inline: Option<&String>,
    file: Option<&String>,
) -> Option<SecretString> {
    let file_key = format!("{key}_file");
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.add(key, format!("set either {key} or {file_key}, not both"));
            None
        }
        (None, None) => {
            problems.add(
                key,
                format!("missing (set {file_key}, or {key} for development)"),
            );
            None
        }
        (Some(v), None) if v.is_empty() => {
            problems.add(key, "is empty");
            None
        }
        (Some(v), None) => Some(SecretString::from(v.clone())),
        (None, Some(f)) => {
            let path = resolve(f);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let v = text.trim_end_matches(['\r', '\n']);
                    if v.is_empty() {
                        problems.add(&file_key, format!("{} is empty", path.display()));
                        None
                    } else {
                        Some(SecretString::from(v.to_string()))
                    }
                }
                Err(e) => {
                    problems.add(&file_key, format!("cannot read {}: {e}", path.display()));
                    None
                }
            }
        }
    }
}
