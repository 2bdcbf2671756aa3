//! Prometheus metrics (issue 17): what the service's `GET /metrics` route serves.
//!
//! Two kinds, kept apart on purpose:
//!
//! - **Recorded as things happen**, through the `metrics` facade into the process's one
//!   recorder ([`install`]): gateway calls and their durations (recorded where each client
//!   sends its HTTP request, [`gateway`]), reversals, pass and unit durations ([`engine`]).
//!   Counters and histograms only; with no recorder installed (a CLI command) the macros cost
//!   next to nothing.
//! - **Read from the ledger at scrape time** ([`render`]): payments per state, the oldest open
//!   payment, open discrepancies, due backlog, pauses, lane heartbeats. The ledger is what
//!   every process sharing it writes, so these are true whichever process did the work, and a
//!   fresh rendering shows nothing stale (`ledger_gauges`). Every statement reads a
//!   trigger-kept count or seeks an index (`src/ledger/plan_tests.rs`).
//!
//! Names, labels and outcomes are listed in docs/OPERATIONS.md, "Metrics and alerts"; the
//! dashboard and alert rules in `contrib/` use them.

mod engine;
mod gateway;
mod ledger_gauges;

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::Unit;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ledger::{Ledger, LedgerError};

pub(crate) use engine::{Reversal, pass_finished, reversal, time_pass, time_unit};
pub(crate) use gateway::call_finished;

const GATEWAY_CALLS: &str = "payrecon_gateway_calls_total";
const GATEWAY_CALL_DURATION: &str = "payrecon_gateway_call_duration_seconds";
const REVERSALS: &str = "payrecon_reversals_total";
const PASSES: &str = "payrecon_passes_total";
const PASS_DURATION: &str = "payrecon_pass_duration_seconds";
const UNIT_DURATION: &str = "payrecon_unit_duration_seconds";
const BUILD_INFO: &str = "payrecon_build_info";

const PAYMENTS: &str = "payrecon_payments";
const PAYMENTS_DUE: &str = "payrecon_payments_due";
const OLDEST_OPEN_AGE: &str = "payrecon_oldest_open_payment_age_seconds";
const DISCREPANCIES_OPEN: &str = "payrecon_discrepancies_open";
const ACCOUNT_PAUSED: &str = "payrecon_account_paused";
const LANE_HEARTBEAT_AGE: &str = "payrecon_lane_heartbeat_age_seconds";

/// Upper bounds of the gateway latency buckets: a fast answer is a few milliseconds, QFPay's
/// request timeout 5 s by default, ECPay's at least 30 s (its advice), 60 s the longest.
const GATEWAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// A unit is sized to take half a heartbeat interval (10 s with the default 60 s lease).
const UNIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0,
];
/// A pass lasts from well under a second (nothing due) to an hour (an ECPay backlog at 30 calls
/// a minute).
const PASS_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (a scrape
/// folds them too); without it they would pile up in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

/// Every metric recorded through the facade, with its help text.
const RECORDED: [(&str, Kind, Unit, &str); 7] = [
    (
        GATEWAY_CALLS,
        Kind::Counter,
        Unit::Count,
        "HTTP requests sent to a gateway, retries included, by account, endpoint and outcome.",
    ),
    (
        GATEWAY_CALL_DURATION,
        Kind::Histogram(GATEWAY_BUCKETS),
        Unit::Seconds,
        "Duration of one HTTP request to a gateway (one attempt), by account and endpoint.",
    ),
    (
        REVERSALS,
        Kind::Counter,
        Unit::Count,
        "Last-resort reversals/closes: sent, refused by the gateway, confirmed reversed in the ledger.",
    ),
    (
        PASSES,
        Kind::Counter,
        Unit::Count,
        "Reconcile passes ended, by trigger (cron, cli) and status (completed, interrupted, failed).",
    ),
    (
        PASS_DURATION,
        Kind::Histogram(PASS_BUCKETS),
        Unit::Seconds,
        "Duration of a reconcile pass, by trigger (cron, cli).",
    ),
    (
        UNIT_DURATION,
        Kind::Histogram(UNIT_BUCKETS),
        Unit::Seconds,
        "Duration of one unit of an account's lane: its calls, decisions and writes.",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        Unit::Count,
        "Always 1; the version label says which payrecon runs.",
    ),
];

/// The process's recorder, installed on first use and for good (idempotent): call it before
/// the engine starts, so that nothing recorded before is lost. Histograms are rendered as
/// Prometheus histograms with fixed buckets. If another recorder is installed already, the
/// facade's metrics go there and this handle renders none of them (a WARN says so).
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, kind, _, _) in &RECORDED {
            if let Kind::Histogram(buckets) = kind {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
                    .expect("bucket lists are not empty");
            }
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = ::metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics shows only the ledger's gauges");
            return handle;
        }
        for (name, kind, unit, help) in RECORDED {
            match kind {
                Kind::Counter => ::metrics::describe_counter!(name, unit, help),
                Kind::Gauge => ::metrics::describe_gauge!(name, unit, help),
                Kind::Histogram(_) => ::metrics::describe_histogram!(name, unit, help),
            }
        }
        ::metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded at each scrape only");
        }
        handle
    })
}

/// The exposition text of `GET /metrics`: what was recorded, then the ledger's gauges read
/// now (installs the recorder if nothing did yet).
pub async fn render(ledger: &Ledger, now: DateTime<Utc>) -> Result<String, LedgerError> {
    let gauges = ledger.gauges(now).await?;
    let mut text = install().render();
    ledger_gauges::write(&mut text, &gauges, now);
    Ok(text)
}
