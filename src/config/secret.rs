//! Secrets: given inline (development) or read from a file (production, e.g. a systemd
//! credential). The value lives in a `SecretString` whose `Debug` is redacted.
//!
//! A secret file is refused, not merely warned about, when group or others have any access to
//! it (a warning in a log nobody reads leaves the key exposed), except under
//! `$CREDENTIALS_DIRECTORY`, which systemd creates and restricts to the service itself. Its
//! content is the file minus exactly one final newline (`\n` or `\r\n`, as editors and
//! `echo` add); any other whitespace around the value is refused with the file named, since a
//! key with a stray space signs every request wrongly (QFPay answers 1108 to each).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::problems::Problems;

/// Where a relative `*_file` path is looked up: systemd's `$CREDENTIALS_DIRECTORY` when set
/// (so `client_key_file = "hk-key"` finds a `LoadCredential=hk-key:…`), else as given. The
/// second value says whether the file is inside that directory.
fn resolve(path: &str) -> (PathBuf, bool) {
    let p = Path::new(path);
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if p.is_relative() => (Path::new(&dir).join(p), true),
        Some(dir) => (p.to_path_buf(), p.starts_with(Path::new(&dir))),
        None => (p.to_path_buf(), false),
    }
}

/// Reads `key` or `key_file` (exactly one must be set). The secret never appears in a problem
/// message.
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
        (None, Some(f)) => match read_secret_file(f) {
            Ok(v) => Some(v),
            Err(why) => {
                problems.add(&file_key, why);
                None
            }
        },
    }
}

/// The checked content of a secret file, or why it is refused (naming the file, never the
/// content).
pub(crate) fn read_secret_file(given: &str) -> Result<SecretString, String> {
    let (path, credential) = resolve(given);
    let shown = path.display();
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if !credential && mode & 0o077 != 0 {
        return Err(format!(
            "{shown} is accessible to group or others (mode {mode:04o}); a secret file must \
             be private to its owner: chmod 600 {shown} (or pass it as a systemd credential)"
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(format!(
            "{shown} has whitespace before or after the secret (only one final newline is \
             ignored); remove it"
        ));
    }
    Ok(SecretString::from(value.to_string()))
}
