//! `[routes]`: static next hops for domains; every other domain goes by MX.

use crate::check::Checker;
use portcullis_types::Domain;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `[routes]`: domain (or `.domain` for its subdomains too) to next hop.
pub type RoutesFile = BTreeMap<String, String>;

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

/// `[routes]`: each domain and next hop checked, in the file's key order.
pub(crate) fn build(f: &RoutesFile, c: &mut Checker) -> Vec<Route> {
    f.iter()
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
        .collect()
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
