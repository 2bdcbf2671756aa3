//! The command line (docs/ARCHITECTURE.md §5). One file per command; this file holds the argument
//! types and the dispatch. Commands print results on stdout and problems on stderr, and
//! return sysexits-style exit codes.

/// `eprintln!` at priority error: the line(s) carry `<3>` when stderr is the journal.
macro_rules! error_line {
    ($($arg:tt)*) => {
        $crate::telemetry::stderr_lines($crate::telemetry::Priority::Error, &format!($($arg)*))
    };
}

/// `eprintln!` at priority warning: the line(s) carry `<4>` when stderr is the journal.
macro_rules! warning_line {
    ($($arg:tt)*) => {
        $crate::telemetry::stderr_lines($crate::telemetry::Priority::Warning, &format!($($arg)*))
    };
}

mod assets;
mod config_check;
mod daemon;
mod demo;
mod discrepancies;
mod import;
mod ledger;
mod output;
mod pay;
mod reconcile;
mod sandbox;
mod sweep;
mod track;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigError, LogFormat, Settings};

/// Exit code for a command used wrongly (`EX_USAGE`): an argument refused.
pub const EX_USAGE: u8 = 64;
/// Exit code for bad input data (`EX_DATAERR`).
pub const EX_DATAERR: u8 = 65;
/// Exit code for a missing input file (`EX_NOINPUT`).
pub const EX_NOINPUT: u8 = 66;
/// Exit code of a daemon whose passes kept failing (`EX_TEMPFAIL`): try again later.
pub const EX_TEMPFAIL: u8 = 75;

#[derive(Debug, Parser)]
#[command(
    name = "payrecon",
    version,
    about = "Reconciles uncertain QFPay and ECPay payments into a ledger (SQLite or PostgreSQL)",
    long_about = "payrecon settles payments whose outcome your checkout never learned. Register them \
                  (track, import), and payrecon asks QFPay and ECPay what happened and records the \
                  final state with its evidence in a ledger: a SQLite file, or a PostgreSQL \
                  database that several replicas share."
)]
pub struct Cli {
    /// Configuration file laid over the built-in defaults (env PAYRECON__SECTION__KEY overrides both).
    #[arg(long, global = true, env = "PAYRECON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: cron-scheduled reconcile passes (systemd Type=notify).
    Run,
    /// One reconcile pass over due payments.
    Reconcile(reconcile::ReconcileArgs),
    /// The whole job on the built-in sandbox gateways: about two thousand payments settled.
    Demo(demo::DemoArgs),
    /// Sweep a closed QFPay window and report discrepancies.
    Sweep(sweep::SweepArgs),
    /// Create a QFPay payment (ledger row first, then the call) and print its pay_url.
    Pay(pay::PayArgs),
    /// Register one payment to reconcile.
    Track(track::TrackArgs),
    /// Register payments from a .jsonl or .csv file (all-or-nothing).
    Import(import::ImportArgs),
    /// Inspect the ledger.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// List or resolve discrepancies.
    #[command(subcommand)]
    Discrepancies(discrepancies::DiscrepancyCommand),
    /// Configuration commands.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Create or upgrade the ledger schema (also done automatically by every command).
    Migrate,
    /// Serve the simulated QFPay and ECPay gateways on loopback until interrupted.
    Sandbox(sandbox::SandboxArgs),
    /// Write the man page and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets(assets::AssetsArgs),
}

/// Loads configuration; on failure prints one line per problem and yields `EX_CONFIG`.
pub(crate) fn load_settings(cli: &Cli) -> Result<Settings, ExitCode> {
    config::load(cli.config.as_deref()).map_err(|e: ConfigError| {
        error_line!("payrecon: configuration is invalid:");
        for line in e.lines() {
            error_line!("  {line}");
        }
        ExitCode::from(config::EX_CONFIG)
    })
}

/// Opens the ledger named by the settings, printing a clear error on failure.
pub(crate) async fn open_ledger(settings: &Settings) -> Result<crate::ledger::Ledger, ExitCode> {
    crate::ledger::open_store(&settings.ledger)
        .await
        .map_err(|e| {
            error_line!("payrecon: {e}");
            ExitCode::FAILURE
        })
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    // `config check` reports problems itself, so it must not stop at loading.
    if let Command::Config(cmd) = &cli.command {
        return config_check::run(&cli, cmd);
    }
    // Packaging runs this on a build machine, with no configuration to load.
    if let Command::GenerateAssets(args) = &cli.command {
        return assets::run(args).unwrap_or_else(|code| code);
    }
    let settings = match load_settings(&cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => settings.log.format,
    };
    crate::telemetry::init(format, &settings.log.level);
    let result = match &cli.command {
        Command::Run => daemon::run(&settings).await,
        Command::Reconcile(args) => reconcile::run(&settings, args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Sweep(args) => sweep::run(&settings, args).await,
        Command::Pay(args) => pay::run(&settings, args).await,
        Command::Track(args) => track::run(&settings, args).await,
        Command::Import(args) => import::run(&settings, args).await,
        Command::Ledger(cmd) => ledger::run(&settings, cmd).await,
        Command::Discrepancies(cmd) => discrepancies::run(&settings, cmd).await,
        Command::Migrate => migrate(&settings).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Config(_) | Command::GenerateAssets(_) => unreachable!("handled above"),
    };
    result.unwrap_or_else(|code| code)
}

async fn migrate(settings: &Settings) -> Result<ExitCode, ExitCode> {
    let ledger = open_ledger(settings).await?;
    ledger.close().await;
    println!("ledger {} is up to date", settings.ledger.shown());
    Ok(ExitCode::SUCCESS)
}
