//! Logging for operators: plain text on stderr (colour only on a terminal, and no timestamp of
//! our own when stderr is the journal, which stamps every line), or JSON lines for log shippers.
//! `RUST_LOG` overrides the configured level.
//!
//! Under journald each text line also starts with its syslog priority (`<3>` error, `<4>`
//! warning, `<6>` info, `<7>` debug), which journald strips and records, so
//! `journalctl -u payrecon -p warning` shows exactly the warnings and errors.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
            let under_journald = stderr_is_journal();
            if under_journald {
                let lines = tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false);
                builder
                    .with_ansi(false)
                    .event_format(SyslogPriority(lines))
                    .try_init()
            } else {
                builder.with_ansi(on_terminal).with_target(false).try_init()
            }
        }
    };
    // Already initialised (tests calling twice): keep the first.
    drop(result);
}

/// Whether stderr is the journal stream systemd connected. systemd sets `JOURNAL_STREAM` to
/// the stream's `device:inode`; the variable alone is not enough, since child processes inherit
/// it (a shell in a terminal started by a user service has it too) while their stderr may point
/// elsewhere. See systemd.exec(5), "$JOURNAL_STREAM".
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Prefixes each event with its syslog priority for journald (sd-daemon(3) `SD_ERR` …).
#[derive(Debug)]
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
