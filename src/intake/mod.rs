//! Turning what the merchant tells us (CLI `track`, `import` files, `POST /v1/payments`) into validated
//! [`NewPayment`]s. Every field is checked against the account it names and the gateway's
//! documented limits; every problem is reported as `line N: field: reason`, and a file with any
//! problem is rejected whole.

mod batch;
mod file;
mod pay;
mod record;

pub use batch::BatchCheck;
pub use file::{FileFormat, ImportError, read_file};
pub use pay::{PayError, PayOrder, PayResult, create_qfpay_payment};
pub use record::{FIELDS, RecordFields, RowError, validate_record};

pub use crate::ledger::NewPayment;
