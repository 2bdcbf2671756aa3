//! Helpers shared by the `sandbox_*` integration tests: a started sandbox, and payrecon's real
//! adapters built from `config` account structs pointing at it.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use md5::{Digest, Md5};
use payrecon::config::{EcpayAccount, EcpayQueryApi, QfpayAccount};
use payrecon::domain::{Observation, OutTradeNo, Provider};
use payrecon::gateway::GatewayError;
use payrecon::gateway::ecpay::{EcpayClient, EcpayClientSettings, QueryApi};
use payrecon::gateway::qfpay::{IdLookup, OrderLookup, QfpayClient};
use payrecon::gateway::transport::{Pacer, RetryBudget, http_client};
use payrecon::sandbox::{
    DEV_QFPAY_APP_CODE, DEV_QFPAY_CLIENT_KEY, RateLimits, Sandbox, SandboxClock, SandboxConfig,
    SandboxHandle,
};

pub fn hk() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

/// 2026-11-10 10:00:00 +08:00.
pub fn t0() -> DateTime<Utc> {
    hk().with_ymd_and_hms(2026, 11, 10, 10, 0, 0)
        .unwrap()
        .to_utc()
}

/// A sandbox with the dev merchants, a frozen clock at [`t0`] and no rate limits.
pub async fn frozen_sandbox() -> SandboxHandle {
    let config = SandboxConfig {
        clock: SandboxClock::frozen(t0()),
        rate_limits: RateLimits::off(),
        ..SandboxConfig::dev()
    };
    Sandbox::start(config).await.unwrap()
}

/// A sandbox with the dev merchants on wall-clock time, no rate limits.
pub async fn wall_sandbox() -> SandboxHandle {
    let config = SandboxConfig {
        rate_limits: RateLimits::off(),
        ..SandboxConfig::dev()
    };
    Sandbox::start(config).await.unwrap()
}

pub fn small_budget() -> RetryBudget {
    RetryBudget {
        initial: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        max_elapsed: Duration::from_millis(300),
    }
}

fn http() -> reqwest::Client {
    http_client(Duration::from_secs(2)).unwrap()
}

/// The real QFPay adapter, built by `config` from the account, with pacing off and a short
/// retry budget (the sandbox, not the pacer, is under test).
pub fn qfpay_client(account: &QfpayAccount) -> QfpayClient {
    account
        .client(http())
        .with_pacer(Pacer::unlimited())
        .with_retry_budget(small_budget())
}

pub fn dev_qfpay(sandbox: &SandboxHandle) -> QfpayClient {
    qfpay_client(&sandbox.dev_qfpay_account("hk"))
}

/// The real ECPay adapter from the account's settings, with a fast pace and a short budget.
pub fn ecpay_client(account: &EcpayAccount) -> EcpayClient {
    let settings = EcpayClientSettings {
        account: account.name.clone(),
        base_url: account.base_url.clone(),
        merchant_id: account.merchant_id.clone(),
        platform_id: account.platform_id.clone(),
        hash_key: account.hash_key.clone(),
        hash_iv: account.hash_iv.clone(),
        query_api: match account.query_api {
            EcpayQueryApi::CreditDetail => QueryApi::CreditDetail,
            EcpayQueryApi::Cashier => QueryApi::Cashier,
        },
        nopay_interval: account.nopay_interval,
        rate_per_minute: 60_000,
        pause_after_403: account.pause_after_403,
        request_timeout: Duration::from_millis(500),
        retry: small_budget(),
    };
    EcpayClient::new(settings, http())
}

pub fn dev_ecpay(sandbox: &SandboxHandle, api: EcpayQueryApi) -> EcpayClient {
    ecpay_client(&sandbox.dev_ecpay_account("tw", api))
}

pub fn qf_order(s: &str) -> OutTradeNo {
    OutTradeNo::parse(s, Provider::Qfpay).unwrap()
}

pub fn ec_order(s: &str) -> OutTradeNo {
    OutTradeNo::parse(s, Provider::Ecpay).unwrap()
}

/// Looks one QFPay order up by `out_trade_no` (in the month of `created_at`).
pub async fn lookup(
    client: &QfpayClient,
    out_trade_no: &str,
    created_at: DateTime<Utc>,
) -> Result<Observation, GatewayError> {
    let lookup = IdLookup::OutTradeNo(vec![OrderLookup {
        out_trade_no: qf_order(out_trade_no),
        created_at: Some(created_at),
    }]);
    let mut results = client.query_ids(&lookup).await;
    assert_eq!(results.len(), 1, "one batch");
    let (_, result) = results.remove(0);
    let mut obs = result?;
    assert_eq!(obs.len(), 1, "one observation for one id: {obs:?}");
    Ok(obs.remove(0))
}

/// A hand-signed form POST to the sandbox's QFPay API (for what the adapter never sends).
/// Returns the answer's JSON.
pub async fn raw_qfpay(
    sandbox: &SandboxHandle,
    path: &str,
    params: &[(&str, &str)],
) -> serde_json::Value {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    sorted.sort();
    let signed: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let sign = hex::encode_upper(Md5::digest(
        format!("{}{DEV_QFPAY_CLIENT_KEY}", signed.join("&")).as_bytes(),
    ));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(sorted)
        .finish();
    let url = format!(
        "{}{}",
        sandbox.base_url().as_str().trim_end_matches('/'),
        path
    );
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-QF-APPCODE", DEV_QFPAY_APP_CODE)
        .header("X-QF-SIGN", sign)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let given = resp
        .headers()
        .get("x-qf-sign")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.bytes().await.unwrap();
    let expected = hex::encode_upper(Md5::digest(
        [&bytes[..], DEV_QFPAY_CLIENT_KEY.as_bytes()].concat(),
    ));
    assert_eq!(
        given.as_deref(),
        Some(expected.as_str()),
        "answers are signed"
    );
    serde_json::from_slice(&bytes).unwrap()
}
