//! Vectors from docs/PROTOCOLS.md §E2 (A1, A2, B: ECPay's published ciphertexts; C1–C3: computed with
//! the 3002607 sandbox keys and cross-checked with OpenSSL), failure cases, and a round trip.

use super::*;
use proptest::prelude::*;

const DOC_JSON: &str = r#"{"Name":"Test","ID":"A123456789"}"#;

fn invoice_key() -> DataKey {
    DataKey::new(b"ejCk326UnaZWKisg", b"q9jcZX8Ib9LM8wYk").unwrap()
}

fn ticket_key() -> DataKey {
    DataKey::new(b"7b53896b742849d3", b"37a0ad3c6ffa428b").unwrap()
}

fn sandbox_key() -> DataKey {
    DataKey::new(b"pwFHCqoQZGmho4w6", b"EkRm7iFT261dpevs").unwrap()
}

/// Encrypts `json`, checks the URL-encoded form and the ciphertext byte for byte, and checks
/// that the ciphertext decrypts back to the same JSON text.
fn assert_vector(key: &DataKey, json: &str, urlenc: &str, base64: &str) {
    assert_eq!(php_urlencode(json), urlenc);
    assert_eq!(encrypt_data(json, key), base64);
    assert_eq!(decrypt_data(base64, key).unwrap(), json);
}

#[test]
fn a1_official_upper_case_example_matches_byte_for_byte() {
    assert_vector(
        &invoice_key(),
        DOC_JSON,
        "%7B%22Name%22%3A%22Test%22%2C%22ID%22%3A%22A123456789%22%7D",
        "uvI4yrErM37XNQkXGAgRgJAgHn2t72jahaMZzYhWL1HmvH4WV18VJDP2i9pTbC+tby5nxVExLLFyAkbjbS2Dvg==",
    );
}

#[test]
fn a2_official_lower_case_example_encrypts_and_decrypts_to_the_same_json() {
    let key = invoice_key();
    let lower = "%7b%22Name%22%3a%22Test%22%2c%22ID%22%3a%22A123456789%22%7d";
    let expected =
        "ZD/z07UvdmL3aYz0tsVo+bFXF5VldNcns6ezyfea777KOmLiizrUNDYe+v1bh2QTT4AySf1NICgXxWXB6f7c6A==";
    assert_eq!(encrypt_urlencoded(lower, &key), expected);
    assert_eq!(decrypt_data(expected, &key).unwrap(), DOC_JSON);
}

#[test]
fn b_official_ecticket_example_matches_byte_for_byte() {
    assert_vector(
        &ticket_key(),
        DOC_JSON,
        "%7B%22Name%22%3A%22Test%22%2C%22ID%22%3A%22A123456789%22%7D",
        "oxmUqzelA4koGRQ+myZggW5qNqlVdytGJadngOuWA7jd1Fakpay72J/w5IXLIINqCYcmx7gLsaednuH54LjffA==",
    );
}

#[test]
fn c1_cashier_query_data_with_sandbox_keys_matches() {
    assert_vector(
        &sandbox_key(),
        r#"{"MerchantID":"3002607","MerchantTradeNo":"20180914001"}"#,
        "%7B%22MerchantID%22%3A%223002607%22%2C%22MerchantTradeNo%22%3A%2220180914001%22%7D",
        "udqjXgM+7Q6lCrrculcvzUFnN5zv0ibax1glKFxrORr9UF5mcfapKO6a7X8M7Q8vubBLvnXJ1jk7PEzrgQEGlGWqZJQ6MYXtSWPac/GRDzRPU2Cnyg0qkkSlAPiRkB4c",
    );
}

#[test]
fn c2_credit_detail_query_data_with_sandbox_keys_matches() {
    assert_vector(
        &sandbox_key(),
        r#"{"PlatformID":"","MerchantID":"3002607","MerchantTradeNo":"20180914001","TradeNo":"1809261503338172"}"#,
        "%7B%22PlatformID%22%3A%22%22%2C%22MerchantID%22%3A%223002607%22%2C%22MerchantTradeNo%22%3A%2220180914001%22%2C%22TradeNo%22%3A%221809261503338172%22%7D",
        "rl1RbEIgjjHBLm8k4Qga6uK0pu4A6DIHP5AbJ910VpXGvEybHqN1wRbrGNU5Xnzto8xXPsdtrosjTjx8r3UwcduISxcqzxyteFMLDITbYYcy0KGltBhURNe/irfnjwG0z7gki/p9KA3XBsrgija9tN2Fq0Kxgo8AeOZ0tK+glb5tL9nfCb0unyRpz30TlzteLFKHFGsu8kAxmwol6mE2uA==",
    );
}

const C3_JSON: &str = r#"{"RtnMsg":"","RtnValue":{"TradeID":"16012345","Amount":100,"ClsAmt":0,"AuthTime":"2024/05/01 12:34:56","Status":"已授權","CloseData":[]}}"#;

#[test]
fn c3_response_with_space_and_cjk_matches_byte_for_byte() {
    assert_vector(
        &sandbox_key(),
        C3_JSON,
        "%7B%22RtnMsg%22%3A%22%22%2C%22RtnValue%22%3A%7B%22TradeID%22%3A%2216012345%22%2C%22Amount%22%3A100%2C%22ClsAmt%22%3A0%2C%22AuthTime%22%3A%222024%2F05%2F01+12%3A34%3A56%22%2C%22Status%22%3A%22%E5%B7%B2%E6%8E%88%E6%AC%8A%22%2C%22CloseData%22%3A%5B%5D%7D%7D",
        "D4b0rxkwCgQLPS8VDrH8T04UjKTMkGyL9RAkV6nG2tz8Q9HJHtKfwW/6EiPOuNiOoRUC9VHkqf8x/dCftgTrONEq1PLTaAyvcsa3RFV5XXpxNMI3Hdcql7Wh3unuKdKWlqmBtc6VDqUxaFxE42wXDhjC5+k49vFIcRzLXeRTi66ENnmYhfVQjs0PK7Pc0NADhD71XXzbe+okEK0daBpWlO02tJ1fVrignjKy5c8keME9NTldQCKeMHI43tw3WPdcm5nm9pJrIMqBIZDMftk1LUh90JBoCW2xESoUlDU3v7pkU/qHTd2juBq+e+GNBZwcEAwxfKiRLRDmP9r8V1yZtw==",
    );
}

#[test]
fn c3_dotnet_style_lower_case_response_decodes_to_the_same_json() {
    let data = "CdwwtVgHTCz6JTjU8DKAo2+XuFeogJOp1VLQBCJTp39JxipuxhiZOylQ7zdokfwXCW7pW7IPJvf0cxx9ggCZrdHi/1pmpAMXyK037G9xYDu1pSID1DjaWqb/J8FRta18uvIaTgo/FNN3GzLY1T0wNOx1fbzrAZVMnqdcHcNREWiKG3Hj0F/rbosKByAmW/oLmIGdgB/Eo9hcGyNEQKRa6uwfdoRToBQokTnp2dYEXF0pEUA02hBrHJHLpgSpbEmqPZp0YVsVWg+xbEiraW4FUJ56xaovIHZWMIkf1b3u3M+j8f3816GxOBu9agdO175DRsNrD79YubeG2hFNO1YJYw==";
    assert_eq!(decrypt_data(data, &sandbox_key()).unwrap(), C3_JSON);
}

#[test]
fn php_urlencode_escapes_what_form_urlencoded_leaves_alone() {
    assert_eq!(php_urlencode("a b*~!()'"), "a+b%2A%7E%21%28%29%27");
    assert_eq!(php_urlencode("-_.Az09"), "-_.Az09");
    assert_eq!(php_urlencode("已"), "%E5%B7%B2");
}

#[test]
fn form_decoding_takes_plus_as_space_either_hex_case_and_bare_dotnet_characters() {
    assert_eq!(form_decode(b"a+b%2a%2A!*()~").unwrap(), "a b**!*()~");
    // A stray percent sign is kept, as PHP urldecode keeps it.
    assert_eq!(form_decode(b"100%").unwrap(), "100%");
    assert_eq!(form_decode(b"%zz%4").unwrap(), "%zz%4");
}

#[test]
fn a_key_or_iv_of_the_wrong_length_is_refused_without_echoing_it() {
    let err = DataKey::new(b"short", b"EkRm7iFT261dpevs").unwrap_err();
    assert_eq!(
        err,
        CryptoError::KeyLength {
            part: "HashKey",
            len: 5
        }
    );
    assert!(!err.to_string().contains("short"));
    assert!(matches!(
        DataKey::new(b"pwFHCqoQZGmho4w6", b"EkRm7iFT261dpevs!"),
        Err(CryptoError::KeyLength {
            part: "HashIV",
            len: 17
        })
    ));
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let shown = format!("{:?}", sandbox_key());
    assert!(!shown.contains("pwFH"));
    assert!(!shown.contains("EkRm"));
}

#[test]
fn data_encrypted_with_another_key_is_an_error_not_a_panic() {
    // A1's ciphertext under the sandbox key: the padding (or, rarely, the text) is garbage.
    let a1 =
        "uvI4yrErM37XNQkXGAgRgJAgHn2t72jahaMZzYhWL1HmvH4WV18VJDP2i9pTbC+tby5nxVExLLFyAkbjbS2Dvg==";
    let err = decrypt_json(a1, &sandbox_key()).unwrap_err();
    assert!(
        matches!(
            err,
            CryptoError::Padding | CryptoError::NotUtf8(_) | CryptoError::Json(_)
        ),
        "{err:?}"
    );
}

#[test]
fn bad_padding_is_reported_as_such() {
    use aes::cipher::block_padding::NoPadding;
    // One block whose last byte is 0x00: never valid PKCS7.
    let ct = sandbox_key()
        .encryptor()
        .encrypt_padded_vec::<NoPadding>(b"0123456789abcde\0");
    let data = STANDARD.encode(ct);
    assert_eq!(
        decrypt_data(&data, &sandbox_key()),
        Err(CryptoError::Padding)
    );
}

#[test]
fn malformed_base64_and_truncated_ciphertext_are_errors() {
    let key = sandbox_key();
    assert!(matches!(
        decrypt_data("not base64 at all!", &key),
        Err(CryptoError::Base64(_))
    ));
    assert_eq!(decrypt_data("", &key), Err(CryptoError::CipherLength(0)));
    // 15 bytes: valid base64, not a whole AES block.
    assert_eq!(
        decrypt_data("AAAAAAAAAAAAAAAAAAAA", &key),
        Err(CryptoError::CipherLength(15))
    );
}

#[test]
fn bytes_that_are_not_utf8_after_decoding_are_an_error() {
    let key = sandbox_key();
    let data = encrypt_urlencoded("%7B%22a%22%3A%22%FF%FE%22%7D", &key);
    assert_eq!(decrypt_data(&data, &key), Err(CryptoError::NotUtf8(6)));
}

#[test]
fn decrypted_text_that_is_not_json_is_an_error() {
    let key = sandbox_key();
    let data = encrypt_data("{not json", &key);
    assert!(matches!(
        decrypt_json(&data, &key),
        Err(CryptoError::Json(_))
    ));
}

#[test]
fn wrapped_base64_is_accepted() {
    let key = sandbox_key();
    let data = encrypt_data(DOC_JSON, &key);
    let wrapped = format!("{}\n{}", &data[..20], &data[20..]);
    assert_eq!(decrypt_data(&wrapped, &key).unwrap(), DOC_JSON);
}

fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(" ".to_string()),
        Just("*".to_string()),
        Just("~".to_string()),
        Just("!".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("'".to_string()),
        Just("+".to_string()),
        Just("%".to_string()),
        Just("已授權".to_string()),
        Just("操作取消".to_string()),
        "[\\u{4e00}-\\u{9fff}]{1,3}",
        "[ -~]{0,8}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn any_json_survives_encrypt_then_decrypt(a in tricky_text(), b in tricky_text(), n in any::<i64>()) {
        let key = sandbox_key();
        let value = serde_json::json!({ "RtnMsg": a, "RtnValue": { "Status": b, "Amount": n } });
        let data = encrypt_json(&value, &key);
        prop_assert_eq!(decrypt_json(&data, &key).unwrap(), value);
    }

    #[test]
    fn urlencoded_text_uses_only_the_php_safe_alphabet_and_decodes_back(s in tricky_text()) {
        let enc = php_urlencode(&s);
        prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+%".contains(&b)));
        prop_assert_eq!(form_decode(enc.as_bytes()).unwrap(), s);
    }
}
