//! Writing a lane's decisions on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::apply`): one transaction per answer, fenced by the lane's account lease, each
//! payment update with its events and discrepancies; a final state never opens again; a
//! reversal is asked for once, and never for a notified payment.
//!
//! Where SQLite serialises writers with `BEGIN IMMEDIATE`, here an ordinary transaction holds
//! the account's lease row `FOR SHARE` (`PgLedger::fenced`: no replica can acquire the account
//! until it ends) and each `UPDATE` locks its payment rows; a row another transaction changed
//! meanwhile (a notification, a `pay` command's hold, a reaper) is waited for and its guards
//! are checked again on the committed row, so "never regress", "not notified" and "never
//! twice" hold against every writer. A whole answer is one statement per table (arrays
//! `UNNEST`ed), not one per payment.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::claim::numbered;
use super::{PgLedger, ms};
use crate::domain::{PaymentId, PaymentState, ProviderRef};
use crate::ledger::apply::{MARK_REVERSING, distinct_runs, retry_reason_str};
use crate::ledger::{Fence, LedgerError, NewDiscrepancy, NewEvent, PaymentUpdate, WriteGuard};

/// As `apply::APPLY_UPDATES`: the updates of arrays $5–$14 (one element per payment), each by
/// id, at time $1, by run $2, guarded by the hold ($3) or the account ($4); returns the ids
/// written. The last condition is defence in depth for "a final state never becomes open
/// again": the state machine already guarantees it.
const APPLY_UPDATES: &str = "UPDATE payments SET
         state = u.state,
         provider_code = COALESCE(u.provider_code, payments.provider_code),
         provider_ref = COALESCE(payments.provider_ref, u.provider_ref),
         attempts = payments.attempts + u.checked,
         retry_reason = u.retry_reason,
         retry_repeats = u.retry_repeats,
         next_check_at = CASE
             WHEN u.next_check_at IS NOT NULL AND payments.nudged_at IS NOT NULL
                  AND payments.nudged_at IS DISTINCT FROM u.seen_nudged_at
             THEN LEAST(u.next_check_at, $1)
             ELSE u.next_check_at END,
         in_progress_since = COALESCE(payments.in_progress_since, u.in_progress_since),
         updated_at = $1,
         lease_owner = NULL,
         lease_expires_at = NULL,
         last_run_id = COALESCE($2, payments.last_run_id)
     FROM UNNEST($5::bigint[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[],
                 $11::bigint[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[])
          AS u(id, state, provider_code, provider_ref, checked, retry_reason, retry_repeats,
               next_check_at, in_progress_since, seen_nudged_at)
     WHERE payments.id = u.id
       AND ($3::text IS NULL OR (payments.lease_owner = $3 AND payments.lease_expires_at > $1))
       AND ($4::text IS NULL OR payments.account = $4)
       AND NOT (payments.state NOT IN ('pending', 'in_progress', 'reversing')
                AND u.state IN ('pending', 'in_progress', 'reversing'))
     RETURNING payments.id";

/// The events of arrays $2–$9 (`payment_id, at, kind, from, to, code, message, evidence`,
/// evidence as text so it is stored byte for byte), by run $1, in array order.
const INSERT_EVENTS: &str = "INSERT INTO events
         (payment_id, run_id, at, kind, from_state, to_state, provider_code, message, evidence)
     SELECT e.payment_id, $1, e.at, e.kind, e.from_state, e.to_state, e.provider_code,
            e.message, e.evidence
     FROM UNNEST($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::text[], $9::text[]) WITH ORDINALITY
          AS e(payment_id, at, kind, from_state, to_state, provider_code, message, evidence, n)
     ORDER BY e.n";

/// The discrepancies of arrays $2–$5 (`payment_id, kind, detail, evidence`), found at $1, in
/// array order, each unless the same finding about the payment is recorded already (open or
/// resolved): the unique `discrepancies_once_per_payment` does what SQLite's `NOT EXISTS`
/// does, also for two replicas recording it at once.
const INSERT_DISCREPANCIES: &str =
    "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at)
     SELECT p.id, p.account, d.kind, d.detail, d.evidence, $1
     FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY
          AS d(payment_id, kind, detail, evidence, n)
     JOIN payments p ON p.id = d.payment_id
     ORDER BY d.n
     ON CONFLICT (payment_id, kind, detail) WHERE payment_id IS NOT NULL DO NOTHING";

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Applies one run of `distinct_runs` (each payment once); returns the ids written. The
/// arrays go by id, so two transactions updating the same payments lock them in one order.
async fn update_run(
    tx: &mut Tx,
    run: &[&PaymentUpdate],
    run_id: Option<i64>,
    holder: Option<&str>,
    account: Option<&str>,
    now: DateTime<Utc>,
) -> Result<HashSet<PaymentId>, LedgerError> {
    let mut run = run.to_vec();
    run.sort_by_key(|u| u.id);
    let col = |f: fn(&PaymentUpdate) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
        run.iter().map(|u| f(u).map(ms)).collect()
    };
    let (reasons, repeats): (Vec<Option<String>>, Vec<i64>) = run
        .iter()
        .map(|u| match u.retry {
            Some((r, n)) => (Some(retry_reason_str(r)), i64::from(n)),
            None => (None, 0),
        })
        .unzip();
    let written: Vec<i64> = sqlx::query_scalar(APPLY_UPDATES)
        .bind(ms(now))
        .bind(run_id)
        .bind(holder)
        .bind(account)
        .bind(run.iter().map(|u| u.id.0).collect::<Vec<_>>())
        .bind(run.iter().map(|u| u.state.as_str()).collect::<Vec<_>>())
        .bind(
            run.iter()
                .map(|u| u.provider_code.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            run.iter()
                .map(|u| u.provider_ref.as_ref().map(ProviderRef::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(run.iter().map(|u| i64::from(u.checked)).collect::<Vec<_>>())
        .bind(reasons)
        .bind(repeats)
        .bind(col(|u| u.next_check_at))
        .bind(col(|u| u.in_progress_since))
        .bind(col(|u| u.seen_nudged_at))
        .fetch_all(&mut **tx)
        .await?;
    Ok(written.into_iter().map(PaymentId).collect())
}

/// Inserts `events` (each with its payment) by run `run_id`, in order, in one statement: the
/// batch form of `apply::insert_event`.
pub(super) async fn insert_events(
    tx: &mut Tx,
    run_id: Option<i64>,
    events: &[(PaymentId, &NewEvent)],
) -> Result<(), LedgerError> {
    if events.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(|(_, e)| f(e)).collect()
    };
    sqlx::query(INSERT_EVENTS)
        .bind(run_id)
        .bind(events.iter().map(|(id, _)| id.0).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, e)| ms(e.at)).collect::<Vec<_>>())
        .bind(events.iter().map(|(_, e)| e.kind).collect::<Vec<_>>())
        .bind(text(|e| e.from_state.map(PaymentState::as_str)))
        .bind(text(|e| e.to_state.map(PaymentState::as_str)))
        .bind(text(|e| e.provider_code.as_deref()))
        .bind(text(|e| e.message.as_deref()))
        .bind(
            events
                .iter()
                .map(|(_, e)| e.evidence.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records `findings` (each with its payment), found at `now`, in order, in one statement,
/// each unless the same finding (kind and detail) about the payment is recorded already;
/// returns how many were recorded. The batch form of `apply::insert_discrepancy`.
pub(super) async fn insert_discrepancies(
    tx: &mut Tx,
    findings: &[(PaymentId, &NewDiscrepancy)],
    now: DateTime<Utc>,
) -> Result<u64, LedgerError> {
    if findings.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(INSERT_DISCREPANCIES)
        .bind(ms(now))
        .bind(findings.iter().map(|(id, _)| id.0).collect::<Vec<_>>())
        .bind(
            findings
                .iter()
                .map(|(_, d)| d.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            findings
                .iter()
                .map(|(_, d)| d.detail.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            findings
                .iter()
                .map(|(_, d)| d.evidence.to_string())
                .collect::<Vec<_>>(),
        )
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// Whether PostgreSQL rolled the transaction back as the victim of a deadlock (or of a
/// serialization failure): nothing of it was written, and running it again is safe.
pub(super) fn aborted_by_the_server(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Query(sqlx::Error::Database(d))
        if matches!(d.code().as_deref(), Some("40P01" | "40001")))
}

/// How many times a write PostgreSQL aborted as a deadlock victim is tried in all.
const DEADLOCK_TRIES: u32 = 5;

impl PgLedger {
    /// As [`crate::ledger::Ledger::apply`]. Writers SQLite would serialise meet here on the
    /// trigger-kept `payment_counts` rows, which each changed payment locks as it goes (a
    /// lane's answer and `pay`'s about one account's payments can lock them in opposite
    /// orders): a transaction PostgreSQL aborts as a deadlock victim wrote nothing and is run
    /// again, fence check included, so a learned answer is not lost to it.
    pub async fn apply(
        &self,
        guard: WriteGuard<'_>,
        run_id: Option<i64>,
        updates: &[PaymentUpdate],
        now: DateTime<Utc>,
    ) -> Result<HashSet<PaymentId>, LedgerError> {
        let mut tries = 1;
        loop {
            match self.apply_once(guard, run_id, updates, now).await {
                Err(e) if tries < DEADLOCK_TRIES && aborted_by_the_server(&e) => {
                    tracing::debug!(error = %e, "a ledger write was a deadlock victim; written again");
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(
        &self,
        guard: WriteGuard<'_>,
        run_id: Option<i64>,
        updates: &[PaymentUpdate],
        now: DateTime<Utc>,
    ) -> Result<HashSet<PaymentId>, LedgerError> {
        let mut applied = HashSet::with_capacity(updates.len());
        let (mut tx, account, holder) = match guard {
            WriteGuard::Lane(fence) => (
                self.fenced(fence).await?,
                Some(fence.account.as_str()),
                None,
            ),
            WriteGuard::Hold(owner) => (self.pool.begin().await?, None, Some(owner)),
        };
        for run in distinct_runs(updates) {
            let written = update_run(&mut tx, &run, run_id, holder, account, now).await?;
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
            let events: Vec<(PaymentId, &NewEvent)> = run
                .iter()
                .flat_map(|u| u.events.iter().map(move |e| (u.id, e)))
                .collect();
            insert_events(&mut tx, run_id, &events).await?;
            let findings: Vec<(PaymentId, &NewDiscrepancy)> = run
                .iter()
                .flat_map(|u| u.discrepancies.iter().map(move |d| (u.id, d)))
                .collect();
            insert_discrepancies(&mut tx, &findings, now).await?;
            applied.extend(written);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// As [`crate::ledger::Ledger::mark_reversing`]. The `UPDATE` locks the payment row: a
    /// notification committed first is seen (and refuses the reversal), one that comes later
    /// waits for this transaction.
    pub async fn mark_reversing(
        &self,
        fence: &Fence,
        run_id: Option<i64>,
        id: PaymentId,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let mut tx = self.fenced(fence).await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(numbered(MARK_REVERSING)))
            .bind(ms(now))
            .bind(id.0)
            .bind(&fence.account)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let events: Vec<(PaymentId, &NewEvent)> = events.iter().map(|e| (id, e)).collect();
        insert_events(&mut tx, run_id, &events).await?;
        tx.commit().await?;
        Ok(true)
    }
}
