//! A batch of intake records (an import file, an API request) checked record by record and as
//! a whole: an order number appears once per account and kind, and a gateway id names one
//! payment (two records with the same one could never both match it).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::record::{RecordFields, RowError, validate_record};
use crate::config::Settings;
use crate::domain::Provider;
use crate::ledger::NewPayment;

/// The checks a batch keeps across its records. `position` names what the numbers in the
/// errors count ("line" for a file, "record" for an API request).
#[derive(Debug)]
pub struct BatchCheck<'a> {
    settings: &'a Settings,
    now: DateTime<Utc>,
    position: &'static str,
    first_order: HashMap<(String, &'static str, String), usize>,
    first_ref: HashMap<(String, String), usize>,
}

impl<'a> BatchCheck<'a> {
    pub fn new(settings: &'a Settings, now: DateTime<Utc>, position: &'static str) -> Self {
        Self {
            settings,
            now,
            position,
            first_order: HashMap::new(),
            first_ref: HashMap::new(),
        }
    }

    /// Validates record `at` (its line or index) against its account and the records before it.
    pub fn check(&mut self, at: usize, rec: &RecordFields) -> Result<NewPayment, Vec<RowError>> {
        let p = validate_record(rec, at, self.settings, self.now)?;
        let account = p.account.as_str().to_string();
        let key = (
            account.clone(),
            p.kind.as_str(),
            p.out_trade_no.as_str().to_string(),
        );
        let position = self.position;
        if let Some(first) = self.first_order.get(&key) {
            return Err(vec![RowError {
                line: at,
                field: "out_trade_no".into(),
                reason: format!(
                    "{:?} appears twice for account {account} (first on {position} {first})",
                    key.2
                ),
            }]);
        }
        if let Some(r) = &p.provider_ref {
            let ref_key = (account.clone(), r.as_str().to_string());
            if let Some(first) = self.first_ref.get(&ref_key) {
                let field = match p.provider {
                    Provider::Qfpay => "syssn",
                    Provider::Ecpay => "trade_no",
                };
                return Err(vec![RowError {
                    line: at,
                    field: field.into(),
                    reason: format!(
                        "{:?} appears twice for account {account} (first on {position} {first}); \
                         a gateway id names one payment",
                        r.as_str()
                    ),
                }]);
            }
            self.first_ref.insert(ref_key, at);
        }
        self.first_order.insert(key, at);
        Ok(p)
    }
}
