//! Which payments are due, on PostgreSQL, with the SQLite ledger's contract (`ledger::claim`):
//! a lane's units in the order of `payments_due_by_account` (by id with `--all`), a sweep
//! page's payments by key, the input of window planning, and the reaping of dead leases.
//! Reading takes no lock, as on SQLite: the lane's account lease keeps other replicas off these
//! payments, and its writes are fenced by it (`pg::apply`).
//!
//! The due rule itself (`claim::DUE_FILTER`) and the simple statements are the SQLite ledger's
//! text with `$n` for its `?n`; only what differs in dialect is written here.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};

use super::{PgLedger, ms, on_server_clock};
use crate::ledger::claim::{
    CLAIMED_COLUMNS, COUNT_CREATED_BETWEEN, DUE_FILTER, REAP_EXPIRED_HOLDS, RELEASE_LEASES,
};
use crate::ledger::time::{from_db, to_db};
use crate::ledger::{ClaimScope, Claimed, DuePosition, LedgerError};

/// `sql`, written with SQLite's numbered parameters `?n`, with PostgreSQL's `$n`. Only for the
/// shared statements above, which hold no other `?`.
pub(super) fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}

/// A row of `CLAIMED_COLUMNS` (times are `timestamptz` here).
pub(super) fn claimed(r: &PgRow) -> Result<Claimed, LedgerError> {
    Claimed::decode(r, |r, c| Ok(r.get::<Option<DateTime<Utc>>, _>(c)))
}

/// As `claim::due_unit_sql`: the next $6 (all when NULL) due payments after position ($4, $5),
/// keyset-paged in `payments_due_by_account (account, next_check_at, id)` order; a NULL $4
/// (the start) is before every time. With `--all`, by id: PostgreSQL has no `INDEXED BY`, and
/// the generic plan a prepared statement may settle on after a few large accounts' units (one
/// plan for every account) walks the primary key, so a small account's unit reads every
/// payment of the ledger; the `--all` statements are therefore not kept prepared
/// (`unprepared`): each is planned for its account (`payments_by_account`, or the primary key
/// when the account is most of the ledger), for the cost of a parse per unit of a one-off pass.
fn due_unit_sql(all: bool) -> String {
    let due = numbered(DUE_FILTER);
    if all {
        format!(
            "SELECT {CLAIMED_COLUMNS}, next_check_at FROM payments
             WHERE {due} AND id > $5
             ORDER BY id LIMIT $6"
        )
    } else {
        format!(
            "SELECT {CLAIMED_COLUMNS}, next_check_at FROM payments
             WHERE {due} AND next_check_at <= $1
               AND (next_check_at, id) > (COALESCE($4, '-infinity'::timestamptz), $5)
             ORDER BY next_check_at, id LIMIT $6"
        )
    }
}

/// As `claim::due_for_keys_sql`: the due payments of account $2 whose gateway id (array $4) or
/// order number (array $5) is a page's, found by key (`payments_by_ref`, the unique
/// `(account, kind, out_trade_no)`).
fn due_for_keys_sql(all: bool) -> String {
    let due = numbered(DUE_FILTER);
    let schedule = if all { "" } else { "AND next_check_at <= $1" };
    format!(
        "SELECT {CLAIMED_COLUMNS} FROM payments
         WHERE id IN (
                 SELECT id FROM payments
                 WHERE account = $2 AND provider_ref IS NOT NULL
                   AND provider_ref = ANY($4::text[])
                 UNION ALL
                 SELECT id FROM payments
                 WHERE account = $2 AND kind IN ('payment', 'refund')
                   AND out_trade_no = ANY($5::text[]))
           AND {due} {schedule}
         ORDER BY id"
    )
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, PgArguments>;

/// `q`, planned for its parameters' values each time when `all` (see `due_unit_sql`).
fn unprepared(q: Query<'_>, all: bool) -> Query<'_> {
    q.persistent(!all)
}

/// Binds `DUE_FILTER`'s parameters $1–$3.
fn bind_due<'q>(q: Query<'q>, scope: &'q ClaimScope, now: DateTime<Utc>) -> Query<'q> {
    q.bind(ms(now))
        .bind(scope.account.as_str())
        .bind(scope.run_id)
}

/// A position's time as PostgreSQL compares it; `None` at the start.
fn position_time(p: &DuePosition) -> Result<Option<DateTime<Utc>>, LedgerError> {
    if p.next_check_at.is_empty() {
        return Ok(None);
    }
    from_db(&p.next_check_at)
        .map(|t| Some(ms(t)))
        .ok_or_else(|| LedgerError::Corrupt {
            column: "next_check_at",
            value: p.next_check_at.clone(),
        })
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::due_unit`].
    pub async fn due_unit(
        &self,
        scope: &ClaimScope,
        position: &DuePosition,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Claimed>, DuePosition), LedgerError> {
        let sql = due_unit_sql(scope.ignore_schedule);
        let q = unprepared(sqlx::query(sqlx::AssertSqlSafe(sql)), scope.ignore_schedule);
        let rows = bind_due(q, scope, now)
            .bind(position_time(position)?)
            .bind(position.id)
            .bind(Some(i64::from(limit)))
            .fetch_all(&self.pool)
            .await?;
        let next = match rows.last() {
            Some(r) => DuePosition {
                next_check_at: r
                    .get::<Option<DateTime<Utc>>, _>("next_check_at")
                    .map(to_db)
                    .unwrap_or_default(),
                id: r.get("id"),
            },
            None => position.clone(),
        };
        let unit = rows.iter().map(claimed).collect::<Result<_, _>>()?;
        Ok((unit, next))
    }

    /// As [`crate::ledger::Ledger::due_for_keys`].
    pub async fn due_for_keys(
        &self,
        scope: &ClaimScope,
        refs: &[&str],
        orders: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, LedgerError> {
        let sql = due_for_keys_sql(scope.ignore_schedule);
        let rows = bind_due(sqlx::query(sqlx::AssertSqlSafe(sql)), scope, now)
            .bind(refs)
            .bind(orders)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(claimed).collect()
    }

    /// As [`crate::ledger::Ledger::for_each_due`].
    pub async fn for_each_due(
        &self,
        scope: &ClaimScope,
        now: DateTime<Utc>,
        mut f: impl FnMut(DateTime<Utc>, bool),
    ) -> Result<(), LedgerError> {
        use futures::TryStreamExt;
        let sql = format!(
            "SELECT created_at, provider_ref IS NOT NULL AS has_ref FROM ({}) AS due
             WHERE provider = 'qfpay'",
            due_unit_sql(scope.ignore_schedule)
        );
        let q = unprepared(sqlx::query(sqlx::AssertSqlSafe(sql)), scope.ignore_schedule);
        let mut rows = bind_due(q, scope, now)
            .bind(None::<DateTime<Utc>>)
            .bind(0_i64)
            .bind(None::<i64>)
            .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            f(r.get("created_at"), r.get("has_ref"));
        }
        Ok(())
    }

    /// As [`crate::ledger::Ledger::count_created_between`].
    pub async fn count_created_between(
        &self,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(numbered(COUNT_CREATED_BETWEEN)))
            .bind(account)
            .bind(ms(from))
            .bind(ms(to))
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// As [`crate::ledger::Ledger::reap_expired_leases`]. A lease row a fenced write holds
    /// `FOR SHARE` is reaped once that write commits (the reaper waits for it).
    pub async fn reap_expired_leases(&self, now: DateTime<Utc>) -> Result<u64, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(numbered(REAP_EXPIRED_HOLDS)))
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        // The account leases on the server's clock, as they were timed (`leases`). Payment
        // holds (a lane's claim, `pay`'s creation hold) are times of the replicas' clocks,
        // reaped by every replica on its own: docs/ARCHITECTURE.md §8, "Clocks".
        let accounts = sqlx::query(concat!(
            "UPDATE account_leases SET holder = NULL, expires_at = NULL
             WHERE holder IS NOT NULL AND expires_at <= ",
            on_server_clock!("1", "2")
        ))
        .bind(now)
        .bind((self.clock)())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.rows_affected() + accounts.rows_affected())
    }

    /// As [`crate::ledger::Ledger::release_leases`].
    pub async fn release_leases(&self, holder: &str) -> Result<u64, LedgerError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(numbered(RELEASE_LEASES)))
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
