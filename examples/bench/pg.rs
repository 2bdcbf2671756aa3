//! `--store postgres`: the databases the benchmark creates on the server `--pg-url` names
//! (its database is only used to connect: `CREATE DATABASE` / `DROP DATABASE` run there).
//!
//! Per scenario a template database is built once (migrations, the due payments through
//! `Ledger::register`, history by bulk SQL, then `VACUUM ANALYZE`, as autovacuum would have
//! left a ledger that old); per run a fresh database is copied from it (`CREATE DATABASE …
//! TEMPLATE … STRATEGY FILE_COPY`, the counterpart of copying the SQLite file) and dropped
//! after the run. The role needs `CREATEDB`.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::scenario::BoxError;

/// The URL of database `db` on the server of `base` (same role, host, port and options).
pub fn db_url(base: &str, db: &str) -> Result<String, BoxError> {
    let mut u = url::Url::parse(base)?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// A database name for the bench: `payrecon_bench_<pid>_<scenario>_<what>`.
pub fn db_name(scenario: &str, what: &str) -> String {
    format!(
        "payrecon_bench_{}_{}_{what}",
        std::process::id(),
        scenario.replace('-', "_")
    )
}

async fn admin(base: &str, sql: String) -> Result<(), BoxError> {
    let mut c = PgConnection::connect(base).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(())
}

/// Creates database `name` (dropping one left by an earlier run), empty or as a copy of
/// `template`.
pub async fn create(base: &str, name: &str, template: Option<&str>) -> Result<(), BoxError> {
    drop_db(base, name).await?;
    let sql = match template {
        None => format!("CREATE DATABASE \"{name}\""),
        Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\" STRATEGY FILE_COPY"),
    };
    admin(base, sql).await
}

/// Drops database `name` if it exists (closing its connections).
pub async fn drop_db(base: &str, name: &str) -> Result<(), BoxError> {
    admin(
        base,
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await
}

/// `VACUUM (ANALYZE)` of the database at `url`, and a checkpoint: what a ledger that old
/// would have had from autovacuum, and no dirty buffers of the seeding left for the runs.
pub async fn settle(url: &str) -> Result<(), BoxError> {
    let mut c = PgConnection::connect(url).await?;
    // Two statements: VACUUM cannot run in the implicit transaction of a multi-statement query.
    sqlx::raw_sql("VACUUM (ANALYZE)").execute(&mut c).await?;
    sqlx::raw_sql("CHECKPOINT").execute(&mut c).await?;
    c.close().await?;
    Ok(())
}
