//! `[ledger]`: which store holds the ledger. `path` names a SQLite file (the default); `url`
//! names a PostgreSQL database shared by several replicas, and then wins over `path`.
//!
//! A PostgreSQL URL is shown in `config check`, in errors and in logs, so it may not carry a
//! password: the password comes from `password_file` (relative names are systemd credentials)
//! or from libpq's own `PGPASSFILE` / `~/.pgpass`, which the driver reads when neither is given.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::problems::{Problem, Problems};
use super::raw::RawLedger;
use super::secret::read_secret_file;

/// Where the ledger lives, and how long a writer or a new connection may wait.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub store: LedgerStore,
    /// SQLite: how long a writer waits for another process's lock. PostgreSQL: how long
    /// opening a connection (or waiting for one from the pool) may take.
    pub busy_timeout: Duration,
}

/// The ledger's store.
#[derive(Debug, Clone)]
pub enum LedgerStore {
    Sqlite { path: PathBuf },
    Postgres(PgSettings),
}

/// A PostgreSQL ledger. `Debug` shows no password (`SecretString` is redacted, and the URL has
/// none).
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://user@host:port/database?options`, without a password.
    pub url: String,
    pub password: Option<SecretString>,
    /// Connections this process keeps at most.
    pub max_connections: u32,
}

impl LedgerSettings {
    /// The store for messages: the SQLite file, or the PostgreSQL URL (it has no password).
    pub fn shown(&self) -> String {
        match &self.store {
            LedgerStore::Sqlite { path } => path.display().to_string(),
            LedgerStore::Postgres(pg) => pg.url.clone(),
        }
    }
}

pub(super) fn validate(raw: &RawLedger, p: &mut Problems<'_>) -> Option<LedgerSettings> {
    let busy_timeout = p.duration(
        "busy_timeout",
        raw.busy_timeout.as_ref(),
        Duration::from_secs(10),
    );
    let max_connections = p.count("max_connections", raw.max_connections, 8, 64);
    let store = match &raw.url {
        None => {
            if raw.password_file.is_some() {
                p.add(
                    "password_file",
                    "is set but url is not: a password is for a PostgreSQL ledger (url)",
                );
            }
            LedgerStore::Sqlite {
                path: p.required("path", raw.path.as_ref()).map(PathBuf::from)?,
            }
        }
        Some(url) => LedgerStore::Postgres(PgSettings {
            url: postgres_url(url, p)?,
            password: match &raw.password_file {
                None => None,
                Some(f) => match read_secret_file(f) {
                    Ok(v) => Some(v),
                    Err(why) => {
                        p.add("password_file", why);
                        return None;
                    }
                },
            },
            max_connections,
        }),
    };
    Some(LedgerSettings {
        store,
        busy_timeout,
    })
}

/// A PostgreSQL ledger named on the command line (`payrecon ledger copy --to URL
/// [--password-file FILE]`), checked as `[ledger] url` and `password_file` are: a URL without a
/// password, the password from the (private) file, else from `PGPASSFILE` / `~/.pgpass` when
/// connecting. The error is one line per problem, prefixed with the option it is about; it
/// never holds the URL (it may carry the password that got it refused) nor the password.
pub fn postgres_target(
    url: &str,
    password_file: Option<&str>,
    max_connections: u32,
) -> Result<PgSettings, Vec<String>> {
    let mut list: Vec<Problem> = Vec::new();
    let checked = postgres_url(url, &mut Problems::new("", &mut list));
    let mut lines: Vec<String> = list
        .into_iter()
        .map(|p| {
            let why = p.message.replace(
                "password_file (a systemd credential)",
                "a file given with --password-file",
            );
            format!("--to: the URL {why}")
        })
        .collect();
    let password = match password_file.map(read_secret_file) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(why)) => {
            lines.push(format!("--password-file: {why}"));
            None
        }
    };
    match checked {
        Some(url) if lines.is_empty() => Ok(PgSettings {
            url,
            password,
            max_connections,
        }),
        _ => Err(lines),
    }
}

/// `url` checked: a PostgreSQL URL without a password.
fn postgres_url(url: &str, p: &mut Problems<'_>) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            p.add(
                "url",
                format!("is not a URL ({e}); expected postgres://user@host:port/database"),
            );
            return None;
        }
    };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        p.add(
            "url",
            format!(
                "scheme {:?} is not a PostgreSQL one (postgres://…); a SQLite ledger is \
                 set with path",
                parsed.scheme()
            ),
        );
        return None;
    }
    if parsed.password().is_some() {
        p.add(
            "url",
            "carries a password, and a URL is shown in messages and logs: put the password in \
             password_file (a systemd credential) or in PGPASSFILE, and remove it from the URL",
        );
        return None;
    }
    // The driver decodes the query's keys (`?pass%77ord=` is `password=`): check them decoded,
    // in any case, and any password-like parameter (`sslpassword`, which the driver ignores
    // but logs with its value).
    if parsed
        .query_pairs()
        .any(|(k, _)| k.to_ascii_lowercase().contains("password"))
    {
        p.add(
            "url",
            "carries a password (password=…), and a URL is shown in messages and logs: put \
             the password in password_file (a systemd credential) or in PGPASSFILE",
        );
        return None;
    }
    Some(url.to_string())
}
