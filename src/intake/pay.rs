//! Creating a QFPay payment (seed 001, `POST /trade/v1/payment`) so that nothing can be lost:
//! the ledger row is written *before* the request is sent, so a timeout or crash still leaves
//! a tracked payment for the reconciler; the answer is then recorded like any observation.
//!
//! While the call is in flight the row is *held* by this process (a lease until the longest
//! the call can take, plus a margin, and not due before then): a reconcile pass cannot query
//! the payment and cannot take the row, so the creation answer is always recorded by the call
//! that got it, or the caller is told that it was not and why.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::QfpayAccount;
use crate::domain::{
    Money, OutTradeNo, PayMode, PayType, Provider, RecordKind, RetrySchedule, creatable_pay_types,
};
use crate::gateway::GatewayError;
use crate::gateway::qfpay::{PaymentCreated, PaymentInputError, PaymentRequest, QfpayClient};
use crate::ledger::{Ledger, LedgerError, NewPayment, WriteGuard};
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
    #[error(
        "pay type {pay_type} cannot be created by payrecon pay: {why}; it can create {list}",
        list = creatable_pay_types().collect::<Vec<_>>().join(", ")
    )]
    PayType { pay_type: String, why: &'static str },
    /// The gateway answered, but the answer could not be written (the hold was lost).
    #[error(
        "payment {id} ({out_trade_no}): QFPay answered {code}, but the answer was NOT recorded ({why}); payrecon will learn its state by query"
    )]
    NotRecorded {
        id: i64,
        out_trade_no: String,
        code: String,
        why: String,
    },
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

/// How long the row is held for the creation call: the longest the call can take (its retries
/// for `retry_for`, then one more attempt of `request_timeout`) and a margin for the writes.
pub fn creation_hold(account: &QfpayAccount) -> Duration {
    account.retry_for + account.request_timeout + Duration::from_secs(30)
}

fn check_pay_type(pay_type: &PayType) -> Result<(), PayError> {
    if pay_type.creatable_online() {
        return Ok(());
    }
    Err(PayError::PayType {
        pay_type: pay_type.to_string(),
        why: if pay_type.mode() == PayMode::Cpm {
            "a customer-presented code (CPM) must be scanned at a till (auth_code)"
        } else {
            "QFPay does not document it (docs/PROTOCOLS.md §Q4.1)"
        },
    })
}

/// Validates, registers, then sends. See the module doc for the order of things.
pub async fn create_qfpay_payment(
    ledger: &Ledger,
    account: &QfpayAccount,
    client: &QfpayClient,
    order: PayOrder,
    now: DateTime<Utc>,
) -> Result<PayResult, PayError> {
    check_pay_type(&order.pay_type)?;
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
    let owner = format!("pay-{}-{}", std::process::id(), order.out_trade_no);
    let hold = chrono::Duration::from_std(creation_hold(account)).unwrap_or_default();
    let Some(claimed) = ledger
        .register_held(&payment, &owner, now + hold, now)
        .await?
    else {
        return Err(PayError::Duplicate {
            out_trade_no: order.out_trade_no.to_string(),
        });
    };
    let id = claimed.id.0;
    let result = client.create_payment(&req).await;
    // The account's own schedule is not needed here: only the first re-check is scheduled.
    let schedule = RetrySchedule::default_for(Provider::Qfpay);
    let answered_at = Utc::now().max(now);
    let update = match &result {
        Ok(answer) => update::from_observation(
            &claimed,
            &answer.observation(&req),
            &schedule,
            answered_at,
            0.5,
        ),
        Err(e) => update::from_call_error(&claimed, e, &schedule, answered_at, 0.5),
    };
    let applied = ledger
        .apply(WriteGuard::Hold(&owner), None, &[update], answered_at)
        .await;
    let answer = result.map_err(|source| PayError::Call {
        id,
        out_trade_no: order.out_trade_no.to_string(),
        source,
    })?;
    let not_recorded = |why: String| PayError::NotRecorded {
        id,
        out_trade_no: order.out_trade_no.to_string(),
        code: answer.observation(&req).provider_code,
        why,
    };
    match applied {
        Ok(written) if written.contains(&claimed.id) => {}
        Ok(_) => {
            return Err(not_recorded(
                "the call outlasted its hold and another process took the payment".into(),
            ));
        }
        Err(e) => return Err(not_recorded(e.to_string())),
    }
    Ok(PayResult { id, answer })
}
