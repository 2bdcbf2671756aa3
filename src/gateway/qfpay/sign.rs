//! Request signing and response-signature checks (docs/PROTOCOLS.md §Q1.4–1.7), as pure functions.
//!
//! Requests: drop empty values, sort by parameter name (byte order), join `name=value` with `&`
//! using the *raw* UTF-8 values (no URL-encoding), append the client key bare, hash with MD5
//! (default) or SHA-256, upper-case hex. Verified against the 2017 vector (§Q1.7 a).
//!
//! Responses: `upper(hex(MD5(raw body bytes + key)))`, computed on the exact bytes received,
//! never on re-serialised JSON. Verified against the 2018 vector (§Q1.7 b).
//!
//! The signed string contains the client key, so it is built, hashed and dropped here and is
//! never returned to callers or logged.

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The request digest (`X-QF-SIGNTYPE`, docs/PROTOCOLS.md §Q1.3–1.4). MD5 is the default that every
/// verified example uses; SHA-256 is sent with `X-QF-SIGNTYPE: SHA256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignType {
    #[default]
    Md5,
    Sha256,
}

/// The `k=v&k=v` part of the signed string, without the key. Values are raw (unencoded).
/// `params` must be sorted by name (byte order); empty values are skipped. Names are `&'static
/// str` in the client and owned strings in the sandbox, which verifies requests with this code.
pub(crate) fn canonical<K: AsRef<str>>(params: &[(K, String)]) -> String {
    let mut out = String::new();
    for (name, value) in params.iter().filter(|(_, v)| !v.is_empty()) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name.as_ref());
        out.push('=');
        out.push_str(value);
    }
    out
}

fn digest_hex(sign_type: SignType, parts: &[&[u8]]) -> String {
    match sign_type {
        SignType::Md5 => {
            let mut h = Md5::new();
            for p in parts {
                h.update(p);
            }
            hex::encode_upper(h.finalize())
        }
        SignType::Sha256 => {
            let mut h = Sha256::new();
            for p in parts {
                h.update(p);
            }
            hex::encode_upper(h.finalize())
        }
    }
}

/// The `X-QF-SIGN` value for a request with these (sorted) parameters.
pub(crate) fn sign_request<K: AsRef<str>>(
    params: &[(K, String)],
    key: &SecretString,
    sign_type: SignType,
) -> String {
    let canonical = canonical(params);
    digest_hex(
        sign_type,
        &[canonical.as_bytes(), key.expose_secret().as_bytes()],
    )
}

/// The digest QFPay puts in a response's `X-QF-SIGN`: over the raw body bytes plus the key.
pub(crate) fn response_signature(body: &[u8], key: &SecretString, sign_type: SignType) -> String {
    digest_hex(sign_type, &[body, key.expose_secret().as_bytes()])
}

/// What to do about a response's signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureCheck {
    /// The header was present and matched.
    Valid,
    /// No header, and the account does not require one (docs/PROTOCOLS.md §Q1.5: whether the current hosts
    /// always sign is unconfirmed, so absence is accepted unless configured otherwise).
    Absent,
    /// The header did not match, or was required and missing.
    Invalid,
}

/// Checks a response signature. Hex case is ignored (official samples differ in case, §Q1.4).
/// `sign_type_header` is the response's `X-QF-SIGNTYPE`; MD5 unless it says `SHA256`.
pub(crate) fn check_response(
    body: &[u8],
    sign_header: Option<&str>,
    sign_type_header: Option<&str>,
    key: &SecretString,
    required: bool,
) -> SignatureCheck {
    let Some(given) = sign_header.map(str::trim).filter(|s| !s.is_empty()) else {
        return if required {
            SignatureCheck::Invalid
        } else {
            SignatureCheck::Absent
        };
    };
    let sign_type = match sign_type_header.map(str::trim) {
        Some(t) if t.eq_ignore_ascii_case("sha256") => SignType::Sha256,
        _ => SignType::Md5,
    };
    if response_signature(body, key, sign_type).eq_ignore_ascii_case(given) {
        SignatureCheck::Valid
    } else {
        SignatureCheck::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn sorted(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut v: Vec<_> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    #[test]
    fn the_2017_request_vector_signs_raw_utf8_values_with_the_key_appended_bare() {
        // docs/PROTOCOLS.md §Q1.7 (a), from QFPay 2017: 21 sign-up fields, key "789012".
        let params = sorted(&[
            ("address", "XX区XX路XX号"),
            ("bankaccount", "1234567890"),
            ("bankaddr", "银行详细地址"),
            ("bankcity", "成都"),
            ("bankcode", "123"),
            ("bankcountry", "中国"),
            ("bankname", "中国建设银行"),
            ("bankswiftcode", "001"),
            ("bankuser", "王"),
            ("channel_type", "1"),
            ("city", "成都"),
            ("country", "中国"),
            ("email", "email@example.com"),
            ("idnumber", "110000201608220123"),
            ("licenseactive_date", "2016-07-10"),
            ("licensenumber", "12345678"),
            ("mcc_id", "6125485337528623306"),
            ("mobile", "14401234567"),
            ("name", "测试企业"),
            ("shopname", "XX商店"),
            ("username", "some_user"),
        ]);
        assert_eq!(
            sign_request(&params, &key("789012"), SignType::Md5),
            "E019253E135863C335333C983DF05359"
        );
    }

    fn worked_example() -> Vec<(&'static str, String)> {
        sorted(&[
            ("mchid", "ZaMVg12345"),
            ("pay_type", "800101,800201"),
            ("start_time", "2024-03-01 00:00:00"),
            ("end_time", "2024-03-31 23:59:59"),
            ("page", "1"),
            ("page_size", "100"),
        ])
    }

    #[test]
    fn the_worked_window_query_example_matches_md5_and_sha256() {
        let k = key("0123456789ABCDEF0123456789ABCDEF");
        let params = worked_example();
        assert_eq!(
            canonical(&params),
            "end_time=2024-03-31 23:59:59&mchid=ZaMVg12345&page=1&page_size=100\
             &pay_type=800101,800201&start_time=2024-03-01 00:00:00"
        );
        assert_eq!(
            sign_request(&params, &k, SignType::Md5),
            "DC8989F6B66B17C2FE3603E0A06E78B5"
        );
        assert_eq!(
            sign_request(&params, &k, SignType::Sha256),
            "838B9899AEF1470245F430A2F06CF0F857F0A5EA98F3AAAD5460255884FCD56D"
        );
    }

    #[test]
    fn empty_values_are_left_out_of_the_signature() {
        // With an empty `respcd=` kept the MD5 would be A461AC43… (docs/PROTOCOLS.md §Q1.7).
        let k = key("0123456789ABCDEF0123456789ABCDEF");
        let mut params = worked_example();
        params.push(("respcd", String::new()));
        params.sort_by(|a, b| a.0.cmp(b.0));
        let sign = sign_request(&params, &k, SignType::Md5);
        assert_eq!(sign, "DC8989F6B66B17C2FE3603E0A06E78B5");
        assert_ne!(sign, "A461AC43715A59BECA5F5B0EC5B02BA5");
    }

    /// The 2018 response vector, byte-exact (302 bytes, literal `\uXXXX` escapes).
    const RESPONSE_2018: &str = concat!(
        r#"{"pay_type": "800108", "sysdtm": "2018-01-12 19:31:16", "cardcd": "2088802362210279", "#,
        r#""txdtm": "2018-01-12 19:31:22", "resperr": "\u4ea4\u6613\u6210\u529f", "txcurrcd": "CNY", "#,
        r#""txamt": "1", "respmsg": "", "out_trade_no": "130145934788787530052", "#,
        r#""syssn": "20180112000100020001662134", "respcd": "0000"}"#
    );
    const RESPONSE_KEY: &str = "615ED178BA524459976CE40FAB78000F";

    #[test]
    fn the_2018_response_vector_is_md5_of_the_raw_body_plus_key() {
        assert_eq!(RESPONSE_2018.len(), 302);
        let k = key(RESPONSE_KEY);
        assert_eq!(
            response_signature(RESPONSE_2018.as_bytes(), &k, SignType::Md5),
            "1E2CE7C2A7F8F581C354A857182B7A31"
        );
        assert_eq!(
            check_response(
                RESPONSE_2018.as_bytes(),
                Some("1e2ce7c2a7f8f581c354a857182b7a31"),
                None,
                &k,
                true
            ),
            SignatureCheck::Valid
        );
    }

    #[test]
    fn a_re_serialised_body_or_a_wrong_header_does_not_verify() {
        let k = key(RESPONSE_KEY);
        let reserialised =
            serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(RESPONSE_2018).unwrap())
                .unwrap();
        assert_eq!(
            check_response(
                &reserialised,
                Some("1E2CE7C2A7F8F581C354A857182B7A31"),
                None,
                &k,
                false
            ),
            SignatureCheck::Invalid
        );
        assert_eq!(
            check_response(
                RESPONSE_2018.as_bytes(),
                Some("00000000000000000000000000000000"),
                None,
                &k,
                false
            ),
            SignatureCheck::Invalid
        );
    }

    #[test]
    fn a_missing_response_signature_is_accepted_unless_required() {
        let k = key(RESPONSE_KEY);
        let body = RESPONSE_2018.as_bytes();
        assert_eq!(
            check_response(body, None, None, &k, false),
            SignatureCheck::Absent
        );
        assert_eq!(
            check_response(body, Some(""), None, &k, true),
            SignatureCheck::Invalid
        );
    }
}
