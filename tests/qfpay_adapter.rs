//! QFPay adapter against a mockito server (one server per test): method, path, exact form body,
//! `X-QF-APPCODE`, and an `X-QF-SIGN` recomputed here, independently of the adapter, from the
//! signed string written out literally (docs/PROTOCOLS.md §Q1.4).

use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use md5::{Digest, Md5};
use mockito::{Matcher, Server, ServerGuard};
use secrecy::SecretString;
use serde_json::{Value, json};

use payrecon::domain::{
    AccountName, CancelRoute, Currency, Money, OutTradeNo, Outcome, PayType, Provider, ProviderRef,
};
use payrecon::gateway::qfpay::{
    CallMethod, CancelOutcome, CancelRequest, CancelTarget, ClientSettings, IdLookup, OrderLookup,
    PaymentOutcome, PaymentRequest, QfpayClient, SignType, WindowQuery,
};
use payrecon::gateway::transport::{Pacer, RetryBudget};
use payrecon::gateway::{ErrorClass, GatewayError};

const KEY: &str = "0123456789ABCDEF0123456789ABCDEF";
const APP: &str = "APPCODE42";
const FORM: &str = "application/x-www-form-urlencoded";

fn md5_upper(s: &str) -> String {
    hex::encode_upper(Md5::digest(s.as_bytes()))
}

/// The expected `X-QF-SIGN` for a literal signed string (without the key).
fn sign_of(signed: &str) -> String {
    md5_upper(&format!("{signed}{KEY}"))
}

fn hk() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

fn hk_time(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    hk().with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap().to_utc()
}

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn settings(server: &ServerGuard) -> ClientSettings {
    ClientSettings {
        account: AccountName::parse("hk").unwrap(),
        base_url: server.url().parse().unwrap(),
        app_code: APP.to_string(),
        client_key: SecretString::from(KEY.to_string()),
        mchid: None,
        timezone: hk(),
        sign_type: SignType::Md5,
        require_response_signature: false,
        batch_size: 4,
        request_timeout: Duration::from_secs(5),
        rate_per_second: 100,
        rate_per_minute: 400,
    }
}

fn small_budget() -> RetryBudget {
    RetryBudget {
        initial: Duration::from_millis(10),
        max_interval: Duration::from_secs(2),
        max_elapsed: Duration::from_secs(3),
    }
}

fn client_with(settings: ClientSettings) -> QfpayClient {
    QfpayClient::new(reqwest::Client::new(), settings)
        .with_pacer(Pacer::unlimited())
        .with_retry_budget(small_budget())
}

fn client(server: &ServerGuard) -> QfpayClient {
    client_with(settings(server))
}

/// A signed query answer with these records.
fn query_answer(records: Vec<Value>) -> (String, String) {
    let body = json!({"respcd": "0000", "resperr": "请求成功", "respmsg": "", "page": "1",
                      "page_size": "100", "data": records})
    .to_string();
    let sign = md5_upper(&format!("{body}{KEY}"));
    (body, sign)
}

fn record(syssn: &str, out_trade_no: &str, respcd: &str) -> Value {
    json!({"syssn": syssn, "out_trade_no": out_trade_no, "respcd": respcd, "cancel": "0",
           "order_type": "payment", "pay_type": "800101", "txamt": "100", "txcurrcd": "HKD",
           "sysdtm": "2026-11-01 10:00:00", "errmsg": "…"})
}

fn syssn(n: u32) -> String {
    format!("202611010001000200{n:08}")
}

#[tokio::test]
async fn a_payment_request_is_posted_signed_with_mchid_and_answered_with_a_pay_url() {
    let mut server = Server::new_async().await;
    let signed = "expired_time=30&goods_name=咖啡 1&mchid=MCH1&out_trade_no=ORDER-1\
                  &pay_type=801101&txamt=300&txcurrcd=HKD&txdtm=2026-11-22 10:30:34";
    let body = "expired_time=30&goods_name=%E5%92%96%E5%95%A1+1&mchid=MCH1&out_trade_no=ORDER-1\
                &pay_type=801101&txamt=300&txcurrcd=HKD&txdtm=2026-11-22+10%3A30%3A34";
    let answer = r#"{"sysdtm": "2026-11-22 10:30:35", "txcurrcd": "HKD", "respmsg": "", "pay_type": "801101", "txamt": "300", "resperr": "success", "out_trade_no": "ORDER-1", "syssn": "20261122000300020087033882", "respcd": "0000", "pay_url": "https://globalmapi.alipay.com/gateway.do?x=1"}"#;
    let m = server
        .mock("POST", "/trade/v1/payment")
        .match_header("content-type", FORM)
        .match_header("x-qf-appcode", APP)
        .match_header("x-qf-sign", sign_of(signed).as_str())
        .match_header("x-qf-signtype", Matcher::Missing)
        .match_body(Matcher::Exact(body.to_string()))
        .with_header("X-QF-SIGN", &md5_upper(&format!("{answer}{KEY}")))
        .with_body(answer)
        .expect(1)
        .create_async()
        .await;
    let mut s = settings(&server);
    s.mchid = Some("MCH1".into());
    let client = client_with(s);
    let req = PaymentRequest::new(
        OutTradeNo::parse("ORDER-1", Provider::Qfpay).unwrap(),
        Money::new(300, Currency::parse("HKD").unwrap()).unwrap(),
        PayType::parse("801101").unwrap(),
        local("2026-11-22 10:30:34"),
    )
    .unwrap()
    .expires_in(Duration::from_secs(30 * 60))
    .unwrap()
    .goods_name("咖啡 1")
    .unwrap();

    let created = client.create_payment(&req).await.unwrap();
    m.assert_async().await;
    assert_eq!(created.outcome, PaymentOutcome::Accepted);
    assert_eq!(
        created.syssn.as_ref().unwrap().as_str(),
        "20261122000300020087033882"
    );
    assert_eq!(
        created.pay_url.as_deref(),
        Some("https://globalmapi.alipay.com/gateway.do?x=1")
    );
    assert_eq!(created.observation(&req).outcome, Outcome::InProgress);
}

#[tokio::test]
async fn a_sha256_account_says_so_in_a_header_and_signs_with_sha256() {
    let mut server = Server::new_async().await;
    let signed = "page=1&page_size=100&syssn=20261101000100020000000001";
    let sha = hex::encode_upper(sha2::Sha256::digest(format!("{signed}{KEY}").as_bytes()));
    let (answer, _) = query_answer(vec![]);
    let m = server
        .mock("POST", "/trade/v1/query")
        .match_header("x-qf-signtype", "SHA256")
        .match_header("x-qf-sign", sha.as_str())
        .with_body(answer)
        .expect(1)
        .create_async()
        .await;
    let mut s = settings(&server);
    s.sign_type = SignType::Sha256;
    let ids = vec![ProviderRef::parse(&syssn(1)).unwrap()];
    let results = client_with(s).query_ids(&IdLookup::Syssn(ids)).await;
    m.assert_async().await;
    assert!(results[0].1.is_ok());
}

#[tokio::test]
async fn an_id_query_sends_the_comma_list_and_answers_every_id_asked() {
    let mut server = Server::new_async().await;
    let (a, b) = (syssn(1), syssn(2));
    let signed = format!("page=1&page_size=100&syssn={a},{b}");
    let body = format!("page=1&page_size=100&syssn={a}%2C{b}");
    // The gateway also returns a record nobody asked for; it must be ignored.
    let (answer, answer_sign) = query_answer(vec![
        record(&a, "O-1", "1143"),
        record(&syssn(9), "O-9", "0000"),
    ]);
    let m = server
        .mock("POST", "/trade/v1/query")
        .match_header("content-type", FORM)
        .match_header("x-qf-appcode", APP)
        .match_header("x-qf-sign", sign_of(&signed).as_str())
        .match_body(Matcher::Exact(body))
        .with_header("x-qf-sign", &answer_sign)
        .with_body(answer)
        .expect(1)
        .create_async()
        .await;
    let ids = vec![
        ProviderRef::parse(&a).unwrap(),
        ProviderRef::parse(&b).unwrap(),
    ];
    let results = client(&server).query_ids(&IdLookup::Syssn(ids)).await;
    m.assert_async().await;
    assert_eq!(results.len(), 1);
    let obs = results[0].1.as_ref().unwrap();
    assert_eq!(obs.len(), 2);
    let first = &obs[0];
    assert_eq!(first.provider_ref.as_ref().unwrap().as_str(), a);
    assert_eq!(first.outcome, Outcome::InProgress);
    assert_eq!(first.provider_code, "1143");
    let second = &obs[1];
    assert_eq!(second.provider_ref.as_ref().unwrap().as_str(), b);
    assert_eq!(second.outcome, Outcome::NotFound);
}

#[tokio::test]
async fn an_out_trade_no_query_of_a_past_month_sends_that_months_window_in_batches() {
    let mut server = Server::new_async().await;
    let signed = "end_time=2026-09-30 23:59:59&out_trade_no=A1,A2,A3,A4&page=1&page_size=100\
                  &start_time=2026-09-01 00:00:00";
    let body = "end_time=2026-09-30+23%3A59%3A59&out_trade_no=A1%2CA2%2CA3%2CA4&page=1\
                &page_size=100&start_time=2026-09-01+00%3A00%3A00";
    let (answer, _) = query_answer(vec![record(&syssn(1), "A1", "0000")]);
    let first = server
        .mock("POST", "/trade/v1/query")
        .match_header("x-qf-sign", sign_of(signed).as_str())
        .match_body(Matcher::Exact(body.to_string()))
        .with_body(&answer)
        .expect(1)
        .create_async()
        .await;
    let signed2 = "end_time=2026-09-30 23:59:59&out_trade_no=A5&page=1&page_size=100\
                   &start_time=2026-09-01 00:00:00";
    let (empty, _) = query_answer(vec![]);
    let second = server
        .mock("POST", "/trade/v1/query")
        .match_header("x-qf-sign", sign_of(signed2).as_str())
        .match_body(Matcher::UrlEncoded("out_trade_no".into(), "A5".into()))
        .with_body(empty)
        .expect(1)
        .create_async()
        .await;
    let orders = (1..=5)
        .map(|i| OrderLookup {
            out_trade_no: OutTradeNo::parse(&format!("A{i}"), Provider::Qfpay).unwrap(),
            created_at: Some(hk_time(2026, 9, 10 + i, 12, 0)),
        })
        .collect();
    let results = client(&server)
        .query_ids(&IdLookup::OutTradeNo(orders))
        .await;
    first.assert_async().await;
    second.assert_async().await;
    let all: Vec<_> = results.into_iter().flat_map(|(_, r)| r.unwrap()).collect();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].outcome, Outcome::Succeeded);
    assert!(all[1..].iter().all(|o| o.outcome == Outcome::NotFound));
}

#[tokio::test]
async fn a_window_across_a_month_boundary_becomes_two_requests() {
    let mut server = Server::new_async().await;
    let (empty, _) = query_answer(vec![]);
    let mut mocks = Vec::new();
    for (start, end, start_enc, end_enc) in [
        (
            "2026-10-31 23:00:00",
            "2026-10-31 23:59:59",
            "2026-10-31+23%3A00%3A00",
            "2026-10-31+23%3A59%3A59",
        ),
        (
            "2026-11-01 00:00:00",
            "2026-11-01 00:59:59",
            "2026-11-01+00%3A00%3A00",
            "2026-11-01+00%3A59%3A59",
        ),
    ] {
        let signed = format!("end_time={end}&page=1&page_size=100&start_time={start}");
        let body = format!("end_time={end_enc}&page=1&page_size=100&start_time={start_enc}");
        mocks.push(
            server
                .mock("POST", "/trade/v1/query")
                .match_header("x-qf-appcode", APP)
                .match_header("x-qf-sign", sign_of(&signed).as_str())
                .match_body(Matcher::Exact(body))
                .with_body(&empty)
                .expect(1)
                .create_async()
                .await,
        );
    }
    let client = client(&server);
    let mut pager = client.sweep(WindowQuery::new(
        hk_time(2026, 10, 31, 23, 0),
        hk_time(2026, 11, 1, 1, 0),
    ));
    assert_eq!(pager.windows().len(), 2);
    let mut pages = 0;
    while let Some(page) = pager.next_page().await.unwrap() {
        assert!(page.observations.is_empty());
        pages += 1;
    }
    assert_eq!(pages, 2);
    for m in mocks {
        m.assert_async().await;
    }
}

#[tokio::test]
async fn a_sweep_pages_until_a_short_page_and_drops_records_repeated_across_pages() {
    let mut server = Server::new_async().await;
    let full: Vec<Value> = (0..100)
        .map(|i| record(&syssn(i), &format!("O-{i}"), "0000"))
        .collect();
    // A record inserted meanwhile pushed syssn 99 onto page 2 as well.
    let short = vec![
        record(&syssn(99), "O-99", "0000"),
        record(&syssn(100), "O-100", "1143"),
        record(&syssn(101), "O-101", "1181"),
    ];
    let mut mocks = Vec::new();
    for (page, records, hits) in [(1, full, 1), (2, short, 1), (3, vec![], 0)] {
        let signed = format!(
            "end_time=2026-11-01 23:59:59&mchid=ZaMVg12345&page={page}&page_size=100\
             &pay_type=800101,800201&start_time=2026-11-01 00:00:00"
        );
        let body = format!(
            "end_time=2026-11-01+23%3A59%3A59&mchid=ZaMVg12345&page={page}&page_size=100\
             &pay_type=800101%2C800201&start_time=2026-11-01+00%3A00%3A00"
        );
        let (answer, answer_sign) = query_answer(records);
        mocks.push(
            server
                .mock("POST", "/trade/v1/query")
                .match_header("x-qf-appcode", APP)
                .match_header("x-qf-sign", sign_of(&signed).as_str())
                .match_body(Matcher::Exact(body))
                .with_header("x-qf-sign", &answer_sign)
                .with_body(answer)
                .expect(hits)
                .create_async()
                .await,
        );
    }
    let mut s = settings(&server);
    s.mchid = Some("ZaMVg12345".into());
    let client = client_with(s);
    let mut query = WindowQuery::new(hk_time(2026, 11, 1, 0, 0), hk_time(2026, 11, 2, 0, 0));
    query.pay_types = vec![
        PayType::parse("800101").unwrap(),
        PayType::parse("800201").unwrap(),
    ];
    let mut pager = client.sweep(query);
    let p1 = pager.next_page().await.unwrap().unwrap();
    assert_eq!((p1.page, p1.observations.len()), (1, 100));
    let p2 = pager.next_page().await.unwrap().unwrap();
    assert_eq!((p2.page, p2.observations.len()), (2, 2));
    let outcomes: Vec<_> = p2.observations.iter().map(|o| o.outcome).collect();
    assert_eq!(outcomes, [Outcome::InProgress, Outcome::Cancelled]);
    assert!(pager.next_page().await.unwrap().is_none());
    assert!(pager.next_page().await.unwrap().is_none());
    for m in mocks {
        m.assert_async().await;
    }
}

fn cancel_request(target: CancelTarget) -> CancelRequest {
    CancelRequest {
        target,
        amount_minor: 2500,
        txdtm: local("2020-03-05 16:50:30"),
        udid: None,
    }
}

#[tokio::test]
async fn a_reversal_is_posted_with_the_original_amount_and_time_and_reads_orig_syssn() {
    let mut server = Server::new_async().await;
    let signed = "syssn=20200305066100020000977813&txamt=2500&txdtm=2020-03-05 16:50:30";
    let body = "syssn=20200305066100020000977813&txamt=2500&txdtm=2020-03-05+16%3A50%3A30";
    let answer = r#"{"surcharge_fee": "0", "resperr": "success", "txdtm": "2020-03-05 16:50:30", "syssn": "20200305066100020000977814", "sysdtm": "2020-03-05 16:54:38", "txcurrcd": "EUR", "respmsg": "", "chnlsn2": "", "cardcd": "", "udid": "qiantai2", "txamt": "2500", "orig_syssn": "20200305066100020000977813", "surcharge_rate": "0", "respcd": "0000", "chnlsn": ""}"#;
    let m = server
        .mock("POST", "/trade/v1/reversal")
        .match_header("content-type", FORM)
        .match_header("x-qf-appcode", APP)
        .match_header("x-qf-sign", sign_of(signed).as_str())
        .match_body(Matcher::Exact(body.to_string()))
        .with_header("x-qf-sign", &md5_upper(&format!("{answer}{KEY}")))
        .with_body(answer)
        .expect(1)
        .create_async()
        .await;
    let target = CancelTarget::Syssn(ProviderRef::parse("20200305066100020000977813").unwrap());
    let answer = client(&server)
        .cancel(CancelRoute::Reversal, &cancel_request(target))
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(
        answer.outcome,
        CancelOutcome::Accepted {
            syssn: ProviderRef::parse("20200305066100020000977814").unwrap(),
            orig_syssn: Some(ProviderRef::parse("20200305066100020000977813").unwrap()),
        }
    );
}

#[tokio::test]
async fn a_close_goes_to_the_close_endpoint_and_1297_means_not_cancellable() {
    let mut server = Server::new_async().await;
    let signed = "out_trade_no=ORDER-7&txamt=2500&txdtm=2020-03-05 16:50:30";
    let body = "out_trade_no=ORDER-7&txamt=2500&txdtm=2020-03-05+16%3A50%3A30";
    let m = server
        .mock("POST", "/trade/v1/close")
        .match_header("content-type", FORM)
        .match_header("x-qf-appcode", APP)
        .match_header("x-qf-sign", sign_of(signed).as_str())
        .match_body(Matcher::Exact(body.to_string()))
        .with_body(r#"{"respcd": "1297", "resperr": "bank busy"}"#)
        .expect(1)
        .create_async()
        .await;
    let target = CancelTarget::OutTradeNo(OutTradeNo::parse("ORDER-7", Provider::Qfpay).unwrap());
    let client = client(&server);
    let answer = client
        .cancel(CancelRoute::Close, &cancel_request(target.clone()))
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(
        answer.outcome,
        CancelOutcome::NotCancellable {
            code: Some("1297".into())
        }
    );
    // No route: nothing is sent (the mock above would count a second hit).
    let none = client
        .cancel(CancelRoute::NotCancellable, &cancel_request(target))
        .await
        .unwrap();
    assert_eq!(none.outcome, CancelOutcome::NotCancellable { code: None });
    m.assert_async().await;
}

#[tokio::test]
async fn a_close_can_be_sent_as_get_with_the_same_signed_parameters() {
    let mut server = Server::new_async().await;
    let signed = "out_trade_no=ORDER-7&txamt=2500&txdtm=2020-03-05 16:50:30";
    let query = "out_trade_no=ORDER-7&txamt=2500&txdtm=2020-03-05+16%3A50%3A30";
    let m = server
        .mock("GET", "/trade/v1/close")
        .match_query(Matcher::Exact(query.to_string()))
        .match_header("x-qf-sign", sign_of(signed).as_str())
        .with_body(r#"{"respcd": "1145"}"#)
        .expect(1)
        .create_async()
        .await;
    let target = CancelTarget::OutTradeNo(OutTradeNo::parse("ORDER-7", Provider::Qfpay).unwrap());
    let answer = client(&server)
        .with_close_method(CallMethod::Get)
        .close(&cancel_request(target))
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(answer.outcome, CancelOutcome::InProgress);
}

fn one_syssn() -> IdLookup {
    IdLookup::Syssn(vec![ProviderRef::parse(&syssn(1)).unwrap()])
}

async fn query_one(
    client: &QfpayClient,
) -> Result<Vec<payrecon::domain::Observation>, GatewayError> {
    let mut results = client.query_ids(&one_syssn()).await;
    assert_eq!(results.len(), 1);
    results.remove(0).1
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_retried() {
    let mut server = Server::new_async().await;
    let limited = server
        .mock("POST", "/trade/v1/query")
        .with_status(429)
        .with_header("retry-after", "1")
        .expect(1)
        .create_async()
        .await;
    let (answer, _) = query_answer(vec![record(&syssn(1), "O-1", "0000")]);
    let ok = server
        .mock("POST", "/trade/v1/query")
        .with_body(answer)
        .expect(1)
        .create_async()
        .await;
    let started = Instant::now();
    let obs = query_one(&client(&server)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    limited.assert_async().await;
    ok.assert_async().await;
    assert_eq!(obs[0].outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn a_429_without_retry_after_is_reported_as_rate_limited_at_once() {
    let mut server = Server::new_async().await;
    let m = server
        .mock("POST", "/trade/v1/query")
        .with_status(429)
        .expect(1)
        .create_async()
        .await;
    let err = query_one(&client(&server)).await.unwrap_err();
    m.assert_async().await;
    assert!(matches!(
        err,
        GatewayError::RateLimited {
            retry_after: None,
            ..
        }
    ));
    assert_eq!(err.class(), ErrorClass::RateLimited);
}

#[tokio::test]
async fn server_errors_are_retried_within_the_budget_then_reported() {
    let mut server = Server::new_async().await;
    let m = server
        .mock("POST", "/trade/v1/query")
        .with_status(503)
        .expect_at_least(2)
        .create_async()
        .await;
    let client = client(&server).with_retry_budget(RetryBudget {
        initial: Duration::from_millis(10),
        max_interval: Duration::from_millis(20),
        max_elapsed: Duration::from_millis(200),
    });
    let err = query_one(&client).await.unwrap_err();
    m.assert_async().await;
    assert!(matches!(err, GatewayError::HttpStatus { status: 503, .. }));
    assert_eq!(err.class(), ErrorClass::Retryable);
}

#[tokio::test]
async fn a_bad_response_signature_is_rejected_and_not_parsed() {
    let mut server = Server::new_async().await;
    let (answer, _) = query_answer(vec![record(&syssn(1), "O-1", "0000")]);
    let m = server
        .mock("POST", "/trade/v1/query")
        .with_header("x-qf-sign", "0123456789ABCDEF0123456789ABCDEF")
        .with_body(answer)
        .expect(1)
        .create_async()
        .await;
    let err = query_one(&client(&server)).await.unwrap_err();
    m.assert_async().await;
    assert!(matches!(err, GatewayError::BadSignature { .. }));
}

#[tokio::test]
async fn an_unsigned_answer_is_rejected_when_the_account_requires_signatures() {
    let mut server = Server::new_async().await;
    let (answer, _) = query_answer(vec![]);
    let m = server
        .mock("POST", "/trade/v1/query")
        .with_body(answer)
        .create_async()
        .await;
    let mut s = settings(&server);
    s.require_response_signature = true;
    let err = query_one(&client_with(s)).await.unwrap_err();
    m.assert_async().await;
    assert!(matches!(err, GatewayError::BadSignature { .. }));
}

#[tokio::test]
async fn a_malformed_body_is_an_error_not_a_panic() {
    let mut server = Server::new_async().await;
    let m = server
        .mock("POST", "/trade/v1/query")
        .with_body(r#"{"respcd": "0000", "data": [{"syssn": "2026"#)
        .expect(1)
        .create_async()
        .await;
    let err = query_one(&client(&server)).await.unwrap_err();
    m.assert_async().await;
    assert!(matches!(err, GatewayError::Malformed { .. }));
}

#[tokio::test]
async fn a_top_level_signature_error_is_an_account_problem_not_a_payment_answer() {
    let mut server = Server::new_async().await;
    let m = server
        .mock("POST", "/trade/v1/query")
        .with_body(r#"{"respcd": "1108", "resperr": "签名错误", "data": []}"#)
        .expect(1)
        .create_async()
        .await;
    let err = query_one(&client(&server)).await.unwrap_err();
    m.assert_async().await;
    assert_eq!(err.class(), ErrorClass::Account);
}

#[tokio::test]
async fn the_client_debug_output_never_shows_the_key() {
    let server = Server::new_async().await;
    let shown = format!("{:?}", client(&server));
    assert!(shown.contains(APP));
    assert!(!shown.contains(KEY));
}
