//! The configuration file as serde sees it: one struct per TOML table, every
//! key documented, unknown keys refused (`deny_unknown_fields`). Values are
//! kept as written (strings for durations, addresses and domains); the
//! `validate` module turns them into the typed runtime [`crate::Config`].

use serde::Deserialize;
use std::collections::BTreeMap;

/// `[[listen]]`: one listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    /// `address`: IP and port, e.g. `"0.0.0.0:25"` or `"[::]:25"`.
    pub address: String,
    /// `role`: `smtp` (port 25, opportunistic STARTTLS), `submission` (587,
    /// STARTTLS required before MAIL) or `submissions` (465, implicit TLS).
    #[serde(default = "default_role")]
    pub role: String,
    /// `max_connections`: open connections on this listener; past it a new
    /// connection gets 421 4.7.0. Default: an even share of what
    /// `[limits] max_connections` leaves after the listeners that set
    /// theirs, so no listener can take another's slots.
    pub max_connections: Option<u32>,
}

fn default_role() -> String {
    "smtp".into()
}

/// `[tls]`: the server certificate and extra trust anchors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// `certificate`: PEM certificate chain; absent: a self-signed one is made.
    pub certificate: Option<String>,
    /// `private_key`: PEM private key matching `certificate`.
    pub private_key: Option<String>,
    /// `extra_roots`: PEM files with extra trust anchors for outbound TLS.
    #[serde(default)]
    pub extra_roots: Vec<String>,
}

/// `[relay]`: who may send where.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// `accepted_domains`: mail for these domains is accepted from anyone.
    #[serde(default)]
    pub accepted_domains: Vec<String>,
    /// `trusted_networks`: CIDRs whose clients may relay to any domain.
    #[serde(default)]
    pub trusted_networks: Vec<String>,
}

/// `[dns]`: how the server resolves names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// `nameservers`: `ip:port` list; empty means the system configuration.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// `timeout`: per query, default `"5s"`.
    pub timeout: Option<String>,
}

/// `[delivery]`: outbound connections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFile {
    /// `port`: the port MX hosts are contacted on (default 25).
    pub port: Option<u16>,
    /// `max_concurrent`: messages in delivery at once (default 50).
    pub max_concurrent: Option<u32>,
    /// `per_domain`: concurrent sessions to one destination domain (default 10).
    pub per_domain: Option<u32>,
    /// `connect_timeout`: TCP connect to a mail host (default `"30s"`).
    pub connect_timeout: Option<String>,
}

/// `[queue]`: retry schedule and lifetime.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    /// `retry`: waits between attempts; the last one repeats.
    pub retry: Option<Vec<String>>,
    /// `max_age`: then the message bounces (default `"5d"`).
    pub max_age: Option<String>,
    /// `delay_warning`: one delay DSN after this long (default `"4h"`).
    pub delay_warning: Option<String>,
}

/// `[mta_sts]`: policy fetching.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaStsFile {
    /// `https_port`: the port policy hosts are fetched from (default 443).
    pub https_port: Option<u16>,
    /// `fetch_timeout`: the whole HTTPS policy fetch (default `"30s"`).
    pub fetch_timeout: Option<String>,
    /// `pins_dir`: directory of `<domain>.txt` policies pinned for remote
    /// domains; they win over DNS (default: none).
    pub pins_dir: Option<String>,
}

/// `[tlsrpt]`: RFC 8460 reports we send.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRptFile {
    /// `enabled`: send daily reports (default false).
    #[serde(default)]
    pub enabled: bool,
    /// `organization`: our organisation's name in reports.
    pub organization: Option<String>,
    /// `contact`: contact info in reports, e.g. `mailto:postmaster@...`.
    pub contact: Option<String>,
    /// `submitter`: the domain named as report submitter.
    pub submitter: Option<String>,
    /// `from`: the From address of report mail.
    pub from: Option<String>,
    /// `dkim_selector`: selector of the DKIM key that signs reports.
    pub dkim_selector: Option<String>,
    /// `dkim_key`: PEM private key that signs reports.
    pub dkim_key: Option<String>,
    /// `send_window`: reports leave at a random time within this window after 00:00 UTC.
    pub send_window: Option<String>,
}

/// `[submission]`: authenticated submission.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionFile {
    /// `users_file`: the users file managed with `portcullis user ...`.
    pub users_file: Option<String>,
    /// `auth_on_smtp`: offer AUTH (after STARTTLS) on `smtp` listeners too
    /// (default false).
    pub auth_on_smtp: Option<bool>,
    /// `max_auth_failures`: failed AUTH attempts in one session before it is
    /// closed with 421 4.7.0 (default 3).
    pub max_auth_failures: Option<u32>,
    /// `senders`: user name → the MAIL FROM addresses the user may use
    /// (`"alice@example.test"`, or `"@example.test"` for the whole domain).
    /// A user not named here may send as `user@<any accepted domain>`.
    pub senders: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// `[[submission.dkim]]`: DKIM keys that sign authenticated mail, one
    /// per domain of ours.
    pub dkim: Option<Vec<DkimKeyFile>>,
    /// `auth_failures_per_ip`: failed AUTH attempts from one address (an
    /// IPv6 /64) within `lockout_window` before it is locked out (default 10).
    pub auth_failures_per_ip: Option<u32>,
    /// `auth_failures_per_user`: failed AUTH attempts for one user within
    /// `lockout_window` before the user is locked out, except from addresses
    /// the user recently authenticated from (default 10).
    pub auth_failures_per_user: Option<u32>,
    /// `lockout_window`: how long failures are counted and how long a
    /// lockout lasts (default "15m").
    pub lockout_window: Option<String>,
    /// `auth_failure_delay`: the delay before a failed AUTH is answered,
    /// doubled for each earlier failure in the window, at most 16 times it
    /// (default "1s"; "0s" turns delays off).
    pub auth_failure_delay: Option<String>,
    /// `auth_queue_wait`: how long an AUTH PLAIN/LOGIN waits for a free
    /// password-hashing slot (one per core) before it is answered 454 4.7.0
    /// (default "2s").
    pub auth_queue_wait: Option<String>,
    /// `messages_per_hour`: messages one authenticated user may submit per
    /// hour (default 1000; 0: no limit).
    pub messages_per_hour: Option<u32>,
    /// `recipients_per_message`: recipients per message for authenticated
    /// users (default 100; 0: only `[limits] max_recipients`).
    pub recipients_per_message: Option<u32>,
    /// `[submission.user_limits.NAME]`: per-user overrides of the two
    /// sending limits.
    pub user_limits: Option<std::collections::BTreeMap<String, UserLimitsFile>>,
    /// `[submission.oauth]`: OAUTHBEARER and XOAUTH2 with token
    /// introspection; absent: not offered.
    pub oauth: Option<OAuthFile>,
}

/// One `[submission.user_limits.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLimitsFile {
    /// `messages_per_hour` for this user (0: no limit).
    pub messages_per_hour: Option<u32>,
    /// `recipients_per_message` for this user (0: no per-user limit).
    pub recipients_per_message: Option<u32>,
}

/// `[submission.oauth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthFile {
    /// `introspection_url`: the RFC 7662 endpoint (https).
    pub introspection_url: Option<String>,
    /// `client_id`: our client id at the endpoint.
    pub client_id: Option<String>,
    /// `client_secret_file`: a file holding our client secret.
    pub client_secret_file: Option<String>,
    /// `required_scope`: a scope the token must carry (e.g. a mail scope).
    pub required_scope: Option<String>,
    /// `username_claim`: the response member naming the user (default
    /// "username"; "sub" or "email" are common).
    pub username_claim: Option<String>,
    /// `cache_ttl`: how long an active token is remembered, never past its
    /// expiry (default "60s"; "0s": ask every time).
    pub cache_ttl: Option<String>,
    /// `timeout`: connect and request timeout (default "10s").
    pub timeout: Option<String>,
    /// `max_in_flight`: introspection requests at once; more get 454 4.7.0
    /// without a request (default 8).
    pub max_in_flight: Option<u32>,
    /// `breaker_failures`: consecutive endpoint failures that open the
    /// circuit breaker (default 5; 0: never).
    pub breaker_failures: Option<u32>,
    /// `breaker_open`: how long the open breaker answers 454 without a
    /// request before one probe goes through (default "30s").
    pub breaker_open: Option<String>,
    /// `ca_file`: extra trust anchors (PEM) for a private identity
    /// provider; the system roots are used otherwise.
    pub ca_file: Option<String>,
}

/// One `[[submission.dkim]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyFile {
    /// `domain`: the signing domain (`d=`), matched against the From domain.
    pub domain: String,
    /// `selector`: the selector (`s=`).
    pub selector: String,
    /// `key`: the PEM private key (RSA PKCS#1/PKCS#8 or Ed25519 PKCS#8).
    pub key: String,
}

/// `[admin]`: the admin socket and metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `socket`: the Unix socket the CLI talks to (default `<data_dir>/admin.sock`).
    pub socket: Option<String>,
    /// `metrics`: `ip:port` for Prometheus at `/metrics`; absent: off.
    pub metrics: Option<String>,
}

/// `[limits]`: resource limits, each answered with the RFC's reply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// `max_connections`: open connections in total (default 1000).
    pub max_connections: Option<u32>,
    /// `max_connections_per_ip`: open connections from one IPv4 address or
    /// IPv6 /64, on each listener (default 20).
    pub max_connections_per_ip: Option<u32>,
    /// `max_session_duration`: how long one connection may last; then
    /// 421 4.4.2 at the next command (default `"1h"`).
    pub max_session_duration: Option<String>,
    /// `max_junk_commands`: commands that make no progress (NOOP, RSET,
    /// VRFY, EXPN, HELP, a repeated EHLO/HELO, any refused command) before
    /// the session is closed with 421 4.7.0; an accepted message starts the
    /// count again (default 100).
    pub max_junk_commands: Option<u32>,
    /// `max_line_length`: command line length with CRLF (default 2048).
    pub max_line_length: Option<u32>,
    /// `max_message_size`: octets, advertised with SIZE (default 26214400).
    pub max_message_size: Option<u64>,
    /// `max_recipients`: per message (default 100).
    pub max_recipients: Option<u32>,
    /// `max_errors`: error replies before the session is closed (default 10).
    pub max_errors: Option<u32>,
    /// `max_received_headers`: `Received:` fields a message may carry;
    /// more is a mail loop, refused with 554 5.4.6 (default 100).
    pub max_received_headers: Option<u32>,
    /// `command_timeout`: wait for a command (default `"5m"`).
    pub command_timeout: Option<String>,
    /// `data_timeout`: wait for each DATA/BDAT read (default `"10m"`).
    pub data_timeout: Option<String>,
    /// `tls_handshake_timeout`: default `"30s"`.
    pub tls_handshake_timeout: Option<String>,
    /// `greet_pause`: wait this long before the greeting and reject clients
    /// that talk first (default `"0s"`: only input already there is caught).
    pub greet_pause: Option<String>,
    /// `shutdown_grace`: how long open sessions may finish on shutdown (default `"30s"`).
    pub shutdown_grace: Option<String>,
    /// `spool_threshold`: octets of a message held in memory while it
    /// arrives; a larger message is written to the store as it arrives,
    /// only its header section staying in memory (default 262144).
    pub spool_threshold: Option<u64>,
    /// `max_header_size`: octets the header section of a message may take;
    /// a larger one is refused with 552 5.3.4 (default 262144).
    pub max_header_size: Option<u64>,
}

/// `[smtp]`: protocol policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    /// `bare_newline`: `reject` (550 5.5.2, default) or `normalize` (to CRLF)
    /// for a bare LF or bare CR inside message data.
    pub bare_newline: Option<String>,
    /// `banner`: text after the hostname in the 220 greeting.
    pub banner: Option<String>,
}

/// `[verify]`: SPF, DKIM, DMARC and ARC checks of mail arriving on `smtp`
/// listeners, and what their verdict does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    /// `enabled`: verify every message on `smtp` listeners (default true).
    pub enabled: Option<bool>,
    /// `skip_trusted`: no verification for clients in
    /// `relay.trusted_networks` (default true).
    pub skip_trusted: Option<bool>,
    /// `dmarc_reject`: refuse a DMARC failure under `p=reject` with
    /// 550 5.7.1 (default true); false handles it like `p=quarantine`.
    pub dmarc_reject: Option<bool>,
    /// `dmarc_quarantine`: a DMARC failure under `p=quarantine` is `tag`ged
    /// with a header (default) or `reject`ed.
    pub dmarc_quarantine: Option<String>,
    /// `spf_fail`: an SPF `fail` is only `record`ed (default; DMARC decides)
    /// or `reject`ed at MAIL FROM with 550 5.7.23.
    pub spf_fail: Option<String>,
    /// `exceptions`: domains (and their subdomains) or networks whose mail
    /// verification never refuses or tags.
    #[serde(default)]
    pub exceptions: Vec<String>,
    /// `timeout`: the longest all checks of one message may take (default
    /// `"30s"`); then the message gets 451 4.7.0.
    pub timeout: Option<String>,
    /// `dkim_max_signatures`: DKIM-Signature fields verified per message
    /// (default 5); the others are recorded as `dkim=policy`.
    pub dkim_max_signatures: Option<u32>,
    /// `dkim_max_signed_headers`: `h=` entries a DKIM or ARC signature may
    /// list and still be verified (default 64).
    pub dkim_max_signed_headers: Option<u32>,
    /// `max_header_fields`: header fields a message may have and still get
    /// its DKIM and ARC signatures verified (default 1000).
    pub max_header_fields: Option<u32>,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `format`: `text` (default) or `json`.
    pub format: Option<String>,
    /// `level`: a tracing filter, e.g. `"info"` or `"portcullis=debug"`.
    pub level: Option<String>,
}

/// `[routes]`: domain (or `.domain` for its subdomains too) to next hop.
pub type RoutesFile = BTreeMap<String, String>;
