//! Read-only queries for the CLI (`ledger list|show|stats`).

use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{LedgerError, SqliteLedger};
use crate::domain::PaymentState;

/// A payment as the CLI prints it (docs/ARCHITECTURE.md §5 names these JSON fields).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PaymentRow {
    pub id: i64,
    pub account: String,
    pub provider: String,
    pub kind: String,
    pub out_trade_no: String,
    pub provider_ref: Option<String>,
    /// Refunds: the gateway id (QFPay `syssn`) of the payment they refund.
    pub original_ref: Option<String>,
    pub pay_type: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub state: String,
    pub provider_code: Option<String>,
    pub attempts: i64,
    pub next_check_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub(super) const PAYMENT_COLUMNS: &str = "id, account, provider, kind, out_trade_no, provider_ref, original_ref, pay_type, amount, currency, state, provider_code, attempts, next_check_at, created_at, updated_at";

impl PaymentRow {
    pub(super) fn from_row(r: &SqliteRow) -> Self {
        Self {
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
            next_check_at: r.get("next_check_at"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

/// One history entry of a payment.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EventRow {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub provider_code: Option<String>,
    pub message: Option<String>,
    /// What the gateway said, as received (secrets are never stored).
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
}

/// An event's stored evidence as JSON.
pub(super) fn evidence(raw: &str) -> Result<serde_json::Value, LedgerError> {
    serde_json::from_str(raw).map_err(|_| LedgerError::Corrupt {
        column: "events.evidence",
        value: raw.chars().take(80).collect(),
    })
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<PaymentState>,
    pub account: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StateCount {
    pub account: String,
    pub state: String,
    pub count: i64,
}

/// `ledger stats`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub by_state: Vec<StateCount>,
    /// The open payment registered longest ago, if any.
    pub oldest_open: Option<PaymentRow>,
    pub gateway_calls: i64,
    pub runs: i64,
    pub open_discrepancies: i64,
    /// (account, paused until, reason) for pauses still in force.
    pub paused_accounts: Vec<(String, String, String)>,
    /// Each account's lane: holder, heartbeat, pace, due backlog, pause.
    pub lanes: Vec<super::LaneRow>,
}

const OPEN_STATES: &str = "('pending', 'in_progress', 'reversing')";

/// The oldest open payment: the oldest of each (account, open state) that has any, by a seek
/// in `payments_by_account_state`, then the oldest of those.
pub(super) fn oldest_open_sql() -> String {
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id IN (
             SELECT (SELECT id FROM payments p
                      WHERE p.account = c.account AND p.state = c.state
                      ORDER BY p.created_at, p.id LIMIT 1)
             FROM payment_counts c WHERE c.state IN {OPEN_STATES} AND c.n > 0)
         ORDER BY created_at, id LIMIT 1"
    )
}

/// Payments in state ?1 (unless NULL) of account ?2 (unless NULL), in id order.
pub(super) fn list_sql() -> String {
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR account = ?2)
         ORDER BY id"
    )
}

/// Payments per (account, state) that has any, summed over providers (PostgreSQL's sum of a
/// bigint is a numeric: cast back).
pub(super) const STATS_BY_STATE: &str =
    "SELECT account, state, CAST(SUM(n) AS BIGINT) AS n FROM payment_counts WHERE n > 0
     GROUP BY account, state ORDER BY account, state";

/// Open discrepancies in all.
pub(super) const OPEN_DISCREPANCY_TOTAL: &str =
    "SELECT CAST(COALESCE(SUM(open), 0) AS BIGINT) FROM discrepancy_counts";

/// Pauses still in force at ?1.
pub(super) const PAUSES_IN_FORCE: &str = "SELECT account, paused_until, reason FROM account_pauses
     WHERE paused_until > ?1 ORDER BY account";

/// Whether a listing goes on after its callback's answer: a closed pipe (`| head`) ends it
/// quietly, another error ends it with that error.
pub(super) fn listed(done: std::io::Result<()>) -> Result<bool, LedgerError> {
    match done {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(LedgerError::Query(sqlx::Error::Io(e))),
    }
}

impl SqliteLedger {
    /// Payments matching `filter`, oldest first. Rows stream from SQLite, so a large ledger is
    /// printed without holding every row.
    pub async fn for_each_payment(
        &self,
        filter: &ListFilter,
        mut f: impl FnMut(PaymentRow) -> std::io::Result<()>,
    ) -> Result<(), LedgerError> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(list_sql()))
            .bind(filter.state.map(PaymentState::as_str))
            .bind(filter.account.as_deref())
            .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            if !listed(f(PaymentRow::from_row(&r)))? {
                break;
            }
        }
        Ok(())
    }

    /// A payment by ledger id.
    pub async fn payment(&self, id: i64) -> Result<Option<PaymentRow>, LedgerError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?");
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| PaymentRow::from_row(&r)))
    }

    /// A payment by ledger id, or by `out_trade_no` (every account and kind that has it).
    pub async fn find_payments(&self, key: &str) -> Result<Vec<PaymentRow>, LedgerError> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments
             WHERE id = ?1 OR out_trade_no = ?2 ORDER BY id"
        );
        let id = key.parse::<i64>().ok();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(PaymentRow::from_row).collect())
    }

    pub async fn events(&self, payment_id: i64) -> Result<Vec<EventRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, from_state, to_state, provider_code, message, evidence
             FROM events WHERE payment_id = ? ORDER BY id",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let raw: String = r.get("evidence");
                let evidence = evidence(&raw)?;
                Ok(EventRow {
                    id: r.get("id"),
                    at: r.get("at"),
                    kind: r.get("kind"),
                    from_state: r.get("from_state"),
                    to_state: r.get("to_state"),
                    provider_code: r.get("provider_code"),
                    message: r.get("message"),
                    evidence,
                })
            })
            .collect()
    }

    pub async fn stats(&self, now_t: chrono::DateTime<chrono::Utc>) -> Result<Stats, LedgerError> {
        let now_s = super::time::to_db(now_t);
        let now = now_s.as_str();
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
            .map(|r| PaymentRow::from_row(&r));
        let (runs, gateway_calls) = self.run_totals().await?;
        let open_discrepancies: i64 = sqlx::query_scalar(OPEN_DISCREPANCY_TOTAL)
            .fetch_one(&self.pool)
            .await?;
        let paused_accounts = sqlx::query_as(PAUSES_IN_FORCE)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        Ok(Stats {
            by_state,
            oldest_open,
            gateway_calls,
            runs,
            open_discrepancies,
            paused_accounts,
            lanes: self.lanes(now_t).await?,
        })
    }
}
