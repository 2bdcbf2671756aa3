//! What window sweeps read and write on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::sweeps`): cursors and the schedule's position, the ledger side of a page (the
//! payments its records name, a finding applied, refunds found and linked, open payments made
//! due), and the payments a closed window should contain with the findings about them,
//! recorded once.
//!
//! Where the SQLite ledger sends a list in one statement (`json_each`), this sends it in one
//! statement too (`= ANY` of an array, `UNNEST ... WITH ORDINALITY`); the findings of a page
//! are one statement here, not one per finding. SQLite serialises every write transaction;
//! here a guard read is a row lock (`FOR UPDATE`), so a concurrent change is seen, not
//! overwritten.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{PgLedger, ms};
use crate::domain::PaymentState;
use crate::ledger::{
    Fence, FoundRefund, KnownPayment, LedgerError, NewDiscrepancy, NewEvent, SchedulePosition,
    SweepCursor, SweepDiscrepancy, SweepRound,
};

/// As the SQLite ledger's `KNOWN_PAYMENTS`: payments of account $1 with a gateway id in $2 or
/// an order number in $3, two index-backed lookups joined by `UNION`, in id order.
const KNOWN_PAYMENTS: &str =
    "SELECT id, kind, out_trade_no, provider_ref, original_ref, state, amount, currency
     FROM payments
     WHERE account = $1 AND provider_ref = ANY($2::text[])
     UNION
     SELECT id, kind, out_trade_no, provider_ref, original_ref, state, amount, currency
     FROM payments
     WHERE account = $1 AND kind IN ('payment', 'refund') AND out_trade_no = ANY($3::text[])
     ORDER BY id";

/// The findings of arrays $3..$7 (payment, kind, detail, evidence, subject), for account $1,
/// found at $2, each unless recorded already (open or resolved) or earlier in the list: about a
/// ledger payment once per payment and kind, about a gateway record the ledger lacks once per
/// account, kind and subject (the unique index `discrepancies_once_per_subject`). Returns the
/// 1-based positions of the findings recorded.
const RECORD_FINDINGS: &str = "WITH f AS (
         SELECT * FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
             WITH ORDINALITY AS f(payment_id, kind, detail, evidence, subject, i)),
     firsts AS (
         SELECT DISTINCT ON (payment_id, kind, CASE WHEN payment_id IS NULL THEN subject END) *
         FROM f ORDER BY payment_id, kind, CASE WHEN payment_id IS NULL THEN subject END, i),
     ins AS (
         INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at, subject)
         SELECT payment_id, $1, kind, detail, evidence, $2, subject FROM firsts
          WHERE NOT EXISTS (SELECT 1 FROM discrepancies d
                            WHERE firsts.payment_id IS NOT NULL
                              AND d.payment_id = firsts.payment_id AND d.kind = firsts.kind)
          ORDER BY i
         ON CONFLICT DO NOTHING
         RETURNING payment_id, kind, subject)
     SELECT firsts.i FROM firsts JOIN ins
       ON ins.kind = firsts.kind AND ins.payment_id IS NOT DISTINCT FROM firsts.payment_id
      AND (firsts.payment_id IS NOT NULL OR ins.subject = firsts.subject)
     ORDER BY firsts.i";

/// Discrepancies of arrays $4..$6 (kind, detail, evidence) about payment $1 of account $2,
/// found at $3, in list order, each unless the same finding (kind and detail) is recorded
/// already, open or resolved (the unique index `discrepancies_once_per_payment`), as the
/// SQLite ledger's `insert_discrepancy`. Returns the (kind, detail) recorded.
const INSERT_PAYMENT_DISCREPANCIES: &str =
    "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at)
     SELECT $1, $2, d.kind, d.detail, d.evidence, $3
     FROM UNNEST($4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS d(kind, detail, evidence, i)
     ORDER BY d.i
     ON CONFLICT (payment_id, kind, detail) WHERE payment_id IS NOT NULL DO NOTHING
     RETURNING kind, detail";

/// One history row of payment `id`, as the SQLite ledger's `insert_event`.
async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
    run_id: Option<i64>,
    e: &NewEvent,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO events (payment_id, run_id, at, kind, from_state, to_state, provider_code,
                             message, evidence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(run_id)
    .bind(ms(e.at))
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

/// `ds` about payment `id` (of `account`), each unless recorded already; the indexes of those
/// newly recorded (a finding repeated in `ds` is recorded at its first place).
async fn insert_payment_discrepancies(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
    account: &str,
    ds: &[NewDiscrepancy],
    now: DateTime<Utc>,
) -> Result<Vec<usize>, LedgerError> {
    if ds.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<&str> = ds.iter().map(|d| d.kind.as_str()).collect();
    let details: Vec<&str> = ds.iter().map(|d| d.detail.as_str()).collect();
    let evidence: Vec<String> = ds.iter().map(|d| d.evidence.to_string()).collect();
    let mut recorded: HashSet<(String, String)> = sqlx::query_as(INSERT_PAYMENT_DISCREPANCIES)
        .bind(id)
        .bind(account)
        .bind(ms(now))
        .bind(&kinds)
        .bind(&details)
        .bind(&evidence)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    // `remove`: a repeat of a recorded finding is not recorded again.
    Ok(ds
        .iter()
        .enumerate()
        .filter(|(_, d)| recorded.remove(&(d.kind.as_str().to_string(), d.detail.clone())))
        .map(|(i, _)| i)
        .collect())
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::sweep_cursor`].
    pub async fn sweep_cursor(
        &self,
        account: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        round: SweepRound,
    ) -> Result<Option<SweepCursor>, LedgerError> {
        let row = sqlx::query(
            "SELECT next_page, records_seen, completed_at FROM sweep_cursors
             WHERE account = $1 AND window_start = $2 AND window_end = $3 AND round = $4",
        )
        .bind(account)
        .bind(ms(start))
        .bind(ms(end))
        .bind(round as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            SweepCursor::from_columns(
                r.get("next_page"),
                r.get("records_seen"),
                r.get::<Option<DateTime<Utc>>, _>("completed_at").is_some(),
            )
        }))
    }

    /// As [`crate::ledger::Ledger::save_sweep_cursor`].
    pub async fn save_sweep_cursor(
        &self,
        fence: &Fence,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        round: SweepRound,
        cursor: SweepCursor,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "INSERT INTO sweep_cursors (account, window_start, window_end, next_page,
                                        records_seen, completed_at, updated_at, round)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (account, window_start, window_end, round) DO UPDATE SET
                 next_page = $4, records_seen = $5, completed_at = $6, updated_at = $7",
        )
        .bind(&fence.account)
        .bind(ms(start))
        .bind(ms(end))
        .bind(i64::from(cursor.next_page))
        .bind(cursor.records_seen as i64)
        .bind(cursor.completed.then(|| ms(now)))
        .bind(ms(now))
        .bind(round as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// As [`crate::ledger::Ledger::schedule_position`].
    pub async fn schedule_position(
        &self,
        account: &str,
    ) -> Result<Option<SchedulePosition>, LedgerError> {
        let row: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT swept_until, rechecked_from FROM sweep_schedule WHERE account = $1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(swept_until, rechecked_from)| SchedulePosition {
            swept_until,
            rechecked_from,
        }))
    }

    /// As [`crate::ledger::Ledger::save_schedule_position`].
    pub async fn save_schedule_position(
        &self,
        fence: &Fence,
        position: SchedulePosition,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "INSERT INTO sweep_schedule (account, swept_until, rechecked_from, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (account) DO UPDATE SET
                 swept_until = $2, rechecked_from = $3, updated_at = $4",
        )
        .bind(&fence.account)
        .bind(ms(position.swept_until))
        .bind(ms(position.rechecked_from))
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// As [`crate::ledger::Ledger::known_payments`].
    pub async fn known_payments(
        &self,
        account: &str,
        refs: &[&str],
        orders: &[&str],
    ) -> Result<Vec<KnownPayment>, LedgerError> {
        Ok(sqlx::query_as(KNOWN_PAYMENTS)
            .bind(account)
            .bind(refs)
            .bind(orders)
            .fetch_all(&self.pool)
            .await?)
    }

    /// As [`crate::ledger::Ledger::apply_sweep_finding`]. The state it was read in is checked
    /// on the row locked `FOR UPDATE`, so a concurrent change either committed before (and is
    /// seen: nothing is written) or waits for this transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_sweep_finding(
        &self,
        fence: &Fence,
        id: i64,
        expected: PaymentState,
        to: PaymentState,
        event: &NewEvent,
        discrepancies: &[NewDiscrepancy],
        now: DateTime<Utc>,
    ) -> Result<(bool, Vec<usize>), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT state FROM payments
             WHERE id = $1 AND account = $2 AND lease_owner IS NULL FOR UPDATE",
        )
        .bind(id)
        .bind(&fence.account)
        .fetch_optional(&mut *tx)
        .await?;
        if current.as_deref() != Some(expected.as_str()) {
            tx.rollback().await?;
            return Ok((false, Vec::new()));
        }
        let changed = to != expected;
        if changed {
            sqlx::query(
                "UPDATE payments SET state = $1, provider_code = COALESCE($2, provider_code),
                     next_check_at = NULL, updated_at = $3
                 WHERE id = $4",
            )
            .bind(to.as_str())
            .bind(event.provider_code.as_deref())
            .bind(ms(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            insert_event(&mut tx, id, None, event).await?;
        }
        let recorded =
            insert_payment_discrepancies(&mut tx, id, &fence.account, discrepancies, now).await?;
        tx.commit().await?;
        Ok((changed, recorded))
    }

    /// As [`crate::ledger::Ledger::link_refund`].
    pub async fn link_refund(
        &self,
        fence: &Fence,
        id: i64,
        original_ref: &str,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "UPDATE payments SET original_ref = $1 WHERE id = $2 AND kind = 'refund'
               AND original_ref IS NULL AND account = $3",
        )
        .bind(original_ref)
        .bind(id)
        .bind(&fence.account)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// As [`crate::ledger::Ledger::register_found_refund`].
    pub async fn register_found_refund(
        &self,
        fence: &Fence,
        r: &FoundRefund<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, LedgerError> {
        let mut tx = self.fenced(fence).await?;
        let open = !r.state.is_final();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref,
                                   original_ref, pay_type, amount, currency, state,
                                   provider_code, next_check_at, created_at, registered_at,
                                   updated_at)
             VALUES ($1, 'qfpay', 'refund', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             ON CONFLICT (account, kind, out_trade_no) DO NOTHING
             RETURNING id",
        )
        .bind(&fence.account)
        .bind(r.out_trade_no)
        .bind(r.syssn)
        .bind(r.original_ref)
        .bind(r.pay_type)
        .bind(r.amount)
        .bind(r.currency)
        .bind(r.state.as_str())
        .bind(r.provider_code)
        .bind(open.then(|| ms(now)))
        .bind(ms(r.created_at))
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            insert_event(&mut tx, id, None, &r.registered_event(now)).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// As [`crate::ledger::Ledger::refunded_total`].
    pub async fn refunded_total(
        &self,
        account: &str,
        original_ref: &str,
    ) -> Result<i64, LedgerError> {
        // SUM of bigint is numeric in PostgreSQL: back to bigint, as the SQLite sum is.
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM payments
             WHERE account = $1 AND original_ref = $2 AND kind = 'refund'
               AND state = 'succeeded'",
        )
        .bind(account)
        .bind(original_ref)
        .fetch_one(&self.pool)
        .await?)
    }

    /// As [`crate::ledger::Ledger::make_due`].
    pub async fn make_due(
        &self,
        fence: &Fence,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "UPDATE payments SET next_check_at = $1
             WHERE id = ANY($2::bigint[])
               AND account = $3
               AND state IN ('pending', 'in_progress', 'reversing')
               AND (next_check_at IS NULL OR next_check_at > $1)",
        )
        .bind(ms(now))
        .bind(ids)
        .bind(&fence.account)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// As [`crate::ledger::Ledger::payments_created_in`].
    pub async fn payments_created_in(
        &self,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(i64, String)>, LedgerError> {
        Ok(sqlx::query_as(
            "SELECT id, out_trade_no FROM payments
             WHERE account = $1 AND kind = 'payment' AND created_at >= $2 AND created_at <= $3
             ORDER BY id",
        )
        .bind(account)
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await?)
    }

    /// As [`crate::ledger::Ledger::record_sweep_discrepancies`]. The payments the findings name
    /// are locked first (`FOR UPDATE`), so two writers recording about one payment at once
    /// record one finding of a kind, as SQLite's serialised writers do; the findings about
    /// gateway records rely on the unique index.
    pub async fn record_sweep_discrepancies(
        &self,
        fence: &Fence,
        findings: &[SweepDiscrepancy],
        now: DateTime<Utc>,
    ) -> Result<Vec<usize>, LedgerError> {
        if findings.is_empty() {
            return Ok(Vec::new());
        }
        let payments: Vec<Option<i64>> = findings.iter().map(|f| f.payment.map(|p| p.0)).collect();
        let mut tx = self.fenced(fence).await?;
        if payments.iter().any(Option::is_some) {
            sqlx::query(
                "SELECT 1 FROM payments WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
            )
            .bind(&payments)
            .execute(&mut *tx)
            .await?;
        }
        let kinds: Vec<&str> = findings.iter().map(|f| f.found.kind.as_str()).collect();
        let details: Vec<&str> = findings.iter().map(|f| f.found.detail.as_str()).collect();
        let evidence: Vec<String> = findings
            .iter()
            .map(|f| f.found.evidence.to_string())
            .collect();
        let subjects: Vec<&str> = findings.iter().map(|f| f.subject.as_str()).collect();
        let recorded: Vec<i64> = sqlx::query_scalar(RECORD_FINDINGS)
            .bind(&fence.account)
            .bind(ms(now))
            .bind(&payments)
            .bind(&kinds)
            .bind(&details)
            .bind(&evidence)
            .bind(&subjects)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(recorded.into_iter().map(|i| (i - 1) as usize).collect())
    }
}
