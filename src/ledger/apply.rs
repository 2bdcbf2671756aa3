//! Writing a lane's decisions: one transaction per answer (an ECPay answer, a QFPay id-lookup
//! batch, a sweep page), fenced by the lane's account lease (a lane whose lease another
//! process took writes nothing), each payment update with its events and discrepancies.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::time::to_db;
use super::{Fence, LedgerError, SqliteLedger};
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
    /// The payment's `nudged_at` when the lane read it: a notification or a requested check
    /// that arrived since (while the query was in flight) keeps an open payment due now instead
    /// of the answer's later check, so the nudge is not lost.
    pub seen_nudged_at: Option<DateTime<Utc>>,
    pub events: Vec<NewEvent>,
    pub discrepancies: Vec<NewDiscrepancy>,
}

pub(super) fn retry_reason_str(r: RetryReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The updates of JSON list ?1 (objects as `batch_json` writes them), each by id, at time ?2,
/// by run ?3, guarded by the hold (?4) or the account (?5); returns the ids written. One
/// statement for a whole answer: per-row statements cost a round trip to the ledger's thread
/// each, which was most of a dense page's time. The last condition is defence in depth for
/// "a final state never becomes open again": the state machine already guarantees it.
pub(super) const APPLY_UPDATES: &str = "UPDATE payments SET
         state = u.state,
         provider_code = COALESCE(u.provider_code, payments.provider_code),
         provider_ref = COALESCE(payments.provider_ref, u.provider_ref),
         attempts = payments.attempts + u.checked,
         retry_reason = u.retry_reason,
         retry_repeats = u.retry_repeats,
         next_check_at = CASE
             WHEN u.next_check_at IS NOT NULL AND payments.nudged_at IS NOT NULL
                  AND payments.nudged_at IS NOT u.seen_nudged_at
             THEN MIN(u.next_check_at, ?2)
             ELSE u.next_check_at END,
         in_progress_since = COALESCE(payments.in_progress_since, u.in_progress_since),
         updated_at = ?2,
         lease_owner = NULL,
         lease_expires_at = NULL,
         last_run_id = COALESCE(?3, payments.last_run_id)
     FROM (SELECT json_extract(value, '$.id') AS id,
                  json_extract(value, '$.state') AS state,
                  json_extract(value, '$.provider_code') AS provider_code,
                  json_extract(value, '$.provider_ref') AS provider_ref,
                  json_extract(value, '$.checked') AS checked,
                  json_extract(value, '$.retry_reason') AS retry_reason,
                  json_extract(value, '$.retry_repeats') AS retry_repeats,
                  json_extract(value, '$.next_check_at') AS next_check_at,
                  json_extract(value, '$.in_progress_since') AS in_progress_since,
                  json_extract(value, '$.seen_nudged_at') AS seen_nudged_at
           FROM json_each(?1)) AS u
     WHERE payments.id = u.id
       AND (?4 IS NULL OR (payments.lease_owner = ?4 AND payments.lease_expires_at > ?2))
       AND (?5 IS NULL OR payments.account = ?5)
       AND NOT (payments.state NOT IN ('pending', 'in_progress', 'reversing')
                AND u.state IN ('pending', 'in_progress', 'reversing'))
     RETURNING payments.id";

/// The events of JSON list ?1 (`[payment_id, at, kind, from, to, code, message, evidence]`,
/// evidence as text so it is stored byte for byte), by run ?2, in list order.
pub(super) const INSERT_EVENTS: &str = "INSERT INTO events
         (payment_id, run_id, at, kind, from_state, to_state, provider_code, message, evidence)
     SELECT json_extract(value, '$[0]'), ?2, json_extract(value, '$[1]'),
            json_extract(value, '$[2]'), json_extract(value, '$[3]'),
            json_extract(value, '$[4]'), json_extract(value, '$[5]'),
            json_extract(value, '$[6]'), json_extract(value, '$[7]')
     FROM json_each(?1)
     ORDER BY key";

/// `updates` as `APPLY_UPDATES` reads them.
fn updates_json(updates: &[&PaymentUpdate]) -> String {
    let rows: Vec<serde_json::Value> = updates
        .iter()
        .map(|u| {
            let (reason, repeats) = match u.retry {
                Some((r, n)) => (Some(retry_reason_str(r)), n),
                None => (None, 0),
            };
            serde_json::json!({
                "id": u.id.0,
                "state": u.state.as_str(),
                "provider_code": u.provider_code,
                "provider_ref": u.provider_ref.as_ref().map(ProviderRef::as_str),
                "checked": i64::from(u.checked),
                "retry_reason": reason,
                "retry_repeats": repeats,
                "next_check_at": u.next_check_at.map(to_db),
                "in_progress_since": u.in_progress_since.map(to_db),
                "seen_nudged_at": u.seen_nudged_at.map(to_db),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// The events of `updates` as `INSERT_EVENTS` reads them.
fn events_json(updates: &[&PaymentUpdate]) -> String {
    let rows: Vec<serde_json::Value> = updates
        .iter()
        .flat_map(|u| u.events.iter().map(move |e| (u.id, e)))
        .map(|(id, e)| {
            serde_json::json!([
                id.0,
                to_db(e.at),
                e.kind,
                e.from_state.map(PaymentState::as_str),
                e.to_state.map(PaymentState::as_str),
                e.provider_code,
                e.message,
                e.evidence.to_string(),
            ])
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// Splits `updates` into runs without a repeated payment, in order: one statement updates each
/// payment of a run once, and a later update of the same payment goes after it, as it came.
/// Both stores.
pub(super) fn distinct_runs(updates: &[PaymentUpdate]) -> Vec<Vec<&PaymentUpdate>> {
    let mut runs: Vec<Vec<&PaymentUpdate>> = Vec::new();
    let mut ids = HashSet::new();
    for u in updates {
        if runs.is_empty() || !ids.insert(u.id) {
            runs.push(Vec::new());
            ids.clear();
            ids.insert(u.id);
        }
        if let Some(run) = runs.last_mut() {
            run.push(u);
        }
    }
    runs
}

/// Payment ?2 of account ?3 to `reversing` at ?1, if still open, never notified and never
/// asked to reverse before. Both stores.
pub(super) const MARK_REVERSING: &str =
    "UPDATE payments SET state = 'reversing', reversal_requested_at = ?1, updated_at = ?1
     WHERE id = ?2 AND account = ?3 AND reversal_requested_at IS NULL
       AND notified_at IS NULL AND state IN ('pending', 'in_progress')";

/// What entitles a writer to update payments.
#[derive(Debug, Clone, Copy)]
pub enum WriteGuard<'a> {
    /// A lane: the account lease must still be the fence's (else [`LedgerError::FencedOut`]).
    Lane(&'a Fence),
    /// `pay`: the row it registered held, and the hold not yet expired (else the update is
    /// skipped: a lane has taken the payment over).
    Hold(&'a str),
}

impl SqliteLedger {
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
        for run in distinct_runs(updates) {
            let written: HashSet<PaymentId> = sqlx::query_scalar(APPLY_UPDATES)
                .bind(updates_json(&run))
                .bind(&now_s)
                .bind(run_id)
                .bind(holder)
                .bind(account)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(PaymentId)
                .collect();
            for u in run.iter().filter(|u| !written.contains(&u.id)) {
                tracing::warn!(
                    payment = u.id.0,
                    "the payment's hold expired before its answer was written; a lane has it now"
                );
            }
            let run: Vec<&PaymentUpdate> = run
                .into_iter()
                .filter(|u| written.contains(&u.id))
                .collect();
            if run.iter().any(|u| !u.events.is_empty()) {
                sqlx::query(INSERT_EVENTS)
                    .bind(events_json(&run))
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
            for u in &run {
                for d in &u.discrepancies {
                    insert_discrepancy(&mut tx, u.id, d, now).await?;
                }
            }
            applied.extend(written);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Writes the intent to reverse *before* any reversal call: state `reversing`,
    /// `reversal_requested_at` set, and `events` (the history up to and including the intent).
    /// Returns `false` (and writes nothing) if the payment is no longer open, a reversal
    /// was ever requested before (the guard against reversing twice, also across crashes and
    /// processes), or a gateway notification said it is paid since the lane read it (the last
    /// resort never reverses a notified payment; the notification takes no lease, so only this
    /// statement sees one that arrived while the lane's queries were in flight);
    /// [`LedgerError::FencedOut`] if the lane's account lease is no longer its own.
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
        let done = sqlx::query(MARK_REVERSING)
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
