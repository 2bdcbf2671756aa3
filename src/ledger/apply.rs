//! Writing a lane's decisions: one transaction per answer (an ECPay answer, a QFPay id-lookup
//! batch, a sweep page), fenced by the lane's account lease (a lane whose lease another
//! process took writes nothing), each payment update with its events and discrepancies.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::time::to_db;
use super::{Fence, Ledger, LedgerError};
use crate::domain::{DiscrepancyKind, PaymentId, PaymentState, ProviderRef, RetryReason};

/// One history row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// When it happened: the time the gateway's answer arrived, or the decision was made.
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    pub from_state: Option<PaymentState>,
    pub to_state: Option<PaymentState>,
    pub provider_code: Option<String>,
    pub message: Option<String>,
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewDiscrepancy {
    pub kind: DiscrepancyKind,
    pub detail: String,
    pub evidence: serde_json::Value,
}

/// The new facts about one claimed payment.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentUpdate {
    pub id: PaymentId,
    pub state: PaymentState,
    /// The gateway's latest code; `None` keeps the stored one.
    pub provider_code: Option<String>,
    /// A gateway id learned from the answer; only fills an empty column.
    pub provider_ref: Option<ProviderRef>,
    /// Whether the gateway was asked about it in this pass (counts an attempt).
    pub checked: bool,
    /// Why it is still open and how many checks in a row said so.
    pub retry: Option<(RetryReason, u32)>,
    /// `None` once final.
    pub next_check_at: Option<DateTime<Utc>>,
    /// First time the gateway said in progress; only fills an empty column.
    pub in_progress_since: Option<DateTime<Utc>>,
    pub events: Vec<NewEvent>,
    pub discrepancies: Vec<NewDiscrepancy>,
}

fn retry_reason_str(r: RetryReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One payment's update (?1–?9, ?12) by id (?10), guarded by the hold (?11) or the account
/// (?13). The last condition is defence in depth for "a final state never becomes open again":
/// the state machine already guarantees it.
pub(super) const APPLY_UPDATE: &str = "UPDATE payments SET
         state = ?1,
         provider_code = COALESCE(?2, provider_code),
         provider_ref = COALESCE(provider_ref, ?3),
         attempts = attempts + ?4,
         retry_reason = ?5,
         retry_repeats = ?6,
         next_check_at = ?7,
         in_progress_since = COALESCE(in_progress_since, ?8),
         updated_at = ?9,
         lease_owner = NULL,
         lease_expires_at = NULL,
         last_run_id = COALESCE(?12, last_run_id)
     WHERE id = ?10
       AND (?11 IS NULL OR (lease_owner = ?11 AND lease_expires_at > ?9))
       AND (?13 IS NULL OR account = ?13)
       AND NOT (state NOT IN ('pending', 'in_progress', 'reversing')
                AND ?1 IN ('pending', 'in_progress', 'reversing'))";

/// What entitles a writer to update payments.
#[derive(Debug, Clone, Copy)]
pub enum WriteGuard<'a> {
    /// A lane: the account lease must still be the fence's (else [`LedgerError::FencedOut`]).
    Lane(&'a Fence),
    /// `pay`: the row it registered held, and the hold not yet expired (else the update is
    /// skipped: a lane has taken the payment over).
    Hold(&'a str),
}

impl Ledger {
    /// Applies `updates` in one transaction and clears any row hold on them. Returns the ids
    /// of the payments written, once committed, so that a pass counts only what the ledger
    /// holds. A lane whose fence no longer holds writes nothing ([`LedgerError::FencedOut`]).
    pub async fn apply(
        &self,
        guard: WriteGuard<'_>,
        run_id: Option<i64>,
        updates: &[PaymentUpdate],
        now: DateTime<Utc>,
    ) -> Result<HashSet<PaymentId>, LedgerError> {
        let now_s = to_db(now);
        let mut applied = HashSet::with_capacity(updates.len());
        let (mut tx, account, holder) = match guard {
            WriteGuard::Lane(fence) => (self.fenced(fence).await?, Some(&fence.account), None),
            WriteGuard::Hold(owner) => (
                self.pool.begin_with("BEGIN IMMEDIATE").await?,
                None,
                Some(owner),
            ),
        };
        for u in updates {
            let (reason, repeats) = match u.retry {
                Some((r, n)) => (Some(retry_reason_str(r)), i64::from(n)),
                None => (None, 0),
            };
            let done = sqlx::query(APPLY_UPDATE)
                .bind(u.state.as_str())
                .bind(u.provider_code.as_deref())
                .bind(u.provider_ref.as_ref().map(ProviderRef::as_str))
                .bind(i64::from(u.checked))
                .bind(reason)
                .bind(repeats)
                .bind(u.next_check_at.map(to_db))
                .bind(u.in_progress_since.map(to_db))
                .bind(&now_s)
                .bind(u.id.0)
                .bind(holder)
                .bind(run_id)
                .bind(account)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                tracing::warn!(
                    payment = u.id.0,
                    "the payment's hold expired before its answer was written; a lane has it now"
                );
                continue;
            }
            applied.insert(u.id);
            for e in &u.events {
                insert_event(&mut tx, u.id, run_id, e).await?;
            }
            for d in &u.discrepancies {
                insert_discrepancy(&mut tx, u.id, d, now).await?;
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Writes the intent to reverse *before* any reversal call: state `reversing`,
    /// `reversal_requested_at` set, and `events` (the history up to and including the intent).
    /// Returns `false` (and writes nothing) if the payment is no longer open or a reversal
    /// was ever requested before: the guard against reversing twice, also across crashes and
    /// processes; [`LedgerError::FencedOut`] if the lane's account lease is no longer its own.
    pub async fn mark_reversing(
        &self,
        fence: &Fence,
        run_id: Option<i64>,
        id: PaymentId,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let now_s = to_db(now);
        let mut tx = self.fenced(fence).await?;
        let done = sqlx::query(
            "UPDATE payments SET state = 'reversing', reversal_requested_at = ?1, updated_at = ?1
             WHERE id = ?2 AND account = ?3 AND reversal_requested_at IS NULL
               AND state IN ('pending', 'in_progress')",
        )
        .bind(&now_s)
        .bind(id.0)
        .bind(&fence.account)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for event in events {
            insert_event(&mut tx, id, run_id, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// Discrepancy ?1/?2 with evidence ?3, found at ?4, for payment ?5, unless recorded already
/// (`discrepancies_by_payment`).
pub(super) const INSERT_PAYMENT_DISCREPANCY: &str =
    "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at)
     SELECT id, account, ?1, ?2, ?3, ?4 FROM payments WHERE id = ?5
       AND NOT EXISTS (SELECT 1 FROM discrepancies
                       WHERE payment_id = ?5 AND kind = ?1 AND detail = ?2)";

/// Records `d` for the payment unless the same finding (kind and detail) is recorded already
/// (open or resolved): a mismatch seen on every poll or every sweep is reported once, and a
/// new contradiction of a payment under observation is reported too. Returns 1 when recorded.
pub(super) async fn insert_discrepancy(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: PaymentId,
    d: &NewDiscrepancy,
    now: DateTime<Utc>,
) -> Result<u64, LedgerError> {
    let done = sqlx::query(INSERT_PAYMENT_DISCREPANCY)
        .bind(d.kind.as_str())
        .bind(&d.detail)
        .bind(d.evidence.to_string())
        .bind(to_db(now))
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: PaymentId,
    run_id: Option<i64>,
    e: &NewEvent,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO events (payment_id, run_id, at, kind, from_state, to_state, provider_code, message, evidence)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id.0)
    .bind(run_id)
    .bind(to_db(e.at))
    .bind(e.kind)
    .bind(e.from_state.map(PaymentState::as_str))
    .bind(e.to_state.map(PaymentState::as_str))
    .bind(e.provider_code.as_deref())
    .bind(e.message.as_deref())
    .bind(e.evidence.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
