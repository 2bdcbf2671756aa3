//! How a sandbox is set up: where it listens, which merchants it accepts, its limits and faults.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::FixedOffset;
use secrecy::SecretString;

use super::clock::SandboxClock;
use super::faults::Faults;
use super::limits::RateLimits;
use super::scenario::{QfpayScript, QfpayTimeline};

/// The QFPay app code of `config/dev.toml`'s `hk` account.
pub const DEV_QFPAY_APP_CODE: &str = "DEVAPPCODE0000000000000000000000";
/// The QFPay client key of `config/dev.toml` (never use it anywhere else).
pub const DEV_QFPAY_CLIENT_KEY: &str = "DEVCLIENTKEY00000000000000000000";
/// ECPay's public stage merchant (docs/PROTOCOLS.md §E1.5), `config/dev.toml`'s `tw` account.
pub const DEV_ECPAY_MERCHANT_ID: &str = "3002607";
pub const DEV_ECPAY_HASH_KEY: &str = "pwFHCqoQZGmho4w6";
pub const DEV_ECPAY_HASH_IV: &str = "EkRm7iFT261dpevs";

/// A QFPay merchant the sandbox accepts.
#[derive(Debug, Clone)]
pub struct QfpayMerchant {
    /// `X-QF-APPCODE`; also the merchant's key in the sandbox's state and counters.
    pub app_code: String,
    pub client_key: SecretString,
    /// Provider-local time of `sysdtm`/`txdtm`/windows (default +08:00).
    pub timezone: FixedOffset,
    /// How payments created through `/trade/v1/payment` behave unless scripted
    /// (default: `1143` for 5 s, then `0000`).
    pub default_script: QfpayScript,
    /// Pay types whose reversal/close answers `1297` (e.g. Hong Kong wallets).
    pub non_cancellable_pay_types: Vec<String>,
    /// Serve pages of at most this many records and echo that `page_size` (QFPay documents
    /// no server-side cap; a smaller echo is odd but valid, and clients must page on).
    pub max_page_size: Option<usize>,
}

impl QfpayMerchant {
    pub fn new(app_code: &str, client_key: &str) -> Self {
        Self {
            app_code: app_code.to_string(),
            client_key: SecretString::from(client_key.to_string()),
            timezone: FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
            default_script: QfpayScript::new(QfpayTimeline::pending_then(
                Duration::from_secs(5),
                super::scenario::PAID,
            )),
            non_cancellable_pay_types: Vec::new(),
            max_page_size: None,
        }
    }
}

/// Which language ECPay writes `RtnValue.Status` in (docs/PROTOCOLS.md §E3.1: Chinese in the official
/// docs, English in the English pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusLanguage {
    #[default]
    Chinese,
    English,
}

/// An ECPay merchant the sandbox accepts.
#[derive(Debug, Clone)]
pub struct EcpayMerchant {
    pub merchant_id: String,
    /// Exactly 16 bytes (AES-128 key).
    pub hash_key: SecretString,
    /// Exactly 16 bytes (AES-128-CBC IV).
    pub hash_iv: SecretString,
    pub language: StatusLanguage,
    /// An expired merchant: every query answers `error_Stop`.
    pub stopped: bool,
}

impl EcpayMerchant {
    pub fn new(merchant_id: &str, hash_key: &str, hash_iv: &str) -> Self {
        Self {
            merchant_id: merchant_id.to_string(),
            hash_key: SecretString::from(hash_key.to_string()),
            hash_iv: SecretString::from(hash_iv.to_string()),
            language: StatusLanguage::Chinese,
            stopped: false,
        }
    }
}

/// Everything [`super::Sandbox::start`] needs.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Default `127.0.0.1:0` (any free port; the handle tells which).
    pub listen: SocketAddr,
    /// Bind a non-loopback address anyway. Off by default: the sandbox accepts the dev keys
    /// and has no authentication of its own.
    pub allow_non_loopback: bool,
    pub qfpay_merchants: Vec<QfpayMerchant>,
    pub ecpay_merchants: Vec<EcpayMerchant>,
    pub rate_limits: RateLimits,
    pub faults: Faults,
    pub clock: SandboxClock,
    /// How far `RqHeader.Timestamp` may be from the sandbox clock (ECPay: 10 minutes,
    /// docs/PROTOCOLS.md §E1.2). Advancing the sandbox clock past it makes real clients' timestamps
    /// stale, as a slow host clock would; seed orders in the past to fast-forward instead.
    pub ecpay_timestamp_window: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self::dev()
    }
}

impl SandboxConfig {
    /// Loopback, any port, the `config/dev.toml` merchants, documented rate limits, no faults,
    /// wall-clock time.
    pub fn dev() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            qfpay_merchants: vec![QfpayMerchant::new(DEV_QFPAY_APP_CODE, DEV_QFPAY_CLIENT_KEY)],
            ecpay_merchants: vec![EcpayMerchant::new(
                DEV_ECPAY_MERCHANT_ID,
                DEV_ECPAY_HASH_KEY,
                DEV_ECPAY_HASH_IV,
            )],
            rate_limits: RateLimits::default(),
            faults: Faults::none(),
            clock: SandboxClock::wall(),
            ecpay_timestamp_window: Duration::from_secs(600),
        }
    }
}
