//! The built-in sandbox: an in-process HTTP server that simulates QFPay and ECPay faithfully to
//! docs/PROTOCOLS.md (signatures, AES envelopes, paging, month windows, rate limits,
//! reversal/close and refund rules), with payments whose state evolves on a controllable clock,
//! seeded fault injection, and call counters. Tests, `payrecon demo`, the benchmark and
//! `payrecon sandbox` drive payrecon's real adapters against it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use payrecon::sandbox::*;
//! let sandbox = Sandbox::start(SandboxConfig::dev()).await?;
//! sandbox.state().insert_qfpay(
//!     DEV_QFPAY_APP_CODE,
//!     QfpayPayment::new("ORDER-1", 1500, "HKD", "800208")
//!         .timeline(QfpayTimeline::pending_then(Duration::from_secs(30), "0000")),
//! )?;
//! let account = sandbox.dev_qfpay_account("hk"); // a config::QfpayAccount at sandbox.base_url()
//! sandbox.clock().advance(Duration::from_secs(31)); // ORDER-1 now answers 0000
//! println!("{:?}", sandbox.stats().calls);
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout, one noun per file: `config` (merchants, listen address), `clock`, `scenario` (what
//! to seed), `state` (the seeding and inspection API), `qfpay_book` / `qfpay_ops` (QFPay
//! records and endpoint rules, pure), `qfpay_rules` (what QFPay refuses before the book),
//! `ecpay_book` (ECPay orders and answers, pure), `ecpay_close` (ECPay after authorization), `bulk`
//! (seeded generators), `limits`, `faults`, `stats`, `qfpay_http` / `ecpay_http` (the wire),
//! `server` (start, gate, handle), `accounts` (payrecon account settings for a sandbox).
//!
//! It is as strict as the references: every request a gateway is documented to refuse is
//! refused with that gateway's code (`qfpay_rules` for QFPay, `ecpay_http` for ECPay), and
//! counted per rule in the stats. `docs/SANDBOX.md` lists each rule with its source, what
//! ECPay answers after authorization (`ecpay_close`: captures, refunds, cancellations), and the
//! sandbox's choices where the docs are silent (unknown and malformed QFPay parameters answer
//! `1104`; an `out_trade_no` lookup without times searches every month; ECPay envelope
//! refusals use `TransCode` 999; an unknown inner ECPay `MerchantID` or a `stopped` merchant
//! answers `error_Stop`).

mod accounts;
mod bulk;
mod clock;
mod config;
mod ecpay_book;
mod ecpay_close;
mod ecpay_http;
mod faults;
mod limits;
mod qfpay_book;
mod qfpay_http;
mod qfpay_ops;
mod qfpay_rules;
mod scenario;
mod server;
mod state;
mod stats;

pub use accounts::{ecpay_account, qfpay_account};
pub use bulk::{BulkOutcome, BulkSpec, OutcomeMix, SeededRecord};
pub use clock::SandboxClock;
pub use config::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, EcpayMerchant, QfpayMerchant, SandboxConfig, StatusLanguage,
};
pub use ecpay_book::{CASHIER_NOT_FOUND, EcpayOrderView};
pub use ecpay_close::{EcpayAction, EcpayAfter};
pub use ecpay_http::TRANS_REFUSED;
pub use faults::{FaultScope, Faults};
pub use limits::RateLimits;
pub use qfpay_book::{BAD_PARAMETER, NOT_FOUND, QfpayPaymentView};
pub use qfpay_http::SIGNATURE_ERROR;
pub use qfpay_ops::{DUPLICATE_ORDER, NOT_CANCELLABLE};
pub use qfpay_rules::{AMOUNT_WRONG, MALFORMED_REQUEST};
pub use scenario::{
    CancelBehaviour, EcpayOrder, EcpayStatus, NOT_YET_PAID, PAID, QfpayPayment, QfpayRefund,
    QfpayScript, QfpayTimeline,
};
pub use server::{Sandbox, SandboxError, SandboxHandle};
pub use state::{SandboxState, SeedError};
pub use stats::{CallKind, StatsSnapshot};
