//! Which payments are due: the units a lane works, the payments a sweep page is about, and the
//! input of window planning. Reading them takes no lock: the lane's account lease (see
//! `account_lease`) is what keeps two processes off the same payments.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::time::{from_db, to_db};
use super::{LedgerError, SqliteLedger};
use crate::domain::{
    AccountName, Currency, OutTradeNo, PayType, PaymentId, PaymentState, Provider, ProviderRef,
    RecordKind, RetryReason,
};

/// Which payments of one account a pass may work on.
#[derive(Debug, Clone, Default)]
pub struct ClaimScope {
    pub account: String,
    /// Ignore `next_check_at` (CLI `--all`): every open payment is due, and every settled one
    /// still under observation.
    pub ignore_schedule: bool,
    /// The claiming run: payments it already decided are not claimed again.
    pub run_id: Option<i64>,
}

impl ClaimScope {
    /// The payments of `account` due on their schedule.
    pub fn account(account: &str) -> Self {
        Self {
            account: account.to_string(),
            ..Self::default()
        }
    }
}

/// Where a lane's walk of its due payments stands: after the payment it read last, in the
/// walk's order (next check, then id; id alone with `--all`). Payments the walk passed and a
/// unit rescheduled to a later check are not met again in the same pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DuePosition {
    /// The last payment's `next_check_at` as `time::to_db` text; empty before the first unit.
    pub(super) next_check_at: String,
    pub(super) id: i64,
}

/// A due payment a lane works on: everything the engine needs to plan, call and decide.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: PaymentId,
    pub account: AccountName,
    pub provider: Provider,
    pub kind: RecordKind,
    pub out_trade_no: OutTradeNo,
    pub provider_ref: Option<ProviderRef>,
    pub pay_type: Option<PayType>,
    pub amount_minor: i64,
    pub currency: Currency,
    pub state: PaymentState,
    pub attempts: i64,
    pub retry_reason: Option<RetryReason>,
    pub retry_repeats: u32,
    pub created_at: DateTime<Utc>,
    pub registered_at: DateTime<Utc>,
    pub in_progress_since: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reversal_requested_at: Option<DateTime<Utc>>,
    /// When a gateway notification about it first arrived, if one did.
    pub notified_at: Option<DateTime<Utc>>,
    /// When a notification or a requested check last made it due, if one did.
    pub nudged_at: Option<DateTime<Utc>>,
}

fn corrupt(column: &'static str, value: &str) -> LedgerError {
    LedgerError::Corrupt {
        column,
        value: value.to_string(),
    }
}

fn time_col(r: &SqliteRow, column: &'static str) -> Result<Option<DateTime<Utc>>, LedgerError> {
    match r.get::<Option<String>, _>(column) {
        None => Ok(None),
        Some(s) => from_db(&s).map(Some).ok_or_else(|| corrupt(column, &s)),
    }
}

impl Claimed {
    pub(super) fn from_row(r: &SqliteRow) -> Result<Self, LedgerError> {
        Self::decode(r, time_col)
    }

    /// `r`, a row of `CLAIMED_COLUMNS` from either store: `time` reads a time column (text on
    /// SQLite, `timestamptz` on PostgreSQL); every other column has the same type on both.
    pub(super) fn decode<R>(
        r: &R,
        time: impl Fn(&R, &'static str) -> Result<Option<DateTime<Utc>>, LedgerError>,
    ) -> Result<Self, LedgerError>
    where
        R: Row,
        &'static str: sqlx::ColumnIndex<R>,
        for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        let text = |c: &'static str| -> String { r.get(c) };
        let required = |c: &'static str| time(r, c)?.ok_or_else(|| corrupt(c, ""));
        let provider: String = text("provider");
        let kind: String = text("kind");
        let state: String = text("state");
        let currency: String = text("currency");
        let retry_reason: Option<String> = r.get("retry_reason");
        Ok(Self {
            id: PaymentId(r.get("id")),
            account: AccountName::parse(&text("account"))
                .map_err(|_| corrupt("account", &text("account")))?,
            provider: provider
                .parse()
                .map_err(|_| corrupt("provider", &provider))?,
            kind: kind.parse().map_err(|_| corrupt("kind", &kind))?,
            out_trade_no: OutTradeNo::from_trusted(text("out_trade_no")),
            provider_ref: r
                .get::<Option<String>, _>("provider_ref")
                .map(ProviderRef::from_trusted),
            pay_type: match r.get::<Option<String>, _>("pay_type") {
                None => None,
                Some(p) => Some(PayType::parse(&p).map_err(|_| corrupt("pay_type", &p))?),
            },
            amount_minor: r.get("amount"),
            currency: Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?,
            state: state.parse().map_err(|_| corrupt("state", &state))?,
            attempts: r.get("attempts"),
            retry_reason: match retry_reason {
                None => None,
                Some(s) => Some(
                    serde_json::from_value(serde_json::Value::String(s.clone()))
                        .map_err(|_| corrupt("retry_reason", &s))?,
                ),
            },
            retry_repeats: r.get::<i64, _>("retry_repeats").clamp(0, u32::MAX as i64) as u32,
            created_at: required("created_at")?,
            registered_at: required("registered_at")?,
            in_progress_since: time(r, "in_progress_since")?,
            expires_at: time(r, "expires_at")?,
            reversal_requested_at: time(r, "reversal_requested_at")?,
            notified_at: time(r, "notified_at")?,
            nudged_at: time(r, "nudged_at")?,
        })
    }
}

#[cfg(test)]
impl Claimed {
    /// A pending 1000 HKD payment `O1` of account `hk` created at `t`, for unit tests; tests
    /// change the fields they care about.
    pub(crate) fn sample(provider: Provider, t: DateTime<Utc>) -> Self {
        Self {
            id: PaymentId(7),
            account: AccountName::parse("hk").expect("valid"),
            provider,
            kind: RecordKind::Payment,
            out_trade_no: OutTradeNo::from_trusted("O1".into()),
            provider_ref: None,
            pay_type: None,
            amount_minor: 1000,
            currency: Currency::parse("HKD").expect("valid"),
            state: PaymentState::Pending,
            attempts: 0,
            retry_reason: None,
            retry_repeats: 0,
            created_at: t,
            registered_at: t,
            in_progress_since: None,
            expires_at: None,
            reversal_requested_at: None,
            notified_at: None,
            nudged_at: None,
        }
    }
}

/// The due, unleased payments of account ?2 at time ?1 not yet decided by run ?3: open ones,
/// and settled ones still under observation (a `next_check_at` on a settled payment: ECPay
/// orders inside their `after_final_look_back`); none while the account is paused. Plain SQL
/// both stores run (PostgreSQL with `$n` for `?n`: `pg::claim`).
pub(super) const DUE_FILTER: &str = "(state IN ('pending', 'in_progress', 'reversing')
            OR (state IN ('succeeded', 'partially_refunded', 'failed')
                AND next_check_at IS NOT NULL))
       AND (?3 IS NULL OR last_run_id IS NULL OR last_run_id <> ?3)
       AND (lease_owner IS NULL OR lease_expires_at <= ?1)
       AND account = ?2
       AND NOT EXISTS (SELECT 1 FROM account_pauses WHERE account = ?2 AND paused_until > ?1)";

/// The next `?6` due payments after position (?4, ?5), in the order of
/// `payments_due_by_account (account, next_check_at, id)`: a unit costs O(log n + its size),
/// however many payments the ledger holds or the account has waiting for a later check.
/// With `--all` (`all`), every open payment is due whatever its schedule, so the walk is the
/// account's payments in id order (`payments_by_account`): a one-off operator pass that visits
/// them all anyway.
pub(super) fn due_unit_sql(all: bool) -> String {
    if all {
        format!(
            "SELECT {CLAIMED_COLUMNS}, next_check_at FROM payments INDEXED BY payments_by_account
             WHERE {DUE_FILTER} AND id > ?5 ORDER BY id LIMIT ?6"
        )
    } else {
        format!(
            "SELECT {CLAIMED_COLUMNS}, next_check_at FROM payments INDEXED BY payments_due_by_account
             WHERE {DUE_FILTER} AND next_check_at <= ?1 AND (next_check_at, id) > (?4, ?5)
             ORDER BY next_check_at, id LIMIT ?6"
        )
    }
}

/// `due_unit_sql` without a limit (?6 = -1) from the start (?4, ?5), QFPay payments only.
pub(super) fn for_each_due_sql(all: bool) -> String {
    format!(
        "SELECT created_at, provider_ref IS NOT NULL AS has_ref FROM ({})
         WHERE provider = 'qfpay'",
        due_unit_sql(all)
    )
}

pub(super) const CLAIMED_COLUMNS: &str =
    "id, account, provider, kind, out_trade_no, provider_ref, pay_type, amount,
     currency, state, attempts, retry_reason, retry_repeats, created_at, registered_at,
     in_progress_since, expires_at, reversal_requested_at, notified_at, nudged_at";

/// Payments of account ?1 created in [?2, ?3] (`payments_by_created`). Both stores.
pub(super) const COUNT_CREATED_BETWEEN: &str =
    "SELECT COUNT(*) FROM payments WHERE account = ?1 AND created_at >= ?2 AND created_at <= ?3";

/// Clears the holds of `pay` rows expired at ?1 (`payments_held`). Both stores.
pub(super) const REAP_EXPIRED_HOLDS: &str =
    "UPDATE payments SET lease_owner = NULL, lease_expires_at = NULL
     WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?1";

/// Clears the account leases expired at ?1 (the PostgreSQL ledger's own statement decides on
/// the server's clock).
const REAP_EXPIRED_ACCOUNT_LEASES: &str =
    "UPDATE account_leases SET holder = NULL, expires_at = NULL
     WHERE holder IS NOT NULL AND expires_at <= ?1";

/// Gives back every account lease holder ?1 holds. Both stores.
pub(super) const RELEASE_LEASES: &str =
    "UPDATE account_leases SET holder = NULL, expires_at = NULL WHERE holder = ?1";

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds `DUE_FILTER`'s parameters ?1–?3.
fn bind_due<'q>(q: Query<'q>, scope: &'q ClaimScope, now: DateTime<Utc>) -> Query<'q> {
    q.bind(to_db(now))
        .bind(scope.account.as_str())
        .bind(scope.run_id)
}

/// The due payments of account ?2 whose gateway id (JSON list ?4) or order number (?5) is
/// among a sweep page's keys: index lookups by key (`payments_by_ref`, the unique
/// `(account, kind, out_trade_no)`), then the rows by id. `NOT INDEXED` stops SQLite from
/// walking `payments_by_state` instead: that plan visited every due payment of the account for
/// each page, so a sweep of a backlog of n due payments cost O(n²) row visits.
pub(super) fn due_for_keys_sql(all: bool) -> String {
    let schedule = if all { "" } else { "AND next_check_at <= ?1" };
    format!(
        "SELECT {CLAIMED_COLUMNS} FROM payments NOT INDEXED
         WHERE id IN (
                 SELECT id FROM payments
                 WHERE account = ?2 AND provider_ref IN (SELECT value FROM json_each(?4))
                 UNION ALL
                 SELECT id FROM payments
                 WHERE account = ?2 AND kind IN ('payment', 'refund')
                   AND out_trade_no IN (SELECT value FROM json_each(?5)))
           AND {DUE_FILTER} {schedule}
         ORDER BY id"
    )
}

impl SqliteLedger {
    /// Up to `limit` due payments of the scope after `position`, and the position after them:
    /// the next unit of a lane. A lane walks its backlog in one order, so it visits each
    /// payment at most once per pass even with `--all`. Nothing is written: the lane's account
    /// lease is what keeps other processes off these payments, and its units run one after
    /// another.
    pub async fn due_unit(
        &self,
        scope: &ClaimScope,
        position: &DuePosition,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Claimed>, DuePosition), LedgerError> {
        let sql = due_unit_sql(scope.ignore_schedule);
        let rows = bind_due(sqlx::query(sqlx::AssertSqlSafe(sql)), scope, now)
            .bind(position.next_check_at.as_str())
            .bind(position.id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let next = match rows.last() {
            Some(r) => DuePosition {
                next_check_at: r
                    .get::<Option<String>, _>("next_check_at")
                    .unwrap_or_default(),
                id: r.get("id"),
            },
            None => position.clone(),
        };
        let unit = rows
            .iter()
            .map(Claimed::from_row)
            .collect::<Result<_, _>>()?;
        Ok((unit, next))
    }

    /// The due payments of the scope's account whose gateway id or order number is among the
    /// given keys: the payments a page of a window sweep is about.
    pub async fn due_for_keys(
        &self,
        scope: &ClaimScope,
        refs: &[&str],
        orders: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, LedgerError> {
        let sql = due_for_keys_sql(scope.ignore_schedule);
        let refs = serde_json::to_string(refs).unwrap_or_else(|_| "[]".into());
        let orders = serde_json::to_string(orders).unwrap_or_else(|_| "[]".into());
        let rows = bind_due(sqlx::query(sqlx::AssertSqlSafe(sql)), scope, now)
            .bind(refs)
            .bind(orders)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Claimed::from_row).collect()
    }

    /// Calls `f(created_at, has_gateway_id)` for every due QFPay payment of the scope, without
    /// loading them all: the input of window planning.
    pub async fn for_each_due(
        &self,
        scope: &ClaimScope,
        now: DateTime<Utc>,
        mut f: impl FnMut(DateTime<Utc>, bool),
    ) -> Result<(), LedgerError> {
        use futures::TryStreamExt;
        let sql = for_each_due_sql(scope.ignore_schedule);
        let mut rows = bind_due(sqlx::query(sqlx::AssertSqlSafe(sql)), scope, now)
            .bind("")
            .bind(0_i64)
            .bind(-1_i64)
            .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            let created: String = r.get("created_at");
            let created = from_db(&created).ok_or_else(|| corrupt("created_at", &created))?;
            f(created, r.get("has_ref"));
        }
        Ok(())
    }

    /// How many payments of `account` were created in `[from, to]` (any state): the ledger's
    /// side of a sweep's cost estimate.
    pub async fn count_created_between(
        &self,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        let n: i64 = sqlx::query_scalar(COUNT_CREATED_BETWEEN)
            .bind(account)
            .bind(to_db(from))
            .bind(to_db(to))
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// Clears leases whose holder stopped renewing them: account leases of a lane whose
    /// heartbeat stopped (a crashed or killed process), and payment rows a `pay` command held
    /// when it died. Acquisition already treats expired leases as free; this keeps `ledger
    /// stats`, `ledger list` and `sqlite3` readers from showing stale holders. A live lane's
    /// lease is never touched: its heartbeat keeps it in the future.
    pub async fn reap_expired_leases(&self, now: DateTime<Utc>) -> Result<u64, LedgerError> {
        let now = to_db(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(REAP_EXPIRED_HOLDS)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        let accounts = sqlx::query(REAP_EXPIRED_ACCOUNT_LEASES)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.rows_affected() + accounts.rows_affected())
    }

    /// Gives back every lease `holder` still holds (shutdown, or a lane abandoned on error).
    pub async fn release_leases(&self, holder: &str) -> Result<u64, LedgerError> {
        let done = sqlx::query(RELEASE_LEASES)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
