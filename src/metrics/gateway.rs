//! Gateway calls: one count and one duration per HTTP request that left for a gateway,
//! retries included. Recorded by each client's one sending function (QFPay
//! `QfpayClient::call_once`, ECPay `EcpayClient::attempt`), after the pacer and its gate: a call
//! withheld by the gate, or refused by the client during an ECPay 403 pause, was never sent
//! and is not counted.

use std::time::Duration;

use crate::domain::AccountName;
use crate::gateway::GatewayError;

use super::{GATEWAY_CALL_DURATION, GATEWAY_CALLS};

/// What an HTTP request to a gateway ended with, as the `outcome` label says it (documented in
/// docs/OPERATIONS.md, "Metrics and alerts").
fn outcome<T>(result: &Result<T, GatewayError>) -> &'static str {
    match result {
        // An answer the adapter could read, whatever its code says about the payment or the
        // request (a QFPay `respcd`, an ECPay `RtnCode`).
        Ok(_) => "ok",
        Err(GatewayError::Transport {
            timed_out: true, ..
        }) => "timeout",
        Err(GatewayError::Transport { .. }) => "transport",
        Err(GatewayError::RateLimited { .. }) => "rate_limited",
        Err(GatewayError::HttpStatus { status, .. }) if *status >= 500 => "http_5xx",
        // Redirects are followed, so another status is a 4xx.
        Err(GatewayError::HttpStatus { .. }) => "http_4xx",
        Err(GatewayError::BadSignature { .. } | GatewayError::Malformed { .. }) => "bad_answer",
        // ECPay's envelope refused (`TransCode` ≠ 1: unknown merchant, stale timestamp).
        Err(GatewayError::Account { .. } | GatewayError::Rejected { .. }) => "refused",
        // Not produced by a request that was sent; named for completeness.
        Err(GatewayError::Withheld { .. }) => "withheld",
    }
}

/// One HTTP request to `endpoint` (e.g. `qfpay_query`) of `account`'s gateway finished after
/// `elapsed` with `result`.
pub(crate) fn call_finished<T>(
    account: &AccountName,
    endpoint: &'static str,
    result: &Result<T, GatewayError>,
    elapsed: Duration,
) {
    let account = account.as_str().to_string();
    ::metrics::counter!(
        GATEWAY_CALLS,
        "account" => account.clone(),
        "endpoint" => endpoint,
        "outcome" => outcome(result),
    )
    .increment(1);
    ::metrics::histogram!(GATEWAY_CALL_DURATION, "account" => account, "endpoint" => endpoint)
        .record(elapsed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_a_request_ends_has_its_outcome() {
        let err = |e: GatewayError| outcome::<()>(&Err(e));
        let transport = |timed_out| GatewayError::Transport {
            gateway: "qfpay",
            detail: String::new(),
            timed_out,
        };
        let status = |status| GatewayError::HttpStatus {
            gateway: "qfpay",
            status,
        };
        assert_eq!(outcome(&Ok::<_, GatewayError>(())), "ok");
        assert_eq!(err(transport(true)), "timeout");
        assert_eq!(err(transport(false)), "transport");
        assert_eq!(err(status(503)), "http_5xx");
        assert_eq!(err(status(404)), "http_4xx");
        assert_eq!(
            err(GatewayError::RateLimited {
                gateway: "ecpay",
                status: 403,
                retry_after: None
            }),
            "rate_limited"
        );
        assert_eq!(
            err(GatewayError::BadSignature { gateway: "qfpay" }),
            "bad_answer"
        );
        assert_eq!(
            err(GatewayError::Account {
                gateway: "ecpay",
                code: "TransCode 0".into(),
                detail: String::new()
            }),
            "refused"
        );
    }
}
