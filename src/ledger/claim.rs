//! Which payments are due: the units a lane works, the payments a sweep page is about, and the
//! input of window planning. Reading them takes no lock: the lane's account lease (see
//! `account_lease`) is what keeps two processes off the same payments.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::time::{from_db, to_db};
use super::{Ledger, LedgerError};
use crate::domain::{
    AccountName, Currency, OutTradeNo, PayType, PaymentId, PaymentState, Provider, ProviderRef,
    RecordKind, RetryReason,
};

/// Which payments a pass may work on.
#[derive(Debug, Clone, Default)]
pub struct ClaimScope {
    pub account: Option<String>,
    pub provider: Option<Provider>,
    /// Ignore `next_check_at` (CLI `--all`): every open payment is due, and every settled one
    /// still under observation.
    pub ignore_schedule: bool,
    /// The claiming run: payments it already decided are not claimed again.
    pub run_id: Option<i64>,
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
        let text = |c: &'static str| -> String { r.get(c) };
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
            created_at: time_col(r, "created_at")?.ok_or_else(|| corrupt("created_at", ""))?,
            registered_at: time_col(r, "registered_at")?
                .ok_or_else(|| corrupt("registered_at", ""))?,
            in_progress_since: time_col(r, "in_progress_since")?,
            expires_at: time_col(r, "expires_at")?,
            reversal_requested_at: time_col(r, "reversal_requested_at")?,
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
        }
    }
}

/// The due, unleased payments of a scope not yet decided by run ?7, in id order (parameters
/// ?1–?7): open ones, and settled ones still under observation (a `next_check_at` on a
/// settled payment: ECPay orders inside their `after_final_look_back`).
const DUE_WHERE: &str = "(state IN ('pending', 'in_progress', 'reversing')
            OR (state IN ('succeeded', 'partially_refunded', 'failed')
                AND next_check_at IS NOT NULL))
       AND (?7 IS NULL OR last_run_id IS NULL OR last_run_id <> ?7)
       AND id > ?1
       AND (?2 OR next_check_at <= ?3)
       AND (lease_owner IS NULL OR lease_expires_at <= ?3)
       AND (?4 IS NULL OR account = ?4)
       AND (?5 IS NULL OR provider = ?5)
       AND account NOT IN (SELECT account FROM account_pauses WHERE paused_until > ?3)";

pub(super) const CLAIMED_COLUMNS: &str =
    "id, account, provider, kind, out_trade_no, provider_ref, pay_type, amount,
     currency, state, attempts, retry_reason, retry_repeats, created_at, registered_at,
     in_progress_since, expires_at, reversal_requested_at";

/// Payments of account ?1 created in [?2, ?3] (`payments_by_created`).
pub(super) const COUNT_CREATED_BETWEEN: &str =
    "SELECT COUNT(*) FROM payments WHERE account = ? AND created_at >= ? AND created_at <= ?";

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_due<'q>(
    q: Query<'q>,
    scope: &'q ClaimScope,
    after: i64,
    limit: u32,
    now: DateTime<Utc>,
) -> Query<'q> {
    q.bind(after)
        .bind(scope.ignore_schedule)
        .bind(to_db(now))
        .bind(scope.account.as_deref())
        .bind(scope.provider.map(Provider::as_str))
        .bind(i64::from(limit))
        .bind(scope.run_id)
}

impl Ledger {
    /// Up to `limit` due payments of the scope with ids above `after`, in id order: the next
    /// unit of a lane (a lane walks its backlog in id order, so it visits each payment at most
    /// once per pass even with `--all`). Nothing is written: the lane's account lease is what
    /// keeps other processes off these payments, and its units run one after another.
    pub async fn due_unit(
        &self,
        scope: &ClaimScope,
        after: i64,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, LedgerError> {
        let sql = format!(
            "SELECT {CLAIMED_COLUMNS} FROM payments WHERE {DUE_WHERE} ORDER BY id LIMIT ?6"
        );
        let rows = bind_due(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            scope,
            after,
            limit,
            now,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Claimed::from_row).collect()
    }

    /// The due payments of `account` whose gateway id or order number is among the given
    /// keys: the payments a page of a window sweep is about.
    ///
    /// The candidates are found through the key indexes (`payments_by_ref`, and the unique
    /// `(account, kind, out_trade_no)`), and `NOT INDEXED` stops SQLite from walking
    /// `payments_by_state` instead: that plan visited every due payment of the account for
    /// each page, so a sweep of a backlog of n due payments cost O(n²) row visits
    /// (docs/PERFORMANCE.md).
    pub async fn due_for_keys(
        &self,
        scope: &ClaimScope,
        account: &str,
        refs: &[&str],
        orders: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, LedgerError> {
        let sql = format!(
            "SELECT {CLAIMED_COLUMNS} FROM payments NOT INDEXED
             WHERE id IN (
                     SELECT id FROM payments
                     WHERE account = ?8
                       AND provider_ref IN (SELECT value FROM json_each(?9))
                     UNION ALL
                     SELECT id FROM payments
                     WHERE account = ?8 AND kind IN ('payment', 'refund')
                       AND out_trade_no IN (SELECT value FROM json_each(?10)))
               AND {DUE_WHERE}
             ORDER BY id LIMIT ?6"
        );
        let refs = serde_json::to_string(refs).unwrap_or_else(|_| "[]".into());
        let orders = serde_json::to_string(orders).unwrap_or_else(|_| "[]".into());
        let rows = bind_due(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            scope,
            0,
            u32::MAX,
            now,
        )
        .bind(account)
        .bind(refs)
        .bind(orders)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Claimed::from_row).collect()
    }

    /// Calls `f(account, created_at, has_gateway_id)` for every due payment of the scope, in
    /// id order, without loading them all: the input of window planning.
    pub async fn for_each_due(
        &self,
        scope: &ClaimScope,
        now: DateTime<Utc>,
        mut f: impl FnMut(&str, DateTime<Utc>, bool),
    ) -> Result<(), LedgerError> {
        use futures::TryStreamExt;
        let sql = format!(
            "SELECT account, created_at, provider_ref IS NOT NULL AS has_ref FROM payments
             WHERE provider = 'qfpay' AND {DUE_WHERE} ORDER BY id LIMIT ?6"
        );
        let mut rows = bind_due(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            scope,
            0,
            u32::MAX,
            now,
        )
        .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            let created: String = r.get("created_at");
            let created = from_db(&created).ok_or_else(|| corrupt("created_at", &created))?;
            f(r.get("account"), created, r.get("has_ref"));
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
        let rows = sqlx::query(
            "UPDATE payments SET lease_owner = NULL, lease_expires_at = NULL
             WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?",
        )
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let accounts = sqlx::query(
            "UPDATE account_leases SET holder = NULL, expires_at = NULL
             WHERE holder IS NOT NULL AND expires_at <= ?",
        )
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.rows_affected() + accounts.rows_affected())
    }

    /// Gives back every lease `holder` still holds (shutdown, or a lane abandoned on error).
    pub async fn release_leases(&self, holder: &str) -> Result<u64, LedgerError> {
        let done = sqlx::query(
            "UPDATE account_leases SET holder = NULL, expires_at = NULL WHERE holder = ?",
        )
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
