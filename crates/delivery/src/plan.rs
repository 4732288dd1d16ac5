//! Route planning: where mail for a domain goes (RFC 5321 §5.1).
//!
//! A configured route wins. Otherwise the MX records, sorted by preference
//! with equal preferences shuffled; no MX records means the domain itself
//! is the one host (implicit MX); a null MX (RFC 7505, a single MX of ".")
//! means the domain accepts no mail. Each host's addresses are resolved,
//! IPv6 first, then IPv4. A temporary DNS failure is never mistaken for
//! "no such record": that would bounce mail a DNS hiccup could save.

use portcullis_config::Route;
use portcullis_dns::{DnsError, Resolver};
use portcullis_types::Domain;
use rand::seq::SliceRandom;
use std::net::IpAddr;

/// One host to try, with its addresses in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The MX (or route) host name, or an IP literal for an IP route.
    pub name: String,
    /// TCP port.
    pub port: u16,
    /// Addresses, IPv6 then IPv4; empty when resolution failed.
    pub addrs: Vec<IpAddr>,
    /// Why `addrs` is empty, if it is.
    pub error: Option<String>,
    /// True when a temporary DNS failure left `addrs` empty.
    pub temporary: bool,
}

/// Why no host can be tried now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The domain cannot receive mail: bounce with this status.
    #[error("{reason}")]
    Permanent {
        /// RFC 3463 status.
        status: (u8, u16, u16),
        /// For the DSN.
        reason: String,
    },
    /// Try later.
    #[error("{reason}")]
    Temporary {
        /// For the queue and logs.
        reason: String,
    },
}

/// Plans delivery for `domain`.
pub async fn plan<R: Resolver>(
    resolver: &R,
    routes: &[Route],
    port: u16,
    domain: &Domain,
) -> Result<Vec<Hop>, PlanError> {
    if let Some(route) = route_for(routes, domain) {
        let host = &route.next_hop.host;
        let hop = match host.parse::<IpAddr>() {
            Ok(ip) => Hop {
                name: host.clone(),
                port: route.next_hop.port,
                addrs: vec![ip],
                error: None,
                temporary: false,
            },
            Err(_) => resolve(resolver, host, route.next_hop.port).await,
        };
        return finish(vec![hop], domain, false);
    }
    let names: Vec<String> = match resolver.mx(domain.as_str()).await {
        Ok(mut mx) => {
            if mx
                .iter()
                .any(|m| m.exchange.is_empty() || m.exchange == ".")
            {
                // RFC 7505 §3: a null MX means no mail; 556 5.1.10.
                return Err(PlanError::Permanent {
                    status: (5, 1, 10),
                    reason: format!("{domain} does not accept mail (null MX, RFC 7505)"),
                });
            }
            mx.sort_by_key(|m| m.preference);
            shuffle_equal_preferences(&mut mx);
            mx.into_iter().map(|m| m.exchange).collect()
        }
        Err(DnsError::NoRecords { .. }) => vec![domain.as_str().to_string()],
        Err(DnsError::NxDomain { .. }) => {
            return Err(PlanError::Permanent {
                status: (5, 1, 2),
                reason: format!("{domain}: domain does not exist (NXDOMAIN)"),
            });
        }
        Err(e) => {
            return Err(PlanError::Temporary {
                reason: format!("MX lookup for {domain} failed: {e}"),
            });
        }
    };
    let implicit = names.len() == 1 && names[0] == domain.as_str();
    let mut hops = Vec::with_capacity(names.len());
    for name in names {
        hops.push(resolve(resolver, &name, port).await);
    }
    finish(hops, domain, implicit)
}

/// Keeps hops; fails when none has an address.
fn finish(hops: Vec<Hop>, domain: &Domain, implicit: bool) -> Result<Vec<Hop>, PlanError> {
    if hops.iter().any(|h| !h.addrs.is_empty()) {
        return Ok(hops);
    }
    let reasons: Vec<String> = hops.iter().filter_map(|h| h.error.clone()).collect();
    if implicit && hops.iter().all(|h| !h.temporary) {
        // RFC 5321 §5.1: no MX and no address: nowhere to deliver.
        return Err(PlanError::Permanent {
            status: (5, 4, 4),
            reason: format!("{domain} has no MX and no address records"),
        });
    }
    Err(PlanError::Temporary {
        reason: format!(
            "no address for any mail host of {domain}: {}",
            reasons.join("; ")
        ),
    })
}

/// Shuffles runs of equal preference (RFC 5321 §5.1: spread the load).
fn shuffle_equal_preferences(mx: &mut [portcullis_dns::Mx]) {
    let mut rng = rand::rng();
    let mut start = 0;
    while start < mx.len() {
        let pref = mx[start].preference;
        let end = mx[start..]
            .iter()
            .position(|m| m.preference != pref)
            .map_or(mx.len(), |n| start + n);
        mx[start..end].shuffle(&mut rng);
        start = end;
    }
}

async fn resolve<R: Resolver>(resolver: &R, name: &str, port: u16) -> Hop {
    let v6 = resolver.ipv6(name).await;
    let v4 = resolver.ipv4(name).await;
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut errors = Vec::new();
    let mut temporary = false;
    match v6 {
        Ok(list) => addrs.extend(list.into_iter().map(IpAddr::V6)),
        Err(e) => {
            temporary |= e.is_temporary();
            errors.push(e.to_string());
        }
    }
    match v4 {
        Ok(list) => addrs.extend(list.into_iter().map(IpAddr::V4)),
        Err(e) => {
            temporary |= e.is_temporary();
            errors.push(e.to_string());
        }
    }
    let error = addrs
        .is_empty()
        .then(|| format!("{name}: {}", errors.join(", ")));
    let temporary = temporary && error.is_some();
    Hop {
        name: name.to_string(),
        port,
        addrs,
        error,
        temporary,
    }
}

/// The route for `domain`: exact entries win over `.parent` entries.
pub fn route_for<'a>(routes: &'a [Route], domain: &Domain) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| &r.domain == domain || (r.include_subdomains && domain.is_within(&r.domain)))
        .max_by_key(|r| (&r.domain == domain, r.domain.as_str().len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_config::NextHop;
    use portcullis_dns::MemoryResolver;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[tokio::test]
    async fn mx_sorted_by_preference_with_addresses_v6_first() {
        let r = MemoryResolver::new()
            .mx("example.test", 20, "mx2.example.test")
            .mx("example.test", 10, "mx1.example.test")
            .a("mx1.example.test", Ipv4Addr::new(192, 0, 2, 1))
            .aaaa("mx1.example.test", Ipv6Addr::LOCALHOST)
            .a("mx2.example.test", Ipv4Addr::new(192, 0, 2, 2));
        let hops = plan(&r, &[], 25, &d("example.test")).await.unwrap();
        assert_eq!(
            hops.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["mx1.example.test", "mx2.example.test"]
        );
        assert_eq!(
            hops[0].addrs,
            vec![
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            ]
        );
        assert_eq!(hops[0].port, 25);
    }

    #[tokio::test]
    async fn equal_preferences_are_shuffled() {
        let mut r = MemoryResolver::new();
        for i in 0..6 {
            r = r
                .mx("example.test", 10, &format!("mx{i}.example.test"))
                .a(&format!("mx{i}.example.test"), Ipv4Addr::new(192, 0, 2, i));
        }
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..40 {
            firsts.insert(
                plan(&r, &[], 25, &d("example.test")).await.unwrap()[0]
                    .name
                    .clone(),
            );
        }
        assert!(firsts.len() > 1, "never shuffled");
    }

    #[tokio::test]
    async fn implicit_mx_null_mx_nxdomain_and_temporary() {
        let r = MemoryResolver::new()
            .a("implicit.test", Ipv4Addr::new(192, 0, 2, 9))
            .mx("null.test", 0, ".")
            .a("noaddr.test", Ipv4Addr::new(192, 0, 2, 10))
            .mx("noaddr.test", 10, "ghost.noaddr.test")
            .temp_fail("temp.test");
        let hops = plan(&r, &[], 25, &d("implicit.test")).await.unwrap();
        assert_eq!(hops[0].name, "implicit.test");
        assert!(matches!(
            plan(&r, &[], 25, &d("null.test")).await,
            Err(PlanError::Permanent {
                status: (5, 1, 10),
                ..
            })
        ));
        assert!(matches!(
            plan(&r, &[], 25, &d("nowhere.test")).await,
            Err(PlanError::Permanent {
                status: (5, 1, 2),
                ..
            })
        ));
        assert!(matches!(
            plan(&r, &[], 25, &d("temp.test")).await,
            Err(PlanError::Temporary { .. })
        ));
        // An MX host without addresses: try later, someone may fix DNS.
        assert!(matches!(
            plan(&r, &[], 25, &d("noaddr.test")).await,
            Err(PlanError::Temporary { .. })
        ));
    }

    #[tokio::test]
    async fn routes_win_over_mx() {
        let r = MemoryResolver::new().mx("example.test", 10, "mx.example.test");
        let routes = vec![Route {
            domain: d("example.test"),
            include_subdomains: true,
            next_hop: NextHop {
                host: "127.0.0.1".into(),
                port: 2526,
            },
        }];
        let hops = plan(&r, &routes, 25, &d("sub.example.test")).await.unwrap();
        assert_eq!(
            hops,
            vec![Hop {
                name: "127.0.0.1".into(),
                port: 2526,
                addrs: vec![IpAddr::from([127, 0, 0, 1])],
                error: None,
                temporary: false
            }]
        );
    }
}
