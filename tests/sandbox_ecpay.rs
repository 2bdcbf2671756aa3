//! The ECPay sandbox driven through payrecon's real ECPay adapter: `error_nopay` until the bank
//! answers, Chinese and English statuses, Cashier, the Timestamp window, stopped merchants.

mod sandbox_support;

use std::time::Duration;

use payrecon::config::EcpayQueryApi;
use payrecon::domain::Outcome;
use payrecon::gateway::{ErrorClass, GatewayError};
use payrecon::sandbox::{
    CallKind, DEV_ECPAY_MERCHANT_ID, EcpayMerchant, EcpayOrder, EcpayStatus, RateLimits, Sandbox,
    SandboxConfig, StatusLanguage, ecpay_account,
};
use sandbox_support::*;

const MID: &str = DEV_ECPAY_MERCHANT_ID;

#[tokio::test]
async fn an_order_is_error_nopay_until_the_bank_answers_then_authorized() {
    let sandbox = wall_sandbox().await;
    sandbox
        .state()
        .insert_ecpay(
            MID,
            EcpayOrder::new("EC0001", 500)
                .nopay_until(Duration::from_secs(300), EcpayStatus::Authorized),
        )
        .unwrap();
    let client = dev_ecpay(&sandbox, EcpayQueryApi::CreditDetail);
    let obs = client.query(&ec_order("EC0001"), None).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::InProgress, "error_nopay")
    );

    // Six minutes later (still inside the 10-minute Timestamp window) the bank has answered.
    sandbox.clock().advance(Duration::from_secs(360));
    let obs = client.query(&ec_order("EC0001"), None).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::Succeeded, "已授權")
    );
    assert_eq!(obs.amount_minor, Some(500));
    assert_eq!(sandbox.stats().count(CallKind::EcpayCreditDetail), 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn statuses_follow_the_merchant_language_and_cashier_reports_trade_status() {
    let mut english = EcpayMerchant::new("3002608", "ABCDEFGHIJKLMNOP", "abcdefghijklmnop");
    english.language = StatusLanguage::English;
    let config = SandboxConfig {
        rate_limits: RateLimits::off(),
        ecpay_merchants: vec![english],
        ..SandboxConfig::dev()
    };
    let sandbox = Sandbox::start(config).await.unwrap();
    let state = sandbox.state();
    state
        .insert_ecpay("3002608", EcpayOrder::new("EN0001", 700))
        .unwrap();
    state
        .insert_ecpay(
            "3002608",
            EcpayOrder::new("EN0002", 700).status(EcpayStatus::Unauthorized),
        )
        .unwrap();
    let trade_no = state
        .insert_ecpay(
            "3002608",
            EcpayOrder::new("EN0003", 700)
                .nopay_until(Duration::from_secs(120), EcpayStatus::Captured),
        )
        .unwrap();
    let account = |api| {
        ecpay_account(
            "tw",
            sandbox.base_url(),
            "3002608",
            "ABCDEFGHIJKLMNOP",
            "abcdefghijklmnop",
            api,
        )
    };
    let credit = ecpay_client(&account(EcpayQueryApi::CreditDetail));
    let obs = credit.query(&ec_order("EN0001"), None).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::Succeeded, "Authorized")
    );
    let obs = credit.query(&ec_order("EN0002"), None).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::Unauthorized, "Unauthorized")
    );

    let cashier = ecpay_client(&account(EcpayQueryApi::Cashier));
    let obs = cashier.query(&ec_order("EN0003"), None).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::InProgress, "0")
    );
    assert_eq!(obs.provider_ref.unwrap().as_str(), trade_no);
    sandbox.clock().advance(Duration::from_secs(120));
    let obs = cashier.query(&ec_order("EN0003"), None).await.unwrap();
    assert_eq!(
        (obs.outcome, obs.provider_code.as_str()),
        (Outcome::Succeeded, "1")
    );
    let obs = cashier.query(&ec_order("EN0002"), None).await.unwrap();
    assert_eq!(obs.outcome, Outcome::Failed);
    // An order the gateway never saw is refused on Cashier (a request error, no evidence).
    let err = cashier.query(&ec_order("NOSUCH"), None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Request, "{err}");
    assert_eq!(
        sandbox
            .stats()
            .merchant_count("3002608", CallKind::EcpayCashier),
        4
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_timestamp_older_than_ten_minutes_is_refused_with_a_non_1_trans_code() {
    let sandbox = wall_sandbox().await;
    sandbox
        .state()
        .insert_ecpay(MID, EcpayOrder::new("EC0002", 100))
        .unwrap();
    let client = dev_ecpay(&sandbox, EcpayQueryApi::CreditDetail);
    assert!(client.query(&ec_order("EC0002"), None).await.is_ok());
    // The gateway's clock runs 11 minutes ahead of ours: our fresh Timestamp is stale to it.
    sandbox.clock().advance(Duration::from_secs(660));
    let err = client.query(&ec_order("EC0002"), None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Account, "{err}");
    assert!(err.to_string().contains("TransCode 999"), "{err}");
    assert!(err.to_string().contains("Timestamp"), "{err}");
    assert_eq!(sandbox.stats().stale_timestamps, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_stopped_merchant_answers_error_stop_and_a_wrong_key_cannot_open_data() {
    let mut stopped = EcpayMerchant::new("3002609", "ABCDEFGHIJKLMNOP", "abcdefghijklmnop");
    stopped.stopped = true;
    let config = SandboxConfig {
        rate_limits: RateLimits::off(),
        ecpay_merchants: vec![stopped, SandboxConfig::dev().ecpay_merchants.remove(0)],
        ..SandboxConfig::dev()
    };
    let sandbox = Sandbox::start(config).await.unwrap();
    let account = ecpay_account(
        "x",
        sandbox.base_url(),
        "3002609",
        "ABCDEFGHIJKLMNOP",
        "abcdefghijklmnop",
        EcpayQueryApi::CreditDetail,
    );
    let err = ecpay_client(&account)
        .query(&ec_order("ANY1"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Account { code, .. } if code == "error_Stop"),
        "{err}"
    );

    // Our key is not the merchant's: the envelope is refused before Data is answered.
    let wrong = ecpay_account(
        "x",
        sandbox.base_url(),
        MID,
        "ABCDEFGHIJKLMNOP",
        "abcdefghijklmnop",
        EcpayQueryApi::CreditDetail,
    );
    let err = ecpay_client(&wrong)
        .query(&ec_order("ANY1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Account, "{err}");
    // An unknown outer MerchantID likewise.
    let unknown = ecpay_account(
        "x",
        sandbox.base_url(),
        "9999999",
        "ABCDEFGHIJKLMNOP",
        "abcdefghijklmnop",
        EcpayQueryApi::CreditDetail,
    );
    let err = ecpay_client(&unknown)
        .query(&ec_order("ANY1"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TransCode 999"), "{err}");
    sandbox.shutdown().await;
}
