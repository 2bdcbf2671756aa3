//! `payrecon sandbox`: serve the simulated QFPay and ECPay gateways on loopback until SIGINT or
//! SIGTERM, for manual runs and for the end-to-end tests that spawn the binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use chrono::TimeDelta;
use clap::Args;

use crate::sandbox::{
    BulkSpec, DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, Faults, RateLimits, Sandbox, SandboxConfig, StatusLanguage,
};

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on; loopback only unless --allow-non-loopback.
    #[arg(long, default_value = "127.0.0.1:18080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Listen on a non-loopback address anyway (the sandbox accepts published test keys).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Seed of the generated records and of fault injection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Generate this many QFPay payments over the last 24 hours.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub qfpay_records: usize,
    /// Generate this many ECPay orders over the last 24 hours.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub ecpay_orders: usize,
    /// ECPay status strings in English instead of Chinese.
    #[arg(long)]
    pub english: bool,
    /// Switch the rate limits off (QFPay 100/s and 400/min → 429; ECPay 60/min → 403).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Latency added to every answer, e.g. "50ms".
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub latency: Option<Duration>,
    /// Share of calls answered HTTP 503 (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    pub error_rate: f64,
    /// Share of calls held for 60 s, past any client timeout (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    pub timeout_rate: f64,
    /// Share of answers cut in half (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    pub malformed_rate: f64,
    /// Share of answers with a wrong signature (QFPay) or Data key (ECPay) (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = rate, value_name = "RATE")]
    pub bad_signature_rate: f64,
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

fn config(args: &SandboxArgs) -> SandboxConfig {
    let mut config = SandboxConfig {
        listen: args.listen,
        allow_non_loopback: args.allow_non_loopback,
        faults: Faults {
            seed: args.seed,
            latency: args.latency.unwrap_or_default(),
            server_error_rate: args.error_rate,
            timeout_rate: args.timeout_rate,
            malformed_rate: args.malformed_rate,
            bad_signature_rate: args.bad_signature_rate,
            ..Faults::none()
        },
        ..SandboxConfig::dev()
    };
    if args.no_rate_limits {
        config.rate_limits = RateLimits::off();
    }
    if args.english {
        for m in &mut config.ecpay_merchants {
            m.language = StatusLanguage::English;
        }
    }
    config
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn run(args: &SandboxArgs) -> Result<ExitCode, ExitCode> {
    let config = config(args);
    let sandbox = Sandbox::start(config).await.map_err(|e| {
        error_line!("payrecon: {e}");
        ExitCode::FAILURE
    })?;
    let state = sandbox.state();
    let start = sandbox.clock().now() - TimeDelta::days(1);
    let day = Duration::from_secs(86_400);
    let seeded = |what: &str, r: Result<usize, crate::sandbox::SeedError>| {
        r.map_err(|e| {
            error_line!("payrecon: cannot generate {what}: {e}");
            ExitCode::FAILURE
        })
    };
    let mut spec = BulkSpec::new("SBX", args.qfpay_records, start, day);
    spec.seed = args.seed;
    let qfpay = seeded(
        "QFPay records",
        state
            .seed_qfpay_bulk(DEV_QFPAY_APP_CODE, &spec)
            .map(|r| r.len()),
    )?;
    let mut spec = BulkSpec::new("SBX", args.ecpay_orders, start, day);
    spec.seed = args.seed;
    let ecpay = seeded(
        "ECPay orders",
        state
            .seed_ecpay_bulk(DEV_ECPAY_MERCHANT_ID, &spec)
            .map(|r| r.len()),
    )?;

    let url = sandbox.base_url();
    println!("payrecon sandbox listening on {url} (QFPay and ECPay; stats at {url}sandbox/stats)");
    println!("  QFPay  app_code {DEV_QFPAY_APP_CODE}  client_key {DEV_QFPAY_CLIENT_KEY}");
    println!(
        "  ECPay  MerchantID {DEV_ECPAY_MERCHANT_ID}  HashKey {DEV_ECPAY_HASH_KEY}  HashIV {DEV_ECPAY_HASH_IV}"
    );
    println!(
        "  seeded {qfpay} QFPay payments and {ecpay} ECPay orders (seed {})",
        args.seed
    );
    println!("  these are development keys: never use them anywhere else. Ctrl-C stops.");
    terminated().await;
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    println!(
        "stopped after {} QFPay and {} ECPay calls ({} × 429, {} × 403)",
        stats.total(true),
        stats.total(false),
        stats.http_429,
        stats.http_403
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SandboxArgs,
    }

    #[test]
    fn flags_become_the_sandbox_config() {
        let w = Wrap::parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--no-rate-limits",
            "--latency",
            "20ms",
            "--error-rate",
            "0.5",
            "--seed",
            "9",
            "--english",
        ]);
        let c = config(&w.args);
        assert_eq!(c.rate_limits, RateLimits::off());
        assert_eq!(c.faults.latency, Duration::from_millis(20));
        assert_eq!((c.faults.server_error_rate, c.faults.seed), (0.5, 9));
        assert_eq!(c.ecpay_merchants[0].language, StatusLanguage::English);
        assert!(Wrap::try_parse_from(["x", "--error-rate", "1.5"]).is_err());
    }
}
