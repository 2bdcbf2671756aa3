//! Logging for operators: plain text on stderr (colour only on a terminal, and no timestamp of
//! our own when stderr is the journal, which stamps every line), or JSON lines for log shippers.
//! `RUST_LOG` overrides the configured level.
//!
//! Under journald each text line also starts with its syslog priority (`<3>` error, `<4>`
//! warning, `<6>` info, `<7>` debug), which journald strips and records, so
//! `journalctl -u payrecon -p warning` shows exactly the warnings and errors.
//!
//! Lines printed outside tracing (a command's error message, the problems of an invalid
//! configuration, a usage error, a panic) go through [`stderr_lines`], which adds the same
//! prefix: otherwise journald files them at its default priority, info, and
//! `journalctl -p err` never shows why a unit failed.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

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
            let under_journald = under_journald();
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

/// syslog priority of a line printed outside tracing (sd-daemon(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `<2>`: a panic, a bug.
    Critical = 2,
    /// `<3>`: the command failed.
    Error = 3,
    /// `<4>`: the command did less than asked but did not fail.
    Warning = 4,
}

/// Prints `text` on stderr, each line with its priority prefix when stderr is the journal.
pub fn stderr_lines(priority: Priority, text: &str) {
    let out = with_priority(priority, text, under_journald());
    // Nothing useful is left to do when stderr itself cannot be written.
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// `text` as it goes to stderr: newline-terminated, every line prefixed `<N>` on the journal
/// (journald reads the prefix per line, so a multi-line message needs it on each).
pub fn with_priority(priority: Priority, text: &str, journal: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        if journal {
            out.push_str(&format!("<{}>", priority as u8));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Prefixes panic messages with `<2>` under journald; the standard hook still prints the
/// backtrace (when enabled) after that line.
pub fn install_panic_hook() {
    if !under_journald() {
        return;
    }
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        stderr_lines(Priority::Critical, &format!("payrecon panicked: {info}"));
        standard(info);
    }));
}

/// [`stderr_is_journal`], decided once per process.
pub fn under_journald() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(stderr_is_journal)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_carries_the_priority_on_the_journal() {
        let text = "payrecon: configuration is invalid:\n  accounts[0]: bad\n";
        assert_eq!(
            with_priority(Priority::Error, text, true),
            "<3>payrecon: configuration is invalid:\n<3>  accounts[0]: bad\n"
        );
        assert_eq!(with_priority(Priority::Warning, "x", true), "<4>x\n");
    }

    #[test]
    fn off_the_journal_lines_are_unchanged() {
        assert_eq!(with_priority(Priority::Error, "a\nb", false), "a\nb\n");
    }
}
