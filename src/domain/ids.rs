//! Identifiers that must never be mixed up, each parsed once at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected. The message is written for an operator reading an import
/// error (`line 3: out_trade_no: longer than 20 characters`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {max} characters")]
    TooLong { max: usize },
    #[error("contains {found:?}; only {allowed} are allowed")]
    BadCharacter { found: char, allowed: &'static str },
    #[error("{0:?} is not a provider (expected qfpay or ecpay)")]
    UnknownProvider(String),
    #[error("{0:?} is not a pay type (expected 6 digits, e.g. 800101)")]
    BadPayType(String),
}

/// The gateway a payment lives at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Qfpay,
    Ecpay,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Qfpay => "qfpay",
            Provider::Ecpay => "ecpay",
        }
    }

    /// Longest merchant order number the gateway accepts: QFPay `out_trade_no` is String(128)
    /// (docs/PROTOCOLS.md §Q2.1); ECPay `MerchantTradeNo` is String(20) (seed 003, docs/PROTOCOLS.md §E3.1).
    pub fn max_out_trade_no_len(self) -> usize {
        match self {
            Provider::Qfpay => 128,
            Provider::Ecpay => 20,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qfpay" => Ok(Provider::Qfpay),
            "ecpay" => Ok(Provider::Ecpay),
            other => Err(IdError::UnknownProvider(other.to_string())),
        }
    }
}

/// Ledger row id (`payments.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentId(pub i64);

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn check_chars(s: &str, ok: fn(char) -> bool, allowed: &'static str) -> Result<(), IdError> {
    match s.chars().find(|c| !ok(*c)) {
        Some(found) => Err(IdError::BadCharacter { found, allowed }),
        None => Ok(()),
    }
}

fn check_len(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.chars().count() > max {
        return Err(IdError::TooLong { max });
    }
    Ok(())
}

/// Name of a configured gateway account (`[[accounts]] name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len(s, 64)?;
        check_chars(
            s,
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
            "letters, digits, '-' and '_'",
        )?;
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<AccountName> for String {
    fn from(a: AccountName) -> String {
        a.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The merchant's own order number (QFPay `out_trade_no`, ECPay `MerchantTradeNo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OutTradeNo(String);

impl OutTradeNo {
    /// Validates against the gateway's documented limits. ECPay order numbers are
    /// alphanumeric (ECPay rejects other characters in `MerchantTradeNo`); QFPay's are printable
    /// ASCII without commas, because a comma would split a batched lookup (docs/PROTOCOLS.md §Q2.1).
    pub fn parse(s: &str, provider: Provider) -> Result<Self, IdError> {
        check_len(s, provider.max_out_trade_no_len())?;
        match provider {
            Provider::Ecpay => check_chars(s, |c| c.is_ascii_alphanumeric(), "letters and digits")?,
            Provider::Qfpay => check_chars(
                s,
                |c| c.is_ascii_graphic() && c != ',',
                "printable ASCII except ','",
            )?,
        }
        Ok(Self(s.to_string()))
    }
    /// For values the ledger already validated on the way in.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutTradeNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The gateway's own id for a payment: QFPay `syssn`, ECPay `TradeNo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderRef(String);

impl ProviderRef {
    /// QFPay `syssn` is String(40) in payment responses; ECPay `TradeNo` is String(20).
    /// Both are treated as opaque printable ASCII without commas, at most 40 characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len(s, 40)?;
        check_chars(
            s,
            |c| c.is_ascii_graphic() && c != ',',
            "printable ASCII except ','",
        )?;
        Ok(Self(s.to_string()))
    }
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// QFPay pay type code (`800101`, `800208`, …; docs/PROTOCOLS.md §Q4.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PayType(String);

impl PayType {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError::BadPayType(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecpay_order_numbers_are_alphanumeric_and_at_most_20() {
        assert!(OutTradeNo::parse("A1234567890123456789", Provider::Ecpay).is_ok());
        assert_eq!(
            OutTradeNo::parse("A12345678901234567890", Provider::Ecpay),
            Err(IdError::TooLong { max: 20 })
        );
        assert!(matches!(
            OutTradeNo::parse("A-1", Provider::Ecpay),
            Err(IdError::BadCharacter { found: '-', .. })
        ));
    }

    #[test]
    fn qfpay_order_numbers_reject_commas_because_they_split_batches() {
        assert!(OutTradeNo::parse("A-1_x.y", Provider::Qfpay).is_ok());
        assert!(OutTradeNo::parse("A,1", Provider::Qfpay).is_err());
        assert!(OutTradeNo::parse(&"x".repeat(129), Provider::Qfpay).is_err());
        assert_eq!(OutTradeNo::parse("", Provider::Qfpay), Err(IdError::Empty));
    }

    #[test]
    fn pay_types_are_six_digits() {
        assert!(PayType::parse("800101").is_ok());
        assert!(PayType::parse("80010").is_err());
        assert!(PayType::parse("80010a").is_err());
    }

    #[test]
    fn account_names_are_simple_tokens() {
        assert!(AccountName::parse("hk-main_2").is_ok());
        assert!(AccountName::parse("hk main").is_err());
        assert!(AccountName::parse("").is_err());
    }
}
