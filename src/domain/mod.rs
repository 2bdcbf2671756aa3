//! The pure core: what a payment is, what a gateway can tell us about it, and how the ledger
//! state follows from that. Nothing here performs I/O or knows about SQLite, HTTP or config.

mod cancel;
mod ids;
mod last_resort;
mod money;
mod observation;
mod patience;
mod pay_types;
mod retry;
mod state;
mod transition;

pub use cancel::{CancelRoute, PayMode};
pub use ids::{AccountName, IdError, OutTradeNo, PayType, PaymentId, Provider, ProviderRef};
pub use last_resort::{LastResort, LastResortPolicy, OpenPayment, ReversalMode, last_resort};
pub use money::{Currency, Money, MoneyError, format_major, format_money};
pub use observation::{Observation, Outcome, RecordKind};
pub use patience::Patience;
pub use pay_types::{DOCUMENTED_PAY_TYPES, creatable_pay_types};
pub use retry::{
    ECPAY_AFTER_FINAL, ECPAY_NOPAY_PATIENCE, ECPAY_UNAUTHORIZED_PATIENCE, RetryReason, RetryRule,
    RetrySchedule,
};
pub use state::{PaymentState, UnknownState};
pub use transition::{Decision, DiscrepancyKind, LedgerView, decide};
