//! `[dns]`: how the server resolves names (every lookup goes through it).

use crate::check::Checker;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dns {
    /// Explicit nameservers; empty: the system configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Per-query timeout.
    pub timeout: Duration,
}

impl Default for Dns {
    /// The system's resolvers, 5 seconds a query.
    fn default() -> Dns {
        Dns {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// `[dns]`: a nameserver is `ip:port`, or a bare IP meaning port 53.
pub(crate) fn build(f: &DnsFile, c: &mut Checker) -> Dns {
    Dns {
        nameservers: f
            .nameservers
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
                    .ok()
                    .or_else(|| c.socket_addr(&format!("dns.nameservers[{i}]"), n))
            })
            .collect(),
        timeout: c.duration("dns.timeout", &f.timeout, Dns::default().timeout),
    }
}
