//! The admin CLI: a subcommand becomes one [`Request`] to the running
//! server's admin socket; the typed [`Answer`] is printed as JSON with
//! `--json`, else in its human layout.

use crate::cli::{
    ClusterCmd, Command, DmarcCmd, PinMode, PolicyCmd, QueueCmd, ReceivedCmd, ScreenCmd, TlsrptCmd,
};
use crate::config_cmd::load_config;
use portcullis_admin::{AdminError, Answer, Request};
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs an admin client subcommand.
pub fn client(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_client(command)) {
        Ok(ClientOutput { text, ok }) => {
            println!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("portcullis: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What an admin subcommand prints, and whether it succeeded (a refresh of
/// every policy prints its table and still fails when one of them failed).
struct ClientOutput {
    text: String,
    ok: bool,
}

async fn run_client(command: Command) -> Result<ClientOutput, String> {
    let (config_path, request, json) = request_of(command)?;
    let config = load_config(config_path.as_deref()).map_err(|e| match request {
        // The server would read the same file: it is not asked, and says
        // nothing, so say what that means.
        Request::Reload => format!("{e}\nnot reloaded: the server keeps the config in force"),
        _ => e.to_string(),
    })?;
    let body = portcullis_admin::call(&config.admin.socket, &request)
        .await
        .map_err(|e: AdminError| e.to_string())?;
    // `--json` prints the body as the server sent it; the typed answer
    // decides the exit code and draws the human layout.
    let text = if json {
        serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?
    } else {
        String::new()
    };
    let answer = Answer::decode(&request, body)
        .map_err(|e| format!("unexpected answer from the server: {e}"))?;
    let text = if json {
        text
    } else {
        crate::render::human(&answer)
    };
    Ok(ClientOutput {
        text,
        ok: answer.all_succeeded(),
    })
}

/// The `--config` path, the request and `--json` of an admin subcommand.
fn request_of(command: Command) -> Result<(Option<PathBuf>, Request, bool), String> {
    Ok(match command {
        Command::Status { config, output } => (config.config, Request::Status, output.json),
        Command::Reload { config, output } => (config.config, Request::Reload, output.json),
        Command::Queue {
            cmd,
            config,
            output,
        } => (config.config, queue_request(cmd)?, output.json),
        Command::Policy {
            cmd,
            config,
            output,
        } => (config.config, policy_request(cmd)?, output.json),
        Command::Tlsrpt {
            cmd,
            config,
            output,
        } => (config.config, tlsrpt_request(cmd), output.json),
        Command::Screen {
            cmd,
            config,
            output,
        } => (config.config, screen_request(cmd), output.json),
        Command::Dmarc {
            cmd,
            config,
            output,
        } => (
            config.config,
            match cmd {
                DmarcCmd::List => Request::DmarcList,
                DmarcCmd::Send => Request::DmarcSend,
            },
            output.json,
        ),
        Command::Cluster {
            cmd,
            config,
            output,
        } => (
            config.config,
            match cmd {
                ClusterCmd::Migrate => Request::ClusterMigrate,
            },
            output.json,
        ),
        Command::Serve(_) | Command::Config(_) | Command::User { .. } => {
            return Err("not an admin command".into());
        }
    })
}

/// The admin request of a `queue` subcommand.
fn queue_request(cmd: QueueCmd) -> Result<Request, String> {
    Ok(match cmd {
        QueueCmd::List => Request::QueueList,
        QueueCmd::Show { id } => Request::QueueShow { id },
        QueueCmd::Retry { id, all } => {
            if id.is_none() && !all {
                return Err("queue retry needs an ID or --all".into());
            }
            Request::QueueRetry { id }
        }
        QueueCmd::Delete { id, bounce } => Request::QueueDelete { id, bounce },
    })
}

/// The admin request of a `tlsrpt` subcommand.
fn tlsrpt_request(cmd: TlsrptCmd) -> Request {
    match cmd {
        TlsrptCmd::List => Request::TlsrptList,
        TlsrptCmd::Show { domain, day } => Request::TlsrptShow {
            domain: domain.to_string(),
            day,
        },
        TlsrptCmd::Send => Request::TlsrptSend,
        TlsrptCmd::Received {
            cmd: ReceivedCmd::List { domain, since },
        } => Request::TlsrptReceivedList {
            domain: domain.map(|d| d.to_string()),
            since,
        },
        TlsrptCmd::Received {
            cmd: ReceivedCmd::Show { id },
        } => Request::TlsrptReceivedShow { id },
    }
}

/// The admin request of a `screen` subcommand.
fn screen_request(cmd: ScreenCmd) -> Request {
    match cmd {
        ScreenCmd::Show { ip } => Request::ScreenShow { ip },
        ScreenCmd::Clear { target } => Request::ScreenClear { target },
    }
}

/// The admin request of a `policy` subcommand.
fn policy_request(cmd: PolicyCmd) -> Result<Request, String> {
    Ok(match cmd {
        PolicyCmd::List => Request::PolicyList,
        PolicyCmd::Show { domain } => Request::PolicyShow {
            domain: domain.to_string(),
        },
        PolicyCmd::Fetch { domain } => Request::PolicyFetch {
            domain: domain.to_string(),
        },
        PolicyCmd::Refresh { domain } => Request::PolicyRefresh {
            domain: domain.map(|d| d.to_string()),
        },
        PolicyCmd::Evict { domain } => Request::PolicyEvict {
            domain: domain.to_string(),
        },
        PolicyCmd::Explain { domain } => Request::PolicyExplain {
            domain: domain.to_string(),
        },
        PolicyCmd::Own { domain } => Request::PolicyOwn {
            domain: domain.map(|d| d.to_string()),
        },
        PolicyCmd::Pin {
            domain,
            mode,
            mx,
            until,
            reason,
        } => {
            if mx.is_empty() && mode != PinMode::None {
                return Err(format!(
                    "policy pin --mode {}: give at least one --mx PATTERN (only mode none needs none)",
                    mode.as_str()
                ));
            }
            if reason.trim().is_empty() {
                return Err("policy pin: --reason must not be empty".into());
            }
            Request::PolicyPin {
                domain: domain.to_string(),
                mode: mode.as_str().into(),
                mx,
                until,
                reason,
            }
        }
        PolicyCmd::Unpin { domain } => Request::PolicyUnpin {
            domain: domain.to_string(),
        },
    })
}
