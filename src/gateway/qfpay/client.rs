//! The thin transport: one signed form call to QFPay, paced per account, retried through
//! [`with_retries`], with the answer's signature checked on the raw bytes before it is parsed.
//! Everything it sends is built by the pure modules; everything it returns is classified by them.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use secrecy::SecretString;
use serde_json::Value;

use super::cancel::{self, CancelAnswer, CancelOutcome, CancelRequest};
use super::codes::{self, CodeClass};
use super::payment::{self, PaymentCreated, PaymentRequest};
use super::request::{self, Form, IdBatch, IdLookup, PAGE_SIZE};
use super::response::{self, Envelope, GATEWAY};
use super::sign::{self, SignType, SignatureCheck};
use super::sweep::{WindowPager, WindowQuery};
use crate::domain::{AccountName, CancelRoute};
use crate::gateway::GatewayError;
use crate::gateway::transport::{Pacer, RetryBudget, with_retries};

/// A QFPay API: its path, and its name in the metrics (`endpoint` label).
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    path: &'static str,
    metric: &'static str,
}

const QUERY: Endpoint = Endpoint {
    path: "/trade/v1/query",
    metric: "qfpay_query",
};
const PAYMENT: Endpoint = Endpoint {
    path: "/trade/v1/payment",
    metric: "qfpay_payment",
};
const REVERSAL: Endpoint = Endpoint {
    path: "/trade/v1/reversal",
    metric: "qfpay_reversal",
};
const CLOSE: Endpoint = Endpoint {
    path: "/trade/v1/close",
    metric: "qfpay_close",
};

/// One page of a query answer.
#[derive(Debug)]
pub(crate) struct QueryPage {
    pub records: Vec<Value>,
    /// The top-level `respcd`.
    pub code: String,
    /// The page size the gateway used: the `page_size` it echoed when smaller than the one
    /// sent. A page with this many records is full.
    pub page_size: usize,
}

impl QueryPage {
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.page_size
    }
}

/// HTTP method of a call. `/trade/v1/close` is GET in the newest docs and POST in the 2017/2018
/// ones (docs/PROTOCOLS.md §Q4.5, CONFLICT); the client uses POST, like every code sample of its sibling
/// `/trade/v1/reversal`, unless told otherwise with [`QfpayClient::with_close_method`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMethod {
    Post,
    /// Parameters go in the query string (same encoding, same signature).
    Get,
}

/// Everything the adapter needs about one QFPay merchant account. Built by
/// `config::QfpayAccount::client`; the adapter never reads configuration itself.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The account's name in payrecon's configuration (the metrics' `account` label).
    pub account: AccountName,
    pub base_url: url::Url,
    pub app_code: String,
    pub client_key: SecretString,
    /// Sent (and signed) only when QFPay issued one (docs/PROTOCOLS.md §Q1.3).
    pub mchid: Option<String>,
    /// Provider-local time of `start_time`/`end_time`/`txdtm`/`sysdtm`.
    pub timezone: FixedOffset,
    pub sign_type: SignType,
    /// Refuse answers without `X-QF-SIGN` (docs/PROTOCOLS.md §Q1.5: presence unconfirmed, so off by default).
    pub require_response_signature: bool,
    /// Ids per comma-list lookup (default 4: four 26-digit `syssn` fill String(128), §Q2.1).
    pub batch_size: u32,
    pub request_timeout: Duration,
    /// QFPay allows 100 requests/s and 400/min per merchant (docs/PROTOCOLS.md §Q6).
    pub rate_per_second: u32,
    pub rate_per_minute: u32,
}

/// A QFPay OpenAPI client for one merchant account.
///
/// A pacer slot taken by [`QfpayClient::reserve_slot`], for one call.
#[derive(Debug)]
pub struct CallSlot(());

fn not_cancellable() -> CancelAnswer {
    CancelAnswer {
        outcome: CancelOutcome::NotCancellable { code: None },
        code: String::new(),
        evidence: Value::Null,
    }
}

/// Build one per account and clone it: clones share the account's [`Pacer`], so every call to
/// that merchant, from any task, is spaced to stay under its rate limits. `Debug` shows no key
/// (`SecretString` redacts it).
#[derive(Debug, Clone)]
pub struct QfpayClient {
    http: reqwest::Client,
    settings: ClientSettings,
    pacer: Pacer,
    retry: RetryBudget,
    close_method: CallMethod,
}

impl QfpayClient {
    pub fn new(http: reqwest::Client, settings: ClientSettings) -> Self {
        let pacer = Pacer::new(settings.rate_per_second, settings.rate_per_minute);
        Self {
            http,
            settings,
            pacer,
            retry: RetryBudget::default(),
            close_method: CallMethod::Post,
        }
    }

    /// Bounds for retrying one call (transport errors, 5xx, 429 with a short `Retry-After`).
    pub fn with_retry_budget(mut self, retry: RetryBudget) -> Self {
        self.retry = retry;
        self
    }

    /// The account's pacer.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Uses this pacer instead of the account's own (e.g. one pacer shared by two clients of the
    /// same merchant, or [`Pacer::unlimited`] in tests of other things).
    pub fn with_pacer(mut self, pacer: Pacer) -> Self {
        self.pacer = pacer;
        self
    }

    /// A clone (same pacer) that refuses answers without a valid `X-QF-SIGN`, whatever the
    /// account's `require_response_signature` says: for the answers a cancel may follow.
    pub fn requiring_signatures(&self) -> Self {
        let mut strict = self.clone();
        strict.settings.require_response_signature = true;
        strict
    }

    pub fn with_close_method(mut self, method: CallMethod) -> Self {
        self.close_method = method;
        self
    }

    pub(crate) fn mchid(&self) -> Option<&str> {
        self.settings.mchid.as_deref()
    }

    pub fn timezone(&self) -> FixedOffset {
        self.settings.timezone
    }

    /// `t` in the account's provider-local time, as `txdtm` and `sysdtm` are written.
    pub fn local_time(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.settings.timezone).naive_local()
    }

    /// How a lookup will be split into calls (pure; for planning and tests).
    pub fn plan(&self, lookup: &IdLookup) -> Vec<IdBatch> {
        request::plan_batches(lookup, self.settings.batch_size, self.settings.timezone)
    }

    /// Walks a time window page by page (see [`WindowPager`]).
    pub fn sweep(&self, query: WindowQuery) -> WindowPager<'_> {
        WindowPager::new(self, query)
    }

    /// One page of `/trade/v1/query` with `page_size=100`. A top-level "does not exist"
    /// (1136/1268) is an empty page; other non-success codes are errors.
    pub(crate) async fn query_page(
        &self,
        base: &Form,
        page: u32,
    ) -> Result<QueryPage, GatewayError> {
        let mut form = base.clone();
        form.set("page", page.to_string())
            .set("page_size", PAGE_SIZE.to_string());
        let (env, _) = self.call(CallMethod::Post, QUERY, &form).await?;
        let code = env.code()?.to_string();
        let echoed = |v: &Option<String>| v.as_deref().and_then(|p| p.trim().parse::<u32>().ok());
        let echoed_size = echoed(&env.page_size).filter(|&p| p > 0);
        if echoed(&env.page).is_some_and(|p| p != page)
            || echoed_size.is_some_and(|p| p != PAGE_SIZE)
        {
            tracing::warn!(
                page,
                echoed_page = env.page.as_deref().unwrap_or("-"),
                echoed_page_size = env.page_size.as_deref().unwrap_or("-"),
                "QFPay echoed different paging parameters than were sent"
            );
        }
        // A gateway that says it used a smaller page is judged by that size: a page of 50
        // records under `page_size` 50 is full, and the month goes on (a short page against
        // the 100 asked would end it early and miss records).
        let page_size = echoed_size.map_or(PAGE_SIZE, |p| p.min(PAGE_SIZE)) as usize;
        match codes::classify(&code) {
            Some(CodeClass::Success) => Ok(QueryPage {
                records: env.records()?.into_iter().cloned().collect(),
                code,
                page_size,
            }),
            Some(CodeClass::NotFound) => Ok(QueryPage {
                records: Vec::new(),
                code,
                page_size,
            }),
            _ => Err(env.request_error(&code)),
        }
    }

    /// `POST /trade/v1/reversal`.
    pub async fn reverse(&self, req: &CancelRequest) -> Result<CancelAnswer, GatewayError> {
        self.cancel_via(CallMethod::Post, REVERSAL, req).await
    }

    /// `/trade/v1/close` (POST unless [`QfpayClient::with_close_method`] says GET).
    pub async fn close(&self, req: &CancelRequest) -> Result<CancelAnswer, GatewayError> {
        self.cancel_via(self.close_method, CLOSE, req).await
    }

    /// Waits for the next call slot of the account's pacer and asks its gate: the slot a
    /// cancel is then sent in at once ([`QfpayClient::cancel_in_slot`]). The engine takes it
    /// *before* it writes the intent to reverse, so that once the intent is written the
    /// request leaves without a further wait in which the lane could lose its account (a cancel
    /// withheld after its intent would leave the payment `reversing` with a request that was
    /// never sent). `None`: the gate withholds the call.
    pub async fn reserve_slot(&self) -> Option<CallSlot> {
        self.pacer.acquire().await.then_some(CallSlot(()))
    }

    /// Reversal or close as the caller's route says, in a slot already taken;
    /// `NotCancellable` sends nothing.
    pub async fn cancel_in_slot(
        &self,
        _slot: CallSlot,
        route: CancelRoute,
        req: &CancelRequest,
    ) -> Result<CancelAnswer, GatewayError> {
        let Some((method, endpoint)) = self.cancel_endpoint(route) else {
            return Ok(not_cancellable());
        };
        let form = cancel::cancel_form(req, self.settings.mchid.as_deref());
        let (env, body) = self.call_once(method, endpoint, &form).await?;
        cancel::parse_cancel(&env, body)
    }

    /// Reversal or close as the caller's route says; `NotCancellable` sends nothing.
    pub async fn cancel(
        &self,
        route: CancelRoute,
        req: &CancelRequest,
    ) -> Result<CancelAnswer, GatewayError> {
        match self.cancel_endpoint(route) {
            Some((method, endpoint)) => self.cancel_via(method, endpoint, req).await,
            None => Ok(not_cancellable()),
        }
    }

    fn cancel_endpoint(&self, route: CancelRoute) -> Option<(CallMethod, Endpoint)> {
        match route {
            CancelRoute::Reversal => Some((CallMethod::Post, REVERSAL)),
            CancelRoute::Close => Some((self.close_method, CLOSE)),
            CancelRoute::NotCancellable => None,
        }
    }

    /// Sends a reversal or close **once**: never retried, whatever happens. A timeout or 5xx
    /// does not say whether the gateway applied it, and a second request would be a second
    /// cancel of the same money (and an "already cancelled" refusal that hides the first).
    /// The caller settles a lost answer by querying.
    async fn cancel_via(
        &self,
        method: CallMethod,
        endpoint: Endpoint,
        req: &CancelRequest,
    ) -> Result<CancelAnswer, GatewayError> {
        let form = cancel::cancel_form(req, self.settings.mchid.as_deref());
        let (env, body) = self.call_once_paced(method, endpoint, &form).await?;
        cancel::parse_cancel(&env, body)
    }

    /// `POST /trade/v1/payment` (seed 001). The request was validated when it was built.
    ///
    /// Not retried on transport errors or 5xx: a payment request whose answer was lost may have
    /// created the order, and the docs say not to resend while the state is unknown (docs/PROTOCOLS.md §Q6).
    /// The caller registers the payment before calling, so the reconciler finds it either way.
    pub async fn create_payment(
        &self,
        req: &PaymentRequest,
    ) -> Result<PaymentCreated, GatewayError> {
        let form = req.form(self.settings.mchid.as_deref());
        let (env, body) = self
            .call_once_paced(CallMethod::Post, PAYMENT, &form)
            .await?;
        payment::parse_payment(&env, body)
    }

    /// A signed call with retries: for queries only, which change nothing at the gateway.
    async fn call(
        &self,
        method: CallMethod,
        endpoint: Endpoint,
        form: &Form,
    ) -> Result<(Envelope, Value), GatewayError> {
        with_retries(self.retry, || self.call_once_paced(method, endpoint, form)).await
    }

    async fn call_once_paced(
        &self,
        method: CallMethod,
        endpoint: Endpoint,
        form: &Form,
    ) -> Result<(Envelope, Value), GatewayError> {
        if !self.pacer.acquire().await {
            return Err(GatewayError::Withheld { gateway: "qfpay" });
        }
        self.call_once(method, endpoint, form).await
    }

    /// One signed call, sent now: the caller has its pacer slot. Every request to QFPay
    /// leaves through here, so this is where it is counted and timed.
    async fn call_once(
        &self,
        method: CallMethod,
        endpoint: Endpoint,
        form: &Form,
    ) -> Result<(Envelope, Value), GatewayError> {
        let path = endpoint.path;
        let started = std::time::Instant::now();
        let result = self.send(method, path, form).await;
        crate::metrics::call_finished(
            &self.settings.account,
            endpoint.metric,
            &result,
            started.elapsed(),
        );
        match &result {
            Ok((env, _)) => tracing::debug!(path, respcd = ?env.respcd, "qfpay answered"),
            Err(e) => tracing::debug!(path, error = %e, "qfpay call failed"),
        }
        result
    }

    async fn send(
        &self,
        method: CallMethod,
        path: &str,
        form: &Form,
    ) -> Result<(Envelope, Value), GatewayError> {
        let s = &self.settings;
        let url = format!("{}{}", s.base_url.as_str().trim_end_matches('/'), path);
        let mut url = url::Url::parse(&url).map_err(|e| GatewayError::Transport {
            gateway: GATEWAY,
            detail: format!("bad URL: {e}"),
            timed_out: false,
        })?;
        let body = form.encode();
        let signature = sign::sign_request(form.params(), &s.client_key, s.sign_type);
        let builder = match method {
            CallMethod::Post => self
                .http
                .post(url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body),
            CallMethod::Get => {
                url.set_query(Some(&body));
                self.http.get(url)
            }
        };
        let mut builder = builder
            .timeout(s.request_timeout)
            .header("X-QF-APPCODE", &s.app_code)
            .header("X-QF-SIGN", signature);
        if s.sign_type == SignType::Sha256 {
            builder = builder.header("X-QF-SIGNTYPE", "SHA256");
        }
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status();
        if status.as_u16() == 429 {
            return Err(GatewayError::RateLimited {
                gateway: GATEWAY,
                status: 429,
                retry_after: retry_after(resp.headers(), Utc::now()),
            });
        }
        if !status.is_success() {
            return Err(GatewayError::HttpStatus {
                gateway: GATEWAY,
                status: status.as_u16(),
            });
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (given, given_type) = (header("X-QF-SIGN"), header("X-QF-SIGNTYPE"));
        let bytes = resp.bytes().await.map_err(transport)?;
        let check = sign::check_response(
            &bytes,
            given.as_deref(),
            given_type.as_deref(),
            &s.client_key,
            s.require_response_signature,
        );
        if check == SignatureCheck::Invalid {
            return Err(GatewayError::BadSignature { gateway: GATEWAY });
        }
        response::parse_envelope(&bytes)
    }
}

fn transport(e: reqwest::Error) -> GatewayError {
    GatewayError::Transport {
        gateway: GATEWAY,
        timed_out: e.is_timeout(),
        detail: e.without_url().to_string(),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3); `None` if absent or
/// unreadable. A date in the past is a zero wait.
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .to_utc();
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(60)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
