//! Account leases: one process's lane works a merchant account at a time (docs/ARCHITECTURE.md
//! §4, "Lanes"). A lease has a holder, an expiry pushed forward by the lane's heartbeat, and a
//! fencing token that grows with every acquisition. Every write for the account's payments
//! opens its transaction with [`SqliteLedger::fenced`], which refuses it unless the token is still
//! the writer's: a process that stalled past its lease (SIGSTOP, a VM pause, a partition) and
//! woke up after another took the account over writes nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::time::to_db;
use super::{LedgerError, SqliteLedger};

/// What a lane holds while it works an account: the proof its writes present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub account: String,
    pub holder: String,
    pub token: i64,
}

/// An account taken: the fence, and when the previous holder's pacer allowed its next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    pub fence: Fence,
    pub next_call_at: Option<DateTime<Utc>>,
    /// Taken from another holder whose lease ran out (it did not release it).
    pub taken_over: bool,
}

/// Who holds an account, as the ledger says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountHolder {
    pub holder: String,
    pub heartbeat_at: Option<String>,
    pub expires_at: Option<String>,
}

/// One account's lane as `ledger stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneRow {
    pub account: String,
    pub provider: Option<String>,
    /// `None` when no process works the account.
    pub holder: Option<String>,
    pub token: i64,
    pub heartbeat_at: Option<String>,
    pub expires_at: Option<String>,
    pub pace_per_minute: Option<i64>,
    /// Open (and watched) payments whose next check is due now.
    pub due: i64,
    pub paused_until: Option<String>,
    /// Milliseconds since the last heartbeat of a live lease, on the clock leases are timed on
    /// (the PostgreSQL server's: a host whose clock is off still shows the true age); `None`
    /// when no process holds the account.
    pub heartbeat_age_ms: Option<i64>,
}

/// A live lease's heartbeat age at `now` (both on the clock leases are timed on).
pub(super) fn heartbeat_age_ms(
    live: bool,
    heartbeat_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<i64> {
    heartbeat_at
        .filter(|_| live)
        .map(|beat| (now - beat).num_milliseconds().max(0))
}

fn until(now: DateTime<Utc>, ttl: std::time::Duration) -> String {
    to_db(now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(1)))
}

/// Every account with payments (`payment_counts`) or a lease, with its lease, due backlog
/// (?1: now) and pause; the backlog read through `due_index` (SQLite's
/// `INDEXED BY payments_due_by_account`; PostgreSQL has no such clause).
pub(super) fn lanes_sql(due_index: &str) -> String {
    LANES_SQL.replace("{due_index}", due_index)
}

/// SQLite's choice of index for the due backlog.
pub(super) const DUE_INDEX: &str = "INDEXED BY payments_due_by_account";

const LANES_SQL: &str = "WITH accounts AS (
         SELECT account, MIN(provider) AS provider FROM payment_counts GROUP BY account
         UNION SELECT account, NULL FROM account_leases
         WHERE account NOT IN (SELECT account FROM payment_counts))
     SELECT a.account, a.provider, l.holder, COALESCE(l.token, 0) AS token,
            l.heartbeat_at, l.expires_at, l.pace_per_minute,
            (SELECT COUNT(*) FROM payments {due_index}
              WHERE account = a.account AND next_check_at <= ?1
                AND state IN ('pending', 'in_progress', 'reversing',
                              'succeeded', 'partially_refunded', 'failed')) AS due,
            p.paused_until
     FROM accounts a
     LEFT JOIN account_leases l ON l.account = a.account
     LEFT JOIN account_pauses p ON p.account = a.account AND p.paused_until > ?1
     ORDER BY a.account";

impl SqliteLedger {
    /// Takes `account` for `holder` unless another holder's lease is still live. Returns the
    /// fence (with a token one above the last one ever handed out for the account), or who
    /// holds it. A holder may take its own lease again (one whose release failed, e.g. on a
    /// full disk): within a process the lane slot is what keeps two lanes apart.
    pub async fn acquire_account(
        &self,
        account: &str,
        holder: &str,
        ttl: std::time::Duration,
        pace_per_minute: u32,
        now: DateTime<Utc>,
    ) -> Result<Result<Acquired, AccountHolder>, LedgerError> {
        let now_s = to_db(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let previous: Option<String> =
            sqlx::query_scalar("SELECT holder FROM account_leases WHERE account = ?")
                .bind(account)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        let taken = sqlx::query(
            "INSERT INTO account_leases
                 (account, holder, token, acquired_at, heartbeat_at, expires_at, pace_per_minute)
             VALUES (?1, ?2, 1, ?3, ?3, ?4, ?5)
             ON CONFLICT (account) DO UPDATE SET
                 holder = ?2, token = account_leases.token + 1, acquired_at = ?3,
                 heartbeat_at = ?3, expires_at = ?4, pace_per_minute = ?5
             WHERE account_leases.holder IS NULL OR account_leases.expires_at <= ?3
                OR account_leases.holder = ?2
             RETURNING token, next_call_at",
        )
        .bind(account)
        .bind(holder)
        .bind(&now_s)
        .bind(until(now, ttl))
        .bind(i64::from(pace_per_minute))
        .fetch_optional(&mut *tx)
        .await?;
        let answer = match taken {
            Some(r) => Ok(Acquired {
                fence: Fence {
                    account: account.to_string(),
                    holder: holder.to_string(),
                    token: r.get("token"),
                },
                next_call_at: r
                    .get::<Option<String>, _>("next_call_at")
                    .as_deref()
                    .and_then(super::time::from_db),
                taken_over: previous.is_some_and(|p| p != holder),
            }),
            None => {
                let r = sqlx::query(
                    "SELECT holder, heartbeat_at, expires_at FROM account_leases WHERE account = ?",
                )
                .bind(account)
                .fetch_one(&mut *tx)
                .await?;
                Err(AccountHolder {
                    holder: r.get::<Option<String>, _>("holder").unwrap_or_default(),
                    heartbeat_at: r.get("heartbeat_at"),
                    expires_at: r.get("expires_at"),
                })
            }
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// The heartbeat: pushes the lease's expiry forward. `false` when the lease is no longer
    /// the fence's (it expired and another process took the account): the lane must stop.
    pub async fn renew_account(
        &self,
        fence: &Fence,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE account_leases SET heartbeat_at = ?1, expires_at = ?2
             WHERE account = ?3 AND holder = ?4 AND token = ?5",
        )
        .bind(to_db(now))
        .bind(until(now, ttl))
        .bind(&fence.account)
        .bind(&fence.holder)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the account back (the token stays, so the next holder's is higher), with when
    /// this holder's pacer allowed its next call.
    pub async fn release_account(
        &self,
        fence: &Fence,
        next_call_at: Option<DateTime<Utc>>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE account_leases SET holder = NULL, expires_at = NULL, next_call_at = ?
             WHERE account = ? AND holder = ? AND token = ?",
        )
        .bind(next_call_at.map(to_db))
        .bind(&fence.account)
        .bind(&fence.holder)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Opens a write transaction for the fence's account, or refuses with
    /// [`LedgerError::FencedOut`] when the account's lease is no longer the fence's. The check
    /// and the writes that follow are one `BEGIN IMMEDIATE` transaction, so no acquisition can
    /// slip in between.
    pub(super) async fn fenced(
        &self,
        fence: &Fence,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, LedgerError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT token FROM account_leases WHERE account = ? AND holder = ? AND token = ?",
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

    /// Every account that has payments or a lease: its lane (holder, heartbeat, pace), due
    /// backlog and pause. The due backlog is counted in `payments_due_by_account`: O(due).
    pub async fn lanes(&self, now: DateTime<Utc>) -> Result<Vec<LaneRow>, LedgerError> {
        let now_s = to_db(now);
        let rows = sqlx::query(sqlx::AssertSqlSafe(lanes_sql(DUE_INDEX)))
            .bind(&now_s)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let expires_at: Option<String> = r.get("expires_at");
                let live = expires_at.as_deref().is_some_and(|e| e > now_s.as_str());
                let heartbeat_at: Option<String> = r.get("heartbeat_at");
                let beat = heartbeat_at.as_deref().and_then(super::time::from_db);
                LaneRow {
                    account: r.get("account"),
                    provider: r.get("provider"),
                    holder: r.get::<Option<String>, _>("holder").filter(|_| live),
                    token: r.get("token"),
                    heartbeat_at,
                    expires_at,
                    pace_per_minute: r.get("pace_per_minute"),
                    due: r.get("due"),
                    paused_until: r.get("paused_until"),
                    heartbeat_age_ms: heartbeat_age_ms(live, beat, now),
                }
            })
            .collect())
    }
}
