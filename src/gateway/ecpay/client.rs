//! The thin transport: the only code of this adapter that touches the network.
//!
//! One [`EcpayClient`] per merchant account (clones share its pacer and its pause). Each call:
//! refuse while paused after an HTTP 403; wait for the account's pacer slot; POST the envelope
//! with a fresh timestamp and the request timeout; classify. Transport errors, timeouts and
//! HTTP 5xx are retried within the call through [`with_retries`] (the shared `backoff`
//! wrapper); everything else is returned at once and the engine's schedule decides when to
//! ask again.
//!
//! HTTP 403 means "calling too fast": ECPay wants 30 minutes of silence (docs/PROTOCOLS.md §E6), so the
//! client refuses every call for `pause_after_403` and reports
//! [`GatewayError::RateLimited`] with the remaining wait; [`EcpayClient::paused_until`] shows
//! it to the engine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;

use super::cashier::{CASHIER_PATH, cashier_data, classify_cashier};
use super::credit_detail::{CREDIT_DETAIL_PATH, classify_credit_detail, credit_detail_data};
use super::crypto::{CryptoError, DataKey, encrypt_data};
use super::envelope::{GATEWAY, RequestEnvelope, epoch_seconds_now, open_response};
use crate::domain::{AccountName, Observation, OutTradeNo, ProviderRef};
use crate::gateway::GatewayError;
use crate::gateway::transport::{Pacer, RetryBudget, with_retries};

/// Which status API the account is queried with (docs/PROTOCOLS.md §E3.1–3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryApi {
    /// `CreditDetail/QueryTrade`: card authorization and capture state.
    CreditDetail,
    /// `Cashier/QueryTrade`: order-level paid/unpaid.
    Cashier,
}

/// Everything a client needs; built by `config` (`EcpayAccount::client`) or by tests.
#[derive(Debug, Clone)]
pub struct EcpayClientSettings {
    /// The account's name in payrecon's configuration (the metrics' `account` label).
    pub account: AccountName,
    /// E.g. `https://ecpayment-stage.ecpay.com.tw`; the API path is appended.
    pub base_url: url::Url,
    pub merchant_id: String,
    /// Platform partners only: goes into `Data.PlatformID` and becomes the outer `MerchantID`.
    pub platform_id: Option<String>,
    /// 16 bytes, used as the AES key as-is.
    pub hash_key: SecretString,
    /// 16 bytes, used as the AES IV as-is.
    pub hash_iv: SecretString,
    pub query_api: QueryApi,
    /// When the engine should ask again after `error_nopay` (ECPay: 10 minutes).
    pub nopay_interval: Duration,
    /// Calls per minute, evenly spaced.
    pub rate_per_minute: u32,
    /// Silence after an HTTP 403 (ECPay: 30 minutes).
    pub pause_after_403: Duration,
    /// Whole-request timeout per attempt (ECPay advises ≥ 30 s).
    pub request_timeout: Duration,
    /// In-call retries of transport errors, timeouts and 5xx.
    pub retry: RetryBudget,
}

/// A query client for one ECPay merchant account. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EcpayClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: EcpayClientSettings,
    /// An unusable key is reported on every call as an account error rather than a panic.
    key: Result<DataKey, CryptoError>,
    http: reqwest::Client,
    pacer: Pacer,
    paused_until: Mutex<Option<Instant>>,
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> GatewayError {
    let detail = if e.is_timeout() {
        format!("no answer within {}", humantime::format_duration(timeout))
    } else {
        e.to_string()
    };
    GatewayError::Transport {
        gateway: GATEWAY,
        detail,
        timed_out: e.is_timeout(),
    }
}

impl EcpayClient {
    pub fn new(settings: EcpayClientSettings, http: reqwest::Client) -> Self {
        let key = DataKey::new(
            settings.hash_key.expose_secret().as_bytes(),
            settings.hash_iv.expose_secret().as_bytes(),
        );
        let rate = settings.rate_per_minute.max(1);
        Self {
            inner: Arc::new(Inner {
                pacer: Pacer::new(rate, rate),
                settings,
                key,
                http,
                paused_until: Mutex::new(None),
            }),
        }
    }

    /// The account's pacer (shared by every clone).
    pub fn pacer(&self) -> &Pacer {
        &self.inner.pacer
    }

    /// How long the engine should wait before asking again after `error_nopay`.
    pub fn nopay_interval(&self) -> Duration {
        self.inner.settings.nopay_interval
    }

    pub fn query_api(&self) -> QueryApi {
        self.inner.settings.query_api
    }

    /// Until when the account is silent after an HTTP 403, if it is.
    pub fn paused_until(&self) -> Option<Instant> {
        let mut guard = self
            .inner
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_some_and(|until| until <= Instant::now()) {
            *guard = None;
        }
        *guard
    }

    fn pause(&self) {
        let until = Instant::now() + self.inner.settings.pause_after_403;
        *self
            .inner
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }

    fn refuse_if_paused(&self) -> Result<(), GatewayError> {
        match self.paused_until() {
            Some(until) => Err(GatewayError::RateLimited {
                gateway: GATEWAY,
                status: 403,
                retry_after: Some(until.saturating_duration_since(Instant::now())),
            }),
            None => Ok(()),
        }
    }

    /// Asks ECPay about one order with the configured API, by `MerchantTradeNo` only
    /// (`TradeNo` is for recurring authorizations, seed 003; see [`super::credit_detail`]).
    /// A known `trade_no` becomes the observation's `provider_ref`.
    ///
    /// `Ok` is evidence about the payment (including `error_nopay` → in progress); `Err`
    /// is not, and its [`GatewayError::class`] says what to do next.
    pub async fn query(
        &self,
        out_trade_no: &OutTradeNo,
        trade_no: Option<&ProviderRef>,
    ) -> Result<Observation, GatewayError> {
        self.refuse_if_paused()?;
        let key = self.inner.key.as_ref().map_err(|e| GatewayError::Account {
            gateway: GATEWAY,
            code: "hash_key".to_string(),
            detail: e.to_string(),
        })?;
        let s = &self.inner.settings;
        let platform_id = s.platform_id.as_deref();
        // The path, and the API's name in the metrics (`endpoint` label).
        let (path, endpoint, data_json) = match s.query_api {
            QueryApi::CreditDetail => (
                CREDIT_DETAIL_PATH,
                "ecpay_credit_detail",
                credit_detail_data(platform_id, &s.merchant_id, out_trade_no, None),
            ),
            QueryApi::Cashier => (
                CASHIER_PATH,
                "ecpay_cashier",
                cashier_data(platform_id, &s.merchant_id, out_trade_no),
            ),
        };
        let data = encrypt_data(&data_json, key);
        let url = format!("{}{path}", s.base_url.as_str().trim_end_matches('/'));
        let answer = with_retries(s.retry, || self.attempt(&url, endpoint, &data, key)).await?;
        match s.query_api {
            QueryApi::CreditDetail => classify_credit_detail(&answer, out_trade_no, trade_no),
            QueryApi::Cashier => classify_cashier(&answer, out_trade_no),
        }
    }

    /// One HTTP attempt: a new envelope (fresh timestamp), one pacer slot, one POST, its
    /// answer opened. Every request to ECPay leaves through here, so this is where it is
    /// counted and timed; one refused during a 403 pause or withheld by the gate never left.
    async fn attempt(
        &self,
        url: &str,
        endpoint: &'static str,
        data: &str,
        key: &DataKey,
    ) -> Result<Value, GatewayError> {
        self.refuse_if_paused()?;
        if !self.inner.pacer.acquire().await {
            return Err(GatewayError::Withheld { gateway: GATEWAY });
        }
        self.refuse_if_paused()?;
        let started = std::time::Instant::now();
        let answer = match self.send(url, data).await {
            Ok(body) => open_response(&body, key),
            Err(e) => Err(e),
        };
        crate::metrics::call_finished(
            &self.inner.settings.account,
            endpoint,
            &answer,
            started.elapsed(),
        );
        answer
    }

    /// The POST itself; the body of a 2xx answer.
    async fn send(&self, url: &str, data: &str) -> Result<String, GatewayError> {
        let s = &self.inner.settings;
        let outer = s.platform_id.as_deref().unwrap_or(&s.merchant_id);
        let envelope = RequestEnvelope::new(outer, epoch_seconds_now(), data.to_string());
        let response = self
            .inner
            .http
            .post(url)
            .timeout(s.request_timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(envelope.to_json())
            .send()
            .await
            .map_err(|e| transport_error(&e, s.request_timeout))?;
        let status = response.status();
        if status == reqwest::StatusCode::FORBIDDEN {
            self.pause();
            tracing::warn!(
                merchant_id = %s.merchant_id,
                pause = %humantime::format_duration(s.pause_after_403),
                "ECPay answered HTTP 403 (too many calls); no calls for this account until the pause ends"
            );
            return Err(GatewayError::RateLimited {
                gateway: GATEWAY,
                status: 403,
                retry_after: Some(s.pause_after_403),
            });
        }
        if !status.is_success() {
            return Err(GatewayError::HttpStatus {
                gateway: GATEWAY,
                status: status.as_u16(),
            });
        }
        response
            .text()
            .await
            .map_err(|e| transport_error(&e, s.request_timeout))
    }
}
