//! Account settings that point payrecon at a running sandbox, with the documented defaults,
//! so tests, the demo and the benchmark build their clients the way `config` does.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;

use super::config::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY,
};
use super::server::SandboxHandle;
use crate::config::{CloseMethod, EcpayAccount, EcpayQueryApi, QfpayAccount, SignType};
use crate::domain::{AccountName, Provider, RetrySchedule};

/// A QFPay account for `app_code`/`client_key` at `base_url`, with payrecon's defaults
/// (documented rate limits, batches of 4, MD5, response signatures checked when present).
pub fn qfpay_account(
    name: &str,
    base_url: url::Url,
    app_code: &str,
    client_key: &str,
) -> QfpayAccount {
    QfpayAccount {
        name: AccountName::parse(name).expect("sandbox account names are valid"),
        base_url,
        app_code: app_code.to_string(),
        client_key: SecretString::from(client_key.to_string()),
        mchid: None,
        timezone: chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
        sign_type: SignType::Md5,
        require_response_signature: false,
        rate_per_second: 100,
        rate_per_minute: 400,
        batch_size: 4,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retry_for: Duration::from_secs(30),
        register_from_notifications: false,
        in_progress_interval: RetrySchedule::default_for(Provider::Qfpay)
            .in_progress
            .initial,
        cancel_routes: BTreeMap::new(),
        close_method: CloseMethod::Post,
        ledger_is_complete: false,
    }
}

/// An ECPay account for `merchant_id` at `base_url`, with payrecon's defaults.
pub fn ecpay_account(
    name: &str,
    base_url: url::Url,
    merchant_id: &str,
    hash_key: &str,
    hash_iv: &str,
    query_api: EcpayQueryApi,
) -> EcpayAccount {
    EcpayAccount {
        name: AccountName::parse(name).expect("sandbox account names are valid"),
        base_url,
        merchant_id: merchant_id.to_string(),
        platform_id: None,
        hash_key: SecretString::from(hash_key.to_string()),
        hash_iv: SecretString::from(hash_iv.to_string()),
        query_api,
        first_query_after: Duration::from_secs(600),
        nopay_interval: Duration::from_secs(600),
        nopay_patience: crate::domain::ECPAY_NOPAY_PATIENCE,
        unauthorized_patience: crate::domain::ECPAY_UNAUTHORIZED_PATIENCE,
        rate_per_minute: 30,
        pause_after_403: Duration::from_secs(1800),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retry_for: Duration::from_secs(30),
        register_from_notifications: false,
        after_final_look_back: Duration::from_secs(14 * 86_400),
    }
}

impl SandboxHandle {
    /// The `config/dev.toml` QFPay merchant, pointed at this sandbox.
    pub fn dev_qfpay_account(&self, name: &str) -> QfpayAccount {
        qfpay_account(
            name,
            self.base_url(),
            DEV_QFPAY_APP_CODE,
            DEV_QFPAY_CLIENT_KEY,
        )
    }

    /// The `config/dev.toml` ECPay merchant (3002607), pointed at this sandbox.
    pub fn dev_ecpay_account(&self, name: &str, query_api: EcpayQueryApi) -> EcpayAccount {
        ecpay_account(
            name,
            self.base_url(),
            DEV_ECPAY_MERCHANT_ID,
            DEV_ECPAY_HASH_KEY,
            DEV_ECPAY_HASH_IV,
            query_api,
        )
    }
}
