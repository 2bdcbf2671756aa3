//! `payrecon generate-assets DIR` (hidden): writes the man page and the shell completions
//! that the Debian package ships, from the same clap definition as the binary, so they never
//! drift from `--help`, and the API's OpenAPI description generated from its handlers (the
//! same text as `docs/openapi.json`, which a test keeps equal). A hidden subcommand rather than build.rs: the CLI types live in the
//! library, which build.rs cannot use, and only packaging needs these files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct AssetsArgs {
    /// Directory to write into (created if missing): payrecon.1, payrecon.bash, _payrecon,
    /// payrecon.fish, openapi.json.
    pub dir: PathBuf,
}

pub fn run(args: &AssetsArgs) -> Result<ExitCode, ExitCode> {
    write_all(&args.dir).map_err(|e| {
        error_line!("payrecon: cannot write to {}: {e}", args.dir.display());
        ExitCode::FAILURE
    })?;
    println!(
        "man page, completions and openapi.json written to {}",
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_all(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut man = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut man)?;
    std::fs::write(dir.join("payrecon.1"), man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "payrecon", dir)?;
    }
    std::fs::write(dir.join("openapi.json"), crate::api::openapi_json())?;
    Ok(())
}
