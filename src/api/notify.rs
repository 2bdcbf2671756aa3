//! What a gateway notification does once its sender is authenticated (each gateway's own way,
//! in `notify_qfpay` and `notify_ecpay`). A notification is **never evidence**: its signature
//! carries no timestamp or nonce, so a replay is indistinguishable from the original. It only
//! marks the payment it names (once: replays write nothing and ask nothing) and makes it due
//! now, and the lane's verified query decides; it also keeps the last resort from reversing a
//! payment the gateway said is paid. A notification for an order the ledger lacks registers
//! it (when the account's `register_from_notifications` allows) or is recorded as a
//! `notified_unknown` discrepancy, once per order; a refund of a payment the ledger holds is
//! left to the sweep that reads its window again.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::ApiContext;
use crate::domain::RecordKind;
use crate::intake::{RecordFields, validate_record};
use crate::ledger::{LedgerError, Nudged};

/// An authenticated notification, reduced to what payrecon uses.
#[derive(Debug)]
pub(super) struct Notice {
    pub account: String,
    pub kind: RecordKind,
    pub out_trade_no: String,
    /// The gateway's id of the record (QFPay syssn, ECPay TradeNo).
    pub provider_ref: Option<String>,
    /// Whether it says the payment (or refund) succeeded. Others are acknowledged and change
    /// nothing: the lane's scheduled queries find failures.
    pub claims_paid: bool,
    /// A refund's original payment: its order number and gateway id, as far as given.
    pub original: Option<(Option<String>, Option<String>)>,
    /// The fields kept in the `notified` event (ids, amount, status; nothing else).
    pub evidence: Value,
    /// The payment as an intake record, for accounts that register notified orders.
    pub registration: Option<RecordFields>,
}

/// What a notification changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A payment the ledger holds: see [`Nudged`].
    Nudged(Nudged),
    /// A new payment registered from it (marked notified, due now).
    Registered(i64),
    /// Unknown and not registered: a `notified_unknown` discrepancy (newly, or already there).
    Recorded { new: bool },
    /// A refund of a payment the ledger holds (this id): the sweep that reads the payment's
    /// window again links the refund; nothing to record now.
    RefundOfHeld(i64),
    /// It does not claim success: nothing to do.
    Ignored,
}

impl Notice {
    fn subject(&self) -> &str {
        self.provider_ref.as_deref().unwrap_or(&self.out_trade_no)
    }
}

/// Acts on an authenticated notification.
pub(super) async fn handle(ctx: &Arc<ApiContext>, notice: Notice) -> Result<Outcome, LedgerError> {
    if !notice.claims_paid {
        return Ok(Outcome::Ignored);
    }
    let now = Utc::now();
    let message = format!(
        "gateway notification: {} {} paid (not evidence: a query decides)",
        notice.kind.as_str(),
        notice.subject()
    );
    let ledger = &ctx.ledger;
    let known = ledger
        .find_notified(
            &notice.account,
            notice.kind,
            &notice.out_trade_no,
            notice.provider_ref.as_deref(),
        )
        .await?;
    if let Some(id) = known {
        return Ok(Outcome::Nudged(
            mark(ctx, id, &message, &notice.evidence).await?,
        ));
    }
    if let Some((order, syssn)) = &notice.original {
        let original = ledger
            .find_notified(
                &notice.account,
                RecordKind::Payment,
                order.as_deref().unwrap_or_default(),
                syssn.as_deref(),
            )
            .await?;
        if let Some(id) = original {
            return Ok(Outcome::RefundOfHeld(id));
        }
    }
    match register(ctx, &notice, now).await? {
        Ok(id) => {
            mark(ctx, id, &message, &notice.evidence).await?;
            Ok(Outcome::Registered(id))
        }
        Err(why) => {
            let detail = format!(
                "{} {}: the gateway notified {} {} as paid, which the ledger does not hold ({why})",
                notice.account,
                notice.out_trade_no,
                notice.kind.as_str(),
                notice.subject()
            );
            let new = ledger
                .record_notified_unknown(
                    &notice.account,
                    notice.subject(),
                    &detail,
                    &notice.evidence,
                    now,
                )
                .await?;
            if new {
                tracing::warn!(account = %notice.account, order = %notice.out_trade_no, "notification for an order the ledger does not hold; recorded as a discrepancy");
            }
            Ok(Outcome::Recorded { new })
        }
    }
}

/// Marks payment `id` notified as paid and wakes its lane when it is due.
async fn mark(
    ctx: &ApiContext,
    id: i64,
    message: &str,
    evidence: &Value,
) -> Result<Nudged, LedgerError> {
    let nudged = ctx
        .ledger
        .notified_paid(id, message, evidence, Utc::now())
        .await?;
    match &nudged {
        Nudged::MadeDue { account } | Nudged::AlreadyDue { account } => ctx.waker.wake(account),
        Nudged::Contradicts {
            account,
            state,
            due,
        } => {
            tracing::warn!(
                account,
                payment = id,
                state,
                "money alert: the gateway notified a payment as paid that the ledger holds as {state}; recorded as notified_after_final"
            );
            if *due {
                ctx.waker.wake(account);
            }
        }
        Nudged::Repeated | Nudged::Settled { .. } | Nudged::Unknown => {}
    }
    Ok(nudged)
}

/// Registers the notified order when the account allows it and the notification holds a
/// valid payment; `Err` says why not (for the discrepancy's detail).
async fn register(
    ctx: &ApiContext,
    notice: &Notice,
    now: chrono::DateTime<Utc>,
) -> Result<Result<i64, String>, LedgerError> {
    let allowed = ctx
        .settings
        .account(&notice.account)
        .is_some_and(crate::config::Account::registers_from_notifications);
    if !allowed {
        return Ok(Err(
            "the account does not register payments from notifications".into(),
        ));
    }
    let Some(fields) = &notice.registration else {
        return Ok(Err(format!(
            "a {} notification does not register a payment",
            notice.kind.as_str()
        )));
    };
    let payment = match validate_record(fields, 0, &ctx.settings, now) {
        Ok(p) => p,
        Err(errs) => {
            let why: Vec<String> = errs
                .iter()
                .map(|e| format!("{}: {}", e.field, e.reason))
                .collect();
            return Ok(Err(format!("cannot register it: {}", why.join("; "))));
        }
    };
    let report = ctx.ledger.register(&[payment], now).await?;
    match (report.inserted.first(), report.already_present.first()) {
        (Some(&(_, id)), _) | (None, Some(&(_, id))) => {
            tracing::info!(account = %notice.account, order = %notice.out_trade_no, id, "payment registered from a gateway notification");
            Ok(Ok(id))
        }
        _ => Ok(Err(report
            .conflicts
            .first()
            .map(|(_, why)| why.clone())
            .unwrap_or_default())),
    }
}
