//! Collects every configuration problem with the field it is about, so `config check` can
//! print one clear line per problem instead of stopping at the first.

use std::time::Duration;

/// One problem: `accounts[1] (tw).hash_key: must be 16 bytes, got 12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A problem sink scoped to a section (`ledger`, `accounts[0] (hk)`).
#[derive(Debug)]
pub(crate) struct Problems<'a> {
    pub scope: String,
    pub list: &'a mut Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(scope: impl Into<String>, list: &'a mut Vec<Problem>) -> Self {
        Self {
            scope: scope.into(),
            list,
        }
    }

    pub fn add(&mut self, key: &str, message: impl Into<String>) {
        self.list.push(Problem {
            field: format!("{}.{}", self.scope, key),
            message: message.into(),
        });
    }

    /// A required string; records "missing" and returns `None` when absent or blank.
    pub fn required(&mut self, key: &str, value: Option<&String>) -> Option<String> {
        match value.map(|s| s.trim()) {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            _ => {
                self.add(key, "missing (required)");
                None
            }
        }
    }

    /// A human-readable duration (`"10m"`), falling back to `default` when absent.
    pub fn duration(&mut self, key: &str, value: Option<&String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => match humantime::parse_duration(s.trim()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.add(key, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.add(
                        key,
                        format!("{s:?} is not a duration like \"30s\" or \"10m\" ({e})"),
                    );
                    default
                }
            },
        }
    }

    /// A positive integer within `1..=max`, falling back to `default` when absent.
    pub fn count(&mut self, key: &str, value: Option<i64>, default: u32, max: u32) -> u32 {
        match value {
            None => default,
            Some(n) if n >= 1 && n <= i64::from(max) => n as u32,
            Some(n) => {
                self.add(key, format!("must be between 1 and {max}, got {n}"));
                default
            }
        }
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: Option<&String>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = value else { return default };
        match options.iter().find(|(name, _)| name == s) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| *n).collect();
                self.add(key, format!("{s:?} is not one of: {}", names.join(", ")));
                default
            }
        }
    }

    /// A gateway base URL: http(s), and plain http only on loopback (the sandbox), because
    /// keys and signed requests must not cross a network in clear text.
    pub fn base_url(&mut self, key: &str, value: Option<&String>) -> Option<url::Url> {
        let raw = self.required(key, value)?;
        let url = match url::Url::parse(&raw) {
            Ok(u) => u,
            Err(e) => {
                self.add(key, format!("{raw:?} is not a URL ({e})"));
                return None;
            }
        };
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" if url.host().is_some() => Some(url),
            "http" if loopback => Some(url),
            "http" => {
                self.add(
                    key,
                    format!("{raw:?} must use https (plain http is allowed only on loopback)"),
                );
                None
            }
            _ => {
                self.add(key, format!("{raw:?} must be an https:// URL with a host"));
                None
            }
        }
    }
}
