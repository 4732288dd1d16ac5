//! `portcullis`: the edge mail server and its admin CLI in one binary.
//!
//! `portcullis serve` runs the server; every other subcommand is a client
//! of the running server's admin socket (sled locks the store, so the CLI
//! never opens it), except `config check`, which only reads the file.

#![forbid(unsafe_code)]

mod admin_handler;
mod cli;
mod commands;
mod logging;
mod serve;
mod users;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::main(args),
        cli::Command::Config(cli::ConfigCmd::Check(args)) => commands::config_check(&args),
        cli::Command::User {
            cmd,
            config,
            output,
        } => users::main(cmd, config.config.as_deref(), output.json),
        other => commands::client(other),
    }
}
