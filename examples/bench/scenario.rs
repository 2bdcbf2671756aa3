//! The benchmark's scenarios and its engine driver, shared by `examples/bench/main.rs` and
//! `tests/bench_smoke.rs` (which includes this file by path, so it uses only `payrecon::` items
//! and std, never `super::`).
//!
//! A scenario is a seeded gateway (the in-process sandbox) plus a ledger built from it: the
//! due payments registered through [`Ledger::register`], and optionally final history rows
//! bulk-inserted with SQL, and optionally open discrepancies bulk-inserted the same way. Every
//! due payment is already final at the gateway (paid or failed), so the benchmark measures
//! reconciliation, not waiting for payments to complete.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};
use payrecon::config::{self, Account, Settings};
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, PayType, Provider, ProviderRef, RecordKind,
};
use payrecon::ledger::{self, Ledger, NewPayment};
use payrecon::reconcile::{Reconciler, RunScope, Strategy};
use payrecon::sandbox::{
    BulkOutcome, BulkSpec, DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID,
    DEV_QFPAY_APP_CODE, DEV_QFPAY_CLIENT_KEY, OutcomeMix, SandboxConfig, SandboxState,
    SeededRecord,
};
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// QFPay's documented per-merchant limit (docs/PROTOCOLS.md §Q6), and payrecon's default pace for ECPay
/// (ECPay publishes no number; the sandbox allows 60/min).
pub const QFPAY_PER_MINUTE: f64 = 400.0;
pub const ECPAY_PER_MINUTE: f64 = 30.0;

/// The QFPay account of every scenario (`config_toml`).
pub const QFPAY_ACCOUNT: &str = "hk";

/// Registration batch: one `Ledger::register` transaction.
pub const REGISTER_BATCH: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    Qfpay,
    Ecpay,
}

/// Where the seeded gateway records fall in time (all in the previous calendar month, account
/// time +08:00, so windows never reach into the future).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Day 10 of the previous month.
    OneDay,
    /// The whole previous month.
    OneMonth,
}

/// What the engine child measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `run_once` until a pass claims nothing, once per strategy × limits setting: calls, wall
    /// time, throughput, RSS (`drive`).
    Throughput,
    /// Issue 16: whether the cost of one item grows with the ledger. Planned, limits off, one
    /// run: passes until quiet (when `passes`), then `Reconciler::sweep` of the seeded window
    /// (the account's ledger being its complete book, every record the ledger does not know
    /// is a `missing_in_ledger` discrepancy); each applied sweep page and each committed
    /// delivery of a pass is timed (`examples/bench/growth.rs`).
    Growth { passes: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub gateway: Gateway,
    /// Records seeded at the gateway.
    pub gateway_records: usize,
    /// Of those, how many are registered in the ledger as due (spread evenly over the seed).
    pub due: usize,
    /// Whether the gateway records that are not due are in the ledger too, as final rows (a
    /// ledger that holds the merchant's history). Otherwise the gateway knows payments the
    /// ledger never saw (other channels), which the planner's ×1.25 estimate allows for.
    pub history_from_gateway: bool,
    /// Synthetic final QFPay rows in the 12 months before, not at the gateway (ledger size).
    pub old_history: usize,
    pub span: Span,
    /// ECPay orders due beside the QFPay ones, in one run: each account's lane keeps its own
    /// pace, so each should finish within its own rate bound (issue 13).
    pub ecpay_beside: usize,
    /// Open discrepancies already in the ledger, from earlier sweeps (bulk SQL).
    pub open_discrepancies: usize,
    pub measure: Measure,
}

impl Scenario {
    pub fn ledger_rows(&self) -> usize {
        let gw_history = if self.history_from_gateway {
            self.gateway_records - self.due
        } else {
            0
        };
        self.due + gw_history + self.old_history + self.ecpay_beside
    }
}

/// Every scenario, full size (issue 6 item 3) or `quick` (a few seconds, for CI smoke runs).
pub fn scenarios(quick: bool) -> Vec<Scenario> {
    let k = |full: usize, small: usize| if quick { small } else { full };
    vec![
        Scenario {
            name: "dense",
            gateway: Gateway::Qfpay,
            gateway_records: k(25_000, 1_250),
            due: k(20_000, 1_000),
            history_from_gateway: false,
            old_history: 0,
            span: Span::OneDay,
            ecpay_beside: 0,
            open_discrepancies: 0,
            measure: Measure::Throughput,
        },
        Scenario {
            name: "sparse",
            gateway: Gateway::Qfpay,
            gateway_records: k(100_000, 5_000),
            due: 50,
            history_from_gateway: true,
            old_history: 0,
            span: Span::OneMonth,
            ecpay_beside: 0,
            open_discrepancies: 0,
            measure: Measure::Throughput,
        },
        Scenario {
            name: "sparse-thin",
            gateway: Gateway::Qfpay,
            gateway_records: k(100_000, 5_000),
            due: 50,
            history_from_gateway: false,
            old_history: 0,
            span: Span::OneMonth,
            ecpay_beside: 0,
            open_discrepancies: 0,
            measure: Measure::Throughput,
        },
        Scenario {
            name: "ecpay",
            gateway: Gateway::Ecpay,
            gateway_records: k(1_000, 100),
            due: k(1_000, 100),
            history_from_gateway: false,
            old_history: 0,
            span: Span::OneDay,
            ecpay_beside: 0,
            open_discrepancies: 0,
            measure: Measure::Throughput,
        },
        Scenario {
            name: "ledger-1m",
            gateway: Gateway::Qfpay,
            gateway_records: k(125_000, 1_250),
            due: k(100_000, 1_000),
            history_from_gateway: false,
            old_history: k(900_000, 9_000),
            span: Span::OneMonth,
            ecpay_beside: 0,
            open_discrepancies: 0,
            measure: Measure::Throughput,
        },
        Scenario {
            name: "mixed",
            gateway: Gateway::Qfpay,
            gateway_records: k(25_000, 1_250),
            due: k(20_000, 1_000),
            history_from_gateway: false,
            old_history: 0,
            span: Span::OneDay,
            ecpay_beside: k(20, 4),
            open_discrepancies: 0,
            measure: Measure::Throughput,
        },
        // A day of 100,000 QFPay records of which the ledger knows 1 %: the sweep records a
        // discrepancy for each of the other 99 %, so the discrepancy table grows during the run.
        sweep_growth(k(100_000, 1_000)),
        // 20,000 due (a `dense` day) on a 1,000,000-row ledger that holds 100,000 open
        // discrepancies; a planned pass settles them, then a sweep of that day reports the 5,000
        // records the ledger never saw.
        Scenario {
            name: "discrepancies-1m",
            gateway: Gateway::Qfpay,
            gateway_records: k(25_000, 1_250),
            due: k(20_000, 1_000),
            history_from_gateway: false,
            old_history: k(980_000, 9_000),
            span: Span::OneDay,
            ecpay_beside: 0,
            open_discrepancies: k(100_000, 1_000),
            measure: Measure::Growth { passes: true },
        },
    ]
}

/// The `sweep-growth` scenario with `records` gateway records in one day, 1 % of them known
/// to (registered in) the ledger.
pub fn sweep_growth(records: usize) -> Scenario {
    Scenario {
        name: "sweep-growth",
        gateway: Gateway::Qfpay,
        gateway_records: records,
        due: records / 100,
        history_from_gateway: false,
        old_history: 0,
        span: Span::OneDay,
        ecpay_beside: 0,
        open_discrepancies: 0,
        measure: Measure::Growth { passes: false },
    }
}

/// Seeds the `ecpay_beside` ECPay orders of a mixed scenario into `state` (all due).
pub fn seed_ecpay_beside(
    s: &Scenario,
    state: &SandboxState,
    now: DateTime<Utc>,
) -> Result<Vec<SeededRecord>, BoxError> {
    if s.ecpay_beside == 0 {
        return Ok(Vec::new());
    }
    let (month, _) = previous_month(now);
    let mut spec = BulkSpec::new(
        "BX",
        s.ecpay_beside,
        month + chrono::Duration::days(9),
        Duration::from_secs(86_400),
    );
    spec.mix = OutcomeMix {
        paid: 90,
        failed: 10,
        pending_then_paid: 0,
        never_completes: 0,
    };
    spec.currency = "TWD".into();
    Ok(state.seed_ecpay_bulk(DEV_ECPAY_MERCHANT_ID, &spec)?)
}

/// Registers a mixed scenario's ECPay orders in the ledger template at `path`.
pub async fn register_ecpay_beside(path: &Path, orders: &[SeededRecord]) -> Result<(), BoxError> {
    if orders.is_empty() {
        return Ok(());
    }
    let ledger = ledger::open(path, Duration::from_secs(30)).await?;
    register_ecpay_beside_in(&ledger, orders).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(ledger.as_sqlite().unwrap().pool())
        .await?;
    ledger.close().await;
    Ok(())
}

/// Registers a mixed scenario's ECPay orders in `ledger` (either store).
pub async fn register_ecpay_beside_in(
    ledger: &Ledger,
    orders: &[SeededRecord],
) -> Result<(), BoxError> {
    if orders.is_empty() {
        return Ok(());
    }
    let ecpay = Scenario {
        gateway: Gateway::Ecpay,
        ..scenarios(true)
            .into_iter()
            .find(|s| s.name == "ecpay")
            .ok_or("no ecpay scenario")?
    };
    let due: Vec<NewPayment> = orders
        .iter()
        .map(|r| new_payment(&ecpay, r))
        .collect::<Result<_, _>>()?;
    ledger.register(&due, Utc::now()).await?;
    Ok(())
}

fn tz() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// The first instant of the previous calendar month (account time), and its length.
pub fn previous_month(now: DateTime<Utc>) -> (DateTime<Utc>, Duration) {
    let local = now.with_timezone(&tz()).date_naive();
    let this = NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("day 1 exists");
    let prev = this
        .checked_sub_months(chrono::Months::new(1))
        .expect("a month before exists");
    let at = |d: NaiveDate| {
        tz().from_local_datetime(&d.and_time(chrono::NaiveTime::MIN))
            .single()
            .expect("+08:00 has no gaps")
            .to_utc()
    };
    let (start, end) = (at(prev), at(this));
    (start, (end - start).to_std().unwrap_or_default())
}

/// Whether seeded record `i` of `n` is one of the `due` registered ones (evenly spread; the
/// seed's creation times are random, so this is a random sample in time).
pub fn is_due(i: usize, n: usize, due: usize) -> bool {
    (i * due) / n != ((i + 1) * due) / n
}

/// Where the scenario's gateway records lie: `[start, start + span)`.
pub fn seeded_window(s: &Scenario, now: DateTime<Utc>) -> (DateTime<Utc>, Duration) {
    let (month, month_len) = previous_month(now);
    match s.span {
        Span::OneDay => (
            month + chrono::Duration::days(9),
            Duration::from_secs(86_400),
        ),
        Span::OneMonth => (month, month_len),
    }
}

/// Seeds the scenario's gateway records into a fresh sandbox state.
pub fn seed(
    s: &Scenario,
    config: &SandboxConfig,
    now: DateTime<Utc>,
) -> Result<(SandboxState, Vec<SeededRecord>), BoxError> {
    let state = SandboxState::new(config);
    let (start, span) = seeded_window(s, now);
    let mut spec = BulkSpec::new("BN", s.gateway_records, start, span);
    spec.mix = OutcomeMix {
        paid: 90,
        failed: 10,
        pending_then_paid: 0,
        never_completes: 0,
    };
    let records = match s.gateway {
        Gateway::Qfpay => state.seed_qfpay_bulk(DEV_QFPAY_APP_CODE, &spec)?,
        Gateway::Ecpay => {
            spec.prefix = "BE".into();
            spec.currency = "TWD".into();
            state.seed_ecpay_bulk(DEV_ECPAY_MERCHANT_ID, &spec)?
        }
    };
    Ok((state, records))
}

/// How long building a ledger took, by part.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerBuild {
    pub registered: usize,
    pub register_time: Duration,
    pub history: usize,
    pub history_time: Duration,
    pub discrepancies: usize,
    pub discrepancies_time: Duration,
}

fn new_payment(s: &Scenario, r: &SeededRecord) -> Result<NewPayment, BoxError> {
    let (account, provider, currency) = match s.gateway {
        Gateway::Qfpay => ("hk", Provider::Qfpay, "HKD"),
        Gateway::Ecpay => ("tw", Provider::Ecpay, "TWD"),
    };
    Ok(NewPayment {
        account: AccountName::parse(account)?,
        provider,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(&r.out_trade_no, provider)?,
        // The merchant knows QFPay's syssn (the payment was created, its answer lost); ECPay
        // orders are asked by MerchantTradeNo.
        provider_ref: match s.gateway {
            Gateway::Qfpay => Some(ProviderRef::parse(&r.provider_ref)?),
            Gateway::Ecpay => None,
        },
        pay_type: r.pay_type.as_deref().map(PayType::parse).transpose()?,
        amount: Money::new(r.amount_minor, Currency::parse(currency)?)?,
        created_at: r.created_at,
        expires_at: None,
    })
}

/// Builds the scenario's ledger at `path` (which must not exist) and closes it cleanly (WAL
/// checkpointed), so the file can be copied for each run.
pub async fn build_ledger(
    s: &Scenario,
    records: &[SeededRecord],
    path: &Path,
) -> Result<LedgerBuild, BoxError> {
    let ledger = ledger::open(path, Duration::from_secs(30)).await?;
    let build = build_ledger_in(&ledger, s, records).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(ledger.as_sqlite().unwrap().pool())
        .await?;
    ledger.close().await;
    Ok(build)
}

/// Fills the empty ledger `ledger` (either store) with the scenario's rows: the due payments
/// through [`Ledger::register`], history and discrepancies by bulk SQL in the store's dialect.
pub async fn build_ledger_in(
    ledger: &Ledger,
    s: &Scenario,
    records: &[SeededRecord],
) -> Result<LedgerBuild, BoxError> {
    let mut build = LedgerBuild::default();
    let n = records.len();
    let due: Vec<NewPayment> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| is_due(*i, n, s.due))
        .map(|(_, r)| new_payment(s, r))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for batch in due.chunks(REGISTER_BATCH) {
        let report = ledger.register(batch, Utc::now()).await?;
        if !report.conflicts.is_empty() {
            return Err(format!("registration conflicts: {:?}", report.conflicts).into());
        }
        build.registered += report.inserted.len();
    }
    build.register_time = t.elapsed();
    let t = Instant::now();
    if s.history_from_gateway {
        let history: Vec<&SeededRecord> = records
            .iter()
            .enumerate()
            .filter(|(i, _)| !is_due(*i, n, s.due))
            .map(|(_, r)| r)
            .collect();
        build.history += match ledger {
            Ledger::Sqlite(_) => insert_gateway_history(ledger, s, &history).await?,
            Ledger::Postgres(pg) => pg_seed::insert_gateway_history(pg, s, &history).await?,
        };
    }
    if s.old_history > 0 {
        build.history += match ledger {
            Ledger::Sqlite(_) => insert_old_history(ledger, s.old_history).await?,
            Ledger::Postgres(pg) => pg_seed::insert_old_history(pg, s.old_history).await?,
        };
    }
    build.history_time = t.elapsed();
    let t = Instant::now();
    if s.open_discrepancies > 0 {
        build.discrepancies = match ledger {
            Ledger::Sqlite(_) => insert_open_discrepancies(ledger, s.open_discrepancies).await?,
            Ledger::Postgres(_) => {
                return Err(format!(
                    "{}: open discrepancies are seeded on SQLite only (the growth scenarios \
                     are not run on PostgreSQL)",
                    s.name
                )
                .into());
            }
        };
    }
    build.discrepancies_time = t.elapsed();
    if let Ledger::Postgres(pg) = ledger {
        pg_seed::check_counts(pg).await?;
    }
    Ok(build)
}

/// Final rows for gateway records the ledger already settled (one statement per 10,000 rows,
/// values passed as JSON). No events: the engine never reads history's events.
async fn insert_gateway_history(
    ledger: &Ledger,
    s: &Scenario,
    history: &[&SeededRecord],
) -> Result<usize, BoxError> {
    let (account, provider, currency) = match s.gateway {
        Gateway::Qfpay => ("hk", "qfpay", "HKD"),
        Gateway::Ecpay => ("tw", "ecpay", "TWD"),
    };
    let now = ledger::time::to_db(Utc::now());
    for chunk in history.chunks(10_000) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|r| {
                let (state, code) = match r.outcome {
                    BulkOutcome::Failed => ("failed", "1205"),
                    _ => ("succeeded", "0000"),
                };
                serde_json::json!([
                    r.out_trade_no,
                    r.provider_ref,
                    r.pay_type,
                    r.amount_minor,
                    state,
                    code,
                    ledger::time::to_db(r.created_at),
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref, pay_type,
                                   amount, currency, state, provider_code, attempts,
                                   next_check_at, created_at, registered_at, updated_at)
             SELECT ?1, ?2, 'payment', json_extract(j.value, '$[0]'),
                    json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'),
                    json_extract(j.value, '$[3]'), ?3, json_extract(j.value, '$[4]'),
                    json_extract(j.value, '$[5]'), 1, NULL, json_extract(j.value, '$[6]'), ?4, ?4
             FROM json_each(?5) AS j",
        )
        .bind(account)
        .bind(provider)
        .bind(currency)
        .bind(&now)
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(ledger.as_sqlite().unwrap().pool())
        .await?;
    }
    Ok(history.len())
}

/// `count` synthetic settled QFPay rows spread over the 12 months before the previous month:
/// they make the ledger big without being due or at the gateway. Generated by SQL in
/// transactions of 100,000 rows (registering them one by one would dominate the setup).
async fn insert_old_history(ledger: &Ledger, count: usize) -> Result<usize, BoxError> {
    let (month, _) = previous_month(Utc::now());
    let from = (month - chrono::Duration::days(360)).timestamp() as f64;
    let step = 360.0 * 86_400.0 / count.max(1) as f64;
    let now = ledger::time::to_db(Utc::now());
    let mut done = 0;
    while done < count {
        let n = (count - done).min(100_000);
        sqlx::query(
            "WITH RECURSIVE seq(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?2)
             INSERT INTO payments (account, provider, kind, out_trade_no, provider_ref, pay_type,
                                   amount, currency, state, provider_code, attempts,
                                   next_check_at, created_at, registered_at, updated_at)
             SELECT 'hk', 'qfpay', 'payment', printf('HIST%08d', i), printf('2025HIST%018d', i),
                    '800101', 100 + (i * 7919) % 100000, 'HKD', 'succeeded', '0000', 1, NULL,
                    strftime('%Y-%m-%dT%H:%M:%fZ', ?3 + i * ?4, 'unixepoch'), ?5, ?5
             FROM seq",
        )
        .bind(done as i64)
        .bind((done + n) as i64)
        .bind(from)
        .bind(step)
        .bind(&now)
        .execute(ledger.as_sqlite().unwrap().pool())
        .await?;
        done += n;
    }
    Ok(count)
}

/// `count` open discrepancies of account `hk`, as earlier sweeps over the 12 months before the
/// previous month would have left them (so none names a record of the seeded gateway): nine in
/// ten `missing_in_ledger` about a gateway record the ledger does not know (no payment; the
/// `syssn` in the detail, as `sweep_page` writes it; the record as evidence), one in ten
/// `missing_at_gateway` about a synthetic history row (`insert_old_history`), when there is
/// one. Generated by SQL in statements of 100,000 rows, like the history.
/// Each names what it is about in `subject` (migration 0007), as the sweeps write it.
async fn insert_open_discrepancies(ledger: &Ledger, count: usize) -> Result<usize, BoxError> {
    let (month, _) = previous_month(Utc::now());
    let from = (month - chrono::Duration::days(360)).timestamp() as f64;
    let step = 360.0 * 86_400.0 / count.max(1) as f64;
    let mut done = 0;
    while done < count {
        let n = (count - done).min(100_000);
        sqlx::query(
            "WITH RECURSIVE seq(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?2),
             d AS (SELECT i, ?3 + i * ?4 AS t,
                          printf('%s00030002%010d',
                                 strftime('%Y%m%d', ?3 + i * ?4, 'unixepoch', '+8 hours'),
                                 5000000000 + i) AS syssn,
                          100 + (i * 7919) % 100000 AS amount,
                          (SELECT id FROM payments WHERE account = 'hk' AND kind = 'payment'
                             AND out_trade_no = printf('HIST%08d', i)) AS history
                   FROM seq)
             INSERT INTO discrepancies (payment_id, account, kind, detail, evidence, found_at,
                                        subject)
             SELECT CASE WHEN i % 10 = 9 AND history IS NOT NULL THEN history END, 'hk',
                    CASE WHEN i % 10 = 9 AND history IS NOT NULL THEN 'missing_at_gateway'
                         ELSE 'missing_in_ledger' END,
                    CASE WHEN i % 10 = 9 AND history IS NOT NULL THEN
                             printf('out_trade_no HIST%08d: no gateway record in the closed window %s UTC – %s UTC',
                                    i, datetime(t, 'unixepoch', 'start of day'),
                                    datetime(t, 'unixepoch', 'start of day', '+1 day'))
                         ELSE printf('syssn %s: gateway record (0000, %d.%02d HKD) unknown to the ledger',
                                     syssn, amount / 100, amount % 100) END,
                    CASE WHEN i % 10 = 9 AND history IS NOT NULL THEN '{}'
                         ELSE json_object('syssn', syssn, 'out_trade_no', printf('OTHER%08d', i),
                                          'order_type', 'payment', 'pay_type', '800101',
                                          'txamt', CAST(amount AS TEXT), 'txcurrcd', 'HKD',
                                          'cancel', '0',
                                          'sysdtm', datetime(t, 'unixepoch', '+8 hours'),
                                          'txdtm', datetime(t, 'unixepoch', '+8 hours'),
                                          'paydtm', datetime(t, 'unixepoch', '+8 hours'),
                                          'respcd', '0000', 'errmsg', '', 'chnlsn', '',
                                          'cardcd', '') END,
                    strftime('%Y-%m-%dT%H:%M:%fZ', t + 3600, 'unixepoch'),
                    CASE WHEN i % 10 = 9 AND history IS NOT NULL THEN printf('HIST%08d', i)
                         ELSE syssn END
             FROM d",
        )
        .bind(done as i64)
        .bind((done + n) as i64)
        .bind(from)
        .bind(step)
        .execute(ledger.as_sqlite().unwrap().pool())
        .await?;
        done += n;
    }
    Ok(count)
}

/// A config for the dev accounts at `base_url` with a ledger at `ledger_path`, as payrecon's
/// own loader builds it (`config/dev.toml`'s credentials, built-in defaults otherwise).
pub fn config_toml(base_url: &str, ledger_path: &Path) -> String {
    config_toml_with(base_url, &format!("path = \"{}\"", ledger_path.display()))
}

/// What a run's `[ledger]` section names.
pub enum LedgerLine {
    Path(PathBuf),
    Url(String),
}

/// As [`config_toml`], with a PostgreSQL ledger at `url` (no password: the bench's server
/// trusts its loopback role, or libpq's `PGPASSFILE` supplies one).
pub fn config_toml_pg(base_url: &str, url: &str) -> String {
    config_toml_with(base_url, &format!("url = \"{url}\""))
}

/// The config with `ledger` (one `key = "value"` line) as the `[ledger]` section.
fn config_toml_with(base_url: &str, ledger: &str) -> String {
    format!(
        r#"[ledger]
{ledger}

[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{base_url}"
app_code = "{DEV_QFPAY_APP_CODE}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"
timezone = "+08:00"
# The ledger is the merchant's complete book: a sweep reports each record it does not know
# (the growth scenarios). Passes do not read this.
ledger_is_complete = true

[[accounts]]
name = "tw"
provider = "ecpay"
base_url = "{base_url}"
merchant_id = "{DEV_ECPAY_MERCHANT_ID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
"#
    )
}

/// Loads `config_path` through payrecon's loader; with `limits = false` lifts the client-side
/// pacing (which the loader caps at the documented limits) so nothing waits.
pub fn load_settings(config_path: &Path, limits: bool) -> Result<Settings, BoxError> {
    let mut settings = config::load(Some(config_path))?;
    if !limits {
        for a in &mut settings.accounts {
            match a {
                Account::Qfpay(q) => {
                    q.rate_per_second = u32::MAX;
                    q.rate_per_minute = u32::MAX;
                }
                Account::Ecpay(e) => e.rate_per_minute = u32::MAX,
            }
        }
    }
    Ok(settings)
}

/// What driving the engine to quiescence did, as seen from inside the engine's process.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct EngineRun {
    /// `run_once` passes that claimed something.
    pub passes: u64,
    pub claimed: u64,
    pub finalized: u64,
    /// Calls the engine counted (the sandbox's counters are the truth; this is a cross-check).
    pub engine_calls: u64,
    pub errors: u64,
    /// Open payments left when a pass found nothing due.
    pub open_left: u64,
    /// From opening the ledger to the first pass that found nothing due.
    pub wall_secs: f64,
    /// `VmHWM` of this process, if readable.
    pub peak_rss_kib: Option<u64>,
    /// Per account: seconds from the start until its last payment was settled (the latest
    /// `updated_at` of its final rows).
    pub settled_after: std::collections::BTreeMap<String, f64>,
}

/// Opens the ledger, builds the engine, and runs `run_once` passes until one claims nothing.
pub async fn drive(settings: &Settings, strategy: Strategy) -> Result<EngineRun, BoxError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let ledger = ledger::open_store(&settings.ledger).await?;
    let engine = Reconciler::new(ledger.clone(), settings)?;
    let mut run = EngineRun::default();
    run_until_quiet(&engine, strategy, &mut run).await?;
    run.wall_secs = started.elapsed().as_secs_f64();
    run.open_left = open_payments(&ledger).await?;
    const LAST: &str = "SELECT account, MAX(updated_at) FROM payments
         WHERE state NOT IN ('pending', 'in_progress', 'reversing') GROUP BY account";
    let last: Vec<(String, Option<DateTime<Utc>>)> = match &ledger {
        Ledger::Sqlite(l) => sqlx::query_as::<_, (String, String)>(LAST)
            .fetch_all(l.pool())
            .await?
            .into_iter()
            .map(|(account, at)| (account, ledger::time::from_db(&at)))
            .collect(),
        Ledger::Postgres(l) => sqlx::query_as(LAST).fetch_all(l.pool()).await?,
    };
    for (account, at) in last {
        if let Some(at) = at.filter(|t| *t >= started_at) {
            let secs = (at - started_at).num_milliseconds() as f64 / 1000.0;
            run.settled_after.insert(account, secs);
        }
    }
    ledger.close().await;
    run.peak_rss_kib = peak_rss_kib();
    Ok(run)
}

/// Payments still open (`pending`, `in_progress`, `reversing`).
pub async fn open_payments(ledger: &Ledger) -> Result<u64, BoxError> {
    const OPEN: &str =
        "SELECT COUNT(*) FROM payments WHERE state IN ('pending', 'in_progress', 'reversing')";
    let open: i64 = match ledger {
        Ledger::Sqlite(l) => sqlx::query_scalar(OPEN).fetch_one(l.pool()).await?,
        Ledger::Postgres(l) => sqlx::query_scalar(OPEN).fetch_one(l.pool()).await?,
    };
    Ok(open.max(0) as u64)
}

/// Runs `run_once` passes (every account, `strategy`) until one claims nothing, adding their
/// counters to `run`.
pub async fn run_until_quiet(
    engine: &Reconciler,
    strategy: Strategy,
    run: &mut EngineRun,
) -> Result<(), BoxError> {
    let scope = RunScope {
        strategy,
        trigger: "bench",
        ..RunScope::default()
    };
    let shutdown = CancellationToken::new();
    loop {
        let s = engine.run_once(&scope, &shutdown).await?;
        if s.counters.claimed == 0 {
            return Ok(());
        }
        run.passes += 1;
        run.claimed += s.counters.claimed;
        run.finalized += s.counters.finalized;
        run.engine_calls += s.counters.calls;
        run.errors += s.counters.errors;
    }
}

/// `VmHWM` (peak resident set size) of this process, from `/proc/self/status`.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The strategy's name on the command line and in the table.
pub fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Planned => "planned",
        Strategy::PerPayment => "per-payment",
    }
}

/// A fresh directory for one run's ledger and config.
pub fn run_dir(root: &Path, scenario: &str, strategy: Strategy, limits: bool) -> PathBuf {
    root.join(format!(
        "{scenario}-{}-{}",
        strategy_name(strategy),
        if limits { "on" } else { "off" }
    ))
}

/// Bulk seeding on a PostgreSQL ledger (`--store postgres`): the same rows as the SQLite
/// statements above, sent as arrays (`UNNEST`) or generated (`generate_series`), in statements
/// of 100,000 rows at most.
///
/// `payments` keeps `payment_counts` by a row trigger (migration 0001). Firing it once per
/// seeded row would make 900,000 upserts of the same counter row, so each statement runs in a
/// transaction that disables the insert trigger, inserts, and adds the inserted rows' counts by
/// `(account, provider, state)` itself (the `RETURNING` of the insert), before enabling it
/// again: the counts end as the trigger would have left them ([`check_counts`] verifies it).
mod pg_seed {
    use chrono::Utc;
    use payrecon::ledger::pg::PgLedger;
    use payrecon::sandbox::{BulkOutcome, SeededRecord};

    use super::{BoxError, Gateway, Scenario, previous_month};

    type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

    /// `t` at the ledger's precision (milliseconds), as the PostgreSQL ledger writes times.
    fn ms(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
        use chrono::{DurationRound, TimeDelta};
        t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
    }

    const COLUMNS: &str = "account, provider, kind, out_trade_no, provider_ref, pay_type, amount,
         currency, state, provider_code, attempts, next_check_at, created_at, registered_at,
         updated_at";

    /// Runs `insert` (an `INSERT INTO payments … RETURNING account, provider, state` taking
    /// the binds `bind` adds) with the count trigger off, adding its rows' counts.
    async fn insert_counted(
        pg: &PgLedger,
        insert: &str,
        bind: impl FnOnce(PgQuery<'_>) -> PgQuery<'_>,
    ) -> Result<u64, BoxError> {
        let mut tx = pg.pool().begin().await?;
        sqlx::query("ALTER TABLE payments DISABLE TRIGGER payment_counts_insert")
            .execute(&mut *tx)
            .await?;
        let sql = format!(
            "WITH ins AS ({insert}),
                  counted AS (
                      INSERT INTO payment_counts AS c (account, provider, state, n)
                      SELECT account, provider, state, COUNT(*) FROM ins
                      GROUP BY account, provider, state
                      ON CONFLICT (account, provider, state) DO UPDATE SET n = c.n + EXCLUDED.n
                      RETURNING n)
             SELECT COUNT(*) FROM ins"
        );
        // The SQL is built from the constants above only.
        let q = bind(sqlx::query(sqlx::AssertSqlSafe(sql)));
        let row = q.fetch_one(&mut *tx).await?;
        let n: i64 = sqlx::Row::get(&row, 0);
        sqlx::query("ALTER TABLE payments ENABLE TRIGGER payment_counts_insert")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n.max(0) as u64)
    }

    pub async fn insert_gateway_history(
        pg: &PgLedger,
        s: &Scenario,
        history: &[&SeededRecord],
    ) -> Result<usize, BoxError> {
        let (account, provider, currency) = match s.gateway {
            Gateway::Qfpay => ("hk", "qfpay", "HKD"),
            Gateway::Ecpay => ("tw", "ecpay", "TWD"),
        };
        let now = ms(Utc::now());
        let insert = format!(
            "INSERT INTO payments ({COLUMNS})
                 SELECT $1, $2, 'payment', o, r, p, a, $3, st, c, 1, NULL, t, $4, $4
                 FROM UNNEST($5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[],
                             $10::text[], $11::timestamptz[]) AS u(o, r, p, a, st, c, t)
                 RETURNING account, provider, state"
        );
        let mut done = 0;
        for chunk in history.chunks(10_000) {
            let mut o = Vec::with_capacity(chunk.len());
            let mut r = Vec::with_capacity(chunk.len());
            let mut p = Vec::with_capacity(chunk.len());
            let mut a = Vec::with_capacity(chunk.len());
            let mut st = Vec::with_capacity(chunk.len());
            let mut c = Vec::with_capacity(chunk.len());
            let mut t = Vec::with_capacity(chunk.len());
            for rec in chunk {
                let (state, code) = match rec.outcome {
                    BulkOutcome::Failed => ("failed", "1205"),
                    _ => ("succeeded", "0000"),
                };
                o.push(rec.out_trade_no.clone());
                r.push(rec.provider_ref.clone());
                p.push(rec.pay_type.clone());
                a.push(rec.amount_minor);
                st.push(state.to_string());
                c.push(code.to_string());
                t.push(ms(rec.created_at));
            }
            done += insert_counted(pg, &insert, |q| {
                q.bind(account)
                    .bind(provider)
                    .bind(currency)
                    .bind(now)
                    .bind(o)
                    .bind(r)
                    .bind(p)
                    .bind(a)
                    .bind(st)
                    .bind(c)
                    .bind(t)
            })
            .await? as usize;
        }
        Ok(done)
    }

    /// As the SQLite `insert_old_history`: the same keys, amounts and times.
    pub async fn insert_old_history(pg: &PgLedger, count: usize) -> Result<usize, BoxError> {
        let (month, _) = previous_month(Utc::now());
        let from = (month - chrono::Duration::days(360)).timestamp() as f64;
        let step = 360.0 * 86_400.0 / count.max(1) as f64;
        let now = ms(Utc::now());
        let insert = format!(
            "INSERT INTO payments ({COLUMNS})
                 SELECT 'hk', 'qfpay', 'payment', 'HIST' || lpad(i::text, 8, '0'),
                        '2025HIST' || lpad(i::text, 18, '0'), '800101', 100 + (i * 7919) % 100000,
                        'HKD', 'succeeded', '0000', 1, NULL,
                        date_trunc('milliseconds', to_timestamp($3 + i * $4)), $5, $5
                 FROM generate_series($1::bigint, $2::bigint - 1) AS i
                 RETURNING account, provider, state"
        );
        let mut done = 0;
        while done < count {
            let n = (count - done).min(100_000);
            insert_counted(pg, &insert, |q| {
                q.bind(done as i64)
                    .bind((done + n) as i64)
                    .bind(from)
                    .bind(step)
                    .bind(now)
            })
            .await?;
            done += n;
        }
        Ok(count)
    }

    /// `payment_counts` against a count of `payments` (the trigger-kept table must be right
    /// after the bulk seeding); an error naming the first difference.
    pub async fn check_counts(pg: &PgLedger) -> Result<(), BoxError> {
        type Wrong = (String, String, String, Option<i64>, Option<i64>);
        let wrong: Option<Wrong> = sqlx::query_as(
            "WITH real AS (SELECT account, provider, state, COUNT(*) AS n FROM payments
                           GROUP BY account, provider, state)
             SELECT COALESCE(r.account, c.account), COALESCE(r.provider, c.provider),
                    COALESCE(r.state, c.state), r.n, c.n
             FROM real r FULL JOIN payment_counts c
               ON (r.account, r.provider, r.state) = (c.account, c.provider, c.state)
             WHERE COALESCE(r.n, 0) <> COALESCE(c.n, 0)
             LIMIT 1",
        )
        .fetch_optional(pg.pool())
        .await?;
        match wrong {
            None => Ok(()),
            Some((a, p, st, real, kept)) => Err(format!(
                "payment_counts wrong after seeding: {a}/{p}/{st}: {real:?} rows, counted {kept:?}"
            )
            .into()),
        }
    }
}
