//! The admin CLI: `config check` reads the file; everything else asks the
//! running server over the admin socket.

use crate::cli::{CheckArgs, Command, PolicyCmd, QueueCmd, TlsrptCmd};
use portcullis_admin::{
    AdminError, PolicyEntry, PolicyExplain, PolicyRefresh, PolicyShow, QueueDetail, QueueEntry,
    Request, StatusReport, TlsrptEntry, TlsrptOutcome, TlsrptSendResult, render_table,
};
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
        line(
            "listen",
            format!(
                "{} ({}) max_connections {}",
                l.address,
                l.role.as_str(),
                l.max_connections
            ),
        );
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
    line("limits.max_junk_commands", l.max_junk_commands.to_string());
    line("limits.max_session_duration", d(l.max_session_duration));
    line(
        "limits.max_received_headers",
        l.max_received_headers.to_string(),
    );
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
        Command::Policy {
            cmd,
            config,
            output,
        } => (config.config, policy_request(cmd)?, output.json),
        Command::Tlsrpt {
            cmd,
            config,
            output,
        } => {
            let req = match cmd {
                TlsrptCmd::List => Request::TlsrptList,
                TlsrptCmd::Show { domain, day } => Request::TlsrptShow {
                    domain: domain.to_string(),
                    day,
                },
                TlsrptCmd::Send => Request::TlsrptSend,
            };
            (config.config, req, output.json)
        }
        Command::Serve(_) | Command::Config(_) | Command::User { .. } => {
            return Err("not an admin command".into());
        }
    };
    let config = load_config(config_path.as_deref()).map_err(|e| e.to_string())?;
    let body = portcullis_admin::call(&config.admin.socket, &request)
        .await
        .map_err(|e: AdminError| e.to_string())?;
    let ok = succeeded(&request, &body);
    // `tlsrpt show` prints the report JSON either way: it is the content.
    let text = if json || matches!(request, Request::TlsrptShow { .. }) {
        serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?
    } else {
        render(&request, body)?
    };
    Ok(ClientOutput { text, ok })
}

/// False when the server answered but part of the work failed (a policy
/// refresh of every domain where some refresh failed; a `tlsrpt send` where
/// a report could not be delivered now).
fn succeeded(request: &Request, body: &serde_json::Value) -> bool {
    match request {
        Request::PolicyRefresh { .. } => body
            .as_array()
            .is_none_or(|items| items.iter().all(|i| i["outcome"] != "failed")),
        Request::TlsrptSend => body["outcomes"].as_array().is_none_or(|items| {
            items
                .iter()
                .all(|i| i["outcome"] != "retry" && i["outcome"] != "gave-up")
        }),
        _ => true,
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
        PolicyCmd::Pin {
            domain,
            mode,
            mx,
            until,
            reason,
        } => {
            if mx.is_empty() && mode != crate::cli::PinMode::None {
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
                    // Senders, addresses and remote replies come from
                    // the network: no control character reaches the
                    // operator's terminal.
                    vec![
                        e.id,
                        escape_terminal(&e.sender),
                        escape_terminal(
                            &e.recipients
                                .iter()
                                .map(|r| format!("{} ({})", r.address, r.state))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                        e.size.to_string(),
                        e.attempts.to_string(),
                        escape_terminal(&e.last_error.unwrap_or_default()),
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
            // The headers are the sender's bytes: escaped, so that they
            // cannot drive the operator's terminal (JSON escapes C0 but
            // not DEL or C1, so the envelope goes through it too).
            let headers = d.headers.trim_end().replace("\r\n", "\n");
            format!(
                "{}\n\n{}",
                escape_terminal(&envelope),
                escape_terminal(&headers)
            )
        }
        Request::PolicyList => {
            let entries: Vec<PolicyEntry> = serde_json::from_value(body).map_err(decode_err)?;
            if entries.is_empty() {
                return Ok("no MTA-STS policies cached or pinned".into());
            }
            policy_table(&entries)
        }
        Request::PolicyShow { .. } => {
            let show: PolicyShow = serde_json::from_value(body).map_err(decode_err)?;
            let mut parts = Vec::new();
            if let Some(pin) = &show.pin {
                parts.push(policy_detail(pin));
            }
            if let Some(cached) = &show.cached {
                parts.push(policy_detail(cached));
            }
            parts.join("\n\n")
        }
        Request::PolicyFetch { .. } => {
            let e: PolicyEntry = serde_json::from_value(body).map_err(decode_err)?;
            let mut out = format!(
                "fetched {}: mode {}, id {}, mx {}, max_age {}, expires {}",
                e.domain,
                e.mode,
                e.id,
                e.mx.join(", "),
                format_age(e.max_age),
                format_expiry(e.expires_at)
            );
            if !e.in_force {
                out.push_str("\nnote: an active pin overrides this policy (see `policy show`)");
            }
            out.push_str("\n\n");
            out.push_str(e.text.trim_end());
            out
        }
        Request::PolicyRefresh { .. } => {
            let items: Vec<PolicyRefresh> = serde_json::from_value(body).map_err(decode_err)?;
            if items.is_empty() {
                return Ok("no unexpired cached policies to refresh".into());
            }
            items
                .iter()
                .map(refresh_line)
                .collect::<Vec<_>>()
                .join("\n")
        }
        Request::PolicyEvict { domain } => format!("evicted the cached MTA-STS policy of {domain}"),
        Request::PolicyUnpin { domain } => format!("removed the operator pin of {domain}"),
        Request::PolicyPin { .. } => {
            let e: PolicyEntry = serde_json::from_value(body).map_err(decode_err)?;
            format!(
                "pinned {}: mode {}, mx {}, until {} UTC, reason: {}",
                e.domain,
                e.mode,
                if e.mx.is_empty() {
                    "(none)".into()
                } else {
                    e.mx.join(", ")
                },
                format_expiry(e.pin_until),
                e.pin_reason.unwrap_or_default()
            )
        }
        Request::PolicyExplain { .. } => {
            let x: PolicyExplain = serde_json::from_value(body).map_err(decode_err)?;
            explain_text(&x)
        }
        Request::TlsrptList => {
            let entries: Vec<TlsrptEntry> = serde_json::from_value(body).map_err(decode_err)?;
            if entries.is_empty() {
                return Ok("no TLS-RPT data: no outbound sessions recorded".into());
            }
            tlsrpt_table(&entries)
        }
        Request::TlsrptSend => {
            let r: TlsrptSendResult = serde_json::from_value(body).map_err(decode_err)?;
            tlsrpt_send_text(&r)
        }
        _ => serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?,
    })
}

/// `tlsrpt list`: one row per (day, policy domain).
fn tlsrpt_table(entries: &[TlsrptEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.day.clone(),
                e.domain.clone(),
                e.successful.to_string(),
                e.failed.to_string(),
                if e.destinations.is_empty() {
                    "-".into()
                } else {
                    e.destinations.join(", ")
                },
                e.state.clone(),
                e.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render_table(
        &[
            "DAY",
            "DOMAIN",
            "OK",
            "FAILED",
            "DESTINATIONS",
            "STATE",
            "LAST_ERROR",
        ],
        &rows,
    )
    .trim_end()
    .to_string()
}

/// `tlsrpt send`: one line per outcome, or why nothing went out.
fn tlsrpt_send_text(r: &TlsrptSendResult) -> String {
    let mut lines: Vec<String> = r.outcomes.iter().map(outcome_line).collect();
    if lines.is_empty() {
        lines.push("nothing to send: no report of a finished UTC day is due".into());
    }
    if r.collecting > 0 {
        lines.push(format!(
            "{} report(s) of today are still being collected; they are sent after 00:00 UTC, within [tlsrpt] send_window",
            r.collecting
        ));
    }
    lines.join("\n")
}

fn outcome_line(o: &TlsrptOutcome) -> String {
    let target = o
        .destination
        .clone()
        .unwrap_or_else(|| format!("_smtp._tls.{}", o.domain));
    let detail = o.detail.as_deref().unwrap_or_default();
    match o.outcome.as_str() {
        "sent" => format!("{} {}: sent to {target} ({detail})", o.day, o.domain),
        "retry" => format!(
            "{} {}: {target}: {detail}; next attempt {} UTC",
            o.day,
            o.domain,
            o.next_try.map(format_time).unwrap_or_else(|| "-".into())
        ),
        "gave-up" => format!("{} {}: {target}: gave up: {detail}", o.day, o.domain),
        "no-destination" => format!(
            "{} {}: no report destination ({detail}); nothing sent",
            o.day, o.domain
        ),
        other => format!("{} {}: {target}: {other}: {detail}", o.day, o.domain),
    }
}

/// `policy list`: one row per cached policy or pin.
fn policy_table(entries: &[PolicyEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.domain.clone(),
                e.mode.clone(),
                e.id.clone(),
                e.mx.join(","),
                if e.pinned {
                    "-".into()
                } else {
                    format_age(e.max_age)
                },
                format_time(e.fetched_at),
                format_expiry(e.expires_at),
                e.last_error.clone().unwrap_or_default(),
                entry_note(e),
            ]
        })
        .collect();
    render_table(
        &[
            "DOMAIN",
            "MODE",
            "ID",
            "MX",
            "MAX_AGE",
            "FETCHED",
            "EXPIRES",
            "LAST_ERROR",
            "NOTE",
        ],
        &rows,
    )
    .trim_end()
    .to_string()
}

/// The NOTE column: pins, expiry, and cache entries a pin overrides.
fn entry_note(e: &PolicyEntry) -> String {
    if e.pinned {
        format!(
            "{}: {}",
            e.source,
            e.pin_reason.as_deref().unwrap_or_default()
        )
    } else if e.expired {
        "expired: no longer in force".into()
    } else if !e.in_force {
        "overridden by a pin".into()
    } else {
        String::new()
    }
}

/// `policy show`: every field and the policy text.
fn policy_detail(e: &PolicyEntry) -> String {
    let mut rows = vec![
        vec!["domain".into(), e.domain.clone()],
        vec!["source".into(), e.source.clone()],
        vec![
            "in force".into(),
            if e.in_force { "yes" } else { "no" }.into(),
        ],
        vec!["mode".into(), e.mode.clone()],
        vec!["id".into(), e.id.clone()],
        vec![
            "mx".into(),
            if e.mx.is_empty() {
                "(none)".into()
            } else {
                e.mx.join(", ")
            },
        ],
    ];
    if !e.pinned {
        rows.push(vec![
            "max_age".into(),
            format!("{} ({})", e.max_age, format_age(e.max_age)),
        ]);
    }
    rows.extend([
        vec![
            if e.pinned { "set" } else { "fetched" }.into(),
            format_rfc3339(e.fetched_at),
        ],
        vec![
            "expires".into(),
            match e.expires_at {
                Some(t) => format!(
                    "{}{}",
                    format_rfc3339(t),
                    if e.expired { " (expired)" } else { "" }
                ),
                None => "never (as long as the file exists)".into(),
            },
        ],
    ]);
    if let Some(t) = e.last_checked {
        rows.push(vec!["last checked".into(), format_rfc3339(t)]);
    }
    rows.push(vec![
        "last error".into(),
        e.last_error.clone().unwrap_or_else(|| "-".into()),
    ]);
    if let Some(r) = &e.pin_reason {
        rows.push(vec!["pin reason".into(), r.clone()]);
    }
    if let Some(f) = &e.pin_file {
        rows.push(vec!["pin file".into(), f.clone()]);
    }
    let table = render_table(&["", ""], &rows);
    let fields: Vec<&str> = table.lines().skip(1).collect();
    let text: Vec<String> = e.text.lines().map(|l| format!("  {l}")).collect();
    format!("{}\npolicy:\n{}", fields.join("\n"), text.join("\n"))
}

/// One line (plus the diff) of `policy refresh`.
fn refresh_line(r: &PolicyRefresh) -> String {
    match (r.outcome.as_str(), &r.policy) {
        ("failed", _) | (_, None) => format!(
            "{}: failed: {}{} (the cached policy stays in force until it expires)",
            r.domain,
            r.result_type
                .as_deref()
                .map(|t| format!("{t}: "))
                .unwrap_or_default(),
            r.error.as_deref().unwrap_or("unknown error")
        ),
        (outcome, Some(p)) => {
            let mut line = format!(
                "{}: {outcome} (mode {}, id {}, expires {})",
                r.domain,
                p.mode,
                p.id,
                format_expiry(p.expires_at)
            );
            if let Some(diff) = r.diff.as_deref().filter(|d| !d.is_empty()) {
                for l in diff.lines() {
                    line.push_str("\n    ");
                    line.push_str(l);
                }
            }
            line
        }
    }
}

/// `policy explain`: the policy, then one row per mail host.
fn explain_text(x: &PolicyExplain) -> String {
    let mut out = match &x.policy {
        Some(p) => format!(
            "{}: MTA-STS mode {} ({}, id {}, expires {}), mx {}\n",
            x.domain,
            p.mode,
            p.source,
            p.id,
            format_expiry(p.expires_at),
            p.mx.join(", ")
        ),
        None => format!("{}: no MTA-STS policy in force\n", x.domain),
    };
    if !x.mx_hosts.is_empty() {
        let rows: Vec<Vec<String>> = x
            .mx_hosts
            .iter()
            .map(|h| {
                vec![
                    h.name.clone(),
                    h.preference.map(|p| p.to_string()).unwrap_or_default(),
                    if h.addrs.is_empty() {
                        h.error.clone().unwrap_or_else(|| "-".into())
                    } else {
                        h.addrs.join(", ")
                    },
                    if h.allowed_by_policy { "yes" } else { "no" }.into(),
                    h.tls_required.clone(),
                ]
            })
            .collect();
        out.push_str(&render_table(
            &["HOST", "PREF", "ADDRESSES", "ALLOWED", "TLS REQUIRED"],
            &rows,
        ));
    }
    if !x.note.is_empty() {
        out.push_str(&x.note);
    }
    out.trim_end().to_string()
}

fn format_age(secs: u64) -> String {
    portcullis_config::format_duration(std::time::Duration::from_secs(secs))
}

fn format_expiry(t: Option<u64>) -> String {
    t.map(format_time).unwrap_or_else(|| "never".into())
}

/// The current time in Unix seconds.
pub fn now_secs() -> u64 {
    use portcullis_types::Clock;
    portcullis_types::SystemClock.unix_secs()
}

/// `YYYY-MM-DD HH:MM` (UTC) for tables.
pub fn format_time(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60
    )
}

/// RFC 3339 in UTC, e.g. `2026-03-01T12:00:00Z`.
pub fn format_rfc3339(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD` (the start of that day) or `YYYY-MM-DDTHH:MM:SSZ`,
/// both UTC, into Unix seconds.
pub fn parse_utc(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)");
    let (date, time) = match s.split_once(['T', 't']) {
        Some((date, time)) => (date, Some(time)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let digits = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(y, 4) || !digits(m, 2) || !digits(d, 2) {
        return Err(bad());
    }
    let (y, m, d): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let days = days_from_civil(y, m, d);
    if !(1..=12).contains(&m) || civil_from_days(days) != (y, m, d) || days < 0 {
        return Err(bad());
    }
    let secs_of_day = match time {
        None => 0,
        Some(t) => {
            let t = t.strip_suffix(['Z', 'z']).ok_or_else(bad)?;
            let mut parts = t.split(':');
            let (Some(h), Some(mi), Some(se), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            if !digits(h, 2) || !digits(mi, 2) || !digits(se, 2) {
                return Err(bad());
            }
            let (h, mi, se): (u64, u64, u64) = (
                h.parse().map_err(|_| bad())?,
                mi.parse().map_err(|_| bad())?,
                se.parse().map_err(|_| bad())?,
            );
            if h > 23 || mi > 59 || se > 59 {
                return Err(bad());
            }
            h * 3600 + mi * 60 + se
        }
    };
    Ok(days as u64 * 86_400 + secs_of_day)
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `text` with every control character a terminal could act on written
/// as `\xHH` (C0 but tab and line feed, DEL, C1): what a sender or a
/// remote server wrote can be shown to the operator but can never move the
/// cursor, change the title or colours, or hide a line (ECMA-48 escape and
/// control sequences all start with such a character).
fn escape_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = u32::from(c);
        let control = (code < 0x20 && c != '\t' && c != '\n') || (0x7f..=0x9f).contains(&code);
        if control {
            out.push_str(&format!("\\x{code:02x}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escaping_neutralises_every_control_character() {
        #[track_caller]
        fn case(input: &str, want: &str) {
            assert_eq!(escape_terminal(input), want, "{input:?}");
        }
        case("Subject: plain text", "Subject: plain text");
        case("a\tb\nc", "a\tb\nc");
        case("\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07");
        case("bare\rCR", "bare\\x0dCR");
        case("nul\0 del\x7f", "nul\\x00 del\\x7f");
        case("c1 \u{9b}31m \u{85}", "c1 \\x9b31m \\x85");
        case("Grüße ✓ \u{a0}", "Grüße ✓ \u{a0}");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let out = escape_terminal(&c.to_string());
            if c == '\t' || c == '\n' {
                assert_eq!(out, c.to_string());
            } else {
                assert!(out.chars().all(|o| !o.is_control()), "{c:?} -> {out:?}");
            }
        }
    }

    #[test]
    fn dates_round_trip_and_bad_dates_are_refused() {
        assert_eq!(parse_utc("1970-01-01"), Ok(0));
        assert_eq!(parse_utc("2000-02-29"), Ok(951_782_400));
        assert_eq!(parse_utc("2026-11-23T06:55:47Z"), Ok(1_795_416_947));
        assert_eq!(format_rfc3339(1_795_416_947), "2026-11-23T06:55:47Z");
        assert_eq!(format_time(1_795_416_947), "2026-11-23 06:55");
        for bad in [
            "",
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "2026-1-01",
            "tomorrow",
            "2026-01-01T25:00:00Z",
            "2026-01-01T10:00:00",
            "2026-01-01T10:00Z",
            "1969-12-31",
            "+026-01-01",
        ] {
            let err = parse_utc(bad).unwrap_err();
            assert!(err.contains("YYYY-MM-DD"), "{bad}: {err}");
        }
    }
}
