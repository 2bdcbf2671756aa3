//! One intake record (a JSONL object, a CSV row, or `track`'s flags) → a [`NewPayment`].

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use crate::config::{Account, Settings};
use crate::domain::{Currency, Money, OutTradeNo, PayType, Provider, ProviderRef, RecordKind};
use crate::ledger::NewPayment;

/// The columns of the import format (docs/ARCHITECTURE.md §5).
pub const FIELDS: &[&str] = &[
    "account",
    "kind",
    "out_trade_no",
    "syssn",
    "trade_no",
    "pay_type",
    "amount",
    "currency",
    "created_at",
    "expires_at",
    "expired_time",
];

/// A record as given: field name → JSON value (CSV cells arrive as strings).
pub type RecordFields = BTreeMap<String, Value>;

/// A problem with one field of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: usize,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.reason)
    }
}

struct Errors {
    line: usize,
    list: Vec<RowError>,
}

impl Errors {
    fn add(&mut self, field: &str, reason: impl Into<String>) {
        self.list.push(RowError {
            line: self.line,
            field: field.to_string(),
            reason: reason.into(),
        });
    }
}

/// A text field: absent, null and "" all mean "not given".
fn text<'a>(rec: &'a RecordFields, key: &str, errs: &mut Errors) -> Option<&'a str> {
    match rec.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim()),
        Some(other) => {
            errs.add(key, format!("must be a string, got {other}"));
            None
        }
    }
}

fn amount(rec: &RecordFields, errs: &mut Errors) -> Option<i64> {
    let parsed = match rec.get("amount") {
        None | Some(Value::Null) => {
            errs.add(
                "amount",
                "missing (an integer in minor units, e.g. 1000 for HK$10.00)",
            );
            return None;
        }
        Some(Value::Number(n)) => n.as_i64().ok_or(()),
        Some(Value::String(s)) => Money::parse_minor(s).map_err(drop),
        Some(_) => Err(()),
    };
    match parsed {
        Ok(n) if n > 0 => Some(n),
        Ok(n) => {
            errs.add("amount", format!("must be positive, got {n}"));
            None
        }
        Err(()) => {
            errs.add(
                "amount",
                format!("{} is not a whole number of minor units", rec["amount"]),
            );
            None
        }
    }
}

/// `YYYY-MM-DD hh:mm:ss` in the account's timezone (QFPay) or Taiwan time (ECPay), or RFC 3339.
fn time_field(field: &str, s: &str, account: &Account, errs: &mut Errors) -> Option<DateTime<Utc>> {
    let offset = match account {
        Account::Qfpay(a) => a.timezone,
        // ECPay operates in Taiwan time (GMT+8, no DST).
        Account::Ecpay(_) => chrono::FixedOffset::east_opt(8 * 3600)?,
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(naive) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Some(
            offset
                .from_local_datetime(&naive)
                .single()?
                .with_timezone(&Utc),
        );
    }
    errs.add(
        field,
        format!("{s:?} is neither \"YYYY-MM-DD hh:mm:ss\" (account time) nor RFC 3339"),
    );
    None
}

/// When the payment was created: a time that is neither in the future nor implausibly old.
fn created_at(
    s: &str,
    account: &Account,
    now: DateTime<Utc>,
    errs: &mut Errors,
) -> Option<DateTime<Utc>> {
    let t = time_field("created_at", s, account, errs)?;
    // A clock a few minutes ahead is tolerated; a payment from tomorrow is a mistake.
    if t > now + chrono::Duration::minutes(5) {
        errs.add("created_at", format!("{s:?} is in the future"));
        return None;
    }
    if t < now - MAX_AGE {
        errs.add(
            "created_at",
            format!(
                "{s:?} is more than {} days ago; payrecon settles recent payments only (a \
                 1970 date is usually an unset timestamp)",
                MAX_AGE.num_days()
            ),
        );
        return None;
    }
    Some(t)
}

/// When the order stops being payable (QFPay QR/online orders): `expires_at` (a time, as
/// `created_at`) or `expired_time` (whole minutes after `created_at`, 5–120 as QFPay accepts),
/// not both. Without it the last resort assumes QFPay's default of 30 minutes, so an order
/// created with a longer expiry must say so or it could be closed while still payable.
fn expiry(
    rec: &RecordFields,
    account: Option<&Account>,
    created: Option<DateTime<Utc>>,
    errs: &mut Errors,
) -> Option<DateTime<Utc>> {
    let at = text(rec, "expires_at", errs);
    let minutes = match rec.get("expired_time") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or(())),
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().parse::<u64>().map_err(drop)),
        Some(_) => Some(Err(())),
    };
    if at.is_none() && minutes.is_none() {
        return None;
    }
    let field = if at.is_some() {
        "expires_at"
    } else {
        "expired_time"
    };
    if matches!(account, Some(Account::Ecpay(_))) {
        errs.add(field, "is for QFPay orders; ECPay rows have none");
        return None;
    }
    if at.is_some() && minutes.is_some() {
        errs.add("expired_time", "give expires_at or expired_time, not both");
        return None;
    }
    let (account, created) = (account?, created?);
    let t = match (at, minutes) {
        (Some(s), _) => time_field("expires_at", s, account, errs)?,
        (_, Some(Ok(m))) if crate::gateway::qfpay::EXPIRY_MINUTES.contains(&m) => {
            created + chrono::Duration::minutes(m as i64)
        }
        (_, Some(_)) => {
            errs.add(
                "expired_time",
                format!(
                    "{} is not whole minutes between 5 and 120 (QFPay expired_time)",
                    rec["expired_time"]
                ),
            );
            return None;
        }
        (None, None) => return None,
    };
    if t <= created {
        errs.add("expires_at", "is not after created_at");
        return None;
    }
    Some(t)
}

/// How old a payment may be when it is registered: a year and a day. Payments whose outcome
/// nobody learned are found within days (`reconcile.give_up_after` is 3 days by default); a
/// `created_at` older than this is a wrong or unset field (epoch 0 is 1970), and would send
/// window sweeps over months that hold nothing of the merchant's.
const MAX_AGE: chrono::Duration = chrono::Duration::days(366);

/// QFPay's largest `txamt`: the field is `Int(11)` (docs/PROTOCOLS.md §Q4.3, the reversal request, the
/// call a last resort sends with the stored amount), so at most 11 digits of minor units.
const QFPAY_MAX_TXAMT: i64 = 99_999_999_999;

/// Validates one record. `line` is used in the errors.
pub fn validate_record(
    rec: &RecordFields,
    line: usize,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<NewPayment, Vec<RowError>> {
    let mut errs = Errors {
        line,
        list: Vec::new(),
    };
    for key in rec.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        errs.add(key, format!("unknown field (known: {})", FIELDS.join(", ")));
    }
    let account = match text(rec, "account", &mut errs) {
        None => {
            errs.add("account", "missing");
            None
        }
        Some(name) => {
            let found = settings.account(name);
            if found.is_none() {
                let known: Vec<_> = settings
                    .accounts
                    .iter()
                    .map(|a| a.name().as_str())
                    .collect();
                errs.add(
                    "account",
                    format!(
                        "{name:?} is not a configured account (configured: {})",
                        known.join(", ")
                    ),
                );
            }
            found
        }
    };
    let provider = account.map(Account::provider);
    let kind = match text(rec, "kind", &mut errs).map(str::parse::<RecordKind>) {
        None => Some(RecordKind::Payment),
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            errs.add("kind", e);
            None
        }
    };
    let out_trade_no = match (text(rec, "out_trade_no", &mut errs), provider) {
        (None, _) => {
            errs.add("out_trade_no", "missing");
            None
        }
        (Some(s), Some(p)) => OutTradeNo::parse(s, p)
            .map_err(|e| errs.add("out_trade_no", e.to_string()))
            .ok(),
        (Some(_), None) => None,
    };
    let syssn = text(rec, "syssn", &mut errs);
    let trade_no = text(rec, "trade_no", &mut errs);
    let provider_ref = match (provider, syssn, trade_no) {
        (Some(Provider::Ecpay), Some(_), _) => {
            errs.add("syssn", "is for QFPay accounts; ECPay rows use trade_no");
            None
        }
        (Some(Provider::Qfpay), _, Some(_)) => {
            errs.add("trade_no", "is for ECPay accounts; QFPay rows use syssn");
            None
        }
        (_, Some(r), _) | (_, _, Some(r)) => {
            let field = if syssn.is_some() { "syssn" } else { "trade_no" };
            ProviderRef::parse(r)
                .map_err(|e| errs.add(field, e.to_string()))
                .ok()
        }
        _ => None,
    };
    let pay_type = match (text(rec, "pay_type", &mut errs), provider) {
        (Some(_), Some(Provider::Ecpay)) => {
            errs.add("pay_type", "is a QFPay field; ECPay rows have none");
            None
        }
        (Some(s), _) => PayType::parse(s)
            .map_err(|e| errs.add("pay_type", e.to_string()))
            .ok(),
        (None, _) => None,
    };
    let minor = match (amount(rec, &mut errs), provider) {
        (Some(n), Some(Provider::Qfpay)) if n > QFPAY_MAX_TXAMT => {
            errs.add(
                "amount",
                format!(
                    "{n} is more than QFPay accepts (txamt is Int(11): at most \
                     {QFPAY_MAX_TXAMT} minor units)"
                ),
            );
            None
        }
        (minor, _) => minor,
    };
    let currency = match text(rec, "currency", &mut errs) {
        None => {
            errs.add("currency", "missing");
            None
        }
        Some(s) => Currency::parse(s)
            .and_then(|c| match provider {
                Some(p) => c.check_supported(p),
                None => Ok(c),
            })
            .map_err(|e| errs.add("currency", e.to_string()))
            .ok(),
    };
    let created = match (text(rec, "created_at", &mut errs), account) {
        (Some(s), Some(a)) => created_at(s, a, now, &mut errs),
        (None, _) => Some(now),
        (Some(_), None) => None,
    };
    let expires_at = expiry(rec, account, created, &mut errs);
    if !errs.list.is_empty() {
        return Err(errs.list);
    }
    // Every Option below is Some when no error was recorded.
    match (account, kind, out_trade_no, minor, currency, created) {
        (
            Some(account),
            Some(kind),
            Some(out_trade_no),
            Some(minor),
            Some(currency),
            Some(created_at),
        ) => Ok(NewPayment {
            account: account.name().clone(),
            provider: account.provider(),
            kind,
            out_trade_no,
            provider_ref,
            pay_type,
            amount: Money { minor, currency },
            created_at,
            expires_at,
        }),
        _ => Err(vec![RowError {
            line,
            field: "record".into(),
            reason: "incomplete".into(),
        }]),
    }
}
