//! Registering payments and reading them on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::intake`, `ledger::queries`): all or nothing, idempotent on (account, kind,
//! out_trade_no), a conflict with different details rolls the batch back; `pay`'s held row;
//! rows read back in the SQLite ledger's shapes (times as its fixed-width UTC text).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::claim::claimed;
use super::{PgLedger, ms};
use crate::domain::{PayType, ProviderRef};
use crate::ledger::claim::CLAIMED_COLUMNS;
use crate::ledger::time::to_db;
use crate::ledger::{Claimed, EventRow, IntakeReport, LedgerError, NewPayment, PaymentRow};

const PAYMENT_COLUMNS: &str = "id, account, provider, kind, out_trade_no, provider_ref,
     original_ref, pay_type, amount, currency, state, provider_code, attempts, next_check_at,
     created_at, updated_at";

pub(super) fn payment_row(r: &PgRow) -> PaymentRow {
    let time = |c: &str| to_db(r.get::<DateTime<Utc>, _>(c));
    PaymentRow {
        id: r.get("id"),
        account: r.get("account"),
        provider: r.get("provider"),
        kind: r.get("kind"),
        out_trade_no: r.get("out_trade_no"),
        provider_ref: r.get("provider_ref"),
        original_ref: r.get("original_ref"),
        pay_type: r.get("pay_type"),
        amount: r.get("amount"),
        currency: r.get("currency"),
        state: r.get("state"),
        provider_code: r.get("provider_code"),
        attempts: r.get("attempts"),
        next_check_at: r
            .get::<Option<DateTime<Utc>>, _>("next_check_at")
            .map(to_db),
        created_at: time("created_at"),
        updated_at: time("updated_at"),
    }
}

/// As `intake::insert_new`: inserts `p` as a new `pending` payment with its `registered`
/// event; `None` when its key is already in the ledger. `hold`: a lease owner and the time
/// until which the row is held by it and not due (a payment whose creation call is in flight).
async fn insert_new(
    tx: &mut sqlx::PgConnection,
    p: &NewPayment,
    now: DateTime<Utc>,
    hold: Option<(&str, DateTime<Utc>)>,
) -> Result<Option<i64>, LedgerError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref, pay_type,
                               amount, currency, state, next_check_at, created_at,
                               registered_at, updated_at, expires_at, lease_owner,
                               lease_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', COALESCE($13, $9), $10, $9, $9,
                 $11, $12, $13)
         ON CONFLICT (account, kind, out_trade_no) DO NOTHING
         RETURNING id",
    )
    .bind(p.account.as_str())
    .bind(p.provider.as_str())
    .bind(p.kind.as_str())
    .bind(p.out_trade_no.as_str())
    .bind(p.provider_ref.as_ref().map(ProviderRef::as_str))
    .bind(p.pay_type.as_ref().map(PayType::as_str))
    .bind(p.amount.minor)
    .bind(p.amount.currency.as_str())
    .bind(ms(now))
    .bind(ms(p.created_at))
    .bind(p.expires_at.map(ms))
    .bind(hold.map(|(owner, _)| owner))
    .bind(hold.map(|(_, until)| ms(until)))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = inserted {
        sqlx::query(
            "INSERT INTO events (payment_id, at, kind, to_state, message, evidence)
             VALUES ($1, $2, 'registered', 'pending', $3, '{}')",
        )
        .bind(id)
        .bind(ms(now))
        .bind(format!("registered {} {}", p.amount, p.kind.as_str()))
        .execute(&mut *tx)
        .await?;
    }
    Ok(inserted)
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::register`].
    pub async fn register(
        &self,
        batch: &[NewPayment],
        now: DateTime<Utc>,
    ) -> Result<IntakeReport, LedgerError> {
        let mut report = IntakeReport::default();
        let mut tx = self.pool.begin().await?;
        for (i, p) in batch.iter().enumerate() {
            if let Some(id) = insert_new(&mut tx, p, now, None).await? {
                report.inserted.push((i, id));
                continue;
            }
            let row = sqlx::query(
                "SELECT id, amount, currency, provider_ref, pay_type FROM payments
                 WHERE account = $1 AND kind = $2 AND out_trade_no = $3",
            )
            .bind(p.account.as_str())
            .bind(p.kind.as_str())
            .bind(p.out_trade_no.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let stored = crate::ledger::intake::Stored {
                amount: row.get("amount"),
                currency: row.get("currency"),
                provider_ref: row.get("provider_ref"),
                pay_type: row.get("pay_type"),
            };
            match stored.differences(p) {
                None => report.already_present.push((i, row.get("id"))),
                Some(why) => report.conflicts.push((i, why)),
            }
        }
        if report.conflicts.is_empty() {
            tx.commit().await?;
            self.analyze_after_bulk_insert(report.inserted.len()).await;
        } else {
            tx.rollback().await?;
            report.inserted.clear();
        }
        Ok(report)
    }

    /// Statistics for the planner after a large registration (an import): `ANALYZE payments,
    /// events` when `inserted` is more than autovacuum's threshold (50 rows and a tenth of the
    /// table as last analyzed), i.e. now rather than at autovacuum's next round (up to a
    /// minute). Without statistics, on a fresh ledger, the planner misjudges the claim of a
    /// sweep page's or a lookup's payments (`id IN (… UNION ALL …)`) as one row and runs it as
    /// a nested loop over every due payment: 5–6 s a claim at 1,600 payments, growing with
    /// the square of the table, where 1 ms does with statistics. A failure only warns: the
    /// payments are registered. (Found by `tests/lanes.rs` on PostgreSQL.)
    async fn analyze_after_bulk_insert(&self, inserted: usize) {
        if inserted <= 50 {
            return;
        }
        let analyze = async {
            // Only the tables' owner may analyze them (a replica's role may not: autovacuum's).
            let (analyzed, owner): (f32, bool) = sqlx::query_as(
                "SELECT GREATEST(reltuples, 0), pg_has_role(relowner, 'USAGE')
                 FROM pg_class WHERE oid = 'payments'::regclass",
            )
            .fetch_one(&self.pool)
            .await?;
            if owner && inserted as f64 > 50.0 + 0.1 * f64::from(analyzed) {
                sqlx::query("ANALYZE payments, events")
                    .execute(&self.pool)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        };
        if let Err(e) = analyze.await {
            tracing::warn!(error = %e, "could not analyze the payments table after a large registration");
        }
    }

    /// As [`crate::ledger::Ledger::register_held`]. A replica registering the same key at
    /// the same time waits for this one's commit and then writes nothing (`None`).
    pub async fn register_held(
        &self,
        p: &NewPayment,
        owner: &str,
        hold_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let Some(id) = insert_new(&mut tx, p, now, Some((owner, hold_until))).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let sql = format!("SELECT {CLAIMED_COLUMNS} FROM payments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let held = claimed(&row)?;
        tx.commit().await?;
        Ok(Some(held))
    }

    /// As [`crate::ledger::Ledger::payment`].
    pub async fn payment(&self, id: i64) -> Result<Option<PaymentRow>, LedgerError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| payment_row(&r)))
    }

    /// As [`crate::ledger::Ledger::find_payments`].
    pub async fn find_payments(&self, key: &str) -> Result<Vec<PaymentRow>, LedgerError> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments
             WHERE id = $1 OR out_trade_no = $2 ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.parse::<i64>().ok())
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(payment_row).collect())
    }

    /// As [`crate::ledger::Ledger::events`].
    pub async fn events(&self, payment_id: i64) -> Result<Vec<EventRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, from_state, to_state, provider_code, message, evidence
             FROM events WHERE payment_id = $1 ORDER BY id",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let raw: String = r.get("evidence");
                Ok(EventRow {
                    id: r.get("id"),
                    at: to_db(r.get("at")),
                    kind: r.get("kind"),
                    from_state: r.get("from_state"),
                    to_state: r.get("to_state"),
                    provider_code: r.get("provider_code"),
                    message: r.get("message"),
                    evidence: crate::ledger::queries::evidence(&raw)?,
                })
            })
            .collect()
    }
}
