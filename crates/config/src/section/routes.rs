//! `[routes]`: static next hops for domains; every other domain goes by MX.
//!
//! A value is either the next hop as a string (`"relay.test:25"`:
//! opportunistic TLS) or a table `{ next_hop = "...", tls = "verify",
//! tls_name = "..." }` for a hop that must show a PKIX-valid certificate
//! (an authenticated route: REQUIRETLS mail may use it).

use crate::check::Checker;
use portcullis_types::Domain;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `[routes]`: domain (or `.domain` for its subdomains too) to next hop,
/// each value a string or a [`RouteTable`] (checked one by one in
/// [`build`], so an error names its route).
pub type RoutesFile = BTreeMap<String, toml::Value>;

/// The table form of a `[routes]` value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// `next_hop`: `host:port` or `[ip]:port`.
    pub next_hop: String,
    /// `tls`: `"opportunistic"` (default) or `"verify"`.
    pub tls: Option<String>,
    /// `tls_name`: the name the certificate must carry with `verify`
    /// (default: the next hop's host name).
    pub tls_name: Option<String>,
}

/// The TLS a route's next hop must show.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteTls {
    /// STARTTLS when offered, any certificate, clear text after a failed
    /// handshake (the string form of a route).
    #[default]
    Opportunistic,
    /// `tls = "verify"`: STARTTLS mandatory and a certificate PKIX-valid
    /// under the trust anchors (`[tls] extra_roots` included) for `name`;
    /// never clear text; a failure defers. Counts as authenticated TLS
    /// for REQUIRETLS (RFC 8689).
    Verify {
        /// The reference identifier the certificate must match (also the
        /// SNI).
        name: String,
    },
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
    /// The TLS the next hop must show.
    pub tls: RouteTls,
}

/// `[routes]`: each domain and next hop checked, in the file's key order.
pub(crate) fn build(f: &RoutesFile, c: &mut Checker) -> Vec<Route> {
    f.iter()
        .filter_map(|(domain, value)| {
            let key = format!("routes.{domain}");
            let (include_subdomains, name) = match domain.strip_prefix('.') {
                Some(rest) => (true, rest),
                None => (false, domain.as_str()),
            };
            let domain = Domain::parse(name)
                .map_err(|e| c.fail(key.clone(), e.to_string()))
                .ok();
            let hop = route_value(&key, value, c);
            let (next_hop, tls) = hop?;
            Some(Route {
                domain: domain?,
                include_subdomains,
                next_hop,
                tls,
            })
        })
        .collect()
}

/// One route's value: a next hop string, or a [`RouteTable`]. Problems are
/// recorded under `key` (or `key.<field>`).
fn route_value(key: &str, value: &toml::Value, c: &mut Checker) -> Option<(NextHop, RouteTls)> {
    let table = match value {
        toml::Value::String(hop) => {
            let next_hop = parse_next_hop(hop).map_err(|e| c.fail(key, e)).ok()?;
            return Some((next_hop, RouteTls::Opportunistic));
        }
        toml::Value::Table(_) => value
            .clone()
            .try_into::<RouteTable>()
            .map_err(|e| c.fail(key, e.message().trim().to_string()))
            .ok()?,
        _ => {
            c.fail(
                key,
                "a route is \"host:port\" or a table { next_hop = \"host:port\", tls = \"verify\" }",
            );
            return None;
        }
    };
    let next_hop = parse_next_hop(&table.next_hop)
        .map_err(|e| c.fail(format!("{key}.next_hop"), e))
        .ok()?;
    let tls = match table.tls.as_deref() {
        None | Some("opportunistic") => {
            if table.tls_name.is_some() {
                c.fail(
                    format!("{key}.tls_name"),
                    "tls_name applies only with tls = \"verify\"",
                );
                return None;
            }
            RouteTls::Opportunistic
        }
        Some("verify") => RouteTls::Verify {
            name: verify_name(key, table.tls_name.as_deref(), &next_hop, c)?,
        },
        Some(other) => {
            c.fail(
                format!("{key}.tls"),
                format!("{other:?} is not \"opportunistic\" or \"verify\""),
            );
            return None;
        }
    };
    Some((next_hop, tls))
}

/// The name a `verify` route's certificate must carry: `tls_name`, else
/// the next hop's host name. An IP literal next hop needs `tls_name`
/// (certificates of mail relays name hosts, and guessing would let the
/// check pass for the wrong reason).
fn verify_name(
    key: &str,
    tls_name: Option<&str>,
    next_hop: &NextHop,
    c: &mut Checker,
) -> Option<String> {
    let name_key = format!("{key}.tls_name");
    match tls_name {
        Some(name) => match Domain::parse(name) {
            Ok(d) => Some(d.as_str().to_owned()),
            Err(e) => {
                c.fail(name_key, format!("{name:?}: {e}"));
                None
            }
        },
        None if next_hop.host.parse::<IpAddr>().is_ok() => {
            c.fail(
                name_key,
                format!(
                    "required with tls = \"verify\" when the next hop is an IP address ({})",
                    next_hop.host
                ),
            );
            None
        }
        None => Some(next_hop.host.to_ascii_lowercase()),
    }
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
