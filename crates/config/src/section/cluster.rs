//! `[cluster]`: the PostgreSQL database several edge nodes share their
//! state in. Absent, nothing changes: every store stays in the node's
//! embedded sled. The password is never in this file: a URL carrying one
//! is refused, and it comes from `password_file` or `PGPASSWORD`.

use crate::check::Checker;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[cluster]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `database`: `postgresql://user@host:port/db` (required; no password
    /// in it).
    pub database: Option<String>,
    /// `node`: this node's name in the cluster (default: `hostname`).
    pub node: Option<String>,
    /// `password_file`: a file holding the database password, read at
    /// start (default: the `PGPASSWORD` environment variable, else none).
    pub password_file: Option<String>,
    /// `tls`: `"disable"` or `"verify-full"` (default `"verify-full"`).
    pub tls: Option<String>,
    /// `tls_ca`: PEM file of the CA certificates the database's
    /// certificate is checked against (default: the web PKI roots).
    pub tls_ca: Option<String>,
    /// `pool_size`: connections to the database at most (default 8).
    pub pool_size: Option<u32>,
    /// `timeout`: how long one database operation may take before the
    /// node falls back to its local state (default `"2s"`).
    pub timeout: Option<String>,
    /// `sync_interval`: how often the node exchanges its locally kept
    /// shared state with the database: counts it buffered (TLS-RPT, DMARC,
    /// rates) pushed, the cluster's sums pulled (default `"10s"`).
    pub sync_interval: Option<String>,
}

/// How the connection to the database is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterTls {
    /// Plain TCP (`"disable"`).
    Disable,
    /// TLS with the certificate verified for the host name
    /// (`"verify-full"`).
    VerifyFull,
}

/// Cluster mode as the server runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cluster {
    /// The database URL, without a password.
    pub database: String,
    /// This node's name.
    pub node: String,
    /// The password file; `None`: `PGPASSWORD`, else no password (trust or
    /// peer authentication).
    pub password_file: Option<PathBuf>,
    /// TLS to the database.
    pub tls: ClusterTls,
    /// CA certificates for `verify-full`; `None`: the web PKI roots.
    pub tls_ca: Option<PathBuf>,
    /// Connections at most.
    pub pool_size: u32,
    /// The limit of one database operation.
    pub timeout: Duration,
    /// How often locally kept shared state is exchanged with the database.
    pub sync_interval: Duration,
}

/// `[cluster]`: `database` is required and must be a `postgresql://` (or
/// `postgres://`) URL without a password; `node` defaults to `hostname`.
pub(crate) fn build(f: &ClusterFile, hostname: &str, c: &mut Checker) -> Option<Cluster> {
    let timeout = c.duration("cluster.timeout", &f.timeout, Duration::from_secs(2));
    let sync_interval = c.duration(
        "cluster.sync_interval",
        &f.sync_interval,
        Duration::from_secs(10),
    );
    if sync_interval < Duration::from_millis(100) || sync_interval > Duration::from_secs(3600) {
        c.fail("cluster.sync_interval", "must be between 100ms and 1h");
    }
    let pool_size = c.positive("cluster.pool_size", f.pool_size, 8);
    let tls = match f.tls.as_deref() {
        None | Some("verify-full") => ClusterTls::VerifyFull,
        Some("disable") => ClusterTls::Disable,
        Some(other) => {
            c.fail(
                "cluster.tls",
                format!("{other:?} is not \"disable\" or \"verify-full\""),
            );
            ClusterTls::VerifyFull
        }
    };
    let node = match &f.node {
        Some(n) if n.trim().is_empty() || n.chars().any(char::is_control) => {
            c.fail(
                "cluster.node",
                "must be a non-empty name without control characters",
            );
            None
        }
        Some(n) => Some(n.clone()),
        None => Some(hostname.to_owned()),
    };
    let database = match &f.database {
        None => {
            c.fail("cluster.database", "required when [cluster] is present");
            None
        }
        Some(url) => match check_url(url) {
            Ok(()) => Some(url.clone()),
            Err(why) => {
                c.fail("cluster.database", why);
                None
            }
        },
    };
    Some(Cluster {
        database: database?,
        node: node?,
        password_file: f.password_file.as_ref().map(PathBuf::from),
        tls,
        tls_ca: f.tls_ca.as_ref().map(PathBuf::from),
        pool_size,
        timeout,
        sync_interval,
    })
}

/// A `postgresql://` or `postgres://` URL with no password in its user
/// part or its parameters.
fn check_url(url: &str) -> Result<(), String> {
    const NO_PASSWORD: &str = "a password in the URL is refused (the config file is not a secret store): put it in PGPASSWORD or password_file";
    let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    else {
        return Err(format!("{url:?} is not a postgresql:// or postgres:// URL"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err(NO_PASSWORD.to_owned());
    }
    if let Some((_, query)) = rest.split_once('?')
        && query.split('&').any(|p| {
            p.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("password"))
        })
    {
        return Err(NO_PASSWORD.to_owned());
    }
    if authority.rsplit('@').next().is_none_or(str::is_empty) {
        return Err(format!("{url:?} names no host"));
    }
    Ok(())
}
