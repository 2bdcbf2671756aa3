//! `[api]`: the daemon's HTTP listener (intake and read API, gateway notifications, health and
//! metrics). Off unless `listen` or a token is configured; a listener without a bearer token
//! is a configuration error, never an open door.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::problems::Problems;
use super::raw::RawApi;
use super::secret::secret;

/// Where the API listens when `[api]` names a token but no address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8177";

/// A bearer token shorter than this is refused: it would be guessable.
const MIN_TOKEN_CHARS: usize = 16;

/// The largest request body accepted by default: a batch of a few thousand payments.
const DEFAULT_MAX_BODY: u32 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// The bearer token `/v1` requires (compared in constant time).
    pub token: SecretString,
    /// Bodies larger than this are refused with 413 before they are read whole.
    pub max_body: usize,
    /// A request that takes longer is answered 408 (a slow client cannot hold a connection).
    pub request_timeout: Duration,
}

/// `None` when the API is off (none of its keys set).
pub(crate) fn validate(raw: &RawApi, p: &mut Problems<'_>) -> Option<ApiSettings> {
    let configured = raw.listen.is_some() || raw.token.is_some() || raw.token_file.is_some();
    if !configured {
        for (key, set) in [
            ("max_body", raw.max_body.is_some()),
            ("request_timeout", raw.request_timeout.is_some()),
        ] {
            if set {
                p.add(
                    key,
                    "has no effect: the API is off (set listen and token_file)",
                );
            }
        }
        return None;
    }
    let given = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match given.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "listen",
                format!("{given:?} is not an address with a port (e.g. {DEFAULT_LISTEN:?})"),
            );
            None
        }
    };
    let token = secret(p, "token", raw.token.as_ref(), raw.token_file.as_ref()).filter(|t| {
        let long_enough = t.expose_secret().chars().count() >= MIN_TOKEN_CHARS;
        if !long_enough {
            p.add(
                "token",
                format!(
                    "is shorter than {MIN_TOKEN_CHARS} characters; use a random one, e.g. \
                     `openssl rand -hex 32`"
                ),
            );
        }
        long_enough
    });
    let max_body = p.count("max_body", raw.max_body, DEFAULT_MAX_BODY, 64 * 1024 * 1024) as usize;
    let request_timeout = p.duration(
        "request_timeout",
        raw.request_timeout.as_ref(),
        Duration::from_secs(30),
    );
    Some(ApiSettings {
        listen: listen?,
        token: token?,
        max_body,
        request_timeout,
    })
}
