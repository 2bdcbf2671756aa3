//! Gateway adapters. Each adapter is a pure core (build and sign requests, parse and classify
//! answers, testable without a socket) plus a thin transport that owns the reqwest call.
//!
//! Every answer becomes either domain [`crate::domain::Observation`]s (evidence about payments)
//! or a [`GatewayError`] (no evidence: changes no payment state).

use std::time::Duration;

pub mod ecpay;
pub mod qfpay;
pub mod transport;

/// What the caller should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later (transport, timeout, 5xx, malformed or unsigned answers).
    Retryable,
    /// The gateway asks us to slow down (QFPay HTTP 429, ECPay HTTP 403): pause the account.
    RateLimited,
    /// The account itself is wrong (bad key, merchant stopped, device not activated): pause the
    /// account and alert an operator.
    Account,
    /// This request was refused (bad parameter, duplicate …): says nothing about the payment.
    Request,
}

/// A gateway call that produced no evidence about any payment.
///
/// Messages name the gateway and code but never contain keys, signed strings or full bodies.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{gateway}: transport error: {detail}")]
    Transport {
        gateway: &'static str,
        detail: String,
        /// No answer within the request's timeout (told apart in the metrics).
        timed_out: bool,
    },
    #[error("{gateway}: HTTP {status}")]
    HttpStatus { gateway: &'static str, status: u16 },
    #[error("{gateway}: rate limited (HTTP {status}); {}", retry_hint(*retry_after))]
    RateLimited {
        gateway: &'static str,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{gateway}: response signature does not match")]
    BadSignature { gateway: &'static str },
    #[error("{gateway}: malformed response: {detail}")]
    Malformed {
        gateway: &'static str,
        detail: String,
    },
    #[error("{gateway}: account error {code}: {detail}")]
    Account {
        gateway: &'static str,
        code: String,
        detail: String,
    },
    #[error("{gateway}: request refused with {code}: {detail}")]
    Rejected {
        gateway: &'static str,
        code: String,
        detail: String,
    },
    /// Not sent: this process may no longer hold the account (its lane's lease is lost or
    /// about to run out by its own clock). Says nothing about any payment.
    #[error("{gateway}: call withheld: this process no longer surely holds the account's lease")]
    Withheld { gateway: &'static str },
}

/// How long the gateway asked us to wait, as a person reads it: "retry after 39s", or that it
/// did not say. Whole seconds, rounded up: a wait measured from an `Instant` has nanoseconds.
fn retry_hint(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            format!(
                "retry after {}",
                humantime::format_duration(Duration::from_secs(secs))
            )
        }
        None => "no Retry-After given".to_string(),
    }
}

impl GatewayError {
    pub fn class(&self) -> ErrorClass {
        match self {
            GatewayError::Transport { .. }
            | GatewayError::HttpStatus { .. }
            | GatewayError::BadSignature { .. }
            | GatewayError::Malformed { .. }
            | GatewayError::Withheld { .. } => ErrorClass::Retryable,
            GatewayError::RateLimited { .. } => ErrorClass::RateLimited,
            GatewayError::Account { .. } => ErrorClass::Account,
            GatewayError::Rejected { .. } => ErrorClass::Request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_names_its_wait_in_words_not_in_debug_form() {
        let e = GatewayError::RateLimited {
            gateway: "qfpay",
            status: 429,
            retry_after: Some(Duration::from_millis(38_400)),
        };
        assert_eq!(
            e.to_string(),
            "qfpay: rate limited (HTTP 429); retry after 39s"
        );
        let e = GatewayError::RateLimited {
            gateway: "ecpay",
            status: 403,
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "ecpay: rate limited (HTTP 403); no Retry-After given"
        );
    }
}
