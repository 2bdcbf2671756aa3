//! Table tests of the CreditDetail classification (seed 003, docs/PROTOCOLS.md §E3.1).

use super::*;
use crate::gateway::ErrorClass;
use crate::gateway::ecpay::card_trade::CardStatus;
use crate::gateway::ecpay::crypto::{DataKey, encrypt_data};
use serde_json::json;

fn order() -> OutTradeNo {
    OutTradeNo::parse("20180914001", crate::domain::Provider::Ecpay).unwrap()
}

/// An answer without close rows; `ClsAmt` is the full amount for the capture statuses.
fn answer(status: &str) -> Value {
    let closed = matches!(
        CardStatus::parse(status),
        CardStatus::ToBeCaptured | CardStatus::Captured
    );
    json!({"RtnMsg": "", "RtnValue": {
        "TradeID": 245678, "Amount": 100, "ClsAmt": if closed { 100 } else { 0 },
        "AuthTime": "2018/09/25 14:59:54", "Status": status
    }})
}

/// An answer with `ClsAmt` and close rows `(status, amount, time)`.
fn closed(status: &str, amount: i64, cls_amt: i64, rows: &[(&str, i64, &str)]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|(s, a, t)| json!({"Status": s, "Amount": a, "DateTime": t}))
        .collect();
    json!({"RtnMsg": "", "RtnValue": {
        "TradeID": 245678, "Amount": amount, "ClsAmt": cls_amt,
        "AuthTime": "2026/11/20 10:00:00", "Status": status, "CloseData": rows
    }})
}

fn verdict(data: &Value) -> (Outcome, Option<i64>) {
    let o = classify_credit_detail(data, &order(), None).unwrap();
    (o.outcome, o.amount_minor)
}

fn outcome(data: &Value) -> Outcome {
    classify_credit_detail(data, &order(), None)
        .unwrap()
        .outcome
}

#[test]
fn the_query_data_matches_vector_c2_exactly() {
    let trade_no = ProviderRef::parse("1809261503338172").unwrap();
    // Kept for recurring authorizations; payrecon's own queries leave TradeNo out (below).
    let text = credit_detail_data(None, "3002607", &order(), Some(&trade_no));
    assert_eq!(
        text,
        r#"{"PlatformID":"","MerchantID":"3002607","MerchantTradeNo":"20180914001","TradeNo":"1809261503338172"}"#
    );
    let key = DataKey::new(b"pwFHCqoQZGmho4w6", b"EkRm7iFT261dpevs").unwrap();
    assert!(encrypt_data(&text, &key).starts_with("rl1RbEIgjjHBLm8k4Qga6uK0pu4A6DIH"));
}

#[test]
fn without_a_trade_no_the_field_is_left_out() {
    let text = credit_detail_data(Some("3003008"), "3002607", &order(), None);
    assert_eq!(
        text,
        r#"{"PlatformID":"3003008","MerchantID":"3002607","MerchantTradeNo":"20180914001"}"#
    );
}

#[test]
fn every_documented_status_maps_in_chinese_and_english() {
    let table = [
        ("已授權", Outcome::Succeeded),
        ("Authorized", Outcome::Succeeded),
        ("要關帳", Outcome::Succeeded),
        ("To be captured", Outcome::Succeeded),
        ("已關帳", Outcome::Succeeded),
        ("Captured", Outcome::Succeeded),
        ("未授權", Outcome::Unauthorized),
        ("Unauthorized", Outcome::Unauthorized),
        ("已取消", Outcome::Cancelled),
        ("Canceled", Outcome::Cancelled),
        ("Cancelled", Outcome::Cancelled),
        // A capture undone (DoAction E reverts a close): back to authorized, money held.
        ("操作取消", Outcome::Succeeded),
        ("Operation canceled", Outcome::Succeeded),
        ("operation  CANCELLED", Outcome::Succeeded),
        (" to be captured ", Outcome::Succeeded),
    ];
    for (status, expected) in table {
        assert_eq!(outcome(&answer(status)), expected, "{status}");
    }
}

#[test]
fn an_unknown_or_missing_status_is_unrecognised_never_failed() {
    for status in ["Refused by bank", "Settling", "失敗", ""] {
        assert_eq!(outcome(&answer(status)), Outcome::Unrecognised, "{status}");
    }
    let no_status = json!({"RtnMsg": "", "RtnValue": {"Amount": 100}});
    assert_eq!(outcome(&no_status), Outcome::Unrecognised);
}

#[test]
fn a_success_carries_amount_twd_auth_time_and_the_decrypted_data_as_evidence() {
    let data = answer("已關帳");
    let trade_no = ProviderRef::parse("1809261503338172").unwrap();
    let o = classify_credit_detail(&data, &order(), Some(&trade_no)).unwrap();
    assert_eq!(o.kind, RecordKind::Payment);
    assert_eq!(o.provider_code, "已關帳");
    assert_eq!(o.amount_minor, Some(100));
    assert_eq!(o.currency.unwrap().as_str(), "TWD");
    assert_eq!(o.gateway_time.as_deref(), Some("2018/09/25 14:59:54"));
    assert_eq!(o.out_trade_no, Some(order()));
    assert_eq!(o.provider_ref, Some(trade_no));
    assert_eq!(o.evidence, data);
    assert_eq!(o.evidence["RtnValue"]["ClsAmt"], 100);
}

#[test]
fn field_names_are_read_case_insensitively_as_in_the_v2_doc_and_the_seed() {
    // AIO V2 doc casing.
    let lower = json!({"rtnmsg": "", "rtnvalue": {"amount": "250", "clsamt": 0,
        "authtime": "2024/05/01 12:34:56", "status": "已授權", "close_data": []}});
    let o = classify_credit_detail(&lower, &order(), None).unwrap();
    assert_eq!((o.outcome, o.amount_minor), (Outcome::Succeeded, Some(250)));
    // Seed 003's example: keys with trailing blanks.
    let seed = json!({"RtnMsg": "", "RtnValue": {"TradeID ": 245678, "Amount ": 100,
        "ClsAmt ": 100, "AuthTime": "2018/09/25 14:59:54", "Status": "To be captured"},
        "CloseData": [{"Status": "To be captured", "Amount": 100, "DateTime": "2018/09/26 14:59:54"}]});
    let o = classify_credit_detail(&seed, &order(), None).unwrap();
    assert_eq!((o.outcome, o.amount_minor), (Outcome::Succeeded, Some(100)));
}

#[test]
fn a_cancellation_contradicted_by_the_latest_close_row_is_not_taken_as_final() {
    let mut data = answer("操作取消");
    data["RtnValue"]["CloseData"] = json!([
        {"Status": "Operation canceled", "Amount": 100, "DateTime": "2018/09/26 10:00:00"},
        {"Status": "已關帳", "Amount": 100, "DateTime": "2018/09/27 10:00:00"}
    ]);
    assert_eq!(outcome(&data), Outcome::Unrecognised);
    // The capture undone being the latest, nothing closed: back to authorized (the money is
    // held; only 已取消, DoAction N, gives the authorization up).
    data["RtnValue"]["CloseData"] = json!([
        {"Status": "已關帳", "Amount": 100, "DateTime": "2018/09/26 10:00:00"},
        {"Status": "操作取消", "Amount": 100, "DateTime": "2018/09/27 10:00:00"}
    ]);
    assert_eq!(outcome(&data), Outcome::Succeeded);
    // CloseData beside RtnValue (seed example layout) is read too.
    let mut beside = answer("已取消");
    beside["CloseData"] = json!([{"Status": "To be captured", "Amount": 100}]);
    assert_eq!(outcome(&beside), Outcome::Unrecognised);
}

/// Issue 12 item 1: the three answers that used to end `succeeded` at the full amount.
#[test]
fn a_refund_a_partial_capture_and_an_undone_capture_after_authorization_are_not_success() {
    let refunded = closed(
        "已關帳",
        1000,
        0,
        &[
            ("已關帳", 1000, "2026/11/21 20:15:00"),
            ("已關帳", -1000, "2026/11/23 11:00:00"),
        ],
    );
    assert_eq!(verdict(&refunded), (Outcome::Refunded, Some(1000)));
    // Only the refund row listed: the same.
    let refund_only = closed(
        "Captured",
        1000,
        0,
        &[("Captured", -1000, "2026/11/23 11:00:00")],
    );
    assert_eq!(verdict(&refund_only), (Outcome::Refunded, Some(1000)));

    let partial = closed(
        "已關帳",
        1000,
        400,
        &[("已關帳", 400, "2026/11/21 20:15:00")],
    );
    assert_eq!(verdict(&partial), (Outcome::PartiallyRefunded, Some(1000)));
    let partly_refunded = closed(
        "已關帳",
        1000,
        400,
        &[
            ("已關帳", 1000, "2026/11/21 20:15:00"),
            ("已關帳", -600, "2026/11/22 09:00:00"),
        ],
    );
    assert_eq!(
        verdict(&partly_refunded),
        (Outcome::PartiallyRefunded, Some(1000))
    );

    // 已關帳 with the full ClsAmt, yet the latest row undoes the capture: not certain, so the
    // state is kept and the rows' figure (0 kept) is reported against the order amount.
    let undone = closed(
        "已關帳",
        1000,
        1000,
        &[
            ("已關帳", 1000, "2026/11/21 20:15:00"),
            ("已取消", 1000, "2026/11/22 09:00:00"),
        ],
    );
    assert_eq!(verdict(&undone), (Outcome::Unrecognised, Some(0)));
}

#[test]
fn cancelled_before_capture_is_cancelled_and_a_capture_in_flight_is_still_paid() {
    assert_eq!(
        verdict(&closed("已取消", 1000, 0, &[])),
        (Outcome::Cancelled, Some(1000))
    );
    // Capture requested, not closed yet (seed example: To be captured).
    let pending = closed(
        "要關帳",
        1000,
        0,
        &[("要關帳", 1000, "2026/11/21 10:00:00")],
    );
    assert_eq!(verdict(&pending), (Outcome::Succeeded, Some(1000)));
    // Authorized, its capture undone: the authorization stands.
    let held = closed(
        "已授權",
        1000,
        0,
        &[
            ("要關帳", 1000, "2026/11/21 10:00:00"),
            ("操作取消", 1000, "2026/11/21 11:00:00"),
        ],
    );
    assert_eq!(verdict(&held), (Outcome::Succeeded, Some(1000)));
}

#[test]
fn answers_whose_parts_disagree_are_disputed_with_the_differing_figure() {
    // More closed than authorized.
    assert_eq!(
        verdict(&closed("已關帳", 1000, 1200, &[])),
        (Outcome::Unrecognised, Some(1200))
    );
    // 已關帳 with nothing closed and no rows saying why.
    assert_eq!(
        verdict(&closed("已關帳", 1000, 0, &[])),
        (Outcome::Unrecognised, Some(0))
    );
    // Not authorized, yet money closed.
    assert_eq!(
        verdict(&closed(
            "未授權",
            1000,
            1000,
            &[("已關帳", 1000, "2026/11/21 10:00:00")]
        )),
        (Outcome::Unrecognised, Some(1000))
    );
    // A row the mapping cannot read.
    let odd = closed(
        "已關帳",
        1000,
        1000,
        &[("Settling", 1000, "2026/11/21 10:00:00")],
    );
    assert_eq!(verdict(&odd).0, Outcome::Unrecognised);
}

#[test]
fn error_nopay_is_in_progress_with_its_own_code() {
    let data = json!({"RtnMsg": "error_nopay"});
    let o = classify_credit_detail(&data, &order(), None).unwrap();
    assert_eq!(o.outcome, Outcome::InProgress);
    assert_eq!(o.provider_code, "error_nopay");
    assert_eq!(o.out_trade_no, Some(order()));
    assert_eq!(o.evidence, data);
}

#[test]
fn error_stop_is_an_account_error() {
    let err = classify_credit_detail(&json!({"RtnMsg": "error_Stop"}), &order(), None).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Account);
    assert!(err.to_string().contains("error_Stop"));
}

#[test]
fn error_and_unexpected_messages_are_retryable_and_carry_no_evidence() {
    for msg in ["error", "something new"] {
        let err = classify_credit_detail(&json!({ "RtnMsg": msg }), &order(), None).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Retryable, "{msg}");
    }
}

#[test]
fn an_empty_answer_is_retryable_not_a_verdict() {
    for data in [
        json!({"RtnMsg": ""}),
        json!({"RtnMsg": "", "RtnValue": {}}),
        json!("text"),
    ] {
        let err = classify_credit_detail(&data, &order(), None).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Retryable, "{data}");
    }
}
