//! `portcullis config check`, and the config every subcommand starts from.

use crate::cli::CheckArgs;
use portcullis_config::{Config, ConfigError, format_duration as d};
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
            // The recipients files are read as the server reads them at
            // its start: a bad line fails the check with its file and line.
            if let Err(e) =
                portcullis_screen::recipients::RecipientFiles::load(&config.recipients.files)
            {
                eprintln!("recipients.files: {e}");
                return ExitCode::from(2);
            }
            // The trust anchor files too: a bad one would stop the start.
            if let Err(e) = portcullis_dns::check_trust_anchors(&config.dns.trust_anchors) {
                eprintln!("dns.trust_anchors: {e}");
                return ExitCode::from(2);
            }
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

/// The lines of the human summary: a key and its value, aligned.
#[derive(Default)]
struct Summary(String);

impl Summary {
    fn line(&mut self, key: &str, value: String) {
        self.0.push_str(&format!("{key:<28} {value}\n"));
    }
}

/// Items joined with `, `.
fn list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A human-readable summary of the effective configuration.
fn effective(c: &Config) -> String {
    let mut out = Summary::default();
    server(c, &mut out);
    delivery(c, &mut out);
    limits(c, &mut out);
    screen(c, &mut out);
    cluster(c, &mut out);
    out.line(
        "smtp.bare_newline",
        format!("{:?}", c.bare_newline).to_lowercase(),
    );
    out.0.trim_end().to_string()
}

/// `[cluster]`: off, or the database this node shares its state in and
/// where its password comes from (never the password itself).
fn cluster(c: &Config, out: &mut Summary) {
    let Some(cl) = &c.cluster else {
        out.line(
            "cluster",
            "off (this node's state in its sled store only)".into(),
        );
        return;
    };
    out.line("cluster.node", cl.node.clone());
    out.line("cluster.database", cl.database.clone());
    out.line(
        "cluster.password",
        match &cl.password_file {
            Some(path) => format!("from {}", path.display()),
            None => "from PGPASSWORD, else none".into(),
        },
    );
    out.line(
        "cluster.tls",
        match (cl.tls, &cl.tls_ca) {
            (portcullis_config::ClusterTls::Disable, _) => "disable (plain TCP)".into(),
            (portcullis_config::ClusterTls::VerifyFull, Some(ca)) => {
                format!("verify-full under {}", ca.display())
            }
            (portcullis_config::ClusterTls::VerifyFull, None) => {
                "verify-full under the web PKI roots".into()
            }
        },
    );
    out.line("cluster.pool_size", cl.pool_size.to_string());
    out.line("cluster.timeout", d(cl.timeout));
    out.line("cluster.sync_interval", d(cl.sync_interval));
}

/// Who we are, where we listen, which mail we take.
fn server(c: &Config, out: &mut Summary) {
    out.line("hostname", c.hostname.clone());
    out.line("data_dir", c.data_dir.display().to_string());
    for l in &c.listeners {
        let own = match &l.certificate {
            Some((cert, key)) => format!(", certificate {} / {}", cert.display(), key.display()),
            None => String::new(),
        };
        out.line(
            "listen",
            format!(
                "{} ({}) max_connections {}{own}",
                l.address,
                l.role.as_str(),
                l.max_connections
            ),
        );
    }
    out.line(
        "tls",
        match &c.tls.files {
            Some((cert, key)) => format!("{} / {}", cert.display(), key.display()),
            None => "self-signed (generated into data_dir/tls)".into(),
        },
    );
    out.line("relay.accepted_domains", list(&c.relay.accepted_domains));
    out.line("relay.trusted_networks", list(&c.relay.trusted_networks));
    for r in &c.routes {
        let dot = if r.include_subdomains { "." } else { "" };
        let tls = match &r.tls {
            portcullis_config::RouteTls::Opportunistic => String::new(),
            portcullis_config::RouteTls::Verify { name } => format!(" (tls verify {name})"),
        };
        out.line(
            "route",
            format!(
                "{dot}{} -> {}:{}{tls}",
                r.domain, r.next_hop.host, r.next_hop.port
            ),
        );
    }
}

/// How mail leaves: DNS, delivery, the queue, and the admin endpoints.
fn delivery(c: &Config, out: &mut Summary) {
    out.line(
        "dns.nameservers",
        if c.dns.nameservers.is_empty() {
            "system (/etc/resolv.conf)".into()
        } else {
            list(&c.dns.nameservers)
        },
    );
    out.line("delivery.port", c.delivery.port.to_string());
    out.line(
        "delivery.max_concurrent",
        c.delivery.max_concurrent.to_string(),
    );
    out.line("delivery.per_domain", c.delivery.per_domain.to_string());
    let retry: Vec<String> = c.queue.retry.iter().map(|x| d(*x)).collect();
    out.line("queue.retry", retry.join(", "));
    out.line("queue.max_age", d(c.queue.max_age));
    out.line("queue.delay_warning", d(c.queue.delay_warning));
    out.line("admin.socket", c.admin.socket.display().to_string());
    out.line(
        "admin.metrics",
        c.admin
            .metrics
            .map(|m| m.to_string())
            .unwrap_or_else(|| "off".into()),
    );
}

/// `[limits]`.
fn limits(c: &Config, out: &mut Summary) {
    let l = &c.limits;
    for (key, value) in [
        ("limits.max_connections", l.max_connections.to_string()),
        (
            "limits.max_connections_per_ip",
            l.max_connections_per_ip.to_string(),
        ),
        ("limits.max_message_size", l.max_message_size.to_string()),
        ("limits.max_recipients", l.max_recipients.to_string()),
        ("limits.max_line_length", l.max_line_length.to_string()),
        ("limits.max_errors", l.max_errors.to_string()),
        ("limits.max_junk_commands", l.max_junk_commands.to_string()),
        ("limits.max_session_duration", d(l.max_session_duration)),
        (
            "limits.max_received_headers",
            l.max_received_headers.to_string(),
        ),
        ("limits.command_timeout", d(l.command_timeout)),
        ("limits.data_timeout", d(l.data_timeout)),
        ("limits.greet_pause", d(l.greet_pause)),
    ] {
        out.line(key, value);
    }
}

/// `[recipients]`, `[[dnsbl]]`, `[screen]`, `[greylist]`: what the screen
/// does to a client.
fn screen(c: &Config, out: &mut Summary) {
    let r = &c.recipients;
    out.line(
        "recipients.verify",
        format!("{:?}", r.verify).to_lowercase(),
    );
    for (domain, path) in &r.files {
        out.line(
            "recipients.files",
            format!("{domain} -> {}", path.display()),
        );
    }
    if r.enabled() {
        out.line(
            "recipients.unreachable",
            format!("{:?}", r.unreachable).to_lowercase(),
        );
        out.line(
            "recipients.cache",
            format!(
                "{} positive, {} negative",
                d(r.cache_positive),
                d(r.cache_negative)
            ),
        );
    }
    for list in &c.dnsbl {
        let kind = if list.is_allowlist() {
            "allow"
        } else {
            "block"
        };
        out.line(
            "dnsbl",
            format!("{} weight {} ({kind})", list.zone, list.weight),
        );
    }
    let s = &c.screen;
    let rate = |n: u32| {
        if n == 0 {
            "no limit".to_string()
        } else {
            format!("{n}/min")
        }
    };
    out.line("screen.dnsbl_threshold", s.dnsbl_threshold.to_string());
    out.line("screen.connections", rate(s.connections_per_minute));
    out.line("screen.messages", rate(s.messages_per_minute));
    out.line("screen.recipients", rate(s.recipients_per_minute));
    let g = &c.greylist;
    out.line(
        "greylist",
        if g.enabled {
            format!(
                "delay {}, retry window {}, pass {}, trusted after {} passes",
                d(g.delay),
                d(g.retry_window),
                d(g.pass_ttl),
                g.trust_after
            )
        } else {
            "off".into()
        },
    );
}
