//! payrecon settles payments whose outcome the merchant never learned, by asking QFPay and
//! ECPay what happened and writing the answer, with its evidence, into a ledger (SQLite, or
//! PostgreSQL shared by several replicas).
//!
//! How the crate is laid out (dependencies point inward, towards `domain`):
//!
//! - [`domain`]: pure vocabulary and rules: ids, money, payment states, what a gateway said
//!   (an [`domain::Observation`]), the state machine [`domain::decide`] and the retry schedule.
//!   No I/O, no sqlx/reqwest/tokio/config.
//! - [`gateway`]: adapters for the two gateways. `gateway::qfpay` signs and classifies QFPay
//!   OpenAPI calls; `gateway::ecpay` encrypts and classifies ECPay `ecpayment` calls. Both turn
//!   answers into domain observations or a classified [`gateway::GatewayError`].
//! - [`ledger`]: the SQLite store (sqlx): connect with the right pragmas, embedded migrations,
//!   intake, queries for the CLI. The engine's statements live here too: account leases and
//!   the fence every write presents, due units, apply.
//! - [`config`]: layered settings (defaults → file → `PAYRECON__…` env), validated into typed
//!   account settings; the only module that reads files named by the operator's config.
//! - [`intake`]: parsing and validating payments to track (CLI `track`, `import` files).
//! - [`reconcile`]: the reconcile pass (`Reconciler::run_once`): **a lane works one account**
//!   (`reconcile::lane`): under the account's lease in the ledger (heartbeat, fencing token),
//!   at the account's own pace, all lanes at once; each lane plans, calls, decides, applies
//!   each answer as it arrives, and reverses as a last resort. Sweeps run in the same lanes.
//! - [`scheduler`]: the daemon: cron jobs that trigger passes, systemd notifications, shutdown.
//! - [`sandbox`]: the built-in simulated QFPay and ECPay gateways (axum on loopback) with
//!   seeded, time-evolving scenarios, rate limits, fault injection and call counters, for tests,
//!   the demo, the benchmark and `payrecon sandbox`.
//! - [`demo`]: `payrecon demo`, the whole job on the sandbox with a self-check.
//! - [`api`]: the daemon's HTTP listener (`[api]`): intake and read API under a bearer token,
//!   gateway notifications (never evidence: they make a payment due now), health, metrics.
//! - [`metrics`]: Prometheus metrics, recorded where the engine calls and decides.
//! - [`cli`]: one file per command; the binary's `main.rs` only parses and dispatches.
//! - [`metrics`]: Prometheus metrics for `GET /metrics`: gateway calls, reversals and durations
//!   recorded as they happen, the ledger's gauges read at scrape time.
//! - [`telemetry`]: tracing-subscriber setup (text for terminals and journald, or JSON).

pub mod api;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod gateway;
pub mod intake;
pub mod ledger;
pub mod metrics;
pub mod reconcile;
pub mod sandbox;
pub mod scheduler;
pub mod telemetry;
