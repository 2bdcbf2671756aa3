//! Hostile and broken QFPay answers (issue 8 item 4) and signing properties: every body goes
//! through the same pure path the client uses (signature check → envelope → code → records →
//! observation) and must end in a value or a classified error, never a panic; a transport
//! fault is always a retryable error, never an observation.

use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::response::{parse_envelope, record_observation};
use super::sign::{
    SignType, SignatureCheck, canonical, check_response, response_signature, sign_request,
};
use crate::gateway::{ErrorClass, GatewayError};

/// The client's path from bytes to observations, without the socket.
fn read(body: &[u8]) -> Result<Vec<crate::domain::Observation>, GatewayError> {
    let (env, _value) = parse_envelope(body)?;
    let code = env.code()?.to_string();
    if code != "0000" {
        return Err(env.request_error(&code));
    }
    Ok(env.records()?.into_iter().map(record_observation).collect())
}

const GOOD: &str = r#"{"respcd":"0000","resperr":"","respmsg":"","page":"1","page_size":"10","data":[{"syssn":"20261122000300020000000001","out_trade_no":"A1","order_type":"payment","pay_type":"800101","txamt":"1500","txcurrcd":"HKD","respcd":"0000","cancel":"0","sysdtm":"2026-11-22 10:00:00","errmsg":"交易成功"}]}"#;

#[test]
fn the_reference_body_reads_as_one_succeeded_payment() {
    let obs = read(GOOD.as_bytes()).unwrap();
    assert_eq!(obs.len(), 1);
    assert_eq!(obs[0].provider_code, "0000");
}

#[test]
fn every_truncation_of_a_good_body_is_a_malformed_answer_not_a_panic() {
    for cut in 0..GOOD.len() {
        let Some(prefix) = GOOD.as_bytes().get(..cut) else {
            continue;
        };
        let e = read(prefix).expect_err("a cut body cannot be a whole answer");
        assert!(
            matches!(e, GatewayError::Malformed { .. }),
            "cut at {cut}: {e}"
        );
        assert_eq!(e.class(), ErrorClass::Retryable);
    }
}

#[test]
fn a_corpus_of_broken_bodies_gives_clear_errors() {
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("html error page", b"<html>502 Bad Gateway</html>".to_vec()),
        ("not utf-8", vec![0xff, 0xfe, b'{', 0x80, b'}']),
        (
            "utf-8 bom",
            "\u{feff}{\"respcd\":\"0000\"}".as_bytes().to_vec(),
        ),
        ("json array", b"[1,2,3]".to_vec()),
        ("json string", b"\"0000\"".to_vec()),
        ("null", b"null".to_vec()),
        ("no respcd", br#"{"data":[]}"#.to_vec()),
        ("empty respcd", br#"{"respcd":"  ","data":[]}"#.to_vec()),
        ("respcd object", br#"{"respcd":{"a":1},"data":[]}"#.to_vec()),
        (
            "data is a string",
            br#"{"respcd":"0000","data":"nope"}"#.to_vec(),
        ),
        (
            "data holds numbers",
            br#"{"respcd":"0000","data":[1,2]}"#.to_vec(),
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        ),
        (
            "huge number",
            br#"{"respcd":"0000","data":[{"txamt":1e999999}]}"#.to_vec(),
        ),
        (
            "duplicate keys",
            br#"{"respcd":"0000","respcd":"1143","data":[]}"#.to_vec(),
        ),
        ("trailing garbage", format!("{GOOD}xyz").into_bytes()),
    ];
    for (name, body) in corpus {
        match read(&body) {
            Ok(obs) => panic!("{name}: accepted as {obs:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.is_empty(), "{name}");
                assert!(
                    text.len() < 2_000,
                    "{name}: error text is {} bytes",
                    text.len()
                );
            }
        }
    }
}

#[test]
fn wrong_field_types_inside_records_are_left_out_never_trusted() {
    for rec in [
        json!({"respcd": 0, "txamt": "abc", "syssn": 123}),
        json!({"respcd": "0000", "txamt": -5, "txcurrcd": 7}),
        json!({"respcd": ["0000"], "order_type": {"x": 1}}),
        json!({"respcd": "0000", "syssn": {"id": "1"}}),
        json!({"respcd": "0000", "cancel": true}),
        json!({"respcd": "0000", "txamt": "99999999999999999999999999"}),
        json!({"respcd": "0000", "out_trade_no": "x".repeat(100_000)}),
        json!({}),
    ] {
        let obs = record_observation(&rec);
        // Whatever it makes of it, the raw record is kept as evidence.
        assert_eq!(obs.evidence, rec);
        assert_ne!(obs.outcome, crate::domain::Outcome::NotFound);
    }
    let obs = record_observation(&json!({"txamt": "1500"}));
    assert_eq!(
        obs.outcome,
        crate::domain::Outcome::Unrecognised,
        "a record without respcd is not a status"
    );
}

/// Any JSON value, or one of the odd-but-plausible values QFPay fields take.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        "[0-9]{0,3}".prop_map(Value::String),
        "[a-zA-Z_ ]{0,10}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
        Just(json!(["0"])),
        Just(json!({"v": "1"})),
        prop::sample::select(vec!["payment", "refund", "close", "PAYMENT", "Refund", ""])
            .prop_map(|s| json!(s)),
    ]
}

#[test]
fn a_huge_body_is_parsed_or_refused_in_bounded_time() {
    // 20,000 records (about 6 MB): far beyond a 100-record page, still handled.
    let rec: Value = serde_json::from_str::<Value>(GOOD).unwrap()["data"][0].clone();
    let body = json!({"respcd": "0000", "data": vec![rec; 20_000]}).to_string();
    let t = std::time::Instant::now();
    let obs = read(body.as_bytes()).unwrap();
    assert_eq!(obs.len(), 20_000);
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}

fn key() -> SecretString {
    SecretString::from("0123456789ABCDEF0123456789ABCDEF".to_string())
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::btree_map("[a-z_]{1,12}", "[^&=]{0,20}", 0..12)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_are_an_answer_or_a_classified_error(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = read(&body) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Issue 11: no record with `respcd` `0000`, whatever else it says, is read as in
    /// progress or absent: it is paid (in some form) or unrecognised-but-paid. (That no such
    /// record lets its *payment* be reversed, whatever its kind, is
    /// `tests/money_safety.rs`.)
    #[test]
    fn no_record_that_says_0000_ever_permits_a_cancel(
        fields in proptest::collection::btree_map(
            prop::sample::select(vec![
                "cancel", "order_type", "origssn", "syssn", "out_trade_no", "pay_type",
                "txamt", "txcurrcd", "sysdtm", "txdtm", "errmsg", "paydtm",
            ]),
            field_value(),
            0..8,
        ),
        padded in prop::sample::select(vec!["0000", " 0000", "0000 "]),
    ) {
        let mut rec = serde_json::Map::new();
        for (k, v) in fields {
            rec.insert(k.to_string(), v);
        }
        rec.insert("respcd".into(), json!(padded));
        let rec = Value::Object(rec);
        let obs = record_observation(&rec);
        prop_assert!(!obs.outcome.permits_cancel(), "{rec} read as {:?}", obs.outcome);
        let body = json!({"respcd": "0000", "data": [rec.clone()]}).to_string();
        for o in read(body.as_bytes()).unwrap() {
            prop_assert!(!o.outcome.permits_cancel());
        }
    }

    #[test]
    fn json_shaped_noise_never_panics(v in any_json()) {
        let text = v.to_string();
        let _ = read(text.as_bytes());
        let _ = record_observation(&v);
    }

    #[test]
    fn the_request_signature_does_not_depend_on_parameter_order(p in params(), seed in any::<u64>()) {
        let mut shuffled = p.clone();
        // A deterministic shuffle from the seed; the signer sorts by name itself.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.wrapping_mul(i as u64 + 7) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        let mut sorted_again = shuffled.clone();
        sorted_again.sort();
        for t in [SignType::Md5, SignType::Sha256] {
            prop_assert_eq!(sign_request(&p, &key(), t), sign_request(&sorted_again, &key(), t));
        }
    }

    #[test]
    fn empty_values_do_not_change_the_signature(p in params(), extra in "[a-z]{13,16}") {
        let mut with_empty = p.clone();
        with_empty.push((extra, String::new()));
        with_empty.sort();
        prop_assert_eq!(canonical(&p), canonical(&with_empty));
        prop_assert_eq!(sign_request(&p, &key(), SignType::Md5), sign_request(&with_empty, &key(), SignType::Md5));
    }

    #[test]
    fn a_changed_value_or_key_changes_the_signature(p in params().prop_filter("non-empty", |p| p.iter().any(|(_, v)| !v.is_empty()))) {
        let i = p.iter().position(|(_, v)| !v.is_empty()).unwrap();
        let mut changed = p.clone();
        changed[i].1.push('x');
        prop_assert_ne!(sign_request(&p, &key(), SignType::Md5), sign_request(&changed, &key(), SignType::Md5));
        let other = SecretString::from("another-key".to_string());
        prop_assert_ne!(sign_request(&p, &key(), SignType::Md5), sign_request(&p, &other, SignType::Md5));
    }

    #[test]
    fn a_response_signature_verifies_in_any_case_and_fails_on_any_change(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<usize>(),
        sha in any::<bool>(),
    ) {
        let t = if sha { SignType::Sha256 } else { SignType::Md5 };
        let type_header = sha.then_some("SHA256");
        let sig = response_signature(&body, &key(), t);
        prop_assert_eq!(check_response(&body, Some(&sig), type_header, &key(), true), SignatureCheck::Valid);
        prop_assert_eq!(check_response(&body, Some(&sig.to_lowercase()), type_header, &key(), true), SignatureCheck::Valid);
        if !body.is_empty() {
            let mut tampered = body.clone();
            let i = flip % tampered.len();
            tampered[i] ^= 0x01;
            prop_assert_eq!(check_response(&tampered, Some(&sig), type_header, &key(), true), SignatureCheck::Invalid);
        }
        prop_assert_eq!(check_response(&body, None, None, &key(), true), SignatureCheck::Invalid);
        prop_assert_eq!(check_response(&body, None, None, &key(), false), SignatureCheck::Absent);
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("0000"),
            Just("1143"),
            Just("1205"),
            Just("1108"),
            Just("payment"),
            Just("refund")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("respcd".to_string()),
                    Just("data".to_string()),
                    Just("txamt".to_string()),
                    Just("syssn".to_string()),
                    Just("order_type".to_string()),
                    Just("cancel".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
