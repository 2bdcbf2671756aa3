//! The configuration exactly as the layers give it: loose types, everything optional, so that
//! validation can report every problem at once with its field name instead of stopping at the
//! first serde error.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSettings {
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub reconcile: RawReconcile,
    #[serde(default)]
    pub reversal: RawReversal,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub max_body: Option<i64>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLedger {
    pub path: Option<String>,
    pub url: Option<String>,
    pub password_file: Option<String>,
    pub max_connections: Option<i64>,
    pub busy_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub reconcile: Option<String>,
    pub sweep: Option<String>,
    pub sweep_look_back: Option<String>,
    pub max_failed_passes: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReconcile {
    pub lease: Option<String>,
    pub lane_wait: Option<String>,
    pub chunk_size: Option<i64>,
    pub concurrency: Option<i64>,
    pub give_up_after: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReversal {
    pub mode: Option<String>,
    pub cpm_in_progress_limit: Option<String>,
    pub default_expiry: Option<String>,
    pub expiry_grace: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

/// The union of both providers' account keys; validation rejects keys of the other provider.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    pub name: Option<String>,
    pub provider: Option<String>,
    pub base_url: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub rate_per_minute: Option<i64>,
    pub retry_for: Option<String>,
    pub register_from_notifications: Option<bool>,
    // QFPay
    pub app_code: Option<String>,
    pub client_key: Option<String>,
    pub client_key_file: Option<String>,
    pub mchid: Option<String>,
    pub timezone: Option<String>,
    pub sign_type: Option<String>,
    pub require_response_signature: Option<bool>,
    pub rate_per_second: Option<i64>,
    pub batch_size: Option<i64>,
    pub in_progress_interval: Option<String>,
    pub cancel_routes: Option<BTreeMap<String, String>>,
    pub close_method: Option<String>,
    pub ledger_is_complete: Option<bool>,
    // ECPay
    pub merchant_id: Option<String>,
    pub platform_id: Option<String>,
    pub hash_key: Option<String>,
    pub hash_key_file: Option<String>,
    pub hash_iv: Option<String>,
    pub hash_iv_file: Option<String>,
    pub query_api: Option<String>,
    pub first_query_after: Option<String>,
    pub nopay_interval: Option<String>,
    pub nopay_steady_checks: Option<i64>,
    pub nopay_max_interval: Option<String>,
    pub nopay_horizon: Option<String>,
    pub unauthorized_max_interval: Option<String>,
    pub unauthorized_horizon: Option<String>,
    pub pause_after_403: Option<String>,
    pub after_final_look_back: Option<String>,
}

impl RawAccount {
    /// Keys that belong to the other provider, for a clear "not a QFPay setting" message.
    pub fn foreign_keys(&self, provider: crate::domain::Provider) -> Vec<&'static str> {
        use crate::domain::Provider;
        let qfpay: [(&str, bool); 12] = [
            ("app_code", self.app_code.is_some()),
            ("client_key", self.client_key.is_some()),
            ("client_key_file", self.client_key_file.is_some()),
            ("mchid", self.mchid.is_some()),
            ("timezone", self.timezone.is_some()),
            ("sign_type", self.sign_type.is_some()),
            (
                "require_response_signature",
                self.require_response_signature.is_some(),
            ),
            ("rate_per_second", self.rate_per_second.is_some()),
            ("batch_size", self.batch_size.is_some()),
            ("cancel_routes", self.cancel_routes.is_some()),
            ("close_method", self.close_method.is_some()),
            ("ledger_is_complete", self.ledger_is_complete.is_some()),
        ];
        let ecpay: [(&str, bool); 16] = [
            ("merchant_id", self.merchant_id.is_some()),
            ("platform_id", self.platform_id.is_some()),
            ("hash_key", self.hash_key.is_some()),
            ("hash_key_file", self.hash_key_file.is_some()),
            ("hash_iv", self.hash_iv.is_some()),
            ("hash_iv_file", self.hash_iv_file.is_some()),
            ("query_api", self.query_api.is_some()),
            ("first_query_after", self.first_query_after.is_some()),
            ("nopay_interval", self.nopay_interval.is_some()),
            ("nopay_steady_checks", self.nopay_steady_checks.is_some()),
            ("nopay_max_interval", self.nopay_max_interval.is_some()),
            ("nopay_horizon", self.nopay_horizon.is_some()),
            (
                "unauthorized_max_interval",
                self.unauthorized_max_interval.is_some(),
            ),
            ("unauthorized_horizon", self.unauthorized_horizon.is_some()),
            ("pause_after_403", self.pause_after_403.is_some()),
            (
                "after_final_look_back",
                self.after_final_look_back.is_some(),
            ),
        ];
        let other: &[(&str, bool)] = match provider {
            Provider::Qfpay => &ecpay,
            Provider::Ecpay => &qfpay,
        };
        other
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect()
    }
}
