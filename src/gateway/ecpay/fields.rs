//! Lenient reading of decrypted `Data` objects.
//!
//! ECPay's documents disagree on field-name casing (`ClsAmt` vs `clsamt`, `CloseData` vs
//! `close_data`), the seed's own example has keys with trailing blanks (`"Amount "`), and
//! numbers sometimes arrive as strings (docs/PROTOCOLS.md §E3.1). So fields are looked up by
//! a normalised name: lower case, without blanks and underscores.

use serde_json::{Map, Value};

fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The value of the first key of `obj` whose normalised name equals `name`'s.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let wanted = normalise(name);
    obj.iter()
        .find(|(k, _)| normalise(k) == wanted)
        .map(|(_, v)| v)
}

/// A field as an object, if it is one.
pub(crate) fn object<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
) -> Option<&'a Map<String, Value>> {
    field(obj, name).and_then(Value::as_object)
}

/// A field as text: strings as they are, numbers and booleans written out; `null` is absent.
pub(crate) fn text(obj: &Map<String, Value>, name: &str) -> Option<String> {
    match field(obj, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A field as a whole number: JSON integers, integral floats, and digit strings.
pub(crate) fn integer(obj: &Map<String, Value>, name: &str) -> Option<i64> {
    match field(obj, name)? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_match_regardless_of_case_underscores_and_stray_blanks() {
        let v = json!({"clsamt": 5, "close_data": [], "Amount ": "100", "TradeID ": 7});
        let obj = v.as_object().unwrap();
        assert_eq!(integer(obj, "ClsAmt"), Some(5));
        assert!(field(obj, "CloseData").is_some());
        assert_eq!(integer(obj, "Amount"), Some(100));
        assert_eq!(text(obj, "TradeID"), Some("7".to_string()));
        assert_eq!(field(obj, "Status"), None);
    }

    #[test]
    fn integers_accept_numbers_integral_floats_and_digit_strings_only() {
        let v = json!({"a": 1.0, "b": 1.5, "c": " 42 ", "d": "x", "e": null});
        let obj = v.as_object().unwrap();
        assert_eq!(integer(obj, "a"), Some(1));
        assert_eq!(integer(obj, "b"), None);
        assert_eq!(integer(obj, "c"), Some(42));
        assert_eq!(integer(obj, "d"), None);
        assert_eq!(integer(obj, "e"), None);
        assert_eq!(text(obj, "e"), None);
    }
}
