//! The `payrecon` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use payrecon::telemetry::{self, Priority};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::install_panic_hook();
    let cli = match payrecon::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error under systemd (an edited ExecStart=) must reach `journalctl -p err`;
        // --help and --version go to stdout as clap prints them.
        Err(e) if e.use_stderr() && telemetry::under_journald() => {
            telemetry::stderr_lines(Priority::Error, &e.render().to_string());
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => e.exit(),
    };
    payrecon::cli::run(cli).await
}
