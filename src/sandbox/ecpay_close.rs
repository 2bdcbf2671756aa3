//! What happens to an ECPay card order after authorization (docs/PROTOCOLS.md §E5, `Credit/DoAction`):
//! captures (關帳, whole or partial), refunds (退刷), a capture undone (取消) and an
//! authorization abandoned (放棄), and how CreditDetail shows them: `CloseData` rows, `ClsAmt`
//! and the top-level `Status` (seed 003: with close rows it is 要關帳 / 已關帳 / 操作取消).
//!
//! The documents do not show how a refund appears in `CloseData` and `ClsAmt` (docs/PROTOCOLS.md §E3.1,
//! UNCONFIRMED). Sandbox choices, one place: a capture is a row of its amount (要關帳 while
//! requested, 已關帳 once closed); a refund is an 已關帳 row of minus its amount; undoing a
//! capture adds an 已取消 row of the amount it undoes; `ClsAmt` is what the rows leave closed
//! or being closed (the seed's own example shows 要關帳 with `ClsAmt` equal to `Amount`).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::scenario::EcpayStatus;

/// One `Credit/DoAction` on an authorized order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcpayAction {
    /// `C` with this amount: 要關帳 (capture requested, not yet closed).
    CaptureRequested(i64),
    /// `C` with this amount, closed: 已關帳. Less than the order amount is a partial capture.
    Captured(i64),
    /// `R` with this amount, after a capture.
    Refunded(i64),
    /// `E`: the latest capture is undone.
    CaptureCancelled,
    /// `N`: the authorization is dropped (before capture; or after `E`, a full refund).
    Abandoned,
}

/// An action and when it happens, after the order's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcpayAfter {
    pub after: Duration,
    pub action: EcpayAction,
}

/// One `CloseData` row as the sandbox answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseRow {
    pub status: EcpayStatus,
    pub amount: i64,
    pub at: DateTime<Utc>,
}

/// The order as CreditDetail shows it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseView {
    pub status: EcpayStatus,
    pub cls_amt: i64,
    pub rows: Vec<CloseRow>,
}

/// `status` is the bank's answer; `actions` happened after it, those due by `now` apply.
pub(crate) fn close_view(
    status: EcpayStatus,
    amount: i64,
    actions: &[EcpayAfter],
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> CloseView {
    let mut rows: Vec<CloseRow> = match status {
        // An order seeded as already captured carries the close that got it there.
        EcpayStatus::ToBeCaptured | EcpayStatus::Captured => vec![CloseRow {
            status,
            amount,
            at: created_at,
        }],
        _ => Vec::new(),
    };
    let mut abandoned = false;
    let mut due: Vec<&EcpayAfter> = actions
        .iter()
        .filter(|a| created_at + TimeDelta::from_std(a.after).unwrap_or(TimeDelta::MAX) <= now)
        .collect();
    due.sort_by_key(|a| a.after);
    for a in due {
        let at = created_at + TimeDelta::from_std(a.after).unwrap_or_default();
        let row = |status, amount| CloseRow { status, amount, at };
        match a.action {
            EcpayAction::CaptureRequested(n) => rows.push(row(EcpayStatus::ToBeCaptured, n)),
            EcpayAction::Captured(n) => rows.push(row(EcpayStatus::Captured, n)),
            EcpayAction::Refunded(n) => rows.push(row(EcpayStatus::Captured, -n)),
            EcpayAction::CaptureCancelled => {
                let last = rows
                    .iter()
                    .rev()
                    .find(|r| r.amount > 0 && r.status != EcpayStatus::Cancelled)
                    .map(|r| r.amount);
                if let Some(n) = last {
                    rows.push(row(EcpayStatus::Cancelled, n));
                }
            }
            EcpayAction::Abandoned => abandoned = true,
        }
    }
    let cls_amt = rows
        .iter()
        .fold(0i64, |kept, r| {
            if r.status == EcpayStatus::Cancelled {
                (kept - r.amount).max(0)
            } else {
                kept + r.amount
            }
        })
        .max(0);
    let status = match rows.last() {
        _ if abandoned => EcpayStatus::Cancelled,
        None => status,
        Some(r) if r.status == EcpayStatus::Cancelled => EcpayStatus::OperationCancelled,
        Some(r) => r.status,
    };
    CloseView {
        status,
        cls_amt,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 2, 0, 0).unwrap()
    }

    fn after(secs: u64, action: EcpayAction) -> EcpayAfter {
        EcpayAfter {
            after: Duration::from_secs(secs),
            action,
        }
    }

    #[test]
    fn actions_apply_in_order_once_due() {
        let actions = [
            after(60, EcpayAction::Captured(1000)),
            after(120, EcpayAction::Refunded(600)),
        ];
        let at = |s| t0() + TimeDelta::seconds(s);
        let v = |s| close_view(EcpayStatus::Authorized, 1000, &actions, t0(), at(s));
        assert_eq!((v(59).status, v(59).cls_amt), (EcpayStatus::Authorized, 0));
        assert_eq!((v(60).status, v(60).cls_amt), (EcpayStatus::Captured, 1000));
        let refunded = v(120);
        assert_eq!(refunded.cls_amt, 400);
        assert_eq!(refunded.rows[1].amount, -600);
    }

    #[test]
    fn an_undone_capture_then_abandon_is_cancelled_with_nothing_closed() {
        let actions = [
            after(10, EcpayAction::CaptureRequested(1000)),
            after(20, EcpayAction::CaptureCancelled),
        ];
        let v = close_view(
            EcpayStatus::Authorized,
            1000,
            &actions,
            t0(),
            t0() + TimeDelta::hours(1),
        );
        assert_eq!(
            (v.status, v.cls_amt, v.rows.len()),
            (EcpayStatus::OperationCancelled, 0, 2)
        );
        let mut all = actions.to_vec();
        all.push(after(30, EcpayAction::Abandoned));
        let v = close_view(
            EcpayStatus::Authorized,
            1000,
            &all,
            t0(),
            t0() + TimeDelta::hours(1),
        );
        assert_eq!((v.status, v.cls_amt), (EcpayStatus::Cancelled, 0));
    }
}
