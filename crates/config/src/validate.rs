//! From the file model to the typed [`Config`]: every problem is collected
//! with its key path, none stops the others from being found.

use crate::duration::parse_duration;
use crate::model::*;
use crate::runtime::*;
use ipnet::IpNet;
use portcullis_types::Domain;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// One problem: the key path and what is wrong. The line is filled in later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `relay.accepted_domains[1]`.
    pub key: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// Collects problems while building the runtime config.
#[derive(Default)]
pub struct Checker {
    /// Everything found so far.
    pub problems: Vec<Problem>,
}

impl Checker {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: &Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => parse_duration(text).unwrap_or_else(|e| {
                self.fail(key, e);
                default
            }),
        }
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail(
                    key,
                    format!("{text:?} is not an ip:port address (IPv6 as \"[::1]:25\")"),
                );
                None
            }
        }
    }
}

/// All sections of the file, each already deserialised (or defaulted when
/// absent or broken: its problem is recorded separately).
#[derive(Default)]
pub struct Sections {
    /// `hostname`.
    pub hostname: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<String>,
    /// `[[listen]]`; `None` when absent.
    pub listen: Option<Vec<ListenFile>>,
    /// `[tls]`.
    pub tls: TlsFile,
    /// `[relay]`.
    pub relay: RelayFile,
    /// `[routes]`.
    pub routes: RoutesFile,
    /// `[dns]`.
    pub dns: DnsFile,
    /// `[delivery]`.
    pub delivery: DeliveryFile,
    /// `[queue]`.
    pub queue: QueueFile,
    /// `[mta_sts]`.
    pub mta_sts: MtaStsFile,
    /// `[tlsrpt]`.
    pub tlsrpt: TlsRptFile,
    /// `[submission]`.
    pub submission: SubmissionFile,
    /// `[admin]`.
    pub admin: AdminFile,
    /// `[limits]`.
    pub limits: LimitsFile,
    /// `[smtp]`.
    pub smtp: SmtpFile,
    /// `[log]`.
    pub log: LogFile,
    /// `[verify]`.
    pub verify: VerifyFile,
}

/// Turns the sections into the runtime config, recording every problem.
pub fn build(s: Sections, system_hostname: &str, c: &mut Checker) -> Config {
    let hostname = match s.hostname {
        Some(h) => {
            if Domain::parse(&h).is_err() || !h.contains('.') && h != "localhost" {
                c.fail(
                    "hostname",
                    format!("{h:?} is not a fully qualified host name"),
                );
            }
            h
        }
        None => system_hostname.to_string(),
    };
    let data_dir = PathBuf::from(s.data_dir.unwrap_or_else(|| "data".into()));

    // Each listener with the `max_connections` it sets (and its index for
    // errors); the defaults are shared out once `[limits]` is known.
    let listeners: Vec<(Listener, Option<u32>, usize)> = match s.listen {
        None => vec![(
            Listener {
                address: SocketAddr::from(([127, 0, 0, 1], 2525)),
                role: Role::Smtp,
                max_connections: 0,
            },
            None,
            0,
        )],
        Some(list) => {
            if list.is_empty() {
                c.fail("listen", "at least one [[listen]] is needed");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let address = c.socket_addr(&format!("listen[{i}].address"), &l.address);
                    let role = match l.role.as_str() {
                        "smtp" => Some(Role::Smtp),
                        "submission" => Some(Role::Submission),
                        "submissions" => Some(Role::Submissions),
                        other => {
                            c.fail(
                                format!("listen[{i}].role"),
                                format!("unknown role {other:?} (smtp, submission or submissions)"),
                            );
                            None
                        }
                    };
                    let max = l.max_connections;
                    if max == Some(0) {
                        c.fail(
                            format!("listen[{i}].max_connections"),
                            "must be greater than zero",
                        );
                    }
                    Some((
                        Listener {
                            address: address?,
                            role: role?,
                            max_connections: 0,
                        },
                        max.filter(|&m| m > 0),
                        i,
                    ))
                })
                .collect()
        }
    };
    for (n, (a, _, i)) in listeners.iter().enumerate() {
        if a.address.port() != 0
            && listeners[..n]
                .iter()
                .any(|(b, _, _)| b.address == a.address)
        {
            c.fail(
                format!("listen[{i}].address"),
                format!("{} is listed twice", a.address),
            );
        }
    }

    let tls = Tls {
        files: match (s.tls.certificate, s.tls.private_key) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            (Some(_), None) => {
                c.fail(
                    "tls.private_key",
                    "tls.certificate is set but tls.private_key is not",
                );
                None
            }
            (None, Some(_)) => {
                c.fail(
                    "tls.certificate",
                    "tls.private_key is set but tls.certificate is not",
                );
                None
            }
        },
        extra_roots: s.tls.extra_roots.into_iter().map(PathBuf::from).collect(),
    };

    let relay = Relay {
        accepted_domains: s
            .relay
            .accepted_domains
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match Domain::parse(d) {
                Ok(d) => Some(d),
                Err(e) => {
                    c.fail(format!("relay.accepted_domains[{i}]"), e.to_string());
                    None
                }
            })
            .collect(),
        trusted_networks: s
            .relay
            .trusted_networks
            .iter()
            .enumerate()
            .filter_map(|(i, n)| parse_network(n).or_else(|| {
                c.fail(
                    format!("relay.trusted_networks[{i}]"),
                    format!("{n:?} is not a network (write e.g. \"192.0.2.0/24\" or \"2001:db8::/32\")"),
                );
                None
            }))
            .collect(),
    };
    if relay.trusted_networks.iter().any(|n| n.prefix_len() == 0) {
        c.fail(
            "relay.trusted_networks",
            "a /0 network would make this an open relay; list the networks you trust",
        );
    }

    let routes = s
        .routes
        .iter()
        .filter_map(|(domain, hop)| {
            let key = format!("routes.{domain}");
            let (include_subdomains, name) = match domain.strip_prefix('.') {
                Some(rest) => (true, rest),
                None => (false, domain.as_str()),
            };
            let domain = Domain::parse(name)
                .map_err(|e| c.fail(key.clone(), e.to_string()))
                .ok();
            let next_hop = parse_next_hop(hop).map_err(|e| c.fail(key.clone(), e)).ok();
            Some(Route {
                domain: domain?,
                include_subdomains,
                next_hop: next_hop?,
            })
        })
        .collect();

    let dns = Dns {
        nameservers: s
            .dns
            .nameservers
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                // A bare IP means port 53.
                n.parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
                    .ok()
                    .or_else(|| c.socket_addr(&format!("dns.nameservers[{i}]"), n))
            })
            .collect(),
        timeout: c.duration("dns.timeout", &s.dns.timeout, Duration::from_secs(5)),
    };

    let retry = match &s.queue.retry {
        None => ["5m", "10m", "20m", "40m", "1h"]
            .iter()
            .filter_map(|t| parse_duration(t).ok())
            .collect(),
        Some(list) => {
            if list.is_empty() {
                c.fail("queue.retry", "the retry schedule needs at least one wait");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, t)| match parse_duration(t) {
                    Ok(d) if d.is_zero() => {
                        c.fail(
                            format!("queue.retry[{i}]"),
                            "a retry wait of zero would spin",
                        );
                        None
                    }
                    Ok(d) => Some(d),
                    Err(e) => {
                        c.fail(format!("queue.retry[{i}]"), e);
                        None
                    }
                })
                .collect()
        }
    };
    let queue = Queue {
        retry,
        max_age: c.duration(
            "queue.max_age",
            &s.queue.max_age,
            Duration::from_secs(5 * 86_400),
        ),
        delay_warning: c.duration(
            "queue.delay_warning",
            &s.queue.delay_warning,
            Duration::from_secs(4 * 3600),
        ),
    };
    if queue.delay_warning >= queue.max_age {
        c.fail(
            "queue.delay_warning",
            "delay_warning must be shorter than max_age",
        );
    }

    let tlsrpt = TlsRpt {
        enabled: s.tlsrpt.enabled,
        organization: s.tlsrpt.organization,
        contact: s.tlsrpt.contact,
        submitter: s.tlsrpt.submitter,
        from: s.tlsrpt.from,
        dkim_selector: s.tlsrpt.dkim_selector,
        dkim_key: s.tlsrpt.dkim_key.map(PathBuf::from),
        send_window: c.duration(
            "tlsrpt.send_window",
            &s.tlsrpt.send_window,
            Duration::from_secs(4 * 3600),
        ),
    };
    if tlsrpt.enabled {
        for (key, present) in [
            ("tlsrpt.organization", tlsrpt.organization.is_some()),
            ("tlsrpt.contact", tlsrpt.contact.is_some()),
            ("tlsrpt.submitter", tlsrpt.submitter.is_some()),
            ("tlsrpt.from", tlsrpt.from.is_some()),
            ("tlsrpt.dkim_selector", tlsrpt.dkim_selector.is_some()),
            ("tlsrpt.dkim_key", tlsrpt.dkim_key.is_some()),
        ] {
            if !present {
                c.fail(key, "required when tlsrpt.enabled = true");
            }
        }
    }

    let admin = Admin {
        socket: s
            .admin
            .socket
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("admin.sock")),
        metrics: s
            .admin
            .metrics
            .as_deref()
            .and_then(|m| c.socket_addr("admin.metrics", m)),
    };

    let l = &s.limits;
    let limits = Limits {
        max_connections: positive(c, "limits.max_connections", l.max_connections, 1000),
        max_connections_per_ip: positive(
            c,
            "limits.max_connections_per_ip",
            l.max_connections_per_ip,
            20,
        ),
        // One hour: far longer than any honest client needs (a 25 MiB
        // message at 100 kbit/s takes 35 minutes, and MTAs reuse a
        // connection for minutes, not hours), short enough that a client
        // cannot hold a slot for ever with a trickle of commands.
        max_session_duration: c.duration(
            "limits.max_session_duration",
            &l.max_session_duration,
            Duration::from_secs(3600),
        ),
        // Postfix's smtpd_junk_command_limit default.
        max_junk_commands: positive(c, "limits.max_junk_commands", l.max_junk_commands, 100),
        max_line_length: positive(c, "limits.max_line_length", l.max_line_length, 2048),
        max_message_size: l.max_message_size.unwrap_or(25 * 1024 * 1024),
        max_recipients: positive(c, "limits.max_recipients", l.max_recipients, 100),
        max_errors: positive(c, "limits.max_errors", l.max_errors, 10),
        max_received_headers: positive(
            c,
            "limits.max_received_headers",
            l.max_received_headers,
            100,
        ),
        command_timeout: c.duration(
            "limits.command_timeout",
            &l.command_timeout,
            Duration::from_secs(300),
        ),
        data_timeout: c.duration(
            "limits.data_timeout",
            &l.data_timeout,
            Duration::from_secs(600),
        ),
        tls_handshake_timeout: c.duration(
            "limits.tls_handshake_timeout",
            &l.tls_handshake_timeout,
            Duration::from_secs(30),
        ),
        greet_pause: c.duration("limits.greet_pause", &l.greet_pause, Duration::ZERO),
        shutdown_grace: c.duration(
            "limits.shutdown_grace",
            &l.shutdown_grace,
            Duration::from_secs(30),
        ),
        spool_threshold: memory_size(c, "limits.spool_threshold", l.spool_threshold),
        max_header_size: memory_size(c, "limits.max_header_size", l.max_header_size),
    };
    let listeners = share_connections(listeners, limits.max_connections, c);
    if limits.max_session_duration.is_zero() {
        c.fail("limits.max_session_duration", "must be greater than zero");
    }
    if limits.max_line_length < 512 {
        // RFC 5321 §4.5.3.1.4: a command line may be 512 octets.
        c.fail(
            "limits.max_line_length",
            "must be at least 512 (RFC 5321 §4.5.3.1.4)",
        );
    }
    if limits.max_message_size < 65_536 {
        // RFC 5321 §4.5.3.1.7: at least 64K octets.
        c.fail(
            "limits.max_message_size",
            "must be at least 65536 (RFC 5321 §4.5.3.1.7)",
        );
    }
    if limits.max_recipients < 100 {
        // RFC 5321 §4.5.3.1.8: at least 100 recipients.
        c.fail(
            "limits.max_recipients",
            "must be at least 100 (RFC 5321 §4.5.3.1.8)",
        );
    }

    let bare_newline = match s.smtp.bare_newline.as_deref() {
        None | Some("reject") => BareNewline::Reject,
        Some("normalize") => BareNewline::Normalize,
        Some(other) => {
            c.fail(
                "smtp.bare_newline",
                format!("{other:?} is not \"reject\" or \"normalize\""),
            );
            BareNewline::Reject
        }
    };
    let verify = build_verify(&s.verify, c);
    let log_format = match s.log.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.fail(
                "log.format",
                format!("{other:?} is not \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };

    Config {
        hostname,
        data_dir,
        listeners,
        tls,
        relay,
        routes,
        dns,
        delivery: Delivery {
            port: s.delivery.port.unwrap_or(25),
            max_concurrent: positive(c, "delivery.max_concurrent", s.delivery.max_concurrent, 50),
            per_domain: positive(c, "delivery.per_domain", s.delivery.per_domain, 10),
            connect_timeout: c.duration(
                "delivery.connect_timeout",
                &s.delivery.connect_timeout,
                Duration::from_secs(30),
            ),
        },
        queue,
        mta_sts: MtaSts {
            https_port: s.mta_sts.https_port.unwrap_or(443),
            fetch_timeout: c.duration(
                "mta_sts.fetch_timeout",
                &s.mta_sts.fetch_timeout,
                Duration::from_secs(30),
            ),
            pins_dir: s.mta_sts.pins_dir.map(PathBuf::from),
        },
        tlsrpt,
        submission: build_submission(&s.submission, c),
        users_file: s.submission.users_file.map(PathBuf::from),
        admin,
        limits,
        bare_newline,
        verify,
        banner: s.smtp.banner.unwrap_or_else(|| "ESMTP Portcullis".into()),
        log_format,
        log_level: s.log.level.unwrap_or_else(|| "info".into()),
    }
}

/// `[submission]`: every sender pattern checked.
fn build_submission(f: &SubmissionFile, c: &mut Checker) -> Submission {
    let mut senders = std::collections::BTreeMap::new();
    for (user, patterns) in f.senders.iter().flatten() {
        let key = format!("submission.senders.{user}");
        let mut parsed = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let pattern = match p.strip_prefix('@') {
                Some(domain) => Domain::parse(domain)
                    .map(SenderPattern::Domain)
                    .map_err(|e| e.to_string()),
                None => portcullis_types::Address::parse(p)
                    .map(SenderPattern::Address)
                    .map_err(|e| e.to_string()),
            };
            match pattern {
                Ok(pattern) => parsed.push(pattern),
                Err(e) => c.fail(
                    format!("{key}[{i}]"),
                    format!("{p:?} is neither an address nor @domain: {e}"),
                ),
            }
        }
        senders.insert(user.clone(), parsed);
    }
    let mut dkim: Vec<DkimKey> = Vec::new();
    for (i, k) in f.dkim.iter().flatten().enumerate() {
        let key = format!("submission.dkim[{i}]");
        let domain = match Domain::parse(&k.domain) {
            Ok(d) => d,
            Err(e) => {
                c.fail(format!("{key}.domain"), format!("{:?}: {e}", k.domain));
                continue;
            }
        };
        if k.selector.is_empty()
            || !k
                .selector
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' || ch == '_')
        {
            c.fail(
                format!("{key}.selector"),
                format!("{:?} is not a DKIM selector", k.selector),
            );
            continue;
        }
        if k.key.is_empty() {
            c.fail(format!("{key}.key"), "names no key file");
            continue;
        }
        if dkim.iter().any(|d| d.domain == domain) {
            c.fail(
                format!("{key}.domain"),
                format!("{domain} has more than one key"),
            );
            continue;
        }
        dkim.push(DkimKey {
            domain,
            selector: k.selector.clone(),
            key: PathBuf::from(&k.key),
        });
    }
    let lockout_defaults = Lockout::default();
    let lockout = Lockout {
        failures_per_ip: positive(
            c,
            "submission.auth_failures_per_ip",
            f.auth_failures_per_ip,
            lockout_defaults.failures_per_ip,
        ),
        failures_per_user: positive(
            c,
            "submission.auth_failures_per_user",
            f.auth_failures_per_user,
            lockout_defaults.failures_per_user,
        ),
        window: c.duration(
            "submission.lockout_window",
            &f.lockout_window,
            lockout_defaults.window,
        ),
        failure_delay: c.duration(
            "submission.auth_failure_delay",
            &f.auth_failure_delay,
            lockout_defaults.failure_delay,
        ),
    };
    if lockout.window.is_zero() {
        c.fail("submission.lockout_window", "must be longer than zero");
    }
    if lockout.failure_delay > Duration::from_secs(10) {
        // 16 doublings of more would outlast a client's command timeout.
        c.fail("submission.auth_failure_delay", "must be at most 10s");
    }
    let auth_queue_wait = c.duration(
        "submission.auth_queue_wait",
        &f.auth_queue_wait,
        Submission::default().auth_queue_wait,
    );
    if auth_queue_wait > Duration::from_secs(60) {
        // Longer than a client's patience for an AUTH reply (RFC 5321
        // §4.5.3.2 gives 5 minutes per command, clients use less).
        c.fail("submission.auth_queue_wait", "must be at most 60s");
    }
    let limit_defaults = UserLimits::default();
    let limits = UserLimits {
        messages_per_hour: f
            .messages_per_hour
            .unwrap_or(limit_defaults.messages_per_hour),
        recipients_per_message: f
            .recipients_per_message
            .unwrap_or(limit_defaults.recipients_per_message),
    };
    let user_limits = f
        .user_limits
        .iter()
        .flatten()
        .map(|(user, l)| {
            (
                user.clone(),
                UserLimits {
                    messages_per_hour: l.messages_per_hour.unwrap_or(limits.messages_per_hour),
                    recipients_per_message: l
                        .recipients_per_message
                        .unwrap_or(limits.recipients_per_message),
                },
            )
        })
        .collect();
    Submission {
        dkim,
        auth_on_smtp: f.auth_on_smtp.unwrap_or(false),
        max_auth_failures: positive(c, "submission.max_auth_failures", f.max_auth_failures, 3),
        senders,
        lockout,
        auth_queue_wait,
        limits,
        user_limits,
        oauth: f.oauth.as_ref().and_then(|o| build_oauth(o, c)),
    }
}

/// `[submission.oauth]`: the endpoint must be https; id and secret file
/// are required.
fn build_oauth(o: &OAuthFile, c: &mut Checker) -> Option<OAuth> {
    let url = match o.introspection_url.as_deref() {
        None => {
            c.fail("submission.oauth.introspection_url", "is required");
            None
        }
        Some(u) if !u.starts_with("https://") || u.len() <= "https://".len() => {
            c.fail(
                "submission.oauth.introspection_url",
                format!("{u:?} is not an https:// URL (tokens are never sent in clear)"),
            );
            None
        }
        Some(u) => Some(u.to_string()),
    };
    let client_id = match o.client_id.as_deref() {
        Some(id) if !id.is_empty() => Some(id.to_string()),
        _ => {
            c.fail("submission.oauth.client_id", "is required");
            None
        }
    };
    let secret = match o.client_secret_file.as_deref() {
        Some(f) if !f.is_empty() => Some(PathBuf::from(f)),
        _ => {
            c.fail(
                "submission.oauth.client_secret_file",
                "is required (a file holding the client secret)",
            );
            None
        }
    };
    let username_claim = o
        .username_claim
        .clone()
        .unwrap_or_else(|| "username".into());
    if username_claim.is_empty() {
        c.fail("submission.oauth.username_claim", "must not be empty");
    }
    let cache_ttl = c.duration(
        "submission.oauth.cache_ttl",
        &o.cache_ttl,
        Duration::from_secs(60),
    );
    let timeout = c.duration(
        "submission.oauth.timeout",
        &o.timeout,
        Duration::from_secs(10),
    );
    let max_in_flight = positive(c, "submission.oauth.max_in_flight", o.max_in_flight, 8);
    let breaker_open = c.duration(
        "submission.oauth.breaker_open",
        &o.breaker_open,
        Duration::from_secs(30),
    );
    if breaker_open.is_zero() {
        c.fail(
            "submission.oauth.breaker_open",
            "must be longer than zero (breaker_failures = 0 turns the breaker off)",
        );
    }
    Some(OAuth {
        introspection_url: url?,
        client_id: client_id?,
        client_secret_file: secret?,
        required_scope: o.required_scope.clone().filter(|s| !s.is_empty()),
        username_claim,
        cache_ttl,
        timeout,
        max_in_flight,
        breaker_failures: o.breaker_failures.unwrap_or(5),
        breaker_open,
        ca_file: o.ca_file.as_deref().map(PathBuf::from),
    })
}

/// `[verify]`: every value checked, defaults from [`Verify::default`].
fn build_verify(v: &VerifyFile, c: &mut Checker) -> Verify {
    let defaults = Verify::default();
    let dmarc_quarantine = match v.dmarc_quarantine.as_deref() {
        None | Some("tag") => DmarcQuarantine::Tag,
        Some("reject") => DmarcQuarantine::Reject,
        Some(other) => {
            c.fail(
                "verify.dmarc_quarantine",
                format!("{other:?} is not \"tag\" or \"reject\""),
            );
            defaults.dmarc_quarantine
        }
    };
    let spf_fail = match v.spf_fail.as_deref() {
        None | Some("record") => SpfFail::Record,
        Some("reject") => SpfFail::Reject,
        Some(other) => {
            c.fail(
                "verify.spf_fail",
                format!("{other:?} is not \"record\" or \"reject\""),
            );
            defaults.spf_fail
        }
    };
    let exceptions = v
        .exceptions
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            if let Some(net) = parse_network(e) {
                if net.prefix_len() == 0 {
                    c.fail(
                        format!("verify.exceptions[{i}]"),
                        "a /0 network would switch verification off for everyone",
                    );
                    return None;
                }
                return Some(VerifyException::Network(net));
            }
            match Domain::parse(e.strip_prefix('.').unwrap_or(e)) {
                Ok(d) => Some(VerifyException::Domain(d)),
                Err(err) => {
                    c.fail(
                        format!("verify.exceptions[{i}]"),
                        format!("{e:?} is neither a domain nor a network: {err}"),
                    );
                    None
                }
            }
        })
        .collect();
    let timeout = c.duration("verify.timeout", &v.timeout, defaults.timeout);
    if timeout.is_zero() {
        c.fail("verify.timeout", "must be greater than zero");
    }
    Verify {
        enabled: v.enabled.unwrap_or(defaults.enabled),
        skip_trusted: v.skip_trusted.unwrap_or(defaults.skip_trusted),
        dmarc_reject: v.dmarc_reject.unwrap_or(defaults.dmarc_reject),
        dmarc_quarantine,
        spf_fail,
        exceptions,
        timeout,
        dkim_max_signatures: positive(
            c,
            "verify.dkim_max_signatures",
            v.dkim_max_signatures,
            defaults.dkim_max_signatures,
        ),
        dkim_max_signed_headers: positive(
            c,
            "verify.dkim_max_signed_headers",
            v.dkim_max_signed_headers,
            defaults.dkim_max_signed_headers,
        ),
        max_header_fields: positive(
            c,
            "verify.max_header_fields",
            v.max_header_fields,
            defaults.max_header_fields,
        ),
    }
}

/// Gives every listener its `max_connections`: the value it sets, or an
/// even share of what `[limits] max_connections` leaves after the
/// listeners that set theirs. With the defaults the shares add up to at
/// most the total, so filling one listener (port 25) never takes the
/// slots of another (587, 465).
fn share_connections(
    listeners: Vec<(Listener, Option<u32>, usize)>,
    total: u32,
    c: &mut Checker,
) -> Vec<Listener> {
    let set: u32 = listeners
        .iter()
        .filter_map(|(_, m, _)| *m)
        .fold(0, u32::saturating_add);
    let unset = listeners.iter().filter(|(_, m, _)| m.is_none()).count() as u32;
    let left = total.saturating_sub(set);
    let share = left.checked_div(unset).unwrap_or(0);
    listeners
        .into_iter()
        .map(|(mut l, max, i)| {
            l.max_connections = match max {
                Some(m) => {
                    if m > total {
                        c.fail(
                            format!("listen[{i}].max_connections"),
                            format!(
                                "{m} is more than limits.max_connections ({total}), which caps all listeners together"
                            ),
                        );
                    }
                    m
                }
                None if share == 0 => {
                    c.fail(
                        format!("listen[{i}].max_connections"),
                        format!(
                            "unset, and the other listeners' max_connections ({set}) leave no share of limits.max_connections ({total}): set it, or raise limits.max_connections"
                        ),
                    );
                    1
                }
                None => share,
            };
            l
        })
        .collect()
}

/// A size of what a session holds in memory: 256 KiB by default, from 4 KiB
/// (a header section of some length must fit) to 64 MiB (more defeats the
/// point of the bound: 1,000 sessions would hold 64 GiB).
fn memory_size(c: &mut Checker, key: &str, value: Option<u64>) -> usize {
    const DEFAULT: usize = 256 * 1024;
    match value {
        None => DEFAULT,
        Some(v) if (4096..=64 * 1024 * 1024).contains(&v) => v as usize,
        Some(_) => {
            c.fail(key, "must be between 4096 and 67108864 octets");
            DEFAULT
        }
    }
}

fn positive(c: &mut Checker, key: &str, value: Option<u32>, default: u32) -> u32 {
    match value {
        Some(0) => {
            c.fail(key, "must be greater than zero");
            default
        }
        Some(v) => v,
        None => default,
    }
}

fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Parses `host:port` or `[ip]:port` (an IPv6 literal must be bracketed).
pub fn parse_next_hop(text: &str) -> Result<NextHop, String> {
    let bad = || format!("{text:?} is not host:port or [ip]:port");
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let port = port.parse().map_err(|_| bad())?;
        return Ok(NextHop {
            host: ip.to_string(),
            port,
        });
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.contains(':') || (host.parse::<IpAddr>().is_err() && Domain::parse(host).is_err()) {
        return Err(bad());
    }
    Ok(NextHop {
        host: host.to_string(),
        port,
    })
}
