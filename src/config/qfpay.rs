//! `[[accounts]]` with `provider = "qfpay"`: typed, validated settings.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::FixedOffset;
use secrecy::SecretString;

use super::problems::Problems;
use super::raw::RawAccount;
use super::secret::secret;
use crate::domain::{AccountName, CancelRoute, PayType};

/// Request signature digest (docs/PROTOCOLS.md §Q1.4): MD5 is the default every verified vector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    Md5,
    Sha256,
}

#[derive(Debug, Clone)]
pub struct QfpayAccount {
    pub name: AccountName,
    pub base_url: url::Url,
    /// `X-QF-APPCODE`: identifies the merchant or partner; not a secret.
    pub app_code: String,
    pub client_key: SecretString,
    /// Sent only when QFPay issued one (docs/PROTOCOLS.md §Q1.3).
    pub mchid: Option<String>,
    /// Provider-local time of `start_time`/`end_time`/`sysdtm`.
    pub timezone: FixedOffset,
    pub sign_type: SignType,
    pub require_response_signature: bool,
    /// QFPay allows 100 requests/second and 400/minute per merchant (docs/PROTOCOLS.md §Q6).
    pub rate_per_second: u32,
    pub rate_per_minute: u32,
    /// Ids per comma-list lookup. `syssn`/`out_trade_no` are typed String(128); four 26-digit
    /// `syssn` plus commas fit (docs/PROTOCOLS.md §Q2.1), so 4 is the safe default until QFPay confirms more.
    pub batch_size: u32,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How long one call keeps retrying transport errors and 5xx before giving up.
    pub retry_for: Duration,
    /// Whether a gateway notification for an order the ledger does not know registers it
    /// (to be settled by a query like any other); otherwise it is recorded as a
    /// `notified_unknown` discrepancy.
    pub register_from_notifications: bool,
    pub in_progress_interval: Duration,
    /// Overrides of the default cancel route per pay type.
    pub cancel_routes: BTreeMap<PayType, CancelRoute>,
    /// HTTP method of `/trade/v1/close`: the docs conflict (GET in the 2024–2026 docs, POST in
    /// the 2016/2018 ones and no code sample); POST by default, like every sample of its
    /// sibling `/trade/v1/reversal`.
    pub close_method: CloseMethod,
    /// Whether the ledger is this merchant's complete book (every payment is registered), so
    /// a gateway record the ledger does not know is a `missing_in_ledger` discrepancy. Off by
    /// default: most merchants register only the payments they are unsure of, and then every
    /// other record of a sweep would be "missing".
    pub ledger_is_complete: bool,
}

/// `close_method` in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMethod {
    Post,
    Get,
}

impl QfpayAccount {
    /// The cancel route for a pay type: the account's override, else the documented default.
    pub fn cancel_route(&self, pay_type: &PayType) -> CancelRoute {
        self.cancel_routes
            .get(pay_type)
            .copied()
            .unwrap_or_else(|| pay_type.default_cancel_route())
    }
}

/// Parses `"+08:00"` / `"-05:30"` / `"UTC"`.
pub(crate) fn parse_offset(s: &str) -> Option<FixedOffset> {
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

pub(crate) fn validate(
    name: AccountName,
    raw: &RawAccount,
    p: &mut Problems<'_>,
) -> Option<QfpayAccount> {
    let base_url = p.base_url("base_url", raw.base_url.as_ref());
    let app_code = p.required("app_code", raw.app_code.as_ref());
    let client_key = secret(
        p,
        "client_key",
        raw.client_key.as_ref(),
        raw.client_key_file.as_ref(),
    );
    let mchid = match raw.mchid.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(m) if m.len() > 16 => {
            p.add(
                "mchid",
                "longer than 16 characters (QFPay mchid is String(16))",
            );
            None
        }
        Some(m) => Some(m.to_string()),
    };
    let timezone = match raw.timezone.as_deref() {
        None => FixedOffset::east_opt(8 * 3600),
        Some(tz) => {
            let parsed = parse_offset(tz.trim());
            if parsed.is_none() {
                p.add(
                    "timezone",
                    format!("{tz:?} is not a UTC offset like \"+08:00\""),
                );
            }
            parsed
        }
    };
    let sign_type = p.choice(
        "sign_type",
        raw.sign_type.as_ref(),
        &[("md5", SignType::Md5), ("sha256", SignType::Sha256)],
        SignType::Md5,
    );
    let rate_per_second = p.count("rate_per_second", raw.rate_per_second, 100, 100);
    let rate_per_minute = p.count("rate_per_minute", raw.rate_per_minute, 400, 400);
    let batch_size = p.count("batch_size", raw.batch_size, 4, 100);
    let connect_timeout = p.duration(
        "connect_timeout",
        raw.connect_timeout.as_ref(),
        Duration::from_secs(5),
    );
    let request_timeout = p.duration(
        "request_timeout",
        raw.request_timeout.as_ref(),
        Duration::from_secs(15),
    );
    let retry_for = p.duration("retry_for", raw.retry_for.as_ref(), Duration::from_secs(30));
    let in_progress_interval = p.duration(
        "in_progress_interval",
        raw.in_progress_interval.as_ref(),
        crate::domain::RetrySchedule::default_for(crate::domain::Provider::Qfpay)
            .in_progress
            .initial,
    );
    let mut cancel_routes = BTreeMap::new();
    for (code, route) in raw.cancel_routes.iter().flatten() {
        let key = format!("cancel_routes.{code}");
        match (PayType::parse(code), CancelRoute::parse(route)) {
            (Ok(pt), Some(r)) => {
                cancel_routes.insert(pt, r);
            }
            (Err(e), _) => p.add(&key, e.to_string()),
            (_, None) => p.add(
                &key,
                format!("{route:?} is not one of: reversal, close, none"),
            ),
        }
    }
    let close_method = p.choice(
        "close_method",
        raw.close_method.as_ref(),
        &[("post", CloseMethod::Post), ("get", CloseMethod::Get)],
        CloseMethod::Post,
    );
    Some(QfpayAccount {
        name,
        base_url: base_url?,
        app_code: app_code?,
        client_key: client_key?,
        mchid,
        timezone: timezone?,
        sign_type,
        require_response_signature: raw.require_response_signature.unwrap_or(false),
        rate_per_second,
        rate_per_minute,
        batch_size,
        connect_timeout,
        request_timeout,
        retry_for,
        register_from_notifications: raw.register_from_notifications.unwrap_or(false),
        in_progress_interval,
        cancel_routes,
        close_method,
        ledger_is_complete: raw.ledger_is_complete.unwrap_or(false),
    })
}

impl QfpayAccount {
    /// Builds this account's QFPay adapter (config builds adapters; adapters never read config).
    /// Build it once per account and clone it, so every call to the merchant shares one pacer.
    pub fn client(&self, http: reqwest::Client) -> crate::gateway::qfpay::QfpayClient {
        use crate::gateway::qfpay;
        qfpay::QfpayClient::new(
            http,
            qfpay::ClientSettings {
                account: self.name.clone(),
                base_url: self.base_url.clone(),
                app_code: self.app_code.clone(),
                client_key: self.client_key.clone(),
                mchid: self.mchid.clone(),
                timezone: self.timezone,
                sign_type: match self.sign_type {
                    SignType::Md5 => qfpay::SignType::Md5,
                    SignType::Sha256 => qfpay::SignType::Sha256,
                },
                require_response_signature: self.require_response_signature,
                batch_size: self.batch_size,
                request_timeout: self.request_timeout,
                rate_per_second: self.rate_per_second,
                rate_per_minute: self.rate_per_minute,
            },
        )
        .with_retry_budget(crate::gateway::transport::RetryBudget {
            max_elapsed: self.retry_for,
            ..Default::default()
        })
        .with_close_method(match self.close_method {
            CloseMethod::Post => qfpay::CallMethod::Post,
            CloseMethod::Get => qfpay::CallMethod::Get,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_with_sign_hours_and_minutes() {
        assert_eq!(parse_offset("+08:00"), FixedOffset::east_opt(8 * 3600));
        assert_eq!(
            parse_offset("-05:30"),
            FixedOffset::east_opt(-(5 * 3600 + 1800))
        );
        assert_eq!(parse_offset("UTC"), FixedOffset::east_opt(0));
        assert_eq!(parse_offset("Asia/Taipei"), None);
        assert_eq!(parse_offset("+8"), None);
        assert_eq!(parse_offset("+25:00"), None);
    }
}
