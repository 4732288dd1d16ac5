//! The command line of DESIGN.md, as clap definitions.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Portcullis: an edge mail server (SMTP on port 25 with STARTTLS, no open
/// relay, durable queue, MTA-STS delivery) and its admin CLI.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--config`, shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The configuration file; without it, the built-in development defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--json`, shared by the admin subcommands.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Show the running server's state.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// Inspect and manage the delivery queue.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
    },
    /// The MTA-STS policy cache (arrives with MTA-STS support).
    Policy {
        /// Arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// TLS-RPT reports (arrives with TLS reporting).
    Tlsrpt {
        /// Arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Submission users (arrives with authenticated submission).
    User {
        /// Arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `portcullis serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format, overriding `[log] format`: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// `portcullis config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a configuration file and print the effective configuration.
    Check(CheckArgs),
}

/// `portcullis config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub output: Output,
}

/// `portcullis queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// List queued messages.
    List,
    /// Show one message: envelope, state and headers.
    Show {
        /// Queue id.
        id: String,
    },
    /// Make messages due for delivery now.
    Retry {
        /// Queue id.
        id: Option<String>,
        /// All messages.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a message from the queue.
    Delete {
        /// Queue id.
        id: String,
        /// Send a bounce to the sender.
        #[arg(long)]
        bounce: bool,
    },
}
