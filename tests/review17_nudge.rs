//! Review of issue 17 (branch review17): the unfenced nudge against a lane's apply.

use std::time::Duration;

use chrono::Utc;
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, PaymentId, PaymentState, Provider, RecordKind,
    RetryReason,
};
use payrecon::ledger::{self, ClaimScope, DuePosition, PaymentUpdate, WriteGuard};

/// A notification that arrives while the lane's query of the payment is in flight (the lane
/// read the payment before the nudge and writes its answer after it) must stay effective: the
/// lane's answer predates the news. Today the apply overwrites `next_check_at` with the
/// answer's schedule (ECPay error_nopay: 10 minutes; QFPay not found: its backoff), so the
/// notification is answered `SUCCESS`/`1|OK` (no retry by the gateway), leaves a `notified`
/// event, and has no effect.
#[tokio::test]
async fn a_nudge_while_the_lane_queries_is_not_overwritten_by_the_lanes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger::open(&dir.path().join("l.db"), Duration::from_secs(5))
        .await
        .unwrap();
    let t0 = Utc::now();
    l.register(
        &[ledger::NewPayment {
            account: AccountName::parse("hk").unwrap(),
            provider: Provider::Qfpay,
            kind: RecordKind::Payment,
            out_trade_no: OutTradeNo::parse("LOST1", Provider::Qfpay).unwrap(),
            provider_ref: None,
            pay_type: None,
            amount: Money::new(500, Currency::parse("HKD").unwrap()).unwrap(),
            created_at: t0,
            expires_at: None,
        }],
        t0,
    )
    .await
    .unwrap();
    let fence = l
        .acquire_account("hk", "lane", Duration::from_secs(60), 400, t0)
        .await
        .unwrap()
        .expect("free")
        .fence;
    // 1. The lane reads its unit and sends the query.
    let (unit, _) = l
        .due_unit(&ClaimScope::account("hk"), &DuePosition::default(), 10, t0)
        .await
        .unwrap();
    assert_eq!(unit.len(), 1);
    let id = unit[0].id;
    // 2. The gateway's notification arrives meanwhile.
    let t1 = t0 + chrono::Duration::milliseconds(200);
    l.notified_paid(id.0, "notified", &serde_json::json!({}), t1)
        .await
        .unwrap();
    // 3. The query's answer (sent before the payment was paid): not found, ask in 10 minutes.
    let t2 = t0 + chrono::Duration::milliseconds(400);
    let update = PaymentUpdate {
        id: PaymentId(id.0),
        state: PaymentState::Pending,
        provider_code: Some("not_found".into()),
        provider_ref: None,
        checked: true,
        retry: Some((RetryReason::NotFound, 0)),
        next_check_at: Some(t2 + chrono::Duration::minutes(10)),
        in_progress_since: None,
        // What the lane read: not notified yet.
        seen_nudged_at: unit[0].nudged_at,
        events: Vec::new(),
        discrepancies: Vec::new(),
    };
    l.apply(WriteGuard::Lane(&fence), None, &[update], t2)
        .await
        .unwrap();
    let p = l.payment(id.0).await.unwrap().unwrap();
    let next = p.next_check_at.clone().unwrap();
    assert!(
        next <= payrecon::ledger::time::to_db(t2),
        "the notification that arrived during the query was lost: next check {next}"
    );
}
