//! Logging for operators: plain text on stderr (colour only on a terminal, and no timestamp of
//! our own under journald, which stamps every line), or JSON lines for log shippers.
//! `RUST_LOG` overrides the configured level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},tokio_cron_scheduler=warn,sqlx=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => {
            let on_terminal = std::io::stderr().is_terminal();
            let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
            let b = builder.with_ansi(on_terminal).with_target(false);
            if under_journald {
                b.without_time().try_init()
            } else {
                b.try_init()
            }
        }
    };
    // Already initialised (tests calling twice): keep the first.
    drop(result);
}
