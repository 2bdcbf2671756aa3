//! Shared pieces of the engine tests: a scripted fake QFPay and ECPay on mockito, a ledger and
//! an engine built through the real config loader.

#![allow(dead_code)]

pub mod fake_ecpay;
pub mod fake_qfpay;
#[path = "../pg_support/mod.rs"]
pub mod pg_support;

use chrono::{DateTime, Utc};
use payrecon::config::{self, Settings};
use payrecon::domain::{
    AccountName, Currency, Money, OutTradeNo, PayType, Provider, ProviderRef, RecordKind,
};
use payrecon::ledger::{self, Ledger, NewPayment, PaymentRow};
use payrecon::reconcile::{Reconciler, RunScope, RunSummary};
use tokio_util::sync::CancellationToken;

/// A QFPay `syssn` prefix for fake records; [`syssn`] appends a 4-digit number.
pub const SYSSN: &str = "2026112200010002000000";

pub fn syssn(n: usize) -> String {
    format!("{SYSSN}{n:04}")
}

pub const QF_KEY: &str = "TESTCLIENTKEY0000000000000000000";
pub const EC_KEY: &str = "pwFHCqoQZGmho4w6";
pub const EC_IV: &str = "EkRm7iFT261dpevs";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub ledger: Ledger,
}

/// A config with a QFPay account `hk` (plus `extra` keys) and an ECPay account `tw`.
pub async fn harness(qf_url: &str, ec_url: &str, extra: &str) -> Harness {
    harness_with(
        "",
        &format!(
            r#"{}
[[accounts]]
name = "tw"
provider = "ecpay"
base_url = "{ec_url}"
merchant_id = "3002607"
hash_key = "{EC_KEY}"
hash_iv = "{EC_IV}"
rate_per_minute = 6000
"#,
            qfpay_account(qf_url, 100, 400, extra)
        ),
    )
    .await
}

/// The QFPay account `hk` at `qf_url` with these rates, plus `extra` keys.
pub fn qfpay_account(qf_url: &str, per_second: u32, per_minute: u32, extra: &str) -> String {
    format!(
        r#"
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{qf_url}"
app_code = "APP"
client_key = "{QF_KEY}"
batch_size = 4
rate_per_second = {per_second}
rate_per_minute = {per_minute}
{extra}
"#
    )
}

/// A harness whose config has a ledger (SQLite in the harness's directory, or a fresh PostgreSQL
/// database with `PAYRECON_TEST_STORE=postgres`: [`pg_support::ledger_store_toml`]),
/// `[reconcile]` with `chunk_size = 50` and the
/// `reconcile` keys, then `accounts` (whole `[[accounts]]` tables).
pub async fn harness_with(reconcile: &str, accounts: &str) -> Harness {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[ledger]
{ledger}
[reconcile]
chunk_size = 50
{reconcile}
{accounts}
"#,
        ledger = pg_support::ledger_store_toml(&dir.path().join("l.db"))
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let settings = config::load(Some(&path)).unwrap();
    let ledger = ledger::open_store(&settings.ledger).await.unwrap();
    Harness {
        dir,
        settings,
        ledger,
    }
}

impl Harness {
    /// Runs one statement straight on the store (a test's setup the ledger has no operation
    /// for). Keep `sql` to what both stores read alike: timestamps as ISO strings, no `?`.
    pub async fn execute(&self, sql: &str) {
        let q = || sqlx::AssertSqlSafe(sql.to_string());
        match &self.ledger {
            Ledger::Sqlite(l) => sqlx::query(q()).execute(l.pool()).await.map(drop),
            Ledger::Postgres(l) => sqlx::query(q()).execute(l.pool()).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql:?} on {}: {e}", self.ledger.store_name()))
    }

    /// The rows of one query straight on the store, as `T` (a tuple of types both stores
    /// decode: text, integers, `DateTime<Utc>`).
    pub async fn fetch_all<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        pg_support::Db::of(&self.ledger).fetch_all(sql).await
    }

    pub fn engine(&self) -> Reconciler {
        Reconciler::new(self.ledger.clone(), &self.settings).unwrap()
    }

    pub async fn pass(&self, engine: &Reconciler) -> RunSummary {
        let scope = RunScope {
            all: true,
            trigger: "test",
            ..RunScope::default()
        };
        engine
            .run_once(&scope, &CancellationToken::new())
            .await
            .unwrap()
    }

    pub async fn register(&self, payments: &[NewPayment]) {
        let r = self.ledger.register(payments, Utc::now()).await.unwrap();
        assert!(r.conflicts.is_empty());
    }

    pub async fn payment(&self, out_trade_no: &str) -> PaymentRow {
        self.ledger
            .find_payments(out_trade_no)
            .await
            .unwrap()
            .remove(0)
    }

    pub async fn event_kinds(&self, out_trade_no: &str) -> Vec<String> {
        let p = self.payment(out_trade_no).await;
        self.ledger
            .events(p.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

pub fn qf_payment(
    no: &str,
    syssn: Option<&str>,
    pay_type: &str,
    amount: i64,
    created_at: DateTime<Utc>,
) -> NewPayment {
    NewPayment {
        account: AccountName::parse("hk").unwrap(),
        provider: Provider::Qfpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Qfpay).unwrap(),
        provider_ref: syssn.map(|s| ProviderRef::parse(s).unwrap()),
        pay_type: Some(PayType::parse(pay_type).unwrap()),
        amount: Money::new(amount, Currency::parse("HKD").unwrap()).unwrap(),
        created_at,
        expires_at: None,
    }
}

pub fn ec_payment(no: &str, amount: i64, created_at: DateTime<Utc>) -> NewPayment {
    NewPayment {
        account: AccountName::parse("tw").unwrap(),
        provider: Provider::Ecpay,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse(no, Provider::Ecpay).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount: Money::new(amount, Currency::parse("TWD").unwrap()).unwrap(),
        created_at,
        expires_at: None,
    }
}

pub fn minutes_ago(n: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::minutes(n)
}

/// One CPM payment `C1`, in progress at the gateway for 5 minutes (so past its last-resort
/// deadline), on a QFPay account paced at 20 calls a minute (one every 3 s) with a 3 s lease
/// (heartbeat every 1 s); a pass over it running in the background.
pub async fn stuck_cpm_pass_in_background() -> (
    fake_qfpay::FakeQfpay,
    Harness,
    std::sync::Arc<Reconciler>,
    tokio::task::JoinHandle<Result<RunSummary, payrecon::reconcile::ReconcileError>>,
) {
    let t = minutes_ago(5);
    let fake = fake_qfpay::FakeQfpay::start(vec![fake_qfpay::FakeRecord::new(
        &syssn(1),
        "C1",
        "800108",
        900,
        &["1143"],
        t,
    )])
    .await;
    let h = harness_with("lease = \"3s\"", &qfpay_account(&fake.url(), 1, 20, "")).await;
    h.register(&[qf_payment("C1", Some(&syssn(1)), "800108", 900, t)])
        .await;
    let engine = std::sync::Arc::new(h.engine());
    let e = engine.clone();
    let pass = tokio::spawn(async move {
        let scope = RunScope {
            all: true,
            trigger: "test",
            ..RunScope::default()
        };
        e.run_once(&scope, &CancellationToken::new()).await
    });
    (fake, h, engine, pass)
}

/// A ledger file at `path` migrated only up to `version`, as an earlier payrecon left it: the
/// starting point of upgrade tests (the next `ledger::open` applies the rest).
pub async fn ledger_at_migration(path: &std::path::Path, version: i64) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate!("./migrations")
        .run_to(version, &pool)
        .await
        .unwrap();
    pool
}
