//! `[relay]`: whose mail is accepted for where (the anti-relay rules).

use crate::check::{Checker, parse_network};
use ipnet::IpNet;
use portcullis_types::Domain;
use serde::Deserialize;
use std::net::IpAddr;

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

/// `[relay]`: every domain and network checked; a /0 network is refused
/// (it would make this an open relay).
pub(crate) fn build(f: &RelayFile, c: &mut Checker) -> Relay {
    let relay = Relay {
        accepted_domains: f
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
        trusted_networks: f
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
    relay
}
