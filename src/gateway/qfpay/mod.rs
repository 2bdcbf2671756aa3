//! QFPay OpenAPI adapter (issue 3; facts from docs/PROTOCOLS.md (QFPay)).
//!
//! Pure core, split by noun:
//! - [`sign`]: request signing (MD5/SHA-256 over raw sorted `k=v` + key) and the response
//!   signature (MD5 over the raw body + key), with the published vectors as tests;
//! - `request`: sorted non-empty forms, calendar-month windows, id batching;
//! - `response`: lenient wire types and record → [`crate::domain::Observation`];
//! - [`codes`]: the cited `respcd` classification table and record outcome mapping;
//! - `cancel` / `payment`: reversal/close and payment creation requests and answers.
//!
//! Thin transport: `client` ([`QfpayClient`]), `lookup` (id batches) and `sweep`
//! ([`WindowPager`]). Only they touch
//! reqwest; the decision to query, reverse or pay belongs to the caller.

pub mod codes;
pub mod sign;

mod cancel;
mod client;
mod lookup;
mod payment;
mod request;
mod response;
#[cfg(test)]
mod robustness_tests;
mod sweep;

pub use cancel::{CancelAnswer, CancelOutcome, CancelRequest, CancelTarget};
pub use client::{CallMethod, CallSlot, ClientSettings, QfpayClient};
pub use codes::{CodeClass, classify, record_outcome};
pub use payment::{
    EXPIRY_MINUTES, EXPIRY_PAY_TYPES, GOODS_NAME_MAX_BYTES, GOODS_NAME_MAX_CHARS, PaymentCreated,
    PaymentInputError, PaymentOutcome, PaymentRequest,
};
pub use request::{
    IdBatch, IdKey, IdLookup, LocalWindow, MAX_ID_LIST_CHARS, MONTH_EDGE_MARGIN, OrderLookup,
    PAGE_SIZE, TIME_FORMAT, month_windows, plan_batches,
};
pub use response::record_observation;
pub use sign::SignType;
pub use sweep::{Page, WindowPager, WindowQuery};
