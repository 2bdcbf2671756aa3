//! ECPay `ecpayment` adapter (issue 4; docs/PROTOCOLS.md (ECPay), seed 003).
//!
//! Pure core, one file per noun, plus one thin transport:
//!
//! - [`crypto`]: the AES-128-CBC `Data` field, both directions (PHP `urlencode` → AES →
//!   base64, and back). Public and symmetric so the sandbox can decrypt requests and encrypt
//!   answers with the same code.
//! - [`envelope`]: the JSON envelope (`MerchantID`, `RqHeader.Timestamp`, `Data`; response
//!   `TransCode`/`TransMsg`/`Data`).
//! - [`credit_detail`]: `CreditDetail/QueryTrade` request data and answer classification.
//! - [`card_trade`]: what a CreditDetail `RtnValue` says happened to the money (captures,
//!   cancellations, refunds after authorization) as one outcome.
//! - [`cashier`]: `Cashier/QueryTrade` request data and answer classification.
//! - `fields`: lenient, case-insensitive reading of decrypted answers.
//! - [`client`]: [`EcpayClient`]: pacing, timeouts, retries, the HTTP 403 pause.
//!
//! Answers become a domain [`crate::domain::Observation`] (whose `evidence` is the decrypted
//! `Data`, which holds no secret) or a [`crate::gateway::GatewayError`]. HashKey and HashIV
//! never appear in logs, errors or `Debug` output.

pub mod card_trade;
pub mod cashier;
pub mod client;
pub mod credit_detail;
pub mod crypto;
pub mod envelope;
pub(crate) mod fields;

pub use client::{EcpayClient, EcpayClientSettings, QueryApi};
pub use crypto::{CryptoError, DataKey, decrypt_data, decrypt_json, encrypt_data, encrypt_json};
pub use envelope::{RequestEnvelope, ResponseEnvelope};
