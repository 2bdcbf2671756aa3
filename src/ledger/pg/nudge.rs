//! Asking for a payment to be checked now on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::nudge`): what a nudge answers and writes follows from the payment as it finds it
//! ([`Seen`], shared with SQLite). The payment's row is locked `FOR UPDATE` while the nudge
//! reads and writes it, as SQLite's `BEGIN IMMEDIATE` serialises writers: two notifications of
//! one payment at once mark it notified once, and the other is told it is a repeat.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::queries::pg_sql;
use super::{PgLedger, ms};
use crate::ledger::nudge::{Due, FIND_BY_ORDER, FIND_BY_REF, Seen};
use crate::ledger::{CheckRequested, LedgerError, Nudged};

impl Due<'_> {
    /// Due now (keeping an earlier time; never scheduling a payment that is not), marked
    /// notified when `notified`, and the event that says why.
    async fn write_pg(
        &self,
        tx: &mut sqlx::PgConnection,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        // Not `LEAST` alone: it ignores a NULL, and would schedule a payment that is not.
        sqlx::query(
            "UPDATE payments
             SET next_check_at = CASE WHEN next_check_at IS NULL THEN NULL
                                      ELSE LEAST(next_check_at, $1) END,
                 notified_at = CASE WHEN $2 THEN COALESCE(notified_at, $1) ELSE notified_at END,
                 nudged_at = $1
             WHERE id = $3",
        )
        .bind(ms(now))
        .bind(self.notified)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (payment_id, at, kind, message, evidence)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(ms(now))
        .bind(self.kind)
        .bind(self.message)
        .bind(&self.evidence)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

impl PgLedger {
    /// Payment `id` as a nudge finds it, its row locked until the transaction ends.
    async fn seen(
        tx: &mut sqlx::PgConnection,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Seen>, LedgerError> {
        let row = sqlx::query(
            "SELECT account, out_trade_no, state, next_check_at, notified_at FROM payments
             WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(row.map(|r| Seen {
            account: r.get("account"),
            out_trade_no: r.get("out_trade_no"),
            state: r.get("state"),
            later: r
                .get::<Option<DateTime<Utc>>, _>("next_check_at")
                .map(|t| t > now),
            notified: r.get::<Option<DateTime<Utc>>, _>("notified_at").is_some(),
        }))
    }

    /// As [`crate::ledger::Ledger::request_check`].
    pub async fn request_check(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<CheckRequested, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let Some(seen) = Self::seen(&mut tx, id, now).await? else {
            return Ok(CheckRequested::Unknown);
        };
        if let Some(answer) = seen.check_answer() {
            return Ok(answer);
        }
        Due::check_requested().write_pg(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(CheckRequested::DueNow {
            account: seen.account,
        })
    }

    /// As [`crate::ledger::Ledger::notified_paid`].
    pub async fn notified_paid(
        &self,
        id: i64,
        message: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Nudged, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let Some(seen) = Self::seen(&mut tx, id, now).await? else {
            return Ok(Nudged::Unknown);
        };
        if let Some(answer) = seen.notified_answer() {
            return Ok(answer);
        }
        Due::notified(message, evidence)
            .write_pg(&mut tx, id, now)
            .await?;
        if let Some(detail) = seen.contradiction() {
            // Once per (payment, kind, detail), open or resolved: the unique index
            // `discrepancies_once_per_payment`.
            sqlx::query(
                "INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at)
                 SELECT id, account, $1, $2, $3, $4 FROM payments WHERE id = $5
                 ON CONFLICT DO NOTHING",
            )
            .bind(crate::domain::DiscrepancyKind::NotifiedAfterFinal.as_str())
            .bind(detail)
            .bind(evidence.to_string())
            .bind(ms(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(seen.nudged())
    }

    /// As [`crate::ledger::Ledger::find_notified`].
    pub async fn find_notified(
        &self,
        account: &str,
        kind: crate::domain::RecordKind,
        out_trade_no: &str,
        provider_ref: Option<&str>,
    ) -> Result<Option<i64>, LedgerError> {
        if let Some(r) = provider_ref {
            let by_ref: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(pg_sql(FIND_BY_REF)))
                .bind(account)
                .bind(r)
                .fetch_optional(&self.pool)
                .await?;
            if by_ref.is_some() {
                return Ok(by_ref);
            }
        }
        Ok(
            sqlx::query_scalar(sqlx::AssertSqlSafe(pg_sql(FIND_BY_ORDER)))
                .bind(account)
                .bind(kind.as_str())
                .bind(out_trade_no)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// As [`crate::ledger::Ledger::writable`]: a write that matches no row, which PostgreSQL
    /// refuses when it would refuse any (a read-only transaction: a hot standby, a server or
    /// database made read-only, `default_transaction_read_only`; a role that may not update
    /// the ledger). It writes nothing and locks no row.
    pub async fn writable(&self) -> Result<(), LedgerError> {
        sqlx::query("UPDATE run_totals SET runs = runs WHERE false")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
