//! The ledger the engine, the CLI and the API use: one of two stores with one contract.
//!
//! - [`SqliteLedger`] (`ledger::*`): one file, the embedded default;
//! - [`PgLedger`] (`ledger::pg`): a PostgreSQL database shared by several replicas.
//!
//! Every method below is the same operation on either store (same arguments, same answers, same
//! refusals); `tests/ledger_contract*.rs` run the same tests on both. An enum rather than a trait
//! object: the set of stores is closed, and async methods stay plain `async fn`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::pg::PgLedger;
use super::{
    AccountHolder, Acquired, CheckRequested, ClaimScope, Claimed, DiscrepancyPage, DiscrepancyRow,
    DuePosition, EventRow, Fence, FoundRefund, IntakeReport, KnownPayment, LaneRow, LedgerError,
    LedgerGauges, ListFilter, NewDiscrepancy, NewEvent, NewPayment, Nudged, PaymentPage,
    PaymentRow, PaymentUpdate, RunCounters, SchedulePosition, SqliteLedger, Stats, SweepCursor,
    SweepDiscrepancy, SweepRound, WriteGuard,
};
use crate::config::{LedgerSettings, LedgerStore};
use crate::domain::{PaymentId, PaymentState, RecordKind};

/// A handle on the ledger, whichever store holds it. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub enum Ledger {
    Sqlite(SqliteLedger),
    Postgres(PgLedger),
}

/// Opens (creating if needed) and migrates the SQLite ledger at `path`.
pub async fn open(path: &Path, busy_timeout: Duration) -> Result<Ledger, LedgerError> {
    super::open_sqlite(path, busy_timeout)
        .await
        .map(Ledger::Sqlite)
}

/// Opens and migrates the ledger the settings name.
pub async fn open_store(settings: &LedgerSettings) -> Result<Ledger, LedgerError> {
    match &settings.store {
        LedgerStore::Sqlite { path } => open(path, settings.busy_timeout).await,
        LedgerStore::Postgres(pg) => PgLedger::connect_with(pg, settings.busy_timeout)
            .await
            .map(Ledger::Postgres),
    }
}

impl From<SqliteLedger> for Ledger {
    fn from(l: SqliteLedger) -> Self {
        Ledger::Sqlite(l)
    }
}

impl From<PgLedger> for Ledger {
    fn from(l: PgLedger) -> Self {
        Ledger::Postgres(l)
    }
}

impl Ledger {
    /// The SQLite store, if this is one (tools and tests that read its file directly).
    pub fn as_sqlite(&self) -> Option<&SqliteLedger> {
        match self {
            Ledger::Sqlite(l) => Some(l),
            Ledger::Postgres(_) => None,
        }
    }

    /// The PostgreSQL store, if this is one.
    pub fn as_postgres(&self) -> Option<&PgLedger> {
        match self {
            Ledger::Sqlite(_) => None,
            Ledger::Postgres(l) => Some(l),
        }
    }

    /// Which store this is, for messages: `sqlite` or `postgres`.
    pub fn store_name(&self) -> &'static str {
        match self {
            Ledger::Sqlite(_) => "sqlite",
            Ledger::Postgres(_) => "postgres",
        }
    }

    /// SQLite: whether the configured path still names the file this process opened (see
    /// [`SqliteLedger::check_file`]). A PostgreSQL ledger has no file to lose.
    pub fn check_file(&self) -> Result<(), LedgerError> {
        match self {
            Ledger::Sqlite(l) => l.check_file(),
            Ledger::Postgres(_) => Ok(()),
        }
    }

    pub async fn close(&self) {
        match self {
            Ledger::Sqlite(l) => l.close().await,
            Ledger::Postgres(l) => l.close().await,
        }
    }
}

/// Each listed method, on [`Ledger`], calls the store's method of the same name and signature.
macro_rules! dispatch {
    ($(
        $(#[$meta:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Ledger {
            $(
                $(#[$meta])*
                #[allow(clippy::too_many_arguments)] // as the stores' own methods
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Ledger::Sqlite(l) => l.$name($($arg),*).await,
                        Ledger::Postgres(l) => l.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

dispatch! {
    /// Takes `account`'s lease for `holder`, or says who holds it (`ledger::account_lease`).
    fn acquire_account(
        &self,
        account: &str,
        holder: &str,
        ttl: Duration,
        pace_per_minute: u32,
        now: DateTime<Utc>,
    ) -> Result<Result<Acquired, AccountHolder>, LedgerError>;
    /// Renews the fence's lease; `false` once another holder took the account.
    fn renew_account(&self, fence: &Fence, ttl: Duration, now: DateTime<Utc>)
        -> Result<bool, LedgerError>;
    /// Gives the fence's lease up, leaving the time the next call may leave.
    fn release_account(&self, fence: &Fence, next_call_at: Option<DateTime<Utc>>)
        -> Result<bool, LedgerError>;
    /// Every account's lease and pause, for `payrecon lanes` and the API.
    fn lanes(&self, now: DateTime<Utc>) -> Result<Vec<LaneRow>, LedgerError>;
    /// Pauses the fence's account until `until` (429, 403, `error_Stop`), for every replica.
    fn pause_account(
        &self,
        fence: &Fence,
        until: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// Records that the daemon `holder` is alive and returns the live ones (`ledger::replicas`).
    fn replica_seen(&self, holder: &str, now: DateTime<Utc>, live_since: DateTime<Utc>)
        -> Result<Vec<String>, LedgerError>;
    /// Deletes a stopping daemon's row.
    fn replica_gone(&self, holder: &str) -> Result<(), LedgerError>;
    /// The accounts paused at `now`.
    fn paused_accounts(&self, now: DateTime<Utc>) -> Result<Vec<String>, LedgerError>;

    /// Registers a batch of payments, all or nothing, idempotent on (account, kind, order).
    fn register(&self, batch: &[NewPayment], now: DateTime<Utc>)
        -> Result<IntakeReport, LedgerError>;
    /// Registers one payment held by `owner` (`payrecon pay`).
    fn register_held(
        &self,
        p: &NewPayment,
        owner: &str,
        hold_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Claimed>, LedgerError>;

    /// The next unit of due payments after `position` in the lane's order.
    fn due_unit(
        &self,
        scope: &ClaimScope,
        position: &DuePosition,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Claimed>, DuePosition), LedgerError>;
    /// The due payments with these gateway ids or order numbers.
    fn due_for_keys(
        &self,
        scope: &ClaimScope,
        refs: &[&str],
        orders: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, LedgerError>;
    /// Calls `f` with each due payment's creation time and whether it is a CPM payment.
    fn for_each_due(
        &self,
        scope: &ClaimScope,
        now: DateTime<Utc>,
        f: impl FnMut(DateTime<Utc>, bool),
    ) -> Result<(), LedgerError>;
    /// How many of `account`'s payments were created in [from, to).
    fn count_created_between(&self, account: &str, from: DateTime<Utc>, to: DateTime<Utc>)
        -> Result<u64, LedgerError>;
    /// Frees row holds and account leases that have expired.
    fn reap_expired_leases(&self, now: DateTime<Utc>) -> Result<u64, LedgerError>;
    /// Frees every account lease `holder` has.
    fn release_leases(&self, holder: &str) -> Result<u64, LedgerError>;

    /// Applies a unit's answers in one transaction, under its guard.
    fn apply(
        &self,
        guard: WriteGuard<'_>,
        run_id: Option<i64>,
        updates: &[PaymentUpdate],
        now: DateTime<Utc>,
    ) -> Result<HashSet<PaymentId>, LedgerError>;
    /// Marks a payment `reversing` before its reversal is sent: `false` if it may not be.
    fn mark_reversing(
        &self,
        fence: &Fence,
        run_id: Option<i64>,
        id: PaymentId,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError>;

    /// The ledger's gauges for `/metrics`.
    fn gauges(&self, now: DateTime<Utc>) -> Result<LedgerGauges, LedgerError>;
    /// Makes a payment due now (`POST /v1/payments/{id}/check`).
    fn request_check(&self, id: i64, now: DateTime<Utc>) -> Result<CheckRequested, LedgerError>;
    /// Records a gateway's notification that a payment was paid.
    fn notified_paid(
        &self,
        id: i64,
        message: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Nudged, LedgerError>;
    /// Records a notification for an order the ledger lacks, once.
    fn record_notified_unknown(
        &self,
        account: &str,
        subject: &str,
        detail: &str,
        evidence: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError>;
    /// The payment a notification names, if the ledger has it.
    fn find_notified(
        &self,
        account: &str,
        kind: RecordKind,
        out_trade_no: &str,
        provider_ref: Option<&str>,
    ) -> Result<Option<i64>, LedgerError>;
    /// Whether the ledger accepts writes now.
    fn writable(&self) -> Result<(), LedgerError>;

    /// One keyset page of payments.
    fn payments_page(&self, page: &PaymentPage) -> Result<Vec<PaymentRow>, LedgerError>;
    /// One keyset page of discrepancies.
    fn discrepancies_page(&self, page: &DiscrepancyPage)
        -> Result<Vec<DiscrepancyRow>, LedgerError>;
    /// Calls `f` with each payment the filter selects, streaming.
    fn for_each_payment(
        &self,
        filter: &ListFilter,
        f: impl FnMut(PaymentRow) -> std::io::Result<()>,
    ) -> Result<(), LedgerError>;
    /// One payment by id.
    fn payment(&self, id: i64) -> Result<Option<PaymentRow>, LedgerError>;
    /// The payments with this order number or gateway id.
    fn find_payments(&self, key: &str) -> Result<Vec<PaymentRow>, LedgerError>;
    /// A payment's history.
    fn events(&self, payment_id: i64) -> Result<Vec<EventRow>, LedgerError>;
    /// Counts by state and account for `payrecon stats`.
    fn stats(&self, now: DateTime<Utc>) -> Result<Stats, LedgerError>;

    /// Records a pass's start; a run this owner left `running` is closed as failed.
    fn start_run(&self, owner: &str, trigger: &str, now: DateTime<Utc>)
        -> Result<i64, LedgerError>;
    /// Records a pass's end.
    fn finish_run(
        &self,
        run_id: i64,
        status: &str,
        c: RunCounters,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// The discrepancies, open only unless `include_resolved`.
    fn discrepancies(&self, include_resolved: bool) -> Result<Vec<DiscrepancyRow>, LedgerError>;
    /// Resolves a discrepancy with a note; `false` if there is no such open one.
    fn resolve_discrepancy(&self, id: i64, note: &str, now: DateTime<Utc>)
        -> Result<bool, LedgerError>;
    /// (runs, events) recorded so far.
    fn run_totals(&self) -> Result<(i64, i64), LedgerError>;

    /// Where a sweep of the window stopped.
    fn sweep_cursor(
        &self,
        account: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        round: SweepRound,
    ) -> Result<Option<SweepCursor>, LedgerError>;
    /// Saves where a sweep of the window stopped.
    fn save_sweep_cursor(
        &self,
        fence: &Fence,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        round: SweepRound,
        cursor: SweepCursor,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// Where the scheduled sweep of `account` stands.
    fn schedule_position(&self, account: &str) -> Result<Option<SchedulePosition>, LedgerError>;
    /// Saves where the scheduled sweep of the fence's account stands.
    fn save_schedule_position(
        &self,
        fence: &Fence,
        position: SchedulePosition,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// The ledger's payments among a page's gateway ids and order numbers.
    fn known_payments(&self, account: &str, refs: &[&str], orders: &[&str])
        -> Result<Vec<KnownPayment>, LedgerError>;
    /// Applies what a sweep found about one payment.
    fn apply_sweep_finding(
        &self,
        fence: &Fence,
        id: i64,
        expected: PaymentState,
        to: PaymentState,
        event: &NewEvent,
        discrepancies: &[NewDiscrepancy],
        now: DateTime<Utc>,
    ) -> Result<(bool, Vec<usize>), LedgerError>;
    /// Links a refund to the payment it refunds.
    fn link_refund(&self, fence: &Fence, id: i64, original_ref: &str)
        -> Result<(), LedgerError>;
    /// Registers a refund a sweep found.
    fn register_found_refund(&self, fence: &Fence, r: &FoundRefund<'_>, now: DateTime<Utc>)
        -> Result<Option<i64>, LedgerError>;
    /// The amount refunded of a payment so far.
    fn refunded_total(&self, account: &str, original_ref: &str) -> Result<i64, LedgerError>;
    /// Makes these payments due now.
    fn make_due(&self, fence: &Fence, ids: &[i64], now: DateTime<Utc>)
        -> Result<(), LedgerError>;
    /// `account`'s payments created in [from, to): id and order number.
    fn payments_created_in(&self, account: &str, from: DateTime<Utc>, to: DateTime<Utc>)
        -> Result<Vec<(i64, String)>, LedgerError>;
    /// Records what a sweep found that a person must read, each once.
    fn record_sweep_discrepancies(
        &self,
        fence: &Fence,
        findings: &[SweepDiscrepancy],
        now: DateTime<Utc>,
    ) -> Result<Vec<usize>, LedgerError>;
}
