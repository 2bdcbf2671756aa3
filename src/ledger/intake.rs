//! Registering payments to reconcile: all-or-nothing, idempotent.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::claim::{CLAIMED_COLUMNS, Claimed};
use super::time::to_db;
use super::{LedgerError, SqliteLedger};
use crate::domain::{AccountName, Money, OutTradeNo, PayType, Provider, ProviderRef, RecordKind};

/// A validated payment to track. New payments start `pending` and due now.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayment {
    pub account: AccountName,
    pub provider: Provider,
    pub kind: RecordKind,
    pub out_trade_no: OutTradeNo,
    pub provider_ref: Option<ProviderRef>,
    pub pay_type: Option<PayType>,
    pub amount: Money,
    pub created_at: DateTime<Utc>,
    /// When the order stops being payable (QFPay `expired_time`), if known.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What registering a batch did. When `conflicts` is non-empty nothing was written.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IntakeReport {
    /// Indexes (into the batch) of newly registered payments, with their ledger ids.
    pub inserted: Vec<(usize, i64)>,
    /// Indexes of payments already in the ledger with the same details.
    pub already_present: Vec<(usize, i64)>,
    /// Indexes of payments whose key exists with different details, and what differs.
    pub conflicts: Vec<(usize, String)>,
}

/// What the ledger holds for a key a batch registers again.
pub(crate) struct Stored {
    pub amount: i64,
    pub currency: String,
    pub provider_ref: Option<String>,
    pub pay_type: Option<String>,
}

impl Stored {
    /// `None` when `p` is the same payment; else what differs, as the conflict says it. A
    /// gateway id or pay type given on one side only is no difference.
    pub fn differences(&self, p: &NewPayment) -> Option<String> {
        let mut diffs = Vec::new();
        if self.amount != p.amount.minor || self.currency != p.amount.currency.as_str() {
            diffs.push(format!(
                "amount is {} in the ledger",
                crate::domain::format_money(self.amount, &self.currency)
            ));
        }
        if let (Some(a), Some(b)) = (&self.provider_ref, &p.provider_ref)
            && a != b.as_str()
        {
            diffs.push(format!("gateway id is {a} in the ledger"));
        }
        if let (Some(a), Some(b)) = (&self.pay_type, &p.pay_type)
            && a != b.as_str()
        {
            diffs.push(format!("pay_type is {a} in the ledger"));
        }
        (!diffs.is_empty()).then(|| {
            format!(
                "already registered with different details: {}",
                diffs.join("; ")
            )
        })
    }
}

impl SqliteLedger {
    /// Registers `batch` in one transaction. A payment already present with the same details
    /// is reported, not duplicated; one present with different details is a conflict, and any
    /// conflict rolls the whole batch back.
    pub async fn register(
        &self,
        batch: &[NewPayment],
        now: DateTime<Utc>,
    ) -> Result<IntakeReport, LedgerError> {
        let mut report = IntakeReport::default();
        let now_s = to_db(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (i, p) in batch.iter().enumerate() {
            if let Some(id) = insert_new(&mut tx, p, &now_s, None).await? {
                report.inserted.push((i, id));
                continue;
            }
            let row = sqlx::query(
                "SELECT id, amount, currency, provider_ref, pay_type FROM payments
                 WHERE account = ? AND kind = ? AND out_trade_no = ?",
            )
            .bind(p.account.as_str())
            .bind(p.kind.as_str())
            .bind(p.out_trade_no.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let stored = Stored {
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
        } else {
            tx.rollback().await?;
            report.inserted.clear();
        }
        Ok(report)
    }
}

/// Inserts `p` as a new `pending` payment with its `registered` event; `None` when its key is
/// already in the ledger. `hold`: a lease owner and the time until which the row is held by it
/// and not due (a payment whose creation call is in flight).
async fn insert_new(
    tx: &mut sqlx::SqliteConnection,
    p: &NewPayment,
    now_s: &str,
    hold: Option<(&str, &str)>,
) -> Result<Option<i64>, LedgerError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref, pay_type,
                               amount, currency, state, next_check_at, created_at,
                               registered_at, updated_at, expires_at, lease_owner,
                               lease_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', COALESCE(?14, ?9), ?10, ?9, ?9,
                 ?11, ?12, ?13)
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
    .bind(now_s)
    .bind(to_db(p.created_at))
    .bind(p.expires_at.map(to_db))
    .bind(hold.map(|(owner, _)| owner))
    .bind(hold.map(|(_, until)| until))
    .bind(hold.map(|(_, until)| until))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = inserted {
        sqlx::query(
            "INSERT INTO events (payment_id, at, kind, to_state, message, evidence)
             VALUES (?, ?, 'registered', 'pending', ?, '{}')",
        )
        .bind(id)
        .bind(now_s)
        .bind(format!("registered {} {}", p.amount, p.kind.as_str()))
        .execute(&mut *tx)
        .await?;
    }
    Ok(inserted)
}

impl SqliteLedger {
    /// Registers a payment whose creation call is about to be sent, held by `owner` until
    /// `hold_until`: no pass claims it (nor is it due) while the call is in flight, so the
    /// answer of that call is recorded by its caller, through [`SqliteLedger::apply`] with the same
    /// owner. Should the caller die, the hold simply expires and a pass picks the payment up.
    /// `None` when the key is already in the ledger (nothing written).
    pub async fn register_held(
        &self,
        p: &NewPayment,
        owner: &str,
        hold_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>, LedgerError> {
        let until = to_db(hold_until);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(id) = insert_new(&mut tx, p, &to_db(now), Some((owner, &until))).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIMED_COLUMNS} FROM payments WHERE id = ?"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let claimed = Claimed::from_row(&row)?;
        tx.commit().await?;
        Ok(Some(claimed))
    }
}
