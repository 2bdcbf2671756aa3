//! Asking for a payment to be checked now, from outside a lane: the API's
//! `POST /v1/payments/{id}/check` and a gateway notification. Neither is evidence about the
//! payment; all they change is *when* the lane asks the gateway (and, for a notification, that
//! one arrived). So these writes take no account lease: they touch no state, and the lane's
//! verified query decides as always.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::time::{from_db, to_db};
use super::{Ledger, LedgerError};

/// A payment of account ?1 by gateway id ?2.
pub(super) const FIND_BY_REF: &str =
    "SELECT id FROM payments WHERE account = ?1 AND provider_ref = ?2 ORDER BY id LIMIT 1";

/// A payment of account ?1 by kind ?2 and order number ?3.
pub(super) const FIND_BY_ORDER: &str =
    "SELECT id FROM payments WHERE account = ?1 AND kind = ?2 AND out_trade_no = ?3";

/// Why a payment is to be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NudgeReason {
    /// An operator or the merchant's system asked (`POST /v1/payments/{id}/check`).
    Requested,
    /// The gateway sent a notification about it (authenticated; still not evidence).
    Notified,
}

impl NudgeReason {
    fn event_kind(self) -> &'static str {
        match self {
            NudgeReason::Requested => "check_requested",
            NudgeReason::Notified => "notified",
        }
    }
}

/// What a nudge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nudged {
    /// The payment was scheduled for later and is due now (an event records why).
    MadeDue { account: String },
    /// Already due: nothing to change (a replayed notification lands here or below).
    AlreadyDue { account: String },
    /// Final and no longer observed (or, for a notification, settled at all): nothing to
    /// check.
    Settled { state: String },
    /// No payment has that id.
    Unknown,
}

impl Ledger {
    /// Makes payment `id` due now if it is scheduled for later: an open one, or for a
    /// requested check also a settled one still observed. A notification also marks the payment notified (once), which lets an ECPay
    /// order be queried before `first_query_after`. An event is written only when something
    /// changed, so replaying the same notification writes nothing more while the payment waits
    /// for its check.
    pub async fn nudge(
        &self,
        id: i64,
        reason: NudgeReason,
        message: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Nudged, LedgerError> {
        let now_s = to_db(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(
            "SELECT account, state, next_check_at, notified_at FROM payments WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Nudged::Unknown);
        };
        let account: String = row.get("account");
        let state: String = row.get("state");
        // A notification is about an open payment's outcome: a settled one (even one still
        // observed for later changes) learns nothing from it, so a replay costs no query.
        let open = matches!(state.as_str(), "pending" | "in_progress" | "reversing");
        let next = match row.get::<Option<String>, _>("next_check_at") {
            Some(next) if open || reason == NudgeReason::Requested => next,
            _ => return Ok(Nudged::Settled { state }),
        };
        let later = from_db(&next).is_none_or(|t| t > now);
        let first_notice = reason == NudgeReason::Notified
            && row.get::<Option<String>, _>("notified_at").is_none();
        if !later && !first_notice {
            return Ok(Nudged::AlreadyDue { account });
        }
        sqlx::query(
            "UPDATE payments
             SET next_check_at = MIN(next_check_at, ?1),
                 notified_at = CASE WHEN ?2 THEN COALESCE(notified_at, ?1) ELSE notified_at END
             WHERE id = ?3",
        )
        .bind(&now_s)
        .bind(reason == NudgeReason::Notified)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (payment_id, at, kind, message, evidence) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&now_s)
        .bind(reason.event_kind())
        .bind(message)
        .bind(evidence.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if later {
            Nudged::MadeDue { account }
        } else {
            Nudged::AlreadyDue { account }
        })
    }
}

impl Ledger {
    /// Records that the gateway notified `subject` (an order number or gateway id) of
    /// `account`, which the ledger does not hold: once per (account, subject), so a replayed or
    /// repeated notification adds nothing. `true` when newly recorded.
    pub async fn record_notified_unknown(
        &self,
        account: &str,
        subject: &str,
        detail: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(super::sweeps::RECORD_RECORD_FINDING)
            .bind(None::<i64>)
            .bind(account)
            .bind(crate::domain::DiscrepancyKind::NotifiedUnknown.as_str())
            .bind(detail)
            .bind(evidence.to_string())
            .bind(to_db(now))
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The payment of `account` a notification names: by gateway id first (it is the
    /// gateway's own key, `payments_by_ref`), else by order number among that kind of record
    /// (the unique key).
    pub async fn find_notified(
        &self,
        account: &str,
        kind: crate::domain::RecordKind,
        out_trade_no: &str,
        provider_ref: Option<&str>,
    ) -> Result<Option<i64>, LedgerError> {
        if let Some(r) = provider_ref {
            let by_ref: Option<i64> = sqlx::query_scalar(FIND_BY_REF)
                .bind(account)
                .bind(r)
                .fetch_optional(&self.pool)
                .await?;
            if by_ref.is_some() {
                return Ok(by_ref);
            }
        }
        Ok(sqlx::query_scalar(FIND_BY_ORDER)
            .bind(account)
            .bind(kind.as_str())
            .bind(out_trade_no)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether the ledger takes a write now: a write transaction begun and rolled back (takes
    /// the write lock for a moment, writes nothing). `/readyz` asks this.
    pub async fn writable(&self) -> Result<(), LedgerError> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        tx.rollback().await?;
        Ok(())
    }
}
