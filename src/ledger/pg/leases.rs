//! Account leases and pauses on PostgreSQL, with the SQLite ledger's contract
//! (`ledger::account_lease`): one holder per account, a token that grows with every
//! acquisition, a heartbeat refused once another holder took over, and fenced writes.
//!
//! Acquiring is one upsert whose `WHERE` admits a free, expired or own lease: two replicas
//! racing for an account serialise on the lease row, and the one that waited sees the other's
//! fresh lease and is told who holds it. Leases are timed on the server's clock
//! (`pg::on_server_clock`): replicas on hosts whose clocks disagree agree on when one expires. A fenced write locks the lease row `FOR SHARE` in its
//! own transaction, so no acquisition can take the account between the check and the commit.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{PgLedger, ms, on_server_clock};
use crate::ledger::account_lease::{heartbeat_age_ms, lanes_sql};
use crate::ledger::{AccountHolder, Acquired, Fence, LaneRow, LedgerError};

/// `ttl` in milliseconds, as the statements add it to a time on the server's clock.
fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Times as the SQLite ledger shows them in `AccountHolder` (fixed-width UTC text).
fn shown(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(crate::ledger::time::to_db)
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::acquire_account`].
    pub async fn acquire_account(
        &self,
        account: &str,
        holder: &str,
        ttl: std::time::Duration,
        pace_per_minute: u32,
        now: DateTime<Utc>,
    ) -> Result<Result<Acquired, AccountHolder>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: a lease row locked by a fenced write in flight (`fenced`) is busy, and
        // waiting on it would hang this lane for as long as that writer, perhaps a replica
        // frozen mid-transaction until the server ends its session
        // (`idle_in_transaction_session_timeout`, `pg::bounded_idle_transactions`). Busy reads as held.
        let locked = sqlx::query(
            "SELECT holder FROM account_leases WHERE account = $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        let previous: Option<String> = match locked {
            Some(r) => r.get("holder"),
            None => {
                if let Some(busy) = self.holder_of(&mut tx, account).await? {
                    tx.rollback().await?;
                    return Ok(Err(busy));
                }
                None
            }
        };
        // Times on the server's clock, so a replica whose clock runs ahead cannot take a lease
        // renewed on time, nor one whose clock lags hold a lease it let run out.
        let taken = sqlx::query(concat!(
            "INSERT INTO account_leases AS l
                 (account, holder, token, acquired_at, heartbeat_at, expires_at, pace_per_minute)
             SELECT $1, $2, 1, t.now, t.now, t.now + $4 * interval '1 millisecond', $5
             FROM (SELECT ",
            on_server_clock!("3", "6"),
            " AS now) t
             ON CONFLICT (account) DO UPDATE SET
                 holder = $2, token = l.token + 1, acquired_at = excluded.acquired_at,
                 heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at,
                 pace_per_minute = $5
             WHERE l.holder IS NULL OR l.expires_at <= excluded.acquired_at OR l.holder = $2
             RETURNING token, next_call_at"
        ))
        .bind(account)
        .bind(holder)
        .bind(now)
        .bind(ttl_ms(ttl))
        .bind(i64::from(pace_per_minute))
        .bind((self.clock)())
        .fetch_optional(&mut *tx)
        .await?;
        let answer = match taken {
            Some(r) => Ok(Acquired {
                fence: Fence {
                    account: account.to_string(),
                    holder: holder.to_string(),
                    token: r.get("token"),
                },
                next_call_at: r.get("next_call_at"),
                taken_over: previous.is_some_and(|p| p != holder),
            }),
            // The upsert met the row and its `WHERE` refused it: the row is there.
            None => Err(self.holder_of(&mut tx, account).await?.ok_or_else(|| {
                LedgerError::Corrupt {
                    column: "account_leases.account",
                    value: account.to_string(),
                }
            })?),
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// Who holds `account` (a row, locked or not), if it has a lease row.
    async fn holder_of(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        account: &str,
    ) -> Result<Option<AccountHolder>, LedgerError> {
        let row = sqlx::query(
            "SELECT holder, heartbeat_at, expires_at FROM account_leases WHERE account = $1",
        )
        .bind(account)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(|r| AccountHolder {
            holder: r.get::<Option<String>, _>("holder").unwrap_or_default(),
            heartbeat_at: shown(r.get("heartbeat_at")),
            expires_at: shown(r.get("expires_at")),
        }))
    }

    /// As [`crate::ledger::Ledger::renew_account`].
    pub async fn renew_account(
        &self,
        fence: &Fence,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(concat!(
            "UPDATE account_leases SET heartbeat_at = t.now,
                 expires_at = t.now + $2 * interval '1 millisecond'
             FROM (SELECT ",
            on_server_clock!("1", "6"),
            " AS now) t
             WHERE account = $3 AND holder = $4 AND token = $5"
        ))
        .bind(now)
        .bind(ttl_ms(ttl))
        .bind(&fence.account)
        .bind(&fence.holder)
        .bind(fence.token)
        .bind((self.clock)())
        .execute(&self.beats)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// As [`crate::ledger::Ledger::release_account`].
    pub async fn release_account(
        &self,
        fence: &Fence,
        next_call_at: Option<DateTime<Utc>>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE account_leases SET holder = NULL, expires_at = NULL, next_call_at = $1
             WHERE account = $2 AND holder = $3 AND token = $4",
        )
        .bind(next_call_at.map(ms))
        .bind(&fence.account)
        .bind(&fence.holder)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A write transaction for the fence's account, or [`LedgerError::FencedOut`] when the
    /// lease is no longer the fence's. The lease row stays locked `FOR SHARE` until the
    /// transaction ends: an acquisition waits for it, and then sees what it wrote.
    pub(super) async fn fenced(
        &self,
        fence: &Fence,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT token FROM account_leases
             WHERE account = $1 AND holder = $2 AND token = $3 FOR SHARE",
        )
        .bind(&fence.account)
        .bind(&fence.holder)
        .bind(fence.token)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            tx.rollback().await?;
            return Err(LedgerError::FencedOut {
                account: fence.account.clone(),
                token: fence.token,
            });
        }
        Ok(tx)
    }

    /// As [`crate::ledger::Ledger::pause_account`]: in the ledger, so every replica honours
    /// it; fenced, so a holder that lost the account cannot pause the new holder.
    pub async fn pause_account(
        &self,
        fence: &Fence,
        until: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.fenced(fence).await?;
        sqlx::query(
            "INSERT INTO account_pauses AS p (account, paused_until, reason, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (account) DO UPDATE SET
                 paused_until = GREATEST(p.paused_until, excluded.paused_until),
                 reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(&fence.account)
        .bind(ms(until))
        .bind(reason)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// As [`crate::ledger::Ledger::paused_accounts`].
    pub async fn paused_accounts(&self, now: DateTime<Utc>) -> Result<Vec<String>, LedgerError> {
        Ok(sqlx::query_scalar(
            "SELECT account FROM account_pauses WHERE paused_until > $1 ORDER BY account",
        )
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?)
    }
}

impl PgLedger {
    /// As [`crate::ledger::Ledger::lanes`]: the SQLite ledger's statement (the due backlog an
    /// index range of `payments_due_by_account`).
    /// A lease is shown held until it expires on the server's clock, as leases are timed (and
    /// its heartbeat's age is counted on it); the due backlog is counted at `now`, as payments
    /// are scheduled on the replicas' clocks.
    pub async fn lanes(&self, now: DateTime<Utc>) -> Result<Vec<LaneRow>, LedgerError> {
        let now = ms(now);
        let on_server: DateTime<Utc> =
            sqlx::query_scalar(concat!("SELECT ", on_server_clock!("1", "2")))
                .bind(now)
                .bind((self.clock)())
                .fetch_one(&self.pool)
                .await?;
        let sql = super::queries::pg_sql(&lanes_sql(""));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let expires_at: Option<DateTime<Utc>> = r.get("expires_at");
                let live = expires_at.is_some_and(|e| e > on_server);
                let beat: Option<DateTime<Utc>> = r.get("heartbeat_at");
                LaneRow {
                    account: r.get("account"),
                    provider: r.get("provider"),
                    holder: r.get::<Option<String>, _>("holder").filter(|_| live),
                    token: r.get("token"),
                    heartbeat_at: shown(beat),
                    heartbeat_age_ms: heartbeat_age_ms(live, beat, on_server),
                    expires_at: shown(expires_at),
                    pace_per_minute: r.get("pace_per_minute"),
                    due: r.get("due"),
                    paused_until: shown(r.get("paused_until")),
                }
            })
            .collect())
    }
}
