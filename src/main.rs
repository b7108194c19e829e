//! The `pullgate` binary: parses the command line and hands it to [`pullgate::cli`].
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    pullgate::cli::run(pullgate::cli::Cli::parse())
}
