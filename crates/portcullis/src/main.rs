//! `portcullis`: the edge mail server and its admin CLI in one binary.
//!
//! `portcullis serve` runs the server; every other subcommand is a client
//! of the running server's admin socket (sled locks the store, so the CLI
//! never opens it), except `config check`, which only reads the file.

#![forbid(unsafe_code)]

mod cli;
mod client;
mod config_cmd;
mod dates;
mod dmarc;
mod handler;
mod inbound_parts;
mod logging;
mod metrics;
mod reload;
mod render;
mod serve;
mod state;
mod tlsrpt;
mod users;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::main(args),
        cli::Command::Config(cli::ConfigCmd::Check(args)) => config_cmd::config_check(&args),
        cli::Command::User {
            cmd,
            config,
            output,
        } => users::main(cmd, config.config.as_deref(), output.json),
        other => client::client(other),
    }
}
