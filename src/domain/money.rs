//! Amounts: integers in the currency's minor unit, never floats (docs/PROTOCOLS.md §Q7).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Provider;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not an ISO 4217 currency code (three capital letters, e.g. HKD)")]
    BadCurrency(String),
    #[error("{currency} is not accepted by {provider} (accepted: {accepted})")]
    UnsupportedCurrency {
        currency: String,
        provider: Provider,
        accepted: String,
    },
    #[error("must be a positive whole number of minor units, got {0}")]
    NotPositive(i64),
    #[error("{0:?} is not a whole number of minor units")]
    NotInteger(String),
}

/// Currencies QFPay lists as `txcurrcd` values (docs/PROTOCOLS.md §Q7).
const QFPAY_CURRENCIES: &[&str] = &[
    "AED", "AUD", "CAD", "CNY", "EUR", "HKD", "IDR", "JPY", "MMK", "MYR", "SGD", "THB", "USD",
];
/// ECPay credit-card payments are in New Taiwan dollars.
const ECPAY_CURRENCIES: &[&str] = &["TWD"];

/// An ISO 4217 code such as `HKD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([b[0], b[1], b[2]]))
        } else {
            Err(MoneyError::BadCurrency(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII capitals are ever stored, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Rejects a currency the provider does not settle in, so a typo such as `HKD` on an ECPay
    /// account is caught at intake rather than showing up as a mismatch later.
    pub fn check_supported(self, provider: Provider) -> Result<Self, MoneyError> {
        let accepted = match provider {
            Provider::Qfpay => QFPAY_CURRENCIES,
            Provider::Ecpay => ECPAY_CURRENCIES,
        };
        if accepted.contains(&self.as_str()) {
            Ok(self)
        } else {
            Err(MoneyError::UnsupportedCurrency {
                currency: self.as_str().to_string(),
                provider,
                accepted: accepted.join(", "),
            })
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in minor units together with its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// A payment amount: strictly positive.
    pub fn new(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor <= 0 {
            return Err(MoneyError::NotPositive(minor));
        }
        Ok(Self { minor, currency })
    }

    /// Parses gateway amounts, which arrive as JSON strings (`"txamt": "10"`) holding a whole
    /// number of minor units. Signs, decimals and blanks are refused rather than guessed.
    pub fn parse_minor(s: &str) -> Result<i64, MoneyError> {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::NotInteger(s.to_string()));
        }
        t.parse::<i64>()
            .map_err(|_| MoneyError::NotInteger(s.to_string()))
    }
}

/// Currencies without a minor unit *as the gateways use them*: ECPay amounts are whole New
/// Taiwan dollars (ISO 4217 gives TWD two decimals, ECPay does not use them), and QFPay's JPY
/// `txamt=1` is ¥1 (docs/PROTOCOLS.md §Q7). Every other supported currency has two decimals
/// (IDR and MMK too, as ISO 4217 says; QFPay has not confirmed their exponent).
const NO_MINOR_UNIT: &[&str] = &["JPY", "TWD"];

/// Digits after the decimal point when an amount of `currency` is shown as money.
pub fn minor_digits(currency: &str) -> u32 {
    if NO_MINOR_UNIT.contains(&currency) {
        0
    } else {
        2
    }
}

/// An amount in minor units as a person reads it, e.g. `777` HKD → `7.77 HKD`, `-5` → `-0.05
/// HKD`, `100` TWD → `100 TWD`. For human output only: JSON and CSV keep minor units.
pub fn format_money(minor: i64, currency: &str) -> String {
    format!("{} {currency}", format_major(minor, currency))
}

/// The number part of [`format_money`]: `777` HKD → `7.77`.
pub fn format_major(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10u64.pow(digits);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_money(self.minor, self.currency.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_capitals() {
        assert_eq!(Currency::parse("HKD").unwrap().as_str(), "HKD");
        assert!(Currency::parse("hkd").is_err());
        assert!(Currency::parse("HK").is_err());
        assert!(Currency::parse("HKDX").is_err());
    }

    #[test]
    fn currencies_are_checked_against_the_provider() {
        let twd = Currency::parse("TWD").unwrap();
        assert!(twd.check_supported(Provider::Ecpay).is_ok());
        assert!(twd.check_supported(Provider::Qfpay).is_err());
        let hkd = Currency::parse("HKD").unwrap();
        assert!(hkd.check_supported(Provider::Qfpay).is_ok());
    }

    #[test]
    fn amounts_print_as_money_in_the_currencys_unit() {
        assert_eq!(format_money(777, "HKD"), "7.77 HKD");
        assert_eq!(format_money(5, "USD"), "0.05 USD");
        assert_eq!(format_money(100_000, "EUR"), "1000.00 EUR");
        assert_eq!(format_money(-1_000, "HKD"), "-10.00 HKD");
        assert_eq!(format_money(i64::MIN, "HKD"), "-92233720368547758.08 HKD");
        assert_eq!(format_money(100, "TWD"), "100 TWD");
        assert_eq!(format_money(1, "JPY"), "1 JPY");
        let hkd = Currency::parse("HKD").unwrap();
        assert_eq!(Money::new(1000, hkd).unwrap().to_string(), "10.00 HKD");
    }

    #[test]
    fn amounts_must_be_positive_integers() {
        let hkd = Currency::parse("HKD").unwrap();
        assert!(Money::new(1, hkd).is_ok());
        assert_eq!(Money::new(0, hkd), Err(MoneyError::NotPositive(0)));
        assert_eq!(Money::parse_minor("0010"), Ok(10));
        assert!(Money::parse_minor("10.5").is_err());
        assert!(Money::parse_minor("-1").is_err());
        assert!(Money::parse_minor("").is_err());
        assert!(Money::parse_minor("99999999999999999999").is_err());
    }
}
