//! The STARTTLS probe of one MX host, as a remote sender makes it: the
//! host's addresses through our resolver, TCP to `[delivery] port` with
//! delivery's connector, then delivery's own client up to the TLS
//! handshake ([`starttls_certificate`]) under the injected trust anchors
//! and clock.

use portcullis_delivery::Connector;
use portcullis_delivery::client::{PeerCertificate, Timeouts, starttls_certificate};
use portcullis_dns::{DnsError, Resolver};
use portcullis_tls::ClientTls;
use portcullis_tls::rustls::pki_types::UnixTime;
use portcullis_tls::rustls::time_provider::TimeProvider;
use portcullis_types::Clock;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// At most this many addresses of one host are tried.
const MAX_ADDRESSES: usize = 4;

/// QUIT is waited for this long at most.
const QUIT_LIMIT: Duration = Duration::from_secs(2);

/// Why a host could not be probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Its addresses could not be looked up now.
    #[error("temporary DNS failure looking up its addresses: {0}")]
    DnsTemporary(DnsError),
    /// It has no address.
    #[error("it has no address: {0}")]
    NoAddress(DnsError),
    /// No address accepted a TCP connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The SMTP dialogue or the TLS handshake failed.
    #[error("{0}")]
    Session(String),
    /// The whole probe took longer than its limit.
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
}

/// Probes MX hosts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StartTlsProbe<R, C> {
    resolver: R,
    connector: C,
    tls: ClientTls,
    port: u16,
    helo: String,
    timeouts: Timeouts,
    limit: Duration,
}

impl<R: Resolver, C: Connector> StartTlsProbe<R, C> {
    /// A probe resolving through `resolver`, connecting with `connector`
    /// to `port`, saying EHLO `helo`, judging certificates under `tls`
    /// (its trust anchors and clock); each probe ends after `limit`, each
    /// SMTP stage sooner.
    pub fn new(
        resolver: R,
        connector: C,
        tls: ClientTls,
        port: u16,
        helo: &str,
        limit: Duration,
    ) -> StartTlsProbe<R, C> {
        StartTlsProbe {
            resolver,
            connector,
            tls,
            port,
            helo: helo.to_owned(),
            // Each stage gets a share of the limit, so a slow stage is
            // reported as that stage's timeout; QUIT's reply changes nothing.
            timeouts: Timeouts {
                quit: QUIT_LIMIT.min(limit),
                ..Timeouts::uniform(limit / 3)
            },
            limit,
        }
    }

    /// Greets `host`, negotiates STARTTLS and reports what it showed.
    pub async fn probe(&self, host: &str) -> Result<PeerCertificate, ProbeError> {
        match tokio::time::timeout(self.limit, self.run(host)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(self.limit)),
        }
    }

    async fn run(&self, host: &str) -> Result<PeerCertificate, ProbeError> {
        let addrs = self.addresses(host).await?;
        let mut failures = Vec::new();
        for ip in addrs {
            let addr = SocketAddr::new(ip, self.port);
            match self.connector.connect(addr).await {
                Ok(stream) => {
                    return starttls_certificate(
                        stream,
                        host,
                        &self.helo,
                        &self.tls,
                        &self.timeouts,
                    )
                    .await
                    .map_err(|e| ProbeError::Session(format!("{addr}: {e}")));
                }
                Err(e) => failures.push(format!("{addr}: {e}")),
            }
        }
        Err(ProbeError::Connect(failures.join("; ")))
    }

    /// IPv4 then IPv6 addresses, at most [`MAX_ADDRESSES`]; a temporary
    /// failure of either, with no address from the other, is temporary.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, ProbeError> {
        let (v4, v6) = tokio::join!(self.resolver.ipv4(host), self.resolver.ipv6(host));
        let mut addrs: Vec<IpAddr> = Vec::new();
        addrs.extend(v4.iter().flatten().map(|a| IpAddr::V4(*a)));
        addrs.extend(v6.iter().flatten().map(|a| IpAddr::V6(*a)));
        addrs.truncate(MAX_ADDRESSES);
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        let errors = [v4.err(), v6.err()];
        if let Some(e) = errors.iter().flatten().find(|e| e.is_temporary()) {
            return Err(ProbeError::DnsTemporary(e.clone()));
        }
        match errors.into_iter().flatten().next() {
            Some(e) => Err(ProbeError::NoAddress(e)),
            None => Err(ProbeError::NoAddress(DnsError::NoRecords {
                name: host.to_owned(),
                rtype: "A",
            })),
        }
    }
}

/// The injected [`Clock`] as rustls's time source, so certificate validity
/// is judged at the same time as expiry (STYLE 9).
#[derive(Clone)]
pub struct ClockTime(pub std::sync::Arc<dyn Clock>);

impl std::fmt::Debug for ClockTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockTime")
    }
}

impl TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            self.0.unix_secs(),
        )))
    }
}
