//! `[[accounts]]` with `provider = "ecpay"`: typed, validated settings.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::problems::Problems;
use super::raw::RawAccount;
use super::secret::secret;
use crate::domain::{
    AccountName, ECPAY_NOPAY_PATIENCE, ECPAY_UNAUTHORIZED_PATIENCE, Patience, RetryRule,
};

/// Which order-status API to ask (docs/PROTOCOLS.md §E3.1–3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcpayQueryApi {
    /// `/1.0.0/CreditDetail/QueryTrade`: credit-card authorization detail (seed 003).
    CreditDetail,
    /// `/1.0.0/Cashier/QueryTrade`: order-level paid/unpaid (`TradeStatus`).
    Cashier,
}

#[derive(Debug, Clone)]
pub struct EcpayAccount {
    pub name: AccountName,
    pub base_url: url::Url,
    pub merchant_id: String,
    /// Platform partners only; when set, the outer `MerchantID` must equal it (docs/PROTOCOLS.md §E1.1).
    pub platform_id: Option<String>,
    /// AES-128 key: exactly 16 bytes, used as-is (docs/PROTOCOLS.md §E1.4).
    pub hash_key: SecretString,
    /// AES-128-CBC IV: exactly 16 bytes, used as-is.
    pub hash_iv: SecretString,
    pub query_api: EcpayQueryApi,
    /// ECPay: query no sooner than 10 minutes after the order was created (seed 003).
    pub first_query_after: Duration,
    /// ECPay: after `error_nopay`, query again in 10 minutes (seed 003).
    pub nopay_interval: Duration,
    /// How `error_nopay` is waited out: `nopay_interval` for the first checks, then growing
    /// to `nopay_max_interval`, failed at `nopay_horizon` after creation (domain `Patience`).
    pub nopay_patience: Patience,
    /// How `Unauthorized` (銀行未授權完成) is waited out: `nopay_interval` doubling to
    /// `unauthorized_max_interval`, failed at `unauthorized_horizon` after creation.
    pub unauthorized_patience: Patience,
    /// Conservative default: ECPay publishes no number, only "too fast → HTTP 403".
    pub rate_per_minute: u32,
    /// ECPay: after HTTP 403, wait 30 minutes before calling again (docs/PROTOCOLS.md §E6).
    pub pause_after_403: Duration,
    pub connect_timeout: Duration,
    /// ECPay advises ≥ 30 s for calls that touch the bank (docs/PROTOCOLS.md §E6).
    pub request_timeout: Duration,
    /// How long one call keeps retrying transport errors and 5xx before giving up.
    pub retry_for: Duration,
    /// Whether a gateway notification for an order the ledger does not know registers it
    /// (to be settled by a query like any other); otherwise it is recorded as a
    /// `notified_unknown` discrepancy.
    pub register_from_notifications: bool,
    /// A paid order is re-checked for this long after its creation (captures, cancellations
    /// and refunds after authorization come days later; ECPay has no sweep). Zero: never.
    pub after_final_look_back: Duration,
}

fn check_aes_part(
    p: &mut Problems<'_>,
    key: &str,
    s: Option<SecretString>,
) -> Option<SecretString> {
    let s = s?;
    let len = s.expose_secret().len();
    if len == 16 {
        Some(s)
    } else {
        p.add(
            key,
            format!("must be exactly 16 bytes (AES-128), got {len}"),
        );
        None
    }
}

/// `<what>_steady_checks`, `<what>_max_interval` and `<what>_horizon` over `default`, starting
/// at the account's `nopay_interval`.
fn patience(
    p: &mut Problems<'_>,
    what: &str,
    steady_checks: Option<i64>,
    max_interval: Option<&String>,
    horizon: Option<&String>,
    default: Patience,
    interval: Duration,
) -> Patience {
    let steady_checks = match steady_checks {
        None => default.steady_checks,
        Some(n) if (0..=1000).contains(&n) => n as u32,
        Some(n) => {
            p.add(
                &format!("{what}_steady_checks"),
                format!("must be between 0 and 1000, got {n}"),
            );
            default.steady_checks
        }
    };
    let max_key = format!("{what}_max_interval");
    let max = p.duration(&max_key, max_interval, default.rule.max);
    if max < interval {
        p.add(&max_key, "must not be shorter than nopay_interval");
    }
    Patience {
        steady_checks,
        rule: RetryRule {
            initial: interval,
            max: max.max(interval),
            ..default.rule
        },
        horizon: p.duration(&format!("{what}_horizon"), horizon, default.horizon),
    }
}

pub(crate) fn validate(
    name: AccountName,
    raw: &RawAccount,
    p: &mut Problems<'_>,
) -> Option<EcpayAccount> {
    let ten_minutes = Duration::from_secs(600);
    let base_url = p.base_url("base_url", raw.base_url.as_ref());
    let merchant_id = p.required("merchant_id", raw.merchant_id.as_ref());
    if merchant_id.as_ref().is_some_and(|m| m.len() > 10) {
        p.add(
            "merchant_id",
            "longer than 10 characters (ECPay MerchantID is String(10))",
        );
    }
    let hash_key = secret(
        p,
        "hash_key",
        raw.hash_key.as_ref(),
        raw.hash_key_file.as_ref(),
    );
    let hash_key = check_aes_part(p, "hash_key", hash_key);
    let hash_iv = secret(
        p,
        "hash_iv",
        raw.hash_iv.as_ref(),
        raw.hash_iv_file.as_ref(),
    );
    let hash_iv = check_aes_part(p, "hash_iv", hash_iv);
    let query_api = p.choice(
        "query_api",
        raw.query_api.as_ref(),
        &[
            ("credit_detail", EcpayQueryApi::CreditDetail),
            ("cashier", EcpayQueryApi::Cashier),
        ],
        EcpayQueryApi::CreditDetail,
    );
    let platform_id = raw
        .platform_id
        .as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let first_query_after = p.duration(
        "first_query_after",
        raw.first_query_after.as_ref(),
        ten_minutes,
    );
    let nopay_interval = p.duration("nopay_interval", raw.nopay_interval.as_ref(), ten_minutes);
    let nopay_patience = patience(
        p,
        "nopay",
        raw.nopay_steady_checks,
        raw.nopay_max_interval.as_ref(),
        raw.nopay_horizon.as_ref(),
        ECPAY_NOPAY_PATIENCE,
        nopay_interval,
    );
    let unauthorized_patience = patience(
        p,
        "unauthorized",
        None,
        raw.unauthorized_max_interval.as_ref(),
        raw.unauthorized_horizon.as_ref(),
        ECPAY_UNAUTHORIZED_PATIENCE,
        nopay_interval,
    );
    let rate_per_minute = p.count("rate_per_minute", raw.rate_per_minute, 30, 6000);
    let pause_after_403 = p.duration(
        "pause_after_403",
        raw.pause_after_403.as_ref(),
        Duration::from_secs(1800),
    );
    let connect_timeout = p.duration(
        "connect_timeout",
        raw.connect_timeout.as_ref(),
        Duration::from_secs(5),
    );
    let request_timeout = p.duration(
        "request_timeout",
        raw.request_timeout.as_ref(),
        Duration::from_secs(30),
    );
    let retry_for = p.duration("retry_for", raw.retry_for.as_ref(), Duration::from_secs(30));
    let after_final_look_back = p.duration(
        "after_final_look_back",
        raw.after_final_look_back.as_ref(),
        Duration::from_secs(14 * 86_400),
    );
    Some(EcpayAccount {
        name,
        base_url: base_url?,
        merchant_id: merchant_id.filter(|m| m.len() <= 10)?,
        platform_id,
        hash_key: hash_key?,
        hash_iv: hash_iv?,
        query_api,
        first_query_after,
        nopay_interval,
        nopay_patience,
        unauthorized_patience,
        rate_per_minute,
        pause_after_403,
        connect_timeout,
        request_timeout,
        retry_for,
        register_from_notifications: raw.register_from_notifications.unwrap_or(false),
        after_final_look_back,
    })
}

impl EcpayAccount {
    /// A horizon is reached at the first check past it (up to one max interval later); it must
    /// come before `reconcile.give_up_after`, which would otherwise hand the payment to
    /// review first and make the horizon a dead setting.
    pub(crate) fn check_horizons(&self, give_up_after: Duration, p: &mut Problems<'_>) {
        for (key, patience) in [
            ("nopay_horizon", &self.nopay_patience),
            ("unauthorized_horizon", &self.unauthorized_patience),
        ] {
            if patience.horizon + patience.rule.max >= give_up_after {
                p.add(
                    key,
                    format!(
                        "plus its max interval must be shorter than reconcile.give_up_after ({})",
                        humantime::format_duration(give_up_after)
                    ),
                );
            }
        }
    }

    /// Builds this account's query client on the process-wide HTTP client. The connect
    /// timeout belongs to `http` (see `gateway::transport::http_client`); the request timeout,
    /// pacing and 403 pause come from here.
    pub fn client(&self, http: reqwest::Client) -> crate::gateway::ecpay::EcpayClient {
        use crate::gateway::ecpay::{EcpayClient, EcpayClientSettings, QueryApi};
        EcpayClient::new(
            EcpayClientSettings {
                account: self.name.clone(),
                base_url: self.base_url.clone(),
                merchant_id: self.merchant_id.clone(),
                platform_id: self.platform_id.clone(),
                hash_key: self.hash_key.clone(),
                hash_iv: self.hash_iv.clone(),
                query_api: match self.query_api {
                    EcpayQueryApi::CreditDetail => QueryApi::CreditDetail,
                    EcpayQueryApi::Cashier => QueryApi::Cashier,
                },
                nopay_interval: self.nopay_interval,
                rate_per_minute: self.rate_per_minute,
                pause_after_403: self.pause_after_403,
                request_timeout: self.request_timeout,
                retry: crate::gateway::transport::RetryBudget {
                    max_elapsed: self.retry_for,
                    ..Default::default()
                },
            },
            http,
        )
    }
}
