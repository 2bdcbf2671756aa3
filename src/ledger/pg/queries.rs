//! Read-only queries on PostgreSQL, with the SQLite ledger's contract (`ledger::queries`,
//! `ledger::gauges`): the listing, `ledger stats` and the metrics' gauges. The statements are
//! the SQLite ledger's own where the SQL is portable ([`pg_sql`] renumbers their parameters);
//! counts come from the trigger-kept tables, never from counting the ledger.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::intake::payment_row;
use super::{PgLedger, ms};
use crate::domain::PaymentState;
use crate::ledger::gauges::{OLDEST_OPEN_BY_ACCOUNT, OPEN_DISCREPANCIES, PAYMENTS_BY_STATE};
use crate::ledger::queries::{
    OPEN_DISCREPANCY_TOTAL, PAUSES_IN_FORCE, STATS_BY_STATE, list_sql, listed, oldest_open_sql,
};
use crate::ledger::time::to_db;
use crate::ledger::{LedgerError, LedgerGauges, ListFilter, PaymentRow, StateCount, Stats};

/// A SQLite statement written with numbered parameters (`?1`, `?2`) in PostgreSQL's spelling
/// (`$1`, `$2`). Only numbered ones: a bare `?` has no PostgreSQL equivalent.
pub(super) fn pg_sql(sqlite: &str) -> String {
    let mut out = String::with_capacity(sqlite.len());
    let mut chars = sqlite.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' {
            debug_assert!(
                chars.peek().is_some_and(char::is_ascii_digit),
                "a bare ? in {sqlite}"
            );
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::for_each_payment`]: rows stream from the server.
    pub async fn for_each_payment(
        &self,
        filter: &ListFilter,
        mut f: impl FnMut(PaymentRow) -> std::io::Result<()>,
    ) -> Result<(), LedgerError> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(pg_sql(&list_sql())))
            .bind(filter.state.map(PaymentState::as_str))
            .bind(filter.account.as_deref())
            .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            if !listed(f(payment_row(&r)))? {
                break;
            }
        }
        Ok(())
    }

    /// As [`crate::ledger::Ledger::stats`].
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, LedgerError> {
        let by_state = sqlx::query(STATS_BY_STATE)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| StateCount {
                account: r.get("account"),
                state: r.get("state"),
                count: r.get("n"),
            })
            .collect();
        let oldest_open = sqlx::query(sqlx::AssertSqlSafe(oldest_open_sql()))
            .fetch_optional(&self.pool)
            .await?
            .map(|r| payment_row(&r));
        let (runs, gateway_calls) = self.run_totals().await?;
        let open_discrepancies: i64 = sqlx::query_scalar(OPEN_DISCREPANCY_TOTAL)
            .fetch_one(&self.pool)
            .await?;
        let paused_accounts = sqlx::query_as(sqlx::AssertSqlSafe(pg_sql(PAUSES_IN_FORCE)))
            .bind(ms(now))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(
                |(account, until, reason): (String, DateTime<Utc>, String)| {
                    (account, to_db(until), reason)
                },
            )
            .collect();
        Ok(Stats {
            by_state,
            oldest_open,
            gateway_calls,
            runs,
            open_discrepancies,
            paused_accounts,
            lanes: self.lanes(now).await?,
        })
    }

    /// As [`crate::ledger::Ledger::gauges`].
    pub async fn gauges(&self, now: DateTime<Utc>) -> Result<LedgerGauges, LedgerError> {
        let triples = |rows: Vec<sqlx::postgres::PgRow>| -> Vec<(String, String, i64)> {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        };
        let payments = triples(sqlx::query(PAYMENTS_BY_STATE).fetch_all(&self.pool).await?);
        let open_discrepancies = triples(
            sqlx::query(OPEN_DISCREPANCIES)
                .fetch_all(&self.pool)
                .await?,
        );
        let oldest_open = sqlx::query(OLDEST_OPEN_BY_ACCOUNT)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("account")?, r.try_get("oldest")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(LedgerGauges {
            payments,
            open_discrepancies,
            oldest_open,
            lanes: self.lanes(now).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbered_parameters_are_renumbered_in_postgresql_spelling() {
        assert_eq!(
            super::pg_sql("SELECT ?1 WHERE a = ?12 OR ?2 IS NULL"),
            "SELECT $1 WHERE a = $12 OR $2 IS NULL"
        );
    }
}
