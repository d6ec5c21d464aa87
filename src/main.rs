//! `popek`: run a guest under one of Popek's engines, list the embedded test ROMs,
//! measure the engines.

mod bench;
mod cli;
mod ctrl_c;
mod devices;
mod engine;
mod gdb;
mod gui;
mod output;
mod rom;
mod run;
mod stats;

use clap::Parser;
use output::{errln, OutputError};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(e),
    };
    let result = match cli.command {
        cli::Command::Run(args) => run::run(&args),
        cli::Command::Roms(args) => rom::roms(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Bench(args) => bench::bench(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Gui(args) => gui::gui(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // The reader went away: nobody is left to tell.
        Err(e)
            if e.downcast_ref::<OutputError>()
                .is_some_and(OutputError::is_closed_pipe) =>
        {
            ExitCode::from(cli::EXIT_BROKEN_PIPE)
        }
        Err(e) => {
            // One line: what is wrong and where. If stderr itself fails, the status
            // still tells.
            let _ = errln!("popek: error: {e:#}");
            ExitCode::from(match e.downcast_ref::<OutputError>() {
                Some(_) => cli::EXIT_OUTPUT,
                None => cli::EXIT_USAGE,
            })
        }
    }
}
