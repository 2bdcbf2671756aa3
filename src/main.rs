//! The `payrecon` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = payrecon::cli::Cli::parse();
    payrecon::cli::run(cli).await
}
