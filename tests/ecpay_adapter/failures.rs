//! Every failure the client can meet (envelope, business, HTTP, transport, key) ends in the
//! documented [`GatewayError`] class, without a panic and without leaking the key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use payrecon::domain::Outcome;
use payrecon::gateway::ecpay::QueryApi;
use payrecon::gateway::{ErrorClass, GatewayError};
use serde_json::json;

use super::{CREDIT, IV, KEY, Seen, card, client, order, record, reply, settings};

#[tokio::test]
async fn error_stop_is_an_account_error() {
    let mut server = mockito::Server::new_async().await;
    server
        .mock("POST", CREDIT)
        .with_body(reply(&json!({"RtnMsg": "error_Stop"})))
        .create_async()
        .await;
    let err = client(settings(&server.url(), QueryApi::CreditDetail))
        .query(&order("A1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Account);
}

#[tokio::test]
async fn rtnmsg_error_is_retryable_but_not_hammered_within_the_call() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", CREDIT)
        .with_body(reply(&json!({"RtnMsg": "error"})))
        .expect(1)
        .create_async()
        .await;
    let err = client(settings(&server.url(), QueryApi::CreditDetail))
        .query(&order("A1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable);
    m.assert_async().await;
}

#[tokio::test]
async fn trans_code_zero_with_empty_data_is_an_envelope_error() {
    let mut server = mockito::Server::new_async().await;
    server
        .mock("POST", CREDIT)
        .with_body(r#"{"MerchantID":"3002607","RpHeader":{"Timestamp":1700000000},"TransCode":0,"TransMsg":"Fail","Data":""}"#)
        .create_async()
        .await;
    let err = client(settings(&server.url(), QueryApi::CreditDetail))
        .query(&order("A1"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Account { code, .. } if code == "TransCode 0"),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Account);
}

#[tokio::test]
async fn http_403_rate_limits_and_the_client_then_stays_paused() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", CREDIT)
        .with_status(403)
        .expect(1)
        .create_async()
        .await;
    let c = client(settings(&server.url(), QueryApi::CreditDetail));
    assert!(c.paused_until().is_none());
    let err = c.query(&order("A1"), None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::RateLimited);
    let until = c.paused_until().expect("paused after 403");
    let left = until - tokio::time::Instant::now();
    assert!(
        left > Duration::from_secs(1790) && left <= Duration::from_secs(1800),
        "{left:?}"
    );

    // A clone shares the pause, and the second call never reaches the server.
    let err = c.clone().query(&order("A2"), None).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::RateLimited { status: 403, retry_after: Some(d), .. } if d > Duration::from_secs(1790)),
        "{err:?}"
    );
    m.assert_async().await;
}

#[tokio::test]
async fn the_pause_ends_after_the_configured_time() {
    let mut server = mockito::Server::new_async().await;
    server
        .mock("POST", CREDIT)
        .with_status(403)
        .expect(1)
        .create_async()
        .await;
    let mut s = settings(&server.url(), QueryApi::CreditDetail);
    s.pause_after_403 = Duration::from_millis(50);
    s.retry.max_elapsed = Duration::ZERO;
    let c = client(s);
    let _ = c.query(&order("A1"), None).await;
    assert!(c.paused_until().is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(c.paused_until().is_none());
}

#[tokio::test]
async fn http_500_then_200_is_retried_within_the_call() {
    let mut server = mockito::Server::new_async().await;
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let s3 = seen.clone();
    let first = server
        .mock("POST", CREDIT)
        .with_status(500)
        .with_body_from_request(move |req| {
            record(&s2, req);
            b"oops".to_vec()
        })
        .expect(1)
        .create_async()
        .await;
    let second = server
        .mock("POST", CREDIT)
        .with_body_from_request(move |req| {
            record(&s3, req);
            reply(&card("Captured")).into_bytes()
        })
        .expect(1)
        .create_async()
        .await;
    let obs = client(settings(&server.url(), QueryApi::CreditDetail))
        .query(&order("A1"), None)
        .await
        .unwrap();
    assert_eq!(obs.outcome, Outcome::Succeeded);
    first.assert_async().await;
    second.assert_async().await;
    // Each attempt is its own envelope with its own current timestamp.
    for (env, _, server_now) in seen.lock().unwrap().iter() {
        assert!((env.rq_header.timestamp - server_now).abs() <= 1);
    }
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_a_retryable_http_error_after_the_budget() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", CREDIT)
        .with_status(502)
        .expect_at_least(2)
        .create_async()
        .await;
    let err = client(settings(&server.url(), QueryApi::CreditDetail))
        .query(&order("A1"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, GatewayError::HttpStatus { status: 502, .. }),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable);
    m.assert_async().await;
}

#[tokio::test]
async fn invalid_base64_in_data_is_a_retryable_malformed_answer() {
    let mut server = mockito::Server::new_async().await;
    let m = server
        .mock("POST", CREDIT)
        .with_body(r#"{"MerchantID":"3002607","TransCode":1,"TransMsg":"Success","Data":"@@not*base64@@"}"#)
        .expect(1)
        .create_async()
        .await;
    let err = client(settings(&server.url(), QueryApi::CreditDetail))
        .query(&order("A1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Malformed { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retryable);
    m.assert_async().await;
}

/// Not mockito: a handler that sleeps would block mockito's shared server thread and delay
/// the other tests' servers. A listener that accepts and never answers is the honest
/// "gateway that hangs".
#[tokio::test]
async fn a_server_that_never_answers_times_out_as_a_retryable_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    let mut s = settings(&url, QueryApi::CreditDetail);
    s.request_timeout = Duration::from_millis(150);
    s.retry.max_elapsed = Duration::from_millis(400);
    let started = std::time::Instant::now();
    let err = client(s).query(&order("A1"), None).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Transport { detail, .. } if detail.contains("no answer within")),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable);
    // Retried within the budget, then given up well before a real 30 s timeout.
    assert!(accepted.load(Ordering::SeqCst) >= 2);
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

#[tokio::test]
async fn a_key_of_the_wrong_length_is_an_account_error_before_any_call() {
    let mut server = mockito::Server::new_async().await;
    let m = server.mock("POST", CREDIT).expect(0).create_async().await;
    let mut s = settings(&server.url(), QueryApi::CreditDetail);
    s.hash_key = "tooshort".into();
    let c = client(s);
    let err = c.query(&order("A1"), None).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Account);
    assert!(!err.to_string().contains("tooshort"));
    m.assert_async().await;
}

#[tokio::test]
async fn neither_key_nor_iv_appears_in_debug_output_or_errors() {
    let mut server = mockito::Server::new_async().await;
    server
        .mock("POST", CREDIT)
        .with_body(r#"{"TransCode":1,"Data":"AAAAAAAAAAAAAAAAAAAAAA=="}"#)
        .create_async()
        .await;
    let c = client(settings(&server.url(), QueryApi::CreditDetail));
    let err = c.query(&order("A1"), None).await.unwrap_err();
    for shown in [format!("{c:?}"), format!("{err:?}"), err.to_string()] {
        assert!(!shown.contains(KEY) && !shown.contains(IV), "{shown}");
    }
}
