//! Registering payments and reading them on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::intake`, `ledger::queries`): all or nothing, idempotent on (account, kind,
//! out_trade_no), a conflict with different details rolls the batch back; `pay`'s held row;
//! rows read back in the SQLite ledger's shapes (times as its fixed-width UTC text).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::claim::claimed;
use super::{PgLedger, ms};
use crate::domain::{PayType, ProviderRef};
use crate::ledger::claim::CLAIMED_COLUMNS;
use crate::ledger::intake::Stored;
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

/// Rows one registering statement carries: a bounded message, and still a few round trips
/// for an import of 100,000 payments (one per payment before).
const ROWS_PER_STATEMENT: usize = 5_000;

/// A payment's key in the ledger.
type Key<'a> = (&'a str, &'a str, &'a str);

fn key(p: &NewPayment) -> Key<'_> {
    (p.account.as_str(), p.kind.as_str(), p.out_trade_no.as_str())
}

/// As `intake::insert_new`, for many payments in two statements: inserts each payment of
/// `batch` whose key is not in the ledger yet as a new `pending` payment with its `registered`
/// event, and returns the (index, id) of those inserted, in batch order, ids growing with the
/// index as on SQLite. A key twice in `batch` is inserted for its first index only. `hold`: a
/// lease owner and the time until which the rows are held by it and not due (a payment whose
/// creation call is in flight).
async fn insert_new(
    tx: &mut sqlx::PgConnection,
    batch: &[NewPayment],
    now: DateTime<Utc>,
    hold: Option<(&str, DateTime<Utc>)>,
) -> Result<Vec<(usize, i64)>, LedgerError> {
    let text = |f: fn(&NewPayment) -> &str| batch.iter().map(f).collect::<Vec<_>>();
    let rows = sqlx::query(
        "INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref, pay_type,
                               amount, currency, state, next_check_at, created_at,
                               registered_at, updated_at, expires_at, lease_owner,
                               lease_expires_at)
         SELECT account, provider, kind, out_trade_no, provider_ref, pay_type, amount, currency,
                'pending', COALESCE($13, $11), created_at, $11, $11, expires_at, $12, $13
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::int8[], $8::text[], $9::timestamptz[], $10::timestamptz[])
              WITH ORDINALITY AS t(account, provider, kind, out_trade_no, provider_ref, pay_type,
                                   amount, currency, created_at, expires_at, i)
         ORDER BY i
         ON CONFLICT (account, kind, out_trade_no) DO NOTHING
         RETURNING id, account, kind, out_trade_no",
    )
    .bind(text(|p| p.account.as_str()))
    .bind(text(|p| p.provider.as_str()))
    .bind(text(|p| p.kind.as_str()))
    .bind(text(|p| p.out_trade_no.as_str()))
    .bind(
        batch
            .iter()
            .map(|p| p.provider_ref.as_ref().map(ProviderRef::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|p| p.pay_type.as_ref().map(PayType::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|p| p.amount.minor).collect::<Vec<_>>())
    .bind(text(|p| p.amount.currency.as_str()))
    .bind(batch.iter().map(|p| ms(p.created_at)).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|p| p.expires_at.map(ms))
            .collect::<Vec<_>>(),
    )
    .bind(ms(now))
    .bind(hold.map(|(owner, _)| owner))
    .bind(hold.map(|(_, until)| ms(until)))
    .fetch_all(&mut *tx)
    .await?;
    let mut ids: HashMap<(String, String, String), i64> = rows
        .iter()
        .map(|r| {
            let k = (r.get("account"), r.get("kind"), r.get("out_trade_no"));
            (k, r.get("id"))
        })
        .collect();
    let mut inserted = Vec::with_capacity(ids.len());
    for (i, p) in batch.iter().enumerate() {
        let (a, k, o) = key(p);
        if let Some(id) = ids.remove(&(a.to_string(), k.to_string(), o.to_string())) {
            inserted.push((i, id));
        }
    }
    sqlx::query(
        "INSERT INTO events (payment_id, at, kind, to_state, message, evidence)
         SELECT id, $3, 'registered', 'pending', message, '{}'
         FROM UNNEST($1::int8[], $2::text[]) WITH ORDINALITY AS e(id, message, n)
         ORDER BY n",
    )
    .bind(inserted.iter().map(|(_, id)| *id).collect::<Vec<_>>())
    .bind(
        inserted
            .iter()
            .map(|(i, _)| {
                let p = &batch[*i];
                format!("registered {} {}", p.amount, p.kind.as_str())
            })
            .collect::<Vec<_>>(),
    )
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    Ok(inserted)
}

/// What the ledger holds for the keys of `batch` (in one statement).
async fn stored(
    tx: &mut sqlx::PgConnection,
    batch: &[&NewPayment],
) -> Result<HashMap<(String, String, String), (i64, Stored)>, LedgerError> {
    let keys: std::collections::BTreeSet<Key<'_>> = batch.iter().map(|p| key(p)).collect();
    let rows = sqlx::query(
        "SELECT p.id, p.account, p.kind, p.out_trade_no, p.amount, p.currency, p.provider_ref,
                p.pay_type
         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS k(account, kind, out_trade_no)
         JOIN payments p USING (account, kind, out_trade_no)",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let k = (r.get("account"), r.get("kind"), r.get("out_trade_no"));
            let s = Stored {
                amount: r.get("amount"),
                currency: r.get("currency"),
                provider_ref: r.get("provider_ref"),
                pay_type: r.get("pay_type"),
            };
            (k, (r.get("id"), s))
        })
        .collect())
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
        for (n, chunk) in batch.chunks(ROWS_PER_STATEMENT).enumerate() {
            let first = n * ROWS_PER_STATEMENT;
            let inserted = insert_new(&mut tx, chunk, now, None).await?;
            let again: Vec<(usize, &NewPayment)> = {
                let new: std::collections::HashSet<usize> =
                    inserted.iter().map(|&(i, _)| i).collect();
                chunk
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !new.contains(i))
                    .collect()
            };
            report
                .inserted
                .extend(inserted.into_iter().map(|(i, id)| (first + i, id)));
            if again.is_empty() {
                continue;
            }
            let held = stored(&mut tx, &again.iter().map(|(_, p)| *p).collect::<Vec<_>>()).await?;
            for (i, p) in again {
                let (a, k, o) = key(p);
                let Some((id, s)) = held.get(&(a.to_string(), k.to_string(), o.to_string())) else {
                    return Err(LedgerError::Corrupt {
                        column: "payments.out_trade_no",
                        value: o.to_string(),
                    });
                };
                match s.differences(p) {
                    None => report.already_present.push((first + i, *id)),
                    Some(why) => report.conflicts.push((first + i, why)),
                }
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
        let inserted = insert_new(
            &mut tx,
            std::slice::from_ref(p),
            now,
            Some((owner, hold_until)),
        );
        let Some(&(_, id)) = inserted.await?.first() else {
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
