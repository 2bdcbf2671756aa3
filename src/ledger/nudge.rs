//! Asking for a payment to be checked now, from outside a lane: the API's
//! `POST /v1/payments/{id}/check` and a gateway notification. Neither is evidence about the
//! payment; all they change is *when* the lane asks the gateway (and, for a notification, that
//! one arrived). So these writes take no account lease: they touch no state, and the lane's
//! verified query decides as always. A notification that lands while the lane's query is in
//! flight is kept by `apply` (`nudged_at` against `PaymentUpdate::seen_nudged_at`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::time::{from_db, to_db};
use super::{LedgerError, SqliteLedger};

/// A payment of account ?1 by gateway id ?2.
pub(super) const FIND_BY_REF: &str =
    "SELECT id FROM payments WHERE account = ?1 AND provider_ref = ?2 ORDER BY id LIMIT 1";

/// A payment of account ?1 by kind ?2 and order number ?3.
pub(super) const FIND_BY_ORDER: &str =
    "SELECT id FROM payments WHERE account = ?1 AND kind = ?2 AND out_trade_no = ?3";

/// What a nudge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nudged {
    /// The payment was scheduled for later and is due now (an event records why).
    MadeDue { account: String },
    /// It was due already (a notification still marks it notified, with an event).
    AlreadyDue { account: String },
    /// A notification for a payment notified before: nothing is written and nothing asked, so
    /// a replay costs neither a query nor a row.
    Repeated,
    /// Notified as paid, but the ledger holds it as failed or in review:
    /// a `notified_after_final` discrepancy says so, and it is due now if still observed.
    Contradicts {
        account: String,
        state: String,
        due: bool,
    },
    /// Paid already: nothing to do.
    Settled { state: String },
    /// No payment has that id.
    Unknown,
}

/// What a requested check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckRequested {
    /// Scheduled for later, due now (a `check_requested` event says so).
    DueNow {
        account: String,
    },
    AlreadyDue {
        account: String,
    },
    /// Final and no longer observed: nothing to check.
    Final {
        state: String,
    },
    Unknown,
}

const OPEN: [&str; 3] = ["pending", "in_progress", "reversing"];
/// Final states a "paid" notification contradicts. (`cancelled` and `reversed` do not: a
/// payment paid and then cancelled or reversed is notified late as paid, and its money went
/// back.)
const UNPAID_FINAL: [&str; 2] = ["failed", "needs_review"];

/// Due now (keeping an earlier time), and marked notified when `?2`.
const MAKE_DUE: &str = "UPDATE payments
     SET next_check_at = CASE WHEN next_check_at IS NULL THEN NULL
                              ELSE MIN(next_check_at, ?1) END,
         notified_at = CASE WHEN ?2 THEN COALESCE(notified_at, ?1) ELSE notified_at END,
         nudged_at = ?1
     WHERE id = ?3";

const INSERT_EVENT: &str =
    "INSERT INTO events (payment_id, at, kind, message, evidence) VALUES (?, ?, ?, ?, ?)";

/// Making a payment due now, and the event that says why (both stores write these).
pub(super) struct Due<'a> {
    pub(super) notified: bool,
    pub(super) kind: &'static str,
    pub(super) message: &'a str,
    pub(super) evidence: String,
}

impl<'a> Due<'a> {
    /// What `POST /v1/payments/{id}/check` writes.
    pub(super) fn check_requested() -> Self {
        Due {
            notified: false,
            kind: "check_requested",
            message: "check requested through the API",
            evidence: "{}".into(),
        }
    }

    /// What a gateway's first notification writes.
    pub(super) fn notified(message: &'a str, evidence: &serde_json::Value) -> Self {
        Due {
            notified: true,
            kind: "notified",
            message,
            evidence: evidence.to_string(),
        }
    }
}

impl Due<'_> {
    async fn write(
        &self,
        tx: &mut sqlx::SqliteConnection,
        id: i64,
        now: &str,
    ) -> Result<(), LedgerError> {
        sqlx::query(MAKE_DUE)
            .bind(now)
            .bind(self.notified)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_EVENT)
            .bind(id)
            .bind(now)
            .bind(self.kind)
            .bind(self.message)
            .bind(&self.evidence)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// A payment as a nudge finds it (read in the nudge's write transaction); what the nudge
/// answers and writes follows from it alone, on either store.
pub(super) struct Seen {
    pub(super) account: String,
    pub(super) out_trade_no: String,
    pub(super) state: String,
    /// Whether its next check is later than now (`None`: not scheduled at all).
    pub(super) later: Option<bool>,
    pub(super) notified: bool,
}

impl Seen {
    /// What a requested check answers without writing anything; `None`: it is scheduled for
    /// later, so it is made due now and answers [`CheckRequested::DueNow`].
    pub(super) fn check_answer(&self) -> Option<CheckRequested> {
        match self.later {
            None => Some(CheckRequested::Final {
                state: self.state.clone(),
            }),
            Some(false) => Some(CheckRequested::AlreadyDue {
                account: self.account.clone(),
            }),
            Some(true) => None,
        }
    }

    fn contradicts(&self) -> bool {
        UNPAID_FINAL.contains(&self.state.as_str())
    }

    /// What a notification answers without writing anything; `None`: it is written
    /// ([`Due::notified`], and the discrepancy of [`Seen::contradiction`] if any).
    pub(super) fn notified_answer(&self) -> Option<Nudged> {
        let open = OPEN.contains(&self.state.as_str());
        if self.notified {
            return Some(Nudged::Repeated);
        }
        if !open && !self.contradicts() {
            return Some(Nudged::Settled {
                state: self.state.clone(),
            });
        }
        None
    }

    /// The detail of the `notified_after_final` discrepancy a written notification records
    /// when the ledger holds the payment as unpaid and final.
    pub(super) fn contradiction(&self) -> Option<String> {
        self.contradicts().then(|| {
            format!(
                "{} {}: the gateway notified it as paid, but the ledger holds it as {}",
                self.account, self.out_trade_no, self.state
            )
        })
    }

    /// What a written notification answers.
    pub(super) fn nudged(self) -> Nudged {
        let contradicts = self.contradicts();
        let account = self.account;
        match self.later {
            _ if contradicts => Nudged::Contradicts {
                account,
                state: self.state,
                due: self.later.is_some(),
            },
            Some(true) => Nudged::MadeDue { account },
            _ => Nudged::AlreadyDue { account },
        }
    }
}

impl SqliteLedger {
    async fn seen(
        tx: &mut sqlx::SqliteConnection,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Seen>, LedgerError> {
        let row = sqlx::query(
            "SELECT account, out_trade_no, state, next_check_at, notified_at FROM payments
             WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(row.map(|r| Seen {
            account: r.get("account"),
            out_trade_no: r.get("out_trade_no"),
            state: r.get("state"),
            later: r
                .get::<Option<String>, _>("next_check_at")
                .map(|t| from_db(&t).is_none_or(|t| t > now)),
            notified: r.get::<Option<String>, _>("notified_at").is_some(),
        }))
    }

    /// `POST /v1/payments/{id}/check`: makes payment `id` due now when it is scheduled for
    /// later (open, or settled and still observed); a `check_requested` event says so.
    pub async fn request_check(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<CheckRequested, LedgerError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(seen) = Self::seen(&mut tx, id, now).await? else {
            return Ok(CheckRequested::Unknown);
        };
        if let Some(answer) = seen.check_answer() {
            return Ok(answer);
        }
        Due::check_requested()
            .write(&mut tx, id, &to_db(now))
            .await?;
        tx.commit().await?;
        Ok(CheckRequested::DueNow {
            account: seen.account,
        })
    }

    /// A gateway's authenticated notification that payment `id` is paid. Never evidence: it
    /// changes *when* the lane asks, never the state. The first one marks the payment notified
    /// (`notified_at`, a `notified` event holding `evidence`): an open payment becomes due now
    /// (an ECPay order is then asked before `first_query_after`, and no last resort reverses
    /// it); one the ledger holds as failed or in review gets a
    /// `notified_after_final` discrepancy, and is due now if still observed. Later ones for
    /// the same payment write nothing.
    pub async fn notified_paid(
        &self,
        id: i64,
        message: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Nudged, LedgerError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(seen) = Self::seen(&mut tx, id, now).await? else {
            return Ok(Nudged::Unknown);
        };
        if let Some(answer) = seen.notified_answer() {
            return Ok(answer);
        }
        let now_s = to_db(now);
        Due::notified(message, evidence)
            .write(&mut tx, id, &now_s)
            .await?;
        if let Some(detail) = seen.contradiction() {
            sqlx::query(super::apply::INSERT_PAYMENT_DISCREPANCY)
                .bind(crate::domain::DiscrepancyKind::NotifiedAfterFinal.as_str())
                .bind(detail)
                .bind(evidence.to_string())
                .bind(&now_s)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(seen.nudged())
    }
}

impl SqliteLedger {
    /// Records that the gateway notified `subject` (an order number or gateway id) of
    /// `account`, which the ledger does not hold: once per (account, subject), so a replayed or
    /// repeated notification adds nothing. `true` when newly recorded.
    pub async fn record_notified_unknown(
        &self,
        account: &str,
        subject: &str,
        detail: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(super::sweeps::RECORD_RECORD_FINDING)
            .bind(None::<i64>)
            .bind(account)
            .bind(crate::domain::DiscrepancyKind::NotifiedUnknown.as_str())
            .bind(detail)
            .bind(evidence.to_string())
            .bind(to_db(now))
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The payment of `account` a notification names: by gateway id first (it is the
    /// gateway's own key, `payments_by_ref`), else by order number among that kind of record
    /// (the unique key).
    pub async fn find_notified(
        &self,
        account: &str,
        kind: crate::domain::RecordKind,
        out_trade_no: &str,
        provider_ref: Option<&str>,
    ) -> Result<Option<i64>, LedgerError> {
        if let Some(r) = provider_ref {
            let by_ref: Option<i64> = sqlx::query_scalar(FIND_BY_REF)
                .bind(account)
                .bind(r)
                .fetch_optional(&self.pool)
                .await?;
            if by_ref.is_some() {
                return Ok(by_ref);
            }
        }
        Ok(sqlx::query_scalar(FIND_BY_ORDER)
            .bind(account)
            .bind(kind.as_str())
            .bind(out_trade_no)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether the ledger takes a write now: a write transaction begun and rolled back (takes
    /// the write lock for a moment, writes nothing). `/readyz` asks this.
    pub async fn writable(&self) -> Result<(), LedgerError> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        tx.rollback().await?;
        Ok(())
    }
}
