//! The admin CLI: `config check` reads the file; everything else asks the
//! running server over the admin socket.

use crate::cli::{CheckArgs, Command, QueueCmd};
use portcullis_admin::{AdminError, QueueDetail, QueueEntry, Request, StatusReport, render_table};
use portcullis_config::{Config, ConfigError};
use std::path::Path;
use std::process::ExitCode;

/// The config from `--config`, or the development defaults.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => portcullis_config::load(p),
        None => Ok(portcullis_config::development_defaults()),
    }
}

/// `portcullis config check`: exit 0 and print the effective config, or
/// exit 2 with every error and its line.
pub fn config_check(args: &CheckArgs) -> ExitCode {
    match load_config(args.config.config.as_deref()) {
        Ok(config) => {
            let text = if args.output.json {
                serde_json::to_string_pretty(&config).unwrap_or_default()
            } else {
                effective(&config)
            };
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// A human-readable summary of the effective configuration.
fn effective(c: &Config) -> String {
    use portcullis_config::format_duration as d;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<28} {v}\n"));
    line("hostname", c.hostname.clone());
    line("data_dir", c.data_dir.display().to_string());
    for l in &c.listeners {
        line("listen", format!("{} ({})", l.address, l.role.as_str()));
    }
    line(
        "tls",
        match &c.tls.files {
            Some((cert, key)) => format!("{} / {}", cert.display(), key.display()),
            None => "self-signed (generated into data_dir/tls)".into(),
        },
    );
    line(
        "relay.accepted_domains",
        c.relay
            .accepted_domains
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    line(
        "relay.trusted_networks",
        c.relay
            .trusted_networks
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    for r in &c.routes {
        let dot = if r.include_subdomains { "." } else { "" };
        line(
            "route",
            format!(
                "{dot}{} -> {}:{}",
                r.domain, r.next_hop.host, r.next_hop.port
            ),
        );
    }
    line(
        "dns.nameservers",
        if c.dns.nameservers.is_empty() {
            "system (/etc/resolv.conf)".into()
        } else {
            c.dns
                .nameservers
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    line("delivery.port", c.delivery.port.to_string());
    line(
        "delivery.max_concurrent",
        c.delivery.max_concurrent.to_string(),
    );
    line("delivery.per_domain", c.delivery.per_domain.to_string());
    line(
        "queue.retry",
        c.queue
            .retry
            .iter()
            .map(|x| d(*x))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line("queue.max_age", d(c.queue.max_age));
    line("queue.delay_warning", d(c.queue.delay_warning));
    line("admin.socket", c.admin.socket.display().to_string());
    line(
        "admin.metrics",
        c.admin
            .metrics
            .map(|m| m.to_string())
            .unwrap_or_else(|| "off".into()),
    );
    let l = &c.limits;
    line("limits.max_connections", l.max_connections.to_string());
    line(
        "limits.max_connections_per_ip",
        l.max_connections_per_ip.to_string(),
    );
    line("limits.max_message_size", l.max_message_size.to_string());
    line("limits.max_recipients", l.max_recipients.to_string());
    line("limits.max_line_length", l.max_line_length.to_string());
    line("limits.max_errors", l.max_errors.to_string());
    line("limits.command_timeout", d(l.command_timeout));
    line("limits.data_timeout", d(l.data_timeout));
    line("limits.greet_pause", d(l.greet_pause));
    line(
        "smtp.bare_newline",
        format!("{:?}", c.bare_newline).to_lowercase(),
    );
    out.trim_end().to_string()
}

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
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("portcullis: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_client(command: Command) -> Result<String, String> {
    let (config_path, request, json) = match command {
        Command::Status { config, output } => (config.config, Request::Status, output.json),
        Command::Queue {
            cmd,
            config,
            output,
        } => {
            let req = match cmd {
                QueueCmd::List => Request::QueueList,
                QueueCmd::Show { id } => Request::QueueShow { id },
                QueueCmd::Retry { id, all } => {
                    if id.is_none() && !all {
                        return Err("queue retry needs an ID or --all".into());
                    }
                    Request::QueueRetry { id }
                }
                QueueCmd::Delete { id, bounce } => Request::QueueDelete { id, bounce },
            };
            (config.config, req, output.json)
        }
        Command::Policy { .. } => {
            return Err("the MTA-STS policy cache is not in this version yet (issue 5)".into());
        }
        Command::Tlsrpt { .. } => {
            return Err("TLS reporting is not in this version yet (issue 6)".into());
        }
        Command::User { .. } => {
            return Err("submission users are not in this version yet (issue 7)".into());
        }
        Command::Serve(_) | Command::Config(_) => return Err("not an admin command".into()),
    };
    let config = load_config(config_path.as_deref()).map_err(|e| e.to_string())?;
    let body = portcullis_admin::call(&config.admin.socket, &request)
        .await
        .map_err(|e: AdminError| e.to_string())?;
    if json {
        return serde_json::to_string_pretty(&body).map_err(|e| e.to_string());
    }
    render(&request, body)
}

fn render(request: &Request, body: serde_json::Value) -> Result<String, String> {
    let decode_err = |e: serde_json::Error| format!("unexpected answer from the server: {e}");
    Ok(match request {
        Request::Status => {
            let s: StatusReport = serde_json::from_value(body).map_err(decode_err)?;
            let mut rows = vec![
                vec!["version".into(), s.version],
                vec!["hostname".into(), s.hostname],
                vec!["uptime".into(), format!("{}s", s.uptime_secs)],
                vec!["open sessions".into(), s.open_sessions.to_string()],
                vec!["queue size".into(), s.queue_size.to_string()],
                vec!["data dir".into(), s.data_dir],
            ];
            for l in s.listeners {
                rows.push(vec![
                    "listener".into(),
                    format!("{} ({})", l.address, l.role),
                ]);
            }
            render_table(&["", ""], &rows)
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join("\n")
        }
        Request::QueueList => {
            let entries: Vec<QueueEntry> = serde_json::from_value(body).map_err(decode_err)?;
            if entries.is_empty() {
                return Ok("queue is empty".into());
            }
            let rows: Vec<Vec<String>> = entries
                .into_iter()
                .map(|e| {
                    vec![
                        e.id,
                        e.sender,
                        e.recipients
                            .iter()
                            .map(|r| format!("{} ({})", r.address, r.state))
                            .collect::<Vec<_>>()
                            .join(", "),
                        e.size.to_string(),
                        e.attempts.to_string(),
                        e.last_error.unwrap_or_default(),
                    ]
                })
                .collect();
            render_table(
                &[
                    "ID",
                    "SENDER",
                    "RECIPIENTS",
                    "SIZE",
                    "ATTEMPTS",
                    "LAST ERROR",
                ],
                &rows,
            )
        }
        Request::QueueShow { .. } => {
            let d: QueueDetail = serde_json::from_value(body).map_err(decode_err)?;
            let envelope = serde_json::to_string_pretty(&d.envelope).unwrap_or_default();
            format!("{}\n\n{}", envelope, d.headers.trim_end())
        }
        _ => serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?,
    })
}
