//! Creating a QFPay payment (seed 001, `POST /trade/v1/payment`) so that nothing can be lost:
//! the ledger row is written *before* the request is sent, so a timeout or crash still leaves
//! a tracked payment for the reconciler; the answer is then recorded like any observation.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::QfpayAccount;
use crate::domain::{Money, OutTradeNo, PayType, Provider, RecordKind, RetrySchedule};
use crate::gateway::GatewayError;
use crate::gateway::qfpay::{PaymentCreated, PaymentInputError, PaymentRequest, QfpayClient};
use crate::ledger::{ClaimScope, Ledger, LedgerError, NewPayment};
use crate::reconcile::update;

/// What to create.
#[derive(Debug, Clone)]
pub struct PayOrder {
    pub out_trade_no: OutTradeNo,
    pub amount: Money,
    pub pay_type: PayType,
    /// `expired_time` (5–120 minutes, only for pay types that accept it).
    pub expires_in: Option<Duration>,
    pub goods_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("{0}")]
    Input(#[from] PaymentInputError),
    #[error("{out_trade_no} is already in the ledger; choose another --out-trade-no")]
    Duplicate { out_trade_no: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The payment is registered; only the call failed. The reconciler will learn its state.
    #[error(
        "payment {id} ({out_trade_no}) is registered, but the gateway call failed: {source}; payrecon will learn its state by query"
    )]
    Call {
        id: i64,
        out_trade_no: String,
        #[source]
        source: GatewayError,
    },
}

/// The registered payment and QFPay's answer.
#[derive(Debug)]
pub struct PayResult {
    pub id: i64,
    pub answer: PaymentCreated,
}

/// Validates, registers, then sends. See the module doc for the order of things.
pub async fn create_qfpay_payment(
    ledger: &Ledger,
    account: &QfpayAccount,
    client: &QfpayClient,
    order: PayOrder,
    now: DateTime<Utc>,
) -> Result<PayResult, PayError> {
    let mut req = PaymentRequest::new(
        order.out_trade_no.clone(),
        order.amount,
        order.pay_type.clone(),
        client.local_time(now),
    )?;
    if let Some(d) = order.expires_in {
        req = req.expires_in(d)?;
    }
    if let Some(g) = &order.goods_name {
        req = req.goods_name(g)?;
    }
    let payment = NewPayment {
        account: account.name.clone(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: order.out_trade_no.clone(),
        provider_ref: None,
        pay_type: Some(order.pay_type.clone()),
        amount: order.amount,
        created_at: now,
        expires_at: order
            .expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d),
    };
    let report = ledger.register(std::slice::from_ref(&payment), now).await?;
    let Some(&(_, id)) = report.inserted.first() else {
        return Err(PayError::Duplicate {
            out_trade_no: order.out_trade_no.to_string(),
        });
    };
    let answer = client
        .create_payment(&req)
        .await
        .map_err(|source| PayError::Call {
            id,
            out_trade_no: order.out_trade_no.to_string(),
            source,
        })?;
    // Record the answer through the normal lease-guarded path.
    let owner = format!("pay-{}", std::process::id());
    let scope = ClaimScope {
        account: Some(account.name.to_string()),
        ignore_schedule: true,
        ..ClaimScope::default()
    };
    let claimed = ledger
        .claim_keys(
            &owner,
            &scope,
            account.name.as_str(),
            &[],
            &[order.out_trade_no.as_str()],
            now,
            Duration::from_secs(60),
        )
        .await?;
    if let Some(c) = claimed.first() {
        let schedule = RetrySchedule::default_for(Provider::Qfpay);
        let u = update::from_observation(c, &answer.observation(&req), &schedule, now, 0.5);
        ledger.apply(&owner, None, &[u], now).await?;
    }
    Ok(PayResult { id, answer })
}
