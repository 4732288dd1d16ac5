//! The production [`Resolver`]: hickory-resolver, built from `[dns]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{TokioResolver, lookup::Lookup};
use tracing::debug;

use crate::ad_query::AdQuery;
use crate::dnssec::{self, DnssecHealth, DnssecMode, DnssecSettings};
use crate::{
    DnsError, DnsSecurity, Mx, Resolver, Secured, Tlsa, TtlError, name_to_string, parse_name,
};

/// How many times a query is tried (per name server pool) before the lookup
/// is a temporary failure.
const ATTEMPTS: usize = 2;

/// The [`Resolver`] on hickory-resolver: caching per TTL (hickory's cache),
/// CNAMEs followed, errors classified so that a temporary failure is never
/// reported as "no record".
#[derive(Clone, Debug)]
pub struct HickoryResolver {
    inner: TokioResolver,
    dnssec: DnssecMode,
    /// With `trust-ad`, the secured lookups' own query path (hickory
    /// would ask without AD and DO, see `ad_query`).
    trust_ad: Option<AdQuery>,
}

impl HickoryResolver {
    /// Builds the resolver from `[dns] nameservers`.
    ///
    /// An empty list means the system configuration (`/etc/resolv.conf`);
    /// otherwise exactly those servers are asked, over UDP with TCP for
    /// truncated answers, with no search domains (`ndots` 0) and no hosts
    /// file. Either way each query waits `timeout` and is tried twice, and
    /// the names this crate looks up are always absolute.
    ///
    /// Fails with [`DnsError::Temporary`] when the system configuration
    /// cannot be read. DNSSEC is off: every answer is insecure (see
    /// [`HickoryResolver::with_dnssec`]).
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, DnsError> {
        Self::with_dnssec(nameservers, timeout, &DnssecSettings::off())
    }

    /// [`HickoryResolver::new`] with `[dns] dnssec`: with
    /// [`DnssecMode::Validate`] every answer is validated from the root's
    /// keys and `dnssec.trust_anchors` (RFC 4035 §5), a bogus one failing
    /// temporarily. Also fails when a trust anchor file cannot be read.
    /// With [`DnssecMode::TrustAd`] the secured lookups (`mx_secured`,
    /// `addresses_secured`, `tlsa`) ask `nameservers` themselves with AD
    /// and DO set and believe the AD bit of the answer; that mode needs
    /// explicit nameservers (fails otherwise).
    pub fn with_dnssec(
        nameservers: &[SocketAddr],
        timeout: Duration,
        dnssec: &DnssecSettings,
    ) -> Result<Self, DnsError> {
        let config_error = |e: NetError| DnsError::Temporary {
            name: String::new(),
            reason: format!("resolver configuration: {e}"),
        };
        let trust_ad = if dnssec.mode == DnssecMode::TrustAd {
            if nameservers.is_empty() {
                return Err(DnsError::Temporary {
                    name: String::new(),
                    reason: "dnssec trust-ad needs explicit nameservers".to_owned(),
                });
            }
            Some(AdQuery::new(nameservers.to_vec(), timeout, ATTEMPTS))
        } else {
            None
        };
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(config_error)?
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), servers);
            let mut options = ResolverOpts::default();
            options.ndots = 0;
            options.use_hosts_file = ResolveHosts::Never;
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
        };
        let options = builder.options_mut();
        options.timeout = timeout;
        options.attempts = ATTEMPTS;
        if dnssec.mode == DnssecMode::Validate {
            let anchors = dnssec::trust_anchors(&dnssec.trust_anchors).map_err(|reason| {
                DnsError::Temporary {
                    name: String::new(),
                    reason,
                }
            })?;
            builder = builder.with_trust_anchor(anchors);
        }
        let inner = builder.build().map_err(config_error)?;
        Ok(Self {
            inner,
            dnssec: dnssec.mode,
            trust_ad,
        })
    }

    /// The underlying hickory resolver, so that mail-auth and reqwest share
    /// this one resolver (and its cache) rather than building their own.
    pub fn inner(&self) -> &TokioResolver {
        &self.inner
    }

    /// Looks `name` up with type `rtype`, mapping hickory's errors onto
    /// [`DnsError`].
    async fn lookup(&self, name: Name, rtype: RecordType) -> Result<Lookup, DnsError> {
        self.lookup_ttl(name, rtype).await.map_err(|e| e.error)
    }

    /// With `[dns] dnssec = "validate"`: asks the configured nameservers
    /// for the root zone's DNSKEY RRset and validates it from the trust
    /// anchors.
    /// The root is signed, so anything but a secure answer means the path
    /// to the nameservers cannot carry DNSSEC (a resolver that strips
    /// RRSIGs, a middlebox), and then every lookup, not only DANE's, is
    /// bogus: said once at start, in words an operator can act on, rather
    /// than as a temporary failure on every message.
    pub async fn dnssec_self_check(&self) -> DnssecHealth {
        if self.dnssec != DnssecMode::Validate {
            return DnssecHealth::NotValidating;
        }
        match self.lookup(Name::root(), RecordType::DNSKEY).await {
            Ok(lookup) => match dnssec::judge(self.dnssec, ".", &lookup) {
                Ok(DnsSecurity::Secure) => DnssecHealth::Secure,
                Ok(DnsSecurity::Insecure) => DnssecHealth::Insecure,
                Err(e) => DnssecHealth::Bogus(e.to_string()),
            },
            Err(e @ DnsError::Bogus { .. }) => DnssecHealth::Bogus(e.to_string()),
            Err(e) => DnssecHealth::Unknown(e.to_string()),
        }
    }

    /// [`Self::lookup`], keeping the negative TTL of a negative answer.
    async fn lookup_ttl(&self, name: Name, rtype: RecordType) -> Result<Lookup, TtlError> {
        let shown = name_to_string(&name);
        self.inner.lookup(name, rtype).await.map_err(|e| {
            let mapped = classify(&shown, rtype, &e);
            debug!(name = %shown, %rtype, error = %e, mapped = ?mapped, "dns lookup failed");
            let negative_ttl = negative_ttl(&e).filter(|_| mapped.is_not_found());
            TtlError {
                error: mapped,
                negative_ttl,
            }
        })
    }
}

/// The static name of the record types this crate asks for.
pub(crate) fn rtype_name(rtype: RecordType) -> &'static str {
    match rtype {
        RecordType::MX => "MX",
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::TXT => "TXT",
        RecordType::PTR => "PTR",
        RecordType::CNAME => "CNAME",
        RecordType::TLSA => "TLSA",
        _ => "other",
    }
}

/// Maps a hickory error onto [`DnsError`]. Only a response that positively
/// says "no such name" (NXDOMAIN) or "no such records" (NOERROR, empty
/// answer) is "not found"; everything else is temporary (the threat model
/// in the crate documentation).
pub(crate) fn classify(name: &str, rtype: RecordType, error: &NetError) -> DnsError {
    let negative_code = match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(no_records)) => {
            Some(no_records.response_code)
        }
        // A validated negative answer (secure or provably insecure); a
        // bogus one is never "not found".
        NetError::Dns(HickoryDnsError::Nsec {
            response, proof, ..
        }) if !proof.is_bogus() => Some(response.metadata.response_code),
        NetError::Dns(HickoryDnsError::Nsec { .. } | HickoryDnsError::DnssecBogus) => {
            return DnsError::Bogus {
                name: name.to_owned(),
                reason: error.to_string(),
            };
        }
        _ => None,
    };
    if let Some(code) = negative_code {
        match code {
            ResponseCode::NXDomain => {
                return DnsError::NxDomain {
                    name: name.to_owned(),
                };
            }
            ResponseCode::NoError => {
                return DnsError::NoRecords {
                    name: name.to_owned(),
                    rtype: rtype_name(rtype),
                };
            }
            _ => {}
        }
    }
    DnsError::Temporary {
        name: name.to_owned(),
        reason: error.to_string(),
    }
}

/// The negative TTL hickory derived from a negative answer's SOA (RFC 2308
/// §5; counted down when the answer came from its cache).
fn negative_ttl(error: &NetError) -> Option<Duration> {
    match error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(no_records)) => no_records
            .negative_ttl
            .map(|secs| Duration::from_secs(u64::from(secs))),
        _ => None,
    }
}

/// The smallest TTL of `lookup`'s answer records: how long the whole answer
/// may be cached (a CNAME on the way counts as much as the A records).
fn answer_ttl(lookup: &Lookup) -> Duration {
    let secs = lookup.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
    Duration::from_secs(u64::from(secs))
}

/// An `Ok` lookup that holds no record of the asked type (only CNAMEs, say)
/// is "no records", never an empty success.
fn non_empty<T>(name: &Name, rtype: RecordType, found: Vec<T>) -> Result<Vec<T>, DnsError> {
    if found.is_empty() {
        Err(DnsError::NoRecords {
            name: name_to_string(name),
            rtype: rtype_name(rtype),
        })
    } else {
        Ok(found)
    }
}

impl Resolver for HickoryResolver {
    async fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError> {
        self.mx_hickory(name).await.map(|found| found.value)
    }

    async fn ipv4(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        self.ipv4_ttl(name)
            .await
            .map(|(found, _)| found)
            .map_err(|e| e.error)
    }

    async fn ipv4_ttl(&self, name: &str) -> Result<(Vec<Ipv4Addr>, Duration), TtlError> {
        let (found, ttl) = self.ipv4_secured(name).await?;
        Ok((found.value, ttl))
    }

    async fn ipv6(&self, name: &str) -> Result<Vec<Ipv6Addr>, DnsError> {
        self.ipv6_secured(name).await.map(|found| found.value)
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let name = parse_name(name)?;
        let lookup = self.lookup(name.clone(), RecordType::TXT).await?;
        let found = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => {
                    // RFC 7208 §3.3, RFC 6376 §3.6.2.2: the character-strings
                    // of one record are concatenated without separator.
                    let bytes: Vec<u8> = txt
                        .txt_data
                        .iter()
                        .flat_map(|s| s.iter())
                        .copied()
                        .collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            })
            .collect();
        non_empty(&name, RecordType::TXT, found)
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let mut name = Name::from(ip);
        name.set_fqdn(true);
        let lookup = self.lookup(name.clone(), RecordType::PTR).await?;
        let found = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::PTR(ptr) => Some(name_to_string(&ptr.0)),
                _ => None,
            })
            .collect();
        non_empty(&name, RecordType::PTR, found)
    }

    async fn mx_secured(&self, name: &str) -> Result<Secured<Vec<Mx>>, DnsError> {
        let Some(trust_ad) = &self.trust_ad else {
            return self.mx_hickory(name).await;
        };
        let name = parse_name(name)?;
        let found = trust_ad.lookup(&name, RecordType::MX).await?;
        let mut value: Vec<Mx> = found.value.iter().filter_map(to_mx).collect();
        value.sort_by_key(|mx| mx.preference);
        let value = non_empty(&name, RecordType::MX, value)?;
        Ok(Secured {
            value,
            security: found.security,
        })
    }

    async fn addresses_secured(&self, name: &str) -> Result<Secured<Vec<IpAddr>>, DnsError> {
        if let Some(trust_ad) = &self.trust_ad {
            let name = parse_name(name)?;
            let (v4, v6) = tokio::join!(
                trust_ad.lookup(&name, RecordType::A),
                trust_ad.lookup(&name, RecordType::AAAA)
            );
            let addresses = |found: Secured<Vec<RData>>| Secured {
                value: found.value.iter().filter_map(to_ip).collect(),
                security: found.security,
            };
            return dnssec::merge_addresses(v4.map(addresses), v6.map(addresses));
        }
        let (v4, v6) = tokio::join!(self.ipv4_secured(name), self.ipv6_secured(name));
        let v4 = v4.map(|(found, _)| Secured {
            value: found.value.into_iter().map(IpAddr::V4).collect(),
            security: found.security,
        });
        let v6 = v6.map(|found| Secured {
            value: found.value.into_iter().map(IpAddr::V6).collect::<Vec<_>>(),
            security: found.security,
        });
        dnssec::merge_addresses(v4.map_err(|e| e.error), v6)
    }

    async fn tlsa(&self, name: &str) -> Result<Secured<Vec<Tlsa>>, DnsError> {
        let name = parse_name(name)?;
        let found = match &self.trust_ad {
            Some(trust_ad) => trust_ad.lookup(&name, RecordType::TLSA).await?,
            None => {
                let lookup = self.lookup(name.clone(), RecordType::TLSA).await?;
                let security = self.judge(&name, &lookup)?;
                let value = lookup.answers().iter().map(|r| r.data.clone()).collect();
                Secured { value, security }
            }
        };
        let value = found.value.iter().filter_map(to_tlsa).collect();
        let value = non_empty(&name, RecordType::TLSA, value)?;
        Ok(Secured {
            value,
            security: found.security,
        })
    }
}

/// An MX record's data as an [`Mx`] (the null MX's `.` as `""`).
fn to_mx(data: &RData) -> Option<Mx> {
    match data {
        RData::MX(mx) => Some(Mx {
            preference: mx.preference,
            // RFC 7505: the null MX has exchange "." -> "".
            exchange: name_to_string(&mx.exchange),
        }),
        _ => None,
    }
}

/// An A or AAAA record's address.
fn to_ip(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// A TLSA record's data as a [`Tlsa`].
fn to_tlsa(data: &RData) -> Option<Tlsa> {
    match data {
        RData::TLSA(tlsa) => Some(Tlsa {
            usage: u8::from(tlsa.cert_usage),
            selector: u8::from(tlsa.selector),
            matching: u8::from(tlsa.matching),
            data: tlsa.cert_data.clone(),
        }),
        _ => None,
    }
}

impl HickoryResolver {
    /// MX records of `name` through hickory (cached; validated with
    /// `validate`).
    async fn mx_hickory(&self, name: &str) -> Result<Secured<Vec<Mx>>, DnsError> {
        let name = parse_name(name)?;
        let lookup = self.lookup(name.clone(), RecordType::MX).await?;
        let security = self.judge(&name, &lookup)?;
        let mut found: Vec<Mx> = lookup
            .answers()
            .iter()
            .filter_map(|record| to_mx(&record.data))
            .collect();
        found.sort_by_key(|mx| mx.preference);
        let value = non_empty(&name, RecordType::MX, found)?;
        Ok(Secured { value, security })
    }

    /// The security of `lookup` under `[dns] dnssec`.
    fn judge(&self, name: &Name, lookup: &Lookup) -> Result<DnsSecurity, DnsError> {
        dnssec::judge(self.dnssec, &name_to_string(name), lookup)
    }

    /// A records of `name` with their status and their TTL.
    async fn ipv4_secured(
        &self,
        name: &str,
    ) -> Result<(Secured<Vec<Ipv4Addr>>, Duration), TtlError> {
        let name = parse_name(name)?;
        let lookup = self.lookup_ttl(name.clone(), RecordType::A).await?;
        let security = self.judge(&name, &lookup)?;
        let found = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        let value = non_empty(&name, RecordType::A, found)?;
        Ok((Secured { value, security }, answer_ttl(&lookup)))
    }

    /// AAAA records of `name` with their status.
    async fn ipv6_secured(&self, name: &str) -> Result<Secured<Vec<Ipv6Addr>>, DnsError> {
        let name = parse_name(name)?;
        let lookup = self.lookup(name.clone(), RecordType::AAAA).await?;
        let security = self.judge(&name, &lookup)?;
        let found = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::AAAA(aaaa) => Some(aaaa.0),
                _ => None,
            })
            .collect();
        let value = non_empty(&name, RecordType::AAAA, found)?;
        Ok(Secured { value, security })
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;

    use super::*;

    fn no_records(code: ResponseCode) -> NetError {
        let query = Query::query(Name::from_ascii("example.test.").unwrap(), RecordType::MX);
        NetError::from(NoRecords::new(query, code))
    }

    #[track_caller]
    fn case(error: NetError, expected: fn(&DnsError) -> bool) {
        let mapped = classify("example.test", RecordType::MX, &error);
        assert!(expected(&mapped), "{error:?} mapped to {mapped:?}");
    }

    #[test]
    fn nxdomain_is_nxdomain() {
        case(
            no_records(ResponseCode::NXDomain),
            |e| matches!(e, DnsError::NxDomain { name } if name == "example.test"),
        );
    }

    #[test]
    fn noerror_empty_is_no_records() {
        case(no_records(ResponseCode::NoError), |e| {
            matches!(e, DnsError::NoRecords { rtype: "MX", .. })
        });
    }

    #[test]
    fn servfail_is_temporary() {
        case(
            NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::ServFail)),
            DnsError::is_temporary,
        );
    }

    #[test]
    fn refused_is_temporary() {
        case(
            NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::Refused)),
            DnsError::is_temporary,
        );
    }

    /// A NoRecords error carrying an unexpected response code is not proof
    /// of absence.
    #[test]
    fn no_records_with_servfail_code_is_temporary() {
        case(no_records(ResponseCode::ServFail), DnsError::is_temporary);
    }

    #[test]
    fn timeout_is_temporary() {
        case(NetError::Timeout, DnsError::is_temporary);
    }

    #[test]
    fn io_error_is_temporary() {
        case(
            NetError::from(io::Error::from(io::ErrorKind::ConnectionRefused)),
            DnsError::is_temporary,
        );
    }

    #[test]
    fn no_connections_and_messages_are_temporary() {
        case(NetError::NoConnections, DnsError::is_temporary);
        case(NetError::Message("something odd"), DnsError::is_temporary);
        case(NetError::Busy, DnsError::is_temporary);
    }

    #[test]
    fn rtype_names() {
        assert_eq!(rtype_name(RecordType::TXT), "TXT");
        assert_eq!(rtype_name(RecordType::AAAA), "AAAA");
    }

    #[tokio::test]
    async fn builds_with_explicit_servers() {
        let r = HickoryResolver::new(&["127.0.0.1:5353".parse().unwrap()], Duration::from_secs(1))
            .unwrap();
        assert_eq!(r.inner().options().ndots, 0);
        assert_eq!(r.inner().options().attempts, ATTEMPTS);
    }

    #[tokio::test]
    async fn invalid_name_is_not_sent() {
        let r = HickoryResolver::new(&["127.0.0.1:9".parse().unwrap()], Duration::from_millis(50))
            .unwrap();
        let err = r.mx("bad..name").await.unwrap_err();
        assert!(matches!(err, DnsError::InvalidName { .. }), "{err:?}");
    }
}
