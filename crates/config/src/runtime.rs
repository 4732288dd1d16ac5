//! The typed runtime configuration: every value parsed, checked and
//! defaulted. Code outside this crate sees only these types.

use ipnet::IpNet;
use portcullis_types::Domain;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Port 25: MX service, opportunistic STARTTLS.
    Smtp,
    /// Port 587: STARTTLS required before MAIL (RFC 6409).
    Submission,
    /// Port 465: TLS from the first byte (RFC 8314).
    Submissions,
}

impl Role {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Smtp => "smtp",
            Role::Submission => "submission",
            Role::Submissions => "submissions",
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listener {
    /// Address to bind (port 0: an ephemeral port).
    pub address: SocketAddr,
    /// What the listener is for.
    pub role: Role,
    /// Open connections this listener takes at most (`[[listen]]
    /// max_connections`, or its share of `[limits] max_connections`).
    pub max_connections: u32,
}

/// The server certificate source and outbound trust anchors.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tls {
    /// Certificate chain and key files; `None` means a generated self-signed pair.
    pub files: Option<(PathBuf, PathBuf)>,
    /// Extra trust anchors for outbound TLS.
    pub extra_roots: Vec<PathBuf>,
}

/// Relay policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Relay {
    /// Domains we accept mail for from anyone.
    pub accepted_domains: Vec<Domain>,
    /// Networks whose clients may relay anywhere.
    pub trusted_networks: Vec<IpNet>,
}

impl Relay {
    /// True when `domain` is one of ours.
    pub fn accepts(&self, domain: &Domain) -> bool {
        self.accepted_domains.iter().any(|d| d == domain)
    }

    /// True when `ip` is in a trusted network. IPv4-mapped IPv6 addresses
    /// count as their IPv4 form.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
}

/// Where a route sends a domain's mail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NextHop {
    /// Host name or IP address (from `[ip]:port`).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// One `[routes]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// The domain the route is for.
    pub domain: Domain,
    /// True when written with a leading `.`: subdomains use it too.
    pub include_subdomains: bool,
    /// The next hop.
    pub next_hop: NextHop,
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dns {
    /// Explicit nameservers; empty: the system configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Per-query timeout.
    pub timeout: Duration,
}

/// Outbound delivery settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// The port MX hosts are contacted on.
    pub port: u16,
    /// Messages in delivery at once.
    pub max_concurrent: u32,
    /// Concurrent sessions per destination domain.
    pub per_domain: u32,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

/// MTA-STS settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MtaSts {
    /// Port of policy hosts.
    pub https_port: u16,
    /// Policy fetch timeout.
    pub fetch_timeout: Duration,
    /// Pinned policies for remote domains.
    pub pins_dir: Option<PathBuf>,
}

/// Retry schedule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Queue {
    /// Waits between attempts; the last repeats.
    pub retry: Vec<Duration>,
    /// Lifetime before a bounce.
    pub max_age: Duration,
    /// When one delay DSN is sent.
    pub delay_warning: Duration,
}

/// TLS-RPT settings (used by the reporting issue).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsRpt {
    /// Send reports.
    pub enabled: bool,
    /// Organisation name.
    pub organization: Option<String>,
    /// Contact.
    pub contact: Option<String>,
    /// Submitter domain.
    pub submitter: Option<String>,
    /// From address.
    pub from: Option<String>,
    /// DKIM selector.
    pub dkim_selector: Option<String>,
    /// DKIM key file.
    pub dkim_key: Option<PathBuf>,
    /// Random send window after midnight UTC.
    pub send_window: Duration,
}

/// Admin socket and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Admin {
    /// The admin Unix socket.
    pub socket: PathBuf,
    /// Prometheus endpoint, if enabled.
    pub metrics: Option<SocketAddr>,
}

/// What to do with a bare LF or bare CR inside message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Refuse the message with 550 5.5.2 (after reading it to its end).
    Reject,
    /// Turn each bare LF or CR into CRLF.
    Normalize,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Open connections in total.
    pub max_connections: u32,
    /// Open connections per client IPv4 address or IPv6 /64, on each
    /// listener.
    pub max_connections_per_ip: u32,
    /// How long one connection may last before it is closed with 421 4.4.2
    /// (at the next command; data in progress may finish).
    pub max_session_duration: Duration,
    /// Commands that make no progress before the session is closed with
    /// 421 4.7.0 (Postfix's `smtpd_junk_command_limit`).
    pub max_junk_commands: u32,
    /// Longest command line accepted, CRLF included.
    pub max_line_length: u32,
    /// Largest message accepted, in octets.
    pub max_message_size: u64,
    /// Recipients per message.
    pub max_recipients: u32,
    /// Error replies before disconnecting.
    pub max_errors: u32,
    /// `Received:` fields a message may carry before it is refused as a
    /// mail loop (RFC 5321 §6.3).
    pub max_received_headers: u32,
    /// Wait for a command line.
    pub command_timeout: Duration,
    /// Wait for message data (per read).
    pub data_timeout: Duration,
    /// TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Pause before the greeting to catch clients that talk first.
    pub greet_pause: Duration,
    /// Grace period for open sessions at shutdown.
    pub shutdown_grace: Duration,
    /// Octets of a message held in memory while it arrives; past them the
    /// data after the header section goes to the store as it arrives.
    pub spool_threshold: usize,
    /// Largest header section accepted, in octets (it is held in memory).
    pub max_header_size: usize,
}

/// What a DMARC failure under `p=quarantine` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcQuarantine {
    /// Accept and add `X-Portcullis-Quarantine: dmarc` for the mail store.
    Tag,
    /// Refuse with 550 5.7.1.
    Reject,
}

/// What an SPF `fail` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfFail {
    /// Only record it (Authentication-Results, Received-SPF); DMARC decides.
    Record,
    /// Refuse the sender at MAIL FROM with 550 5.7.23 (RFC 7372).
    Reject,
}

/// One `[verify] exceptions` entry: whose mail verification never refuses
/// or tags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum VerifyException {
    /// A domain and its subdomains; it applies only when the client is
    /// authenticated as that domain (see the `auth` crate).
    Domain(Domain),
    /// Clients in this network.
    Network(IpNet),
}

/// Sender verification (`[verify]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verify {
    /// Verify mail on `smtp` listeners.
    pub enabled: bool,
    /// No verification for clients in trusted networks.
    pub skip_trusted: bool,
    /// Refuse DMARC failures under `p=reject`.
    pub dmarc_reject: bool,
    /// What a DMARC failure under `p=quarantine` does.
    pub dmarc_quarantine: DmarcQuarantine,
    /// What an SPF `fail` does.
    pub spf_fail: SpfFail,
    /// Senders and clients whose mail is never refused or tagged.
    pub exceptions: Vec<VerifyException>,
    /// Bound on the checks of one message.
    pub timeout: Duration,
    /// DKIM signatures verified per message; the others get `dkim=policy`.
    pub dkim_max_signatures: u32,
    /// Most `h=` entries of a DKIM or ARC signature that is verified.
    pub dkim_max_signed_headers: u32,
    /// Most header fields of a message whose signatures are verified.
    pub max_header_fields: u32,
}

impl Default for Verify {
    /// The defaults of the reference configuration.
    fn default() -> Verify {
        Verify {
            enabled: true,
            skip_trusted: true,
            dmarc_reject: true,
            dmarc_quarantine: DmarcQuarantine::Tag,
            spf_fail: SpfFail::Record,
            exceptions: Vec::new(),
            timeout: Duration::from_secs(30),
            dkim_max_signatures: 5,
            dkim_max_signed_headers: 64,
            max_header_fields: 1000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[submission]`: SMTP AUTH and what authenticated users may do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Submission {
    /// Offer AUTH (after STARTTLS) on `smtp` listeners too.
    pub auth_on_smtp: bool,
    /// Failed AUTH attempts in one session before it is closed.
    pub max_auth_failures: u32,
    /// User name → the sender addresses the user may use.
    pub senders: std::collections::BTreeMap<String, Vec<SenderPattern>>,
    /// `[[submission.dkim]]`: the keys that sign authenticated mail.
    pub dkim: Vec<DkimKey>,
    /// Brute-force defence across sessions.
    pub lockout: Lockout,
    /// How long an AUTH PLAIN/LOGIN waits for a password-hashing slot
    /// before 454 4.7.0.
    pub auth_queue_wait: std::time::Duration,
    /// Sending limits for every authenticated user.
    pub limits: UserLimits,
    /// Per-user overrides of `limits`.
    pub user_limits: std::collections::BTreeMap<String, UserLimits>,
    /// OAUTHBEARER/XOAUTH2 through token introspection (none: not offered).
    pub oauth: Option<OAuth>,
}

/// Failed-AUTH limits across sessions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lockout {
    /// Failures from one address (IPv6: its /64) before it is locked out.
    pub failures_per_ip: u32,
    /// Failures for one user before the user is locked out (except from
    /// addresses the user recently authenticated from).
    pub failures_per_user: u32,
    /// How long failures count, and how long a lockout lasts.
    pub window: std::time::Duration,
    /// The delay before answering the first failure; doubled per earlier
    /// failure in the window, at most 16 times it.
    pub failure_delay: std::time::Duration,
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout {
            failures_per_ip: 10,
            failures_per_user: 10,
            window: std::time::Duration::from_secs(15 * 60),
            failure_delay: std::time::Duration::from_secs(1),
        }
    }
}

/// Sending limits of an authenticated user; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UserLimits {
    /// Messages per hour.
    pub messages_per_hour: u32,
    /// Recipients per message.
    pub recipients_per_message: u32,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            messages_per_hour: 1000,
            recipients_per_message: 100,
        }
    }
}

/// `[submission.oauth]`: token introspection (RFC 7662).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OAuth {
    /// The https introspection endpoint.
    pub introspection_url: String,
    /// Our client id.
    pub client_id: String,
    /// The file with our client secret (read at start).
    pub client_secret_file: PathBuf,
    /// A scope tokens must carry.
    pub required_scope: Option<String>,
    /// The response member that names the user.
    pub username_claim: String,
    /// How long an active token is remembered (never past its expiry).
    pub cache_ttl: std::time::Duration,
    /// Connect and request timeout.
    pub timeout: std::time::Duration,
    /// Introspection requests at once, at most.
    pub max_in_flight: u32,
    /// Consecutive endpoint failures that open the circuit breaker (0:
    /// never).
    pub breaker_failures: u32,
    /// How long the open breaker refuses before one probe.
    pub breaker_open: std::time::Duration,
    /// Extra trust anchors for the endpoint.
    pub ca_file: Option<PathBuf>,
}

/// One `[[submission.dkim]]` key: mail from an authenticated user whose
/// From domain is `domain` is signed with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DkimKey {
    /// The signing domain (`d=`).
    pub domain: Domain,
    /// The selector (`s=`).
    pub selector: String,
    /// The PEM private key file.
    pub key: PathBuf,
}

impl Default for Submission {
    fn default() -> Self {
        Submission {
            auth_on_smtp: false,
            max_auth_failures: 3,
            senders: Default::default(),
            dkim: Vec::new(),
            lockout: Lockout::default(),
            auth_queue_wait: std::time::Duration::from_secs(2),
            limits: UserLimits::default(),
            user_limits: Default::default(),
            oauth: None,
        }
    }
}

/// One entry of `[submission] senders`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SenderPattern {
    /// `"@example.test"`: any address at the domain.
    Domain(Domain),
    /// `"alice@example.test"`: this address (local part without regard to
    /// ASCII case).
    Address(portcullis_types::Address),
}

impl SenderPattern {
    /// True when `address` matches.
    pub fn matches(&self, address: &portcullis_types::Address) -> bool {
        match self {
            SenderPattern::Domain(d) => &address.domain == d,
            SenderPattern::Address(a) => {
                a.domain == address.domain && a.local.eq_ignore_ascii_case(&address.local)
            }
        }
    }
}

impl Submission {
    /// The sending limits of `user` (their override, or the defaults).
    pub fn limits_for(&self, user: &str) -> UserLimits {
        self.user_limits.get(user).copied().unwrap_or(self.limits)
    }

    /// True when `user` may use `sender` as MAIL FROM: the addresses
    /// `senders` lists for the user, or, for a user not listed there,
    /// `user@<any accepted domain>` (and the user name itself when it is
    /// an address at an accepted domain).
    pub fn may_send_as(
        &self,
        user: &str,
        sender: &portcullis_types::Address,
        relay: &Relay,
    ) -> bool {
        if let Some(patterns) = self.senders.get(user) {
            return patterns.iter().any(|p| p.matches(sender));
        }
        if !relay.accepted_domains.contains(&sender.domain) {
            return false;
        }
        sender.local.eq_ignore_ascii_case(user)
            || portcullis_types::Address::parse(user).is_ok_and(|u| {
                u.domain == sender.domain && u.local.eq_ignore_ascii_case(&sender.local)
            })
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    /// Our host name (greeting, EHLO, Received).
    pub hostname: String,
    /// Where the store, generated certificates and the admin socket live.
    pub data_dir: PathBuf,
    /// Listening sockets.
    pub listeners: Vec<Listener>,
    /// Certificates.
    pub tls: Tls,
    /// Relay policy.
    pub relay: Relay,
    /// Static routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
    /// Outbound delivery.
    pub delivery: Delivery,
    /// Queue schedule.
    pub queue: Queue,
    /// MTA-STS policy fetch port.
    pub mta_sts: MtaSts,
    /// TLS-RPT.
    pub tlsrpt: TlsRpt,
    /// Users file for submission.
    pub users_file: Option<PathBuf>,
    /// Authenticated submission.
    pub submission: Submission,
    /// Admin interface.
    pub admin: Admin,
    /// Limits.
    pub limits: Limits,
    /// Bare newline policy.
    pub bare_newline: BareNewline,
    /// Sender verification.
    pub verify: Verify,
    /// Text after the hostname in the greeting.
    pub banner: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
}

impl Config {
    /// The route for `domain`, if one is configured: an exact entry wins over
    /// a subdomain (`.domain`) entry, and a longer parent over a shorter one.
    pub fn route_for(&self, domain: &Domain) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| {
                &r.domain == domain || (r.include_subdomains && domain.is_within(&r.domain))
            })
            .max_by_key(|r| (&r.domain == domain, r.domain.as_str().len()))
    }
}
