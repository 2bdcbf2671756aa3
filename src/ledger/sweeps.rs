//! What window sweeps read and write: cursors, the ledger side of a page, and the list of
//! payments a closed window should contain.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::apply::{insert_discrepancy, insert_event};
use super::time::{from_db, to_db};
use super::{Fence, LedgerError, NewDiscrepancy, NewEvent, SqliteLedger};
use crate::domain::{PaymentId, PaymentState};

/// `(id, out_trade_no)` of the payments of account ?1 created in [?2, ?3] (`payments_by_created`).
pub(super) const PAYMENTS_CREATED_IN: &str = "SELECT id, out_trade_no FROM payments
     WHERE account = ? AND kind = 'payment' AND created_at >= ? AND created_at <= ?
     ORDER BY id";

/// Discrepancy (payment ?1, account ?2, kind ?3, detail ?4, evidence ?5, found ?6, subject
/// ?7) about a ledger payment, unless one of its kind is recorded for it
/// (`discrepancies_by_payment`).
pub(super) const RECORD_PAYMENT_FINDING: &str =
    "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at, subject)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
      WHERE NOT EXISTS (SELECT 1 FROM discrepancies WHERE payment_id = ?1 AND kind = ?3)";

/// The same about a gateway record the ledger does not hold (?1 is NULL), unless one of its
/// kind names the same subject (`discrepancies_by_subject`).
pub(super) const RECORD_RECORD_FINDING: &str =
    "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at, subject)
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
      WHERE NOT EXISTS (SELECT 1 FROM discrepancies
                        WHERE payment_id IS NULL AND account = ?2 AND kind = ?3 AND subject = ?7)";

/// A finding of a sweep, reported once: about a ledger payment (once per payment and kind), or
/// about a gateway record the ledger does not hold (once per account, kind and `subject`).
#[derive(Debug, Clone, PartialEq)]
pub struct SweepDiscrepancy {
    pub payment: Option<PaymentId>,
    /// What it is about: the record's syssn or order number, or an unreadable record's text.
    pub subject: String,
    pub found: NewDiscrepancy,
}

/// Payments of account ?1 with a gateway id in JSON list ?2 or an order number in ?3: two
/// index-backed lookups joined by `UNION` (an `OR` would read every payment of the account).
pub(super) const KNOWN_PAYMENTS: &str =
    "SELECT id, kind, out_trade_no, provider_ref, original_ref, state, amount, currency
     FROM payments
     WHERE account = ?1 AND provider_ref IN (SELECT value FROM json_each(?2))
     UNION
     SELECT id, kind, out_trade_no, provider_ref, original_ref, state, amount, currency
     FROM payments
     WHERE account = ?1 AND kind IN ('payment', 'refund')
       AND out_trade_no IN (SELECT value FROM json_each(?3))";

/// The sum of the succeeded refunds of account ?1 linked to gateway id ?2
/// (`payments_by_original`).
pub(super) const REFUNDED_TOTAL: &str = "SELECT COALESCE(SUM(amount), 0) FROM payments
     WHERE account = ? AND original_ref = ? AND kind = 'refund' AND state = 'succeeded'";

/// Progress of one month piece of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepCursor {
    pub next_page: u32,
    pub records_seen: u64,
    pub completed: bool,
}

impl SweepCursor {
    /// A cursor from its stored columns (both stores): a page below 1 reads as 1, a negative
    /// count as 0.
    pub(super) fn from_columns(next_page: i64, records_seen: i64, completed: bool) -> Self {
        SweepCursor {
            next_page: next_page.clamp(1, u32::MAX as i64) as u32,
            records_seen: records_seen.max(0) as u64,
            completed,
        }
    }
}

/// A ledger payment a sweep record refers to (a row of `KNOWN_PAYMENTS`, on both stores).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct KnownPayment {
    pub id: i64,
    pub kind: String,
    pub out_trade_no: String,
    pub provider_ref: Option<String>,
    pub original_ref: Option<String>,
    pub state: String,
    pub amount: i64,
    pub currency: String,
}

/// Which reading of a window a cursor belongs to: the first one after it closes (scheduled or
/// manual), or the scheduled look-back re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepRound {
    Fresh = 0,
    LookBack = 1,
}

/// How far the scheduled sweep of one account has read: fresh windows up to `swept_until`,
/// look-back re-reads up to `rechecked_from` (the next re-read starts there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulePosition {
    pub swept_until: DateTime<Utc>,
    pub rechecked_from: DateTime<Utc>,
}

/// A refund record of the gateway whose payment is in the ledger, to register.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundRefund<'a> {
    pub out_trade_no: &'a str,
    pub syssn: Option<&'a str>,
    pub original_ref: &'a str,
    pub pay_type: Option<&'a str>,
    pub amount: i64,
    pub currency: &'a str,
    pub created_at: DateTime<Utc>,
    pub state: PaymentState,
    pub provider_code: &'a str,
    pub evidence: &'a serde_json::Value,
}

impl FoundRefund<'_> {
    /// The history row of the refund row registered at `now` (both stores).
    pub(super) fn registered_event(&self, now: DateTime<Utc>) -> NewEvent {
        NewEvent {
            at: now,
            kind: "registered",
            from_state: None,
            to_state: Some(self.state),
            provider_code: Some(self.provider_code.to_string()),
            message: Some(format!(
                "refund of payment {} found by a sweep",
                self.original_ref
            )),
            evidence: self.evidence.clone(),
        }
    }
}

impl SqliteLedger {
    pub async fn sweep_cursor(
        &self,
        account: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        round: SweepRound,
    ) -> Result<Option<SweepCursor>, LedgerError> {
        let row = sqlx::query(
            "SELECT next_page, records_seen, completed_at FROM sweep_cursors
             WHERE account = ? AND window_start = ? AND window_end = ? AND round = ?",
        )
        .bind(account)
        .bind(to_db(start))
        .bind(to_db(end))
        .bind(round as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            SweepCursor::from_columns(
                r.get("next_page"),
                r.get("records_seen"),
                r.get::<Option<String>, _>("completed_at").is_some(),
            )
        }))
    }

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
            "INSERT INTO sweep_cursors (account, window_start, window_end, next_page, records_seen, completed_at, updated_at, round)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (account, window_start, window_end, round) DO UPDATE SET
                 next_page = ?4, records_seen = ?5, completed_at = ?6, updated_at = ?7",
        )
        .bind(&fence.account)
        .bind(to_db(start))
        .bind(to_db(end))
        .bind(i64::from(cursor.next_page))
        .bind(cursor.records_seen as i64)
        .bind(cursor.completed.then(|| to_db(now)))
        .bind(to_db(now))
        .bind(round as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Where the scheduled sweep of `account` stands; `None` before its first run. Manual
    /// sweeps do not move it: the schedule's cursor is its own.
    pub async fn schedule_position(
        &self,
        account: &str,
    ) -> Result<Option<SchedulePosition>, LedgerError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT swept_until, rechecked_from FROM sweep_schedule WHERE account = ?",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        let Some((a, b)) = row else { return Ok(None) };
        let time = |column: &'static str, v: &str| {
            from_db(v).ok_or_else(|| LedgerError::Corrupt {
                column,
                value: v.to_string(),
            })
        };
        Ok(Some(SchedulePosition {
            swept_until: time("swept_until", &a)?,
            rechecked_from: time("rechecked_from", &b)?,
        }))
    }

    pub async fn save_schedule_position(
        &self,
        fence: &Fence,
        position: SchedulePosition,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "INSERT INTO sweep_schedule (account, swept_until, rechecked_from, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account) DO UPDATE SET
                 swept_until = ?2, rechecked_from = ?3, updated_at = ?4",
        )
        .bind(&fence.account)
        .bind(to_db(position.swept_until))
        .bind(to_db(position.rechecked_from))
        .bind(to_db(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ledger payments of `account` with one of these gateway ids or order numbers.
    pub async fn known_payments(
        &self,
        account: &str,
        refs: &[&str],
        orders: &[&str],
    ) -> Result<Vec<KnownPayment>, LedgerError> {
        Ok(sqlx::query_as(KNOWN_PAYMENTS)
            .bind(account)
            .bind(serde_json::to_string(refs).unwrap_or_default())
            .bind(serde_json::to_string(orders).unwrap_or_default())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Applies what a sweep learned about a payment that no pass works on (final, or handed to
    /// a person): the new state with its event, and discrepancies (one of a kind per payment).
    /// Guarded by the state it was read in, so a concurrent change wins and this writes
    /// nothing. Returns whether the payment was updated, and the indexes of the discrepancies
    /// newly recorded.
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
            "SELECT state FROM payments WHERE id = ? AND account = ? AND lease_owner IS NULL",
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
                "UPDATE payments SET state = ?1, provider_code = COALESCE(?2, provider_code),
                     next_check_at = NULL, updated_at = ?3
                 WHERE id = ?4",
            )
            .bind(to.as_str())
            .bind(event.provider_code.as_deref())
            .bind(to_db(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            insert_event(&mut tx, PaymentId(id), None, event).await?;
        }
        let mut recorded = Vec::new();
        for (i, d) in discrepancies.iter().enumerate() {
            if insert_discrepancy(&mut tx, PaymentId(id), d, now).await? > 0 {
                recorded.push(i);
            }
        }
        tx.commit().await?;
        Ok((changed, recorded))
    }

    /// Links a refund row to its payment's gateway id, if it was not linked yet.
    pub async fn link_refund(
        &self,
        fence: &Fence,
        id: i64,
        original_ref: &str,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "UPDATE payments SET original_ref = ?1 WHERE id = ?2 AND kind = 'refund'
               AND original_ref IS NULL AND account = ?3",
        )
        .bind(original_ref)
        .bind(id)
        .bind(&fence.account)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers a gateway refund record of a ledger payment as a refund row, already in the
    /// state its record shows, with the record as evidence. Returns its id, or `None` when a
    /// row with that order number exists already.
    pub async fn register_found_refund(
        &self,
        fence: &Fence,
        r: &FoundRefund<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, LedgerError> {
        let now_s = to_db(now);
        let mut tx = self.fenced(fence).await?;
        let open = !r.state.is_final();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref, original_ref,
                                   pay_type, amount, currency, state, provider_code, next_check_at,
                                   created_at, registered_at, updated_at)
             VALUES (?1, 'qfpay', 'refund', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
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
        .bind(open.then(|| now_s.clone()))
        .bind(to_db(r.created_at))
        .bind(&now_s)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            insert_event(&mut tx, PaymentId(id), None, &r.registered_event(now)).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The sum of the succeeded refund rows linked to the payment with gateway id
    /// `original_ref`.
    pub async fn refunded_total(
        &self,
        account: &str,
        original_ref: &str,
    ) -> Result<i64, LedgerError> {
        Ok(sqlx::query_scalar(REFUNDED_TOTAL)
            .bind(account)
            .bind(original_ref)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Makes open payments due now, so the lane's next unit settles them.
    pub async fn make_due(
        &self,
        fence: &Fence,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "UPDATE payments SET next_check_at = ?1
             WHERE id IN (SELECT value FROM json_each(?2))
               AND account = ?3
               AND state IN ('pending', 'in_progress', 'reversing')
               AND (next_check_at IS NULL OR next_check_at > ?1)",
        )
        .bind(to_db(now))
        .bind(serde_json::to_string(ids).unwrap_or_default())
        .bind(&fence.account)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `(id, out_trade_no)` of the payments of `account` created in `[from, to]`.
    pub async fn payments_created_in(
        &self,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(i64, String)>, LedgerError> {
        Ok(sqlx::query_as(PAYMENTS_CREATED_IN)
            .bind(account)
            .bind(to_db(from))
            .bind(to_db(to))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records each finding not recorded yet (open or resolved), all in one fenced
    /// transaction: repeated sweeps do not report the same thing twice. Returns the indexes of
    /// the findings newly recorded.
    pub async fn record_sweep_discrepancies(
        &self,
        fence: &Fence,
        findings: &[SweepDiscrepancy],
        now: DateTime<Utc>,
    ) -> Result<Vec<usize>, LedgerError> {
        if findings.is_empty() {
            return Ok(Vec::new());
        }
        let now = to_db(now);
        let mut tx = self.fenced(fence).await?;
        let mut recorded = Vec::new();
        for (i, f) in findings.iter().enumerate() {
            let sql = match f.payment {
                Some(_) => RECORD_PAYMENT_FINDING,
                None => RECORD_RECORD_FINDING,
            };
            let done = sqlx::query(sql)
                .bind(f.payment.map(|p| p.0))
                .bind(&fence.account)
                .bind(f.found.kind.as_str())
                .bind(&f.found.detail)
                .bind(f.found.evidence.to_string())
                .bind(&now)
                .bind(&f.subject)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                recorded.push(i);
            }
        }
        tx.commit().await?;
        Ok(recorded)
    }
}
