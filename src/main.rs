//! `popek`: run a guest under one of Popek's engines, list the embedded test ROMs,
//! measure the engines.

mod bench;
mod cli;
mod engine;
mod rom;
mod run;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => run::run(&args),
        cli::Command::Roms(args) => rom::roms(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Bench(args) => bench::bench(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: what is wrong and where.
            eprintln!("popek: error: {e:#}");
            ExitCode::from(cli::EXIT_USAGE)
        }
    }
}
