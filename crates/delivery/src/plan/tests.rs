//! The outbound decision as a table (no sockets, no DNS server: the facts
//! are written down), then the gatherer against the in-memory resolver.

use super::decide::{consults_dns, consults_policy, decide};
use super::facts::{Dane, Facts, HostAddresses, HostSource, MxAnswer};
use super::gather::Planner;
use super::outcome::{
    Contact, DeferCause, DeliveryPlan, Outcome, PolicyMatch, Rule, SkipReason, StsRule,
    TlsRequirement,
};
use crate::loops::SelfAddresses;
use portcullis_config::{NextHop, Route, RouteTls};
use portcullis_dns::{MemoryResolver, Mx};
use portcullis_policy::{
    CachedPolicy, NoPolicy, NoPolicyReason, PinSource, Policy, PolicyLookup, PolicySource, StsError,
};
use portcullis_types::{Domain, Tlsa};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

/// What the MX lookup said, in the table's words.
#[derive(Clone)]
enum MxKind {
    List(Vec<(u16, &'static str)>),
    NoRecords,
    NxDomain,
    Null,
    ServFail,
}

/// The MTA-STS lookup, in the table's words.
#[derive(Clone)]
enum Sts {
    NotConsulted,
    NoRecord,
    FetchFailed,
    Unavailable,
    Policy(&'static str, Vec<&'static str>),
    Pinned(&'static str, Vec<&'static str>),
}

/// One row: the facts and the plan expected from them.
#[derive(Clone)]
struct Row {
    name: &'static str,
    domain: &'static str,
    own_domain: bool,
    route: Option<(&'static str, u16)>,
    mx: MxKind,
    sts: Sts,
    policy_waived: bool,
    dane: Vec<(&'static str, Dane)>,
    dane_only: bool,
    /// `tls = "verify"` on the route, with this `tls_name`.
    route_verify: Option<&'static str>,
}

impl Row {
    fn new(name: &'static str) -> Row {
        Row {
            name,
            domain: "example.test",
            own_domain: false,
            route: None,
            mx: MxKind::List(vec![(10, "mx1.example.test"), (20, "mx2.example.test")]),
            sts: Sts::NoRecord,
            policy_waived: false,
            dane: Vec::new(),
            dane_only: false,
            route_verify: None,
        }
    }
    fn dane_only(mut self) -> Row {
        self.dane_only = true;
        self
    }
    fn verify(mut self, tls_name: &'static str) -> Row {
        self.route_verify = Some(tls_name);
        self
    }
    fn dane(mut self, host: &'static str, dane: Dane) -> Row {
        self.dane.push((host, dane));
        self
    }
    fn mx(mut self, mx: MxKind) -> Row {
        self.mx = mx;
        self
    }
    fn list(self, list: &[(u16, &'static str)]) -> Row {
        self.mx(MxKind::List(list.to_vec()))
    }
    fn sts(mut self, sts: Sts) -> Row {
        self.sts = sts;
        self
    }
    fn enforce(self, mx: &[&'static str]) -> Row {
        self.sts(Sts::Policy("enforce", mx.to_vec()))
    }
    fn route(mut self, host: &'static str, port: u16) -> Row {
        self.route = Some((host, port));
        self
    }
}

fn cached(domain: &Domain, mode: &str, mx: &[&str]) -> Arc<CachedPolicy> {
    let mut text = format!("version: STSv1\nmode: {mode}\nmax_age: 86400\n");
    for m in mx {
        text.push_str(&format!("mx: {m}\n"));
    }
    let policy = Policy::parse(&text).unwrap();
    Arc::new(CachedPolicy::new(
        domain.clone(),
        "1".into(),
        policy,
        1_700_000_000,
    ))
}

fn lookup(sts: &Sts, domain: &Domain) -> Option<PolicyLookup> {
    let store_error = || StsError::Invalid {
        reason: "undecodable entry".into(),
    };
    Some(match sts {
        Sts::NotConsulted => return None,
        Sts::NoRecord => PolicyLookup::None(NoPolicy::NoRecord(NoPolicyReason::NoRecord)),
        Sts::FetchFailed => PolicyLookup::FetchFailed {
            domain: domain.clone(),
            error: StsError::Timeout {
                host: format!("mta-sts.{domain}"),
            },
        },
        Sts::Unavailable => PolicyLookup::Unavailable {
            domain: domain.clone(),
            error: store_error(),
            fetch: None,
        },
        Sts::Policy(mode, mx) => PolicyLookup::Policy {
            policy: cached(domain, mode, mx),
            source: PolicySource::Cache,
        },
        Sts::Pinned(mode, mx) => PolicyLookup::Policy {
            policy: cached(domain, mode, mx),
            source: PolicySource::Pinned {
                reason: "partner".into(),
                source: PinSource::Operator,
            },
        },
    })
}

/// Addresses by name: `noaddr*` has none, `tempaddr*` failed for now,
/// `self*` is this server (127.0.0.1), any other name one documentation
/// address.
fn addresses_of(name: &str, n: u8) -> HostAddresses {
    let failed = |temporary| HostAddresses {
        addrs: Vec::new(),
        error: Some(format!("{name}: no addresses")),
        temporary,
    };
    if name.starts_with("noaddr") {
        failed(false)
    } else if name.starts_with("tempaddr") {
        failed(true)
    } else if name.starts_with("self") {
        HostAddresses {
            addrs: vec![IpAddr::from([127, 0, 0, 1])],
            ..HostAddresses::default()
        }
    } else {
        HostAddresses {
            addrs: vec![IpAddr::from([192, 0, 2, n])],
            ..HostAddresses::default()
        }
    }
}

fn plan_of(row: &Row) -> DeliveryPlan {
    let domain = d(row.domain);
    let route = row.route.map(|(host, port)| Route {
        domain: domain.clone(),
        include_subdomains: false,
        next_hop: NextHop {
            host: host.into(),
            port,
        },
        tls: match row.route_verify {
            Some(name) => RouteTls::Verify { name: name.into() },
            None => RouteTls::Opportunistic,
        },
    });
    let mx = match &row.mx {
        MxKind::List(list) => MxAnswer::Records(
            list.iter()
                .map(|&(preference, exchange)| Mx {
                    preference,
                    exchange: exchange.into(),
                })
                .collect(),
        ),
        MxKind::NoRecords => MxAnswer::NoRecords,
        MxKind::NxDomain => MxAnswer::NxDomain,
        MxKind::Null => MxAnswer::Records(vec![Mx {
            preference: 0,
            exchange: String::new(),
        }]),
        MxKind::ServFail => MxAnswer::Failed("example.test: temporary DNS failure".into()),
    };
    let mut facts = Facts {
        domain: &domain,
        own_domain: row.own_domain,
        route: route.clone(),
        port: 25,
        sts: None,
        dane: BTreeMap::new(),
        dane_only: row.dane_only,
        policy_waived: row.policy_waived,
        mx: MxAnswer::NotAsked,
        addresses: BTreeMap::new(),
        ours: BTreeSet::new(),
    };
    if consults_policy(&facts) {
        facts.sts = lookup(&row.sts, &domain);
    }
    if consults_dns(&facts) {
        let names: Vec<String> = match row.route {
            Some((host, _)) => vec![host.to_owned()],
            None => mx
                .hosts(&domain)
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        };
        for (n, name) in names.into_iter().enumerate() {
            let found = addresses_of(&name, n as u8 + 1);
            if name.starts_with("self") {
                facts.ours.insert(SocketAddr::new(found.addrs[0], 25));
            }
            facts.addresses.insert(name, found);
        }
        if row.route.is_none() {
            facts.mx = mx;
        }
        for (host, dane) in &row.dane {
            facts.dane.insert(host.to_string(), dane.clone());
        }
    }
    decide(&facts)
}

/// The plan in the table's words: the outcome, then one entry per host
/// (`name tls [pattern]`, `skip`, `!listed`, `self`).
fn summary(plan: &DeliveryPlan) -> (String, Vec<String>) {
    let outcome = match &plan.outcome {
        Outcome::Try => "try".to_owned(),
        Outcome::Defer { cause, .. } => format!("defer {cause:?}"),
        Outcome::Fail {
            status: (a, b, c), ..
        } => format!("fail {a}.{b}.{c}"),
    };
    let hosts = plan
        .hosts
        .iter()
        .map(|h| {
            let mut s = h.name.clone();
            s.push_str(match &h.contact {
                Contact::Try(TlsRequirement::Dane { .. }) => " dane",
                Contact::Try(t) if t.is_required() => " pkix",
                Contact::Skip(SkipReason::TlsaLookupFailed) => " skip-tlsa",
                Contact::Skip(SkipReason::DaneRequired) => " skip-dane-required",
                Contact::Try(_) => " opportunistic",
                Contact::Skip(_) => " skip",
            });
            match &h.policy {
                PolicyMatch::NoPolicy => {}
                PolicyMatch::Listed(p) => s.push_str(&format!(" [{p}]")),
                PolicyMatch::NotListed => s.push_str(" !listed"),
            }
            if !h.myself.is_empty() {
                s.push_str(" self");
            }
            s
        })
        .collect();
    (outcome, hosts)
}

#[track_caller]
fn check(row: Row, sts: StsRule, outcome: &str, hosts: &[&str]) {
    let plan = plan_of(&row);
    let (got_outcome, got_hosts) = summary(&plan);
    assert_eq!(
        (got_outcome.as_str(), got_hosts.as_slice(), plan.sts),
        (
            outcome,
            hosts
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .as_slice(),
            sts
        ),
        "row {:?}: {plan:#?}",
        row.name
    );
}

#[test]
fn no_policy_by_mx_answer() {
    use MxKind::*;
    let none = StsRule::NoPolicy;
    let opp = [
        "mx1.example.test opportunistic",
        "mx2.example.test opportunistic",
    ];
    check(Row::new("mx list by preference"), none, "try", &opp);
    let reversed = Row::new("sorted").list(&[(20, "mx2.example.test"), (10, "mx1.example.test")]);
    check(reversed, none, "try", &opp);
    let implicit = ["example.test opportunistic"];
    check(
        Row::new("implicit MX").mx(NoRecords),
        none,
        "try",
        &implicit,
    );
    check(Row::new("NXDOMAIN").mx(NxDomain), none, "fail 5.1.2", &[]);
    check(Row::new("null MX").mx(Null), none, "fail 5.1.10", &[]);
    check(Row::new("servfail").mx(ServFail), none, "defer Dns", &[]);
    let noaddr = Row::new("implicit, no address").mx(NoRecords);
    check(
        Row {
            domain: "noaddr.test",
            ..noaddr
        },
        none,
        "fail 5.4.4",
        &["noaddr.test opportunistic"],
    );
    let tempaddr = Row::new("implicit, address lookup failed").mx(NoRecords);
    let tempaddr = Row {
        domain: "tempaddr.test",
        ..tempaddr
    };
    check(
        tempaddr,
        none,
        "defer Dns",
        &["tempaddr.test opportunistic"],
    );
    let ghosts = Row::new("no MX host has an address")
        .list(&[(10, "noaddr1.example.test"), (20, "tempaddr2.example.test")]);
    let ghost_hosts = [
        "noaddr1.example.test opportunistic",
        "tempaddr2.example.test opportunistic",
    ];
    check(ghosts, none, "defer Dns", &ghost_hosts);
}

#[test]
fn policies_by_mode() {
    let enforce = Row::new("enforce").enforce(&["mx1.example.test"]);
    let pkix_first = [
        "mx1.example.test pkix [mx1.example.test]",
        "mx2.example.test skip !listed",
    ];
    check(enforce.clone(), StsRule::Enforce, "try", &pkix_first);
    let testing = Row::new("testing").sts(Sts::Policy("testing", vec!["mx1.example.test"]));
    let both = [
        "mx1.example.test opportunistic [mx1.example.test]",
        "mx2.example.test opportunistic !listed",
    ];
    check(testing, StsRule::Testing, "try", &both);
    let exempt = Row {
        policy_waived: true,
        ..enforce.clone()
    };
    check(exempt, StsRule::ReportExempt, "try", &both);
    let opp = [
        "mx1.example.test opportunistic",
        "mx2.example.test opportunistic",
    ];
    let none = Row::new("mode none").sts(Sts::Policy("none", vec![]));
    check(none, StsRule::NoPolicy, "try", &opp);
    let failed = Row::new("fetch failed").sts(Sts::FetchFailed);
    check(failed, StsRule::NoPolicy, "try", &opp);
    let off = Row::new("MTA-STS not consulted").sts(Sts::NotConsulted);
    check(off, StsRule::NotApplied, "try", &opp);
    let unavailable = Row::new("unavailable: no DNS").sts(Sts::Unavailable);
    check(
        unavailable,
        StsRule::Unavailable,
        "defer PolicyUnavailable",
        &[],
    );
    let pinned = Row::new("pinned").sts(Sts::Pinned("enforce", vec!["mx2.example.test"]));
    let pkix_second = [
        "mx1.example.test skip !listed",
        "mx2.example.test pkix [mx2.example.test]",
    ];
    check(pinned, StsRule::Enforce, "try", &pkix_second);
}

#[test]
fn enforced_patterns_and_wildcards() {
    let enforce = StsRule::Enforce;
    let wildcard = Row::new("wildcard: one label only")
        .list(&[
            (10, "a.b.example.test"),
            (20, "mx1.example.test"),
            (30, "example.test"),
        ])
        .enforce(&["*.example.test"]);
    let hosts = [
        "a.b.example.test skip !listed",
        "mx1.example.test pkix [*.example.test]",
        "example.test skip !listed",
    ];
    check(wildcard, enforce, "try", &hosts);
    let case = Row::new("case and trailing dot").list(&[(10, "MX1.Example.Test.")]);
    let case = case.enforce(&["mx1.example.test"]);
    check(
        case,
        enforce,
        "try",
        &["MX1.Example.Test. pkix [mx1.example.test]"],
    );
    let mismatch = Row::new("no MX listed").enforce(&["mx.other.test"]);
    let skipped = [
        "mx1.example.test skip !listed",
        "mx2.example.test skip !listed",
    ];
    check(mismatch, enforce, "defer PolicyMismatch", &skipped);
    let nx = Row::new("NXDOMAIN before the policy").enforce(&["mx.other.test"]);
    check(nx.mx(MxKind::NxDomain), enforce, "fail 5.1.2", &[]);
}

#[test]
fn routes_own_domains_and_loops() {
    let na = StsRule::NotApplied;
    let ip_route = Row::new("IP route, policy ignored").route("127.0.0.1", 2526);
    let ip_route = ip_route.enforce(&["mx.other.test"]);
    check(ip_route, na, "try", &["127.0.0.1 opportunistic"]);
    let named = Row::new("named route").route("relay.example.test", 25);
    check(named, na, "try", &["relay.example.test opportunistic"]);
    let unresolved = Row::new("route unresolved").route("tempaddr.example.test", 25);
    check(
        unresolved,
        na,
        "defer Dns",
        &["tempaddr.example.test opportunistic"],
    );
    let own = Row {
        own_domain: true,
        ..Row::new("own domain without route")
    };
    check(own.clone(), na, "defer OwnDomainWithoutRoute", &[]);
    check(
        own.route("127.0.0.1", 2526),
        na,
        "try",
        &["127.0.0.1 opportunistic"],
    );
    let me = ["self1.example.test opportunistic self"];
    let looped = Row::new("loops").list(&[(10, "self1.example.test")]);
    check(looped, StsRule::NoPolicy, "fail 5.4.6", &me);
    let unsure = Row::new("loops, other unresolved")
        .list(&[(10, "self1.example.test"), (20, "tempaddr.example.test")]);
    let hosts = [me[0], "tempaddr.example.test opportunistic"];
    check(unsure, StsRule::NoPolicy, "defer LoopsToSelf", &hosts);
    let other =
        Row::new("loops, other host").list(&[(10, "self1.example.test"), (20, "mx2.example.test")]);
    check(
        other,
        StsRule::NoPolicy,
        "try",
        &[me[0], "mx2.example.test opportunistic"],
    );
    let enforced = Row::new("loops before the policy").list(&[(10, "self1.example.test")]);
    check(
        enforced.enforce(&["mx.other.test"]),
        StsRule::Enforce,
        "fail 5.4.6",
        &me,
    );
}

#[test]
fn hosts_say_where_they_came_from() {
    let plan = plan_of(&Row::new("sources"));
    assert_eq!(plan.hosts[0].source, HostSource::Mx { preference: 10 });
    let plan = plan_of(&Row::new("implicit").mx(MxKind::NoRecords));
    assert_eq!(plan.hosts[0].source, HostSource::ImplicitMx);
    let plan = plan_of(&Row::new("route").route("127.0.0.1", 2526));
    assert_eq!(plan.hosts[0].source, HostSource::Route);
    assert_eq!(plan.hosts[0].port, 2526);
    assert!(matches!(
        plan_of(&Row::new("unavailable").sts(Sts::Unavailable)).outcome,
        Outcome::Defer {
            cause: DeferCause::PolicyUnavailable,
            ref reason
        } if reason.contains("cannot be read")
    ));
}

fn record(usage: u8) -> Tlsa {
    Tlsa {
        usage,
        selector: 1,
        matching: 1,
        data: vec![0xab; 32],
    }
}

fn usable() -> Dane {
    Dane::Usable(vec![record(3), record(1)])
}

fn unusable() -> Dane {
    Dane::Unusable(vec![record(1)])
}

fn tlsa_failed() -> Dane {
    Dane::Failed {
        error: "_25._tcp.mx1.example.test: temporary DNS failure".into(),
        bogus: false,
    }
}

#[test]
fn dane_per_host() {
    let none = StsRule::NoPolicy;
    let enforce = StsRule::Enforce;
    let both = Row::new("DANE only")
        .dane("mx1.example.test", usable())
        .dane("mx2.example.test", usable());
    let dane = ["mx1.example.test dane", "mx2.example.test dane"];
    check(both, none, "try", &dane);
    let unusable_only = Row::new("unusable records: as without DANE")
        .dane("mx1.example.test", unusable())
        .dane("mx2.example.test", Dane::NoRecords);
    let opp = [
        "mx1.example.test opportunistic",
        "mx2.example.test opportunistic",
    ];
    check(unusable_only, none, "try", &opp);
    let insecure = Row::new("insecure MX: no DANE")
        .dane("mx1.example.test", Dane::Insecure)
        .dane("mx2.example.test", Dane::Insecure);
    check(insecure, none, "try", &opp);
    let servfail = Row::new("TLSA SERVFAIL with MTA-STS enforce")
        .dane("mx1.example.test", tlsa_failed())
        .enforce(&["mx1.example.test"]);
    let waiting = [
        "mx1.example.test skip-tlsa [mx1.example.test]",
        "mx2.example.test skip !listed",
    ];
    check(servfail, enforce, "defer DaneLookup", &waiting);
    let servfail_testing = Row::new("TLSA SERVFAIL with MTA-STS testing, other MX")
        .dane("mx1.example.test", tlsa_failed())
        .sts(Sts::Policy("testing", vec!["mx1.example.test"]));
    let other = [
        "mx1.example.test skip-tlsa [mx1.example.test]",
        "mx2.example.test opportunistic !listed",
    ];
    check(servfail_testing, StsRule::Testing, "try", &other);
    let mixed = Row::new("DANE + MTA-STS: DANE governs its host, listed or not")
        .dane("mx2.example.test", usable())
        .enforce(&["mx1.example.test"]);
    let mixed_hosts = [
        "mx1.example.test pkix [mx1.example.test]",
        "mx2.example.test dane !listed",
    ];
    check(mixed, enforce, "try", &mixed_hosts);
    let mut waived = Row::new("waived (TLS report, TLS-Required: No): DANE not enforced")
        .dane("mx1.example.test", usable())
        .dane("mx2.example.test", tlsa_failed());
    waived.policy_waived = true;
    check(waived, none, "try", &opp);
    let route = Row::new("a route: no DANE")
        .route("relay.example.test", 25)
        .dane("relay.example.test", usable());
    check(
        route,
        StsRule::NotApplied,
        "try",
        &["relay.example.test opportunistic"],
    );
}

/// `[delivery] dane_only`: hosts without usable DANE are never contacted;
/// with none left the mail waits. A route is not subject to it.
#[test]
fn dane_only_skips_hosts_without_usable_dane() {
    let none = StsRule::NoPolicy;
    let nothing = Row::new("dane_only, unsigned")
        .dane_only()
        .dane("mx1.example.test", Dane::Insecure)
        .dane("mx2.example.test", Dane::Insecure);
    let skipped = [
        "mx1.example.test skip-dane-required",
        "mx2.example.test skip-dane-required",
    ];
    check(nothing, none, "defer DaneRequired", &skipped);
    let unusable_only = Row::new("dane_only, records but none usable")
        .dane_only()
        .dane("mx1.example.test", unusable())
        .dane("mx2.example.test", Dane::NoRecords);
    check(unusable_only, none, "defer DaneRequired", &skipped);
    let one = Row::new("dane_only, one host with DANE")
        .dane_only()
        .dane("mx1.example.test", Dane::NoRecords)
        .dane("mx2.example.test", usable());
    let hosts = [
        "mx1.example.test skip-dane-required",
        "mx2.example.test dane",
    ];
    check(one, none, "try", &hosts);
    let even_under_enforce = Row::new("dane_only over an enforce policy that lists the host")
        .dane_only()
        .dane("mx1.example.test", Dane::NoRecords)
        .list(&[(10, "mx1.example.test")])
        .enforce(&["mx1.example.test"]);
    check(
        even_under_enforce,
        StsRule::Enforce,
        "defer DaneRequired",
        &["mx1.example.test skip-dane-required [mx1.example.test]"],
    );
    let failed = Row::new("dane_only, TLSA lookup failed: waits for the lookup")
        .dane_only()
        .list(&[(10, "mx1.example.test")])
        .dane("mx1.example.test", tlsa_failed());
    check(
        failed,
        none,
        "defer DaneLookup",
        &["mx1.example.test skip-tlsa"],
    );
    let route = Row::new("dane_only: a route is the operator's own hop")
        .dane_only()
        .route("relay.example.test", 25);
    check(
        route,
        StsRule::NotApplied,
        "try",
        &["relay.example.test opportunistic"],
    );
    let plan = plan_of(
        &Row::new("rule")
            .dane_only()
            .dane("mx1.example.test", Dane::Insecure),
    );
    assert_eq!(plan.hosts[0].rule, Rule::Dane);
    let Outcome::Defer { reason, .. } = &plan.outcome else {
        panic!("{plan:#?}");
    };
    assert!(
        reason.contains("mx1.example.test: MX or addresses not DNSSEC-secure"),
        "{reason}"
    );
}

/// A route with `tls = "verify"`: PKIX-valid TLS for its `tls_name`,
/// which counts as authenticated TLS (REQUIRETLS).
#[test]
fn a_verified_route_requires_pkix_for_its_name() {
    let row = Row::new("verified route")
        .route("192.0.2.9", 2525)
        .verify("relay.partner.test");
    check(row.clone(), StsRule::NotApplied, "try", &["192.0.2.9 pkix"]);
    let plan = plan_of(&row);
    assert_eq!(plan.hosts[0].rule, Rule::Route);
    assert_eq!(
        plan.hosts[0].contact,
        Contact::Try(TlsRequirement::PkixFor("relay.partner.test".into()))
    );
    assert_eq!(plan.hosts[0].addrs, vec![IpAddr::from([192, 0, 2, 9])]);
}

#[test]
fn dane_rules_and_authority_for_explain() {
    let row = Row::new("mixed")
        .dane("mx2.example.test", usable())
        .sts(Sts::Pinned("enforce", vec!["mx1.example.test"]));
    let plan = plan_of(&row);
    assert_eq!(plan.hosts[0].rule, Rule::Pin);
    assert_eq!(plan.hosts[1].rule, Rule::Dane);
    let Contact::Try(TlsRequirement::Dane { authority }) = &plan.hosts[1].contact else {
        panic!("{plan:#?}");
    };
    assert_eq!(authority.names, ["mx2.example.test"]);
    assert_eq!(authority.records, vec![record(3), record(1)]);
    assert_eq!(plan.hosts[1].dane.dnssec(), "secure");
    let plain = plan_of(&Row::new("nothing"));
    assert_eq!(plain.hosts[0].rule, Rule::None);
    let sts = plan_of(&Row::new("sts").enforce(&["mx1.example.test"]));
    assert_eq!(sts.hosts[0].rule, Rule::MtaSts);
    let failed = plan_of(&Row::new("failed").dane("mx1.example.test", tlsa_failed()));
    assert_eq!(failed.hosts[0].rule, Rule::Dane);
    assert_eq!(failed.hosts[0].dane.dnssec(), "TLSA lookup failed");
}

fn planner(r: MemoryResolver, routes: Vec<Route>) -> Planner<MemoryResolver> {
    Planner {
        resolver: r,
        destinations: crate::LiveDestinations::new(crate::Destinations {
            routes,
            accepted: Vec::new(),
            dane_only: Vec::new(),
        }),
        port: 25,
        myself: SelfAddresses::default(),
    }
}

async fn gathered(p: &Planner<MemoryResolver>, domain: &str) -> DeliveryPlan {
    let domain = d(domain);
    let mut facts = p.facts(&domain, false);
    p.look_up_dns(&mut facts).await;
    decide(&facts)
}

#[tokio::test]
async fn mx_sorted_by_preference_with_addresses_v6_first() {
    let r = MemoryResolver::new()
        .mx("example.test", 20, "mx2.example.test")
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", Ipv4Addr::new(192, 0, 2, 1))
        .aaaa("mx1.example.test", Ipv6Addr::LOCALHOST)
        .a("mx2.example.test", Ipv4Addr::new(192, 0, 2, 2));
    let plan = gathered(&planner(r, vec![]), "example.test").await;
    assert_eq!(
        plan.hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>(),
        ["mx1.example.test", "mx2.example.test"]
    );
    assert_eq!(
        plan.hosts[0].addrs,
        vec![
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
        ]
    );
    assert_eq!(plan.hosts[0].port, 25);
}

#[tokio::test]
async fn equal_preferences_are_shuffled() {
    let mut r = MemoryResolver::new();
    for i in 0..6 {
        r = r
            .mx("example.test", 10, &format!("mx{i}.example.test"))
            .a(&format!("mx{i}.example.test"), Ipv4Addr::new(192, 0, 2, i));
    }
    let p = planner(r, vec![]);
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..40 {
        firsts.insert(gathered(&p, "example.test").await.hosts[0].name.clone());
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
    let p = planner(r, vec![]);
    let plan = gathered(&p, "implicit.test").await;
    assert_eq!(plan.hosts[0].name, "implicit.test");
    assert_eq!(plan.outcome, Outcome::Try);
    let status = |plan: DeliveryPlan| match plan.outcome {
        Outcome::Fail { status, .. } => Some(status),
        _ => None,
    };
    assert_eq!(status(gathered(&p, "null.test").await), Some((5, 1, 10)));
    assert_eq!(status(gathered(&p, "nowhere.test").await), Some((5, 1, 2)));
    assert!(matches!(
        gathered(&p, "temp.test").await.outcome,
        Outcome::Defer {
            cause: DeferCause::Dns,
            ..
        }
    ));
    // An MX host without addresses: try later, someone may fix DNS.
    assert!(matches!(
        gathered(&p, "noaddr.test").await.outcome,
        Outcome::Defer {
            cause: DeferCause::Dns,
            ..
        }
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
        tls: RouteTls::Opportunistic,
    }];
    let plan = gathered(&planner(r, routes), "sub.example.test").await;
    assert_eq!(plan.outcome, Outcome::Try);
    assert_eq!(plan.hosts.len(), 1);
    assert_eq!(
        (
            plan.hosts[0].name.as_str(),
            plan.hosts[0].port,
            &plan.hosts[0].addrs
        ),
        ("127.0.0.1", 2526, &vec![IpAddr::from([127, 0, 0, 1])])
    );
    assert_eq!(plan.hosts[0].error, None);
}

/// A signed domain: secure MX, secure addresses and a TLSA RRset.
fn signed(r: MemoryResolver, mx: &str, ip: u8) -> MemoryResolver {
    r.mx("example.test", 10, mx)
        .a(mx, Ipv4Addr::new(192, 0, 2, ip))
        .secure("example.test")
        .secure(mx)
}

#[tokio::test]
async fn gathering_dane_follows_the_dnssec_chain() {
    let tlsa_name = "_25._tcp.mx1.example.test";
    let r = signed(MemoryResolver::new(), "mx1.example.test", 1)
        .tlsa(tlsa_name, record(3))
        .secure(tlsa_name);
    let plan = gathered(&planner(r.clone(), vec![]), "example.test").await;
    assert_eq!(plan.hosts[0].dane, Dane::Usable(vec![record(3)]));
    assert!(matches!(
        plan.hosts[0].contact,
        Contact::Try(TlsRequirement::Dane { .. })
    ));
    // The TLSA RRset itself insecure: no DANE.
    let r = signed(MemoryResolver::new(), "mx1.example.test", 1).tlsa(tlsa_name, record(3));
    let plan = gathered(&planner(r, vec![]), "example.test").await;
    assert_eq!(plan.hosts[0].dane, Dane::NoRecords);
    // Insecure MX RRset: TLSA is not even consulted.
    let r = MemoryResolver::new()
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", Ipv4Addr::new(192, 0, 2, 1))
        .secure("mx1.example.test")
        .tlsa(tlsa_name, record(3))
        .secure(tlsa_name);
    let plan = gathered(&planner(r, vec![]), "example.test").await;
    assert_eq!(plan.hosts[0].dane, Dane::Insecure);
    // Secure MX, insecure addresses: no DANE.
    let r = MemoryResolver::new()
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", Ipv4Addr::new(192, 0, 2, 1))
        .secure("example.test")
        .tlsa(tlsa_name, record(3))
        .secure(tlsa_name);
    let plan = gathered(&planner(r, vec![]), "example.test").await;
    assert_eq!(plan.hosts[0].dane, Dane::Insecure);
}

#[tokio::test]
async fn gathering_dane_failures_defer_never_downgrade() {
    let tlsa_name = "_25._tcp.mx1.example.test";
    let bogus = signed(MemoryResolver::new(), "mx1.example.test", 1).bogus(tlsa_name);
    let plan = gathered(&planner(bogus, vec![]), "example.test").await;
    assert!(
        matches!(plan.hosts[0].dane, Dane::Failed { bogus: true, .. }),
        "{plan:#?}"
    );
    assert!(matches!(
        plan.outcome,
        Outcome::Defer {
            cause: DeferCause::DaneLookup,
            ..
        }
    ));
    let servfail = signed(MemoryResolver::new(), "mx1.example.test", 1).temp_fail(tlsa_name);
    let plan = gathered(&planner(servfail, vec![]), "example.test").await;
    assert!(matches!(
        plan.hosts[0].dane,
        Dane::Failed { bogus: false, .. }
    ));
    assert_eq!(
        plan.hosts[0].contact,
        Contact::Skip(SkipReason::TlsaLookupFailed)
    );
    // Secure denial: no TLSA records, opportunistic.
    let none = signed(MemoryResolver::new(), "mx1.example.test", 1);
    let plan = gathered(&planner(none, vec![]), "example.test").await;
    assert_eq!(plan.hosts[0].dane, Dane::NoRecords);
    assert_eq!(plan.outcome, Outcome::Try);
    // Only usable-less records: as without DANE.
    let unusable = signed(MemoryResolver::new(), "mx1.example.test", 1)
        .tlsa(tlsa_name, record(1))
        .secure(tlsa_name);
    let plan = gathered(&planner(unusable, vec![]), "example.test").await;
    assert_eq!(plan.hosts[0].dane, Dane::Unusable(vec![record(1)]));
    assert_eq!(
        plan.hosts[0].contact,
        Contact::Try(TlsRequirement::Opportunistic)
    );
}

#[tokio::test]
async fn gathering_dane_uses_the_delivery_port() {
    let r = signed(MemoryResolver::new(), "mx1.example.test", 1)
        .tlsa("_2525._tcp.mx1.example.test", record(3))
        .secure("_2525._tcp.mx1.example.test");
    let mut p = planner(r.clone(), vec![]);
    assert_eq!(
        gathered(&p, "example.test").await.hosts[0].dane,
        Dane::NoRecords
    );
    p.port = 2525;
    assert_eq!(
        gathered(&p, "example.test").await.hosts[0].dane,
        Dane::Usable(vec![record(3)])
    );
}
