//! The one strict HTTPS client of Portcullis, used for MTA-STS policy
//! fetches (RFC 8461 §3.3), TLS report POSTs (RFC 8460 §5.2) and OAuth
//! token introspection (RFC 7662): reqwest over rustls (ring).
//!
//! Threat model: the host names come from mail domains, DNS records or the
//! configuration, and the network in between is hostile. So the client
//! verifies the server's certificate (PKIX under the configured trust
//! anchors, TLS 1.2 and 1.3, [`ClientTls::pkix_config`]), resolves names
//! only through our [`Resolver`] (so `[dns]` governs them, and a temporary
//! DNS failure stays temporary in the error chain), follows no redirect
//! (RFC 8461 §3.3; a report goes where the record says, not where a 3xx
//! says), takes no proxy from the environment, speaks HTTPS and HTTP/1.1
//! only, keeps no idle pooled connection (it would outlive a certificate
//! change), and puts every connection and whole request under a timeout.
//! What a response may contain (size caps, media types) is each caller's
//! business.

#![forbid(unsafe_code)]

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_dns::{DnsError, Resolver};
use portcullis_tls::ClientTls;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Re-exported so that callers name the same reqwest version.
pub use reqwest;

/// The default time allowed for connecting and for each whole request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// The TLS configuration (trust anchors) or the HTTP client could not
    /// be set up.
    #[error("{0}")]
    Setup(String),
}

/// Builds the strict client (STYLE 22). Start it with [`builder`].
pub struct HttpsClientBuilder {
    resolver: Arc<dyn Resolve>,
    tls: Option<ClientTls>,
    timeout: Duration,
    user_agent: &'static str,
}

impl std::fmt::Debug for HttpsClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClientBuilder")
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

/// A builder of the strict client whose host lookups go through
/// `resolver`, sending `user_agent` (e.g. `portcullis-mta-sts/0.1.0`).
/// Defaults: the Web PKI roots and [`DEFAULT_TIMEOUT`].
pub fn builder<R: Resolver>(resolver: R, user_agent: &'static str) -> HttpsClientBuilder {
    HttpsClientBuilder {
        resolver: Arc::new(ResolverAdapter {
            resolver: Arc::new(resolver),
        }),
        tls: None,
        timeout: DEFAULT_TIMEOUT,
        user_agent,
    }
}

impl HttpsClientBuilder {
    /// The trust anchors and clock for server certificates (default: the
    /// Web PKI roots, [`ClientTls::new`] with no extra roots). Build it
    /// with `ClientTls::new(&config.tls.extra_roots)`.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The time allowed for connecting and for each whole request:
    /// connect, handshake, request and body (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the client. Errors: the trust anchors could not be loaded or
    /// the client could not be built.
    pub fn build(self) -> Result<reqwest::Client, HttpsError> {
        let setup = |e: String| HttpsError::Setup(e);
        let tls = match self.tls {
            Some(tls) => tls,
            None => ClientTls::new(&[]).map_err(|e| setup(e.to_string()))?,
        };
        // The certificate is checked for the URL's host, which is also the
        // SNI sent.
        let config = tls.pkix_config().map_err(|e| setup(e.to_string()))?;
        reqwest::Client::builder()
            .tls_backend_preconfigured((*config).clone())
            .dns_resolver(self.resolver)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .http1_only()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .pool_max_idle_per_host(0)
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| setup(e.to_string()))
    }
}

/// reqwest's resolver hook over our [`Resolver`]: A and AAAA asked together;
/// an error is returned as our [`DnsError`] so that it can be recovered from
/// reqwest's error chain.
struct ResolverAdapter<R> {
    resolver: Arc<R>,
}

impl<R> std::fmt::Debug for ResolverAdapter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolverAdapter").finish_non_exhaustive()
    }
}

impl<R: Resolver> Resolve for ResolverAdapter<R> {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = Arc::clone(&self.resolver);
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let (v4, v6) = tokio::join!(resolver.ipv4(&name), resolver.ipv6(&name));
            let addrs = addresses(v4, v6)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Combines the A and AAAA answers: any address wins; with none, a temporary
/// failure of either lookup is reported as such (never as "no address").
fn addresses(
    v4: Result<Vec<std::net::Ipv4Addr>, DnsError>,
    v6: Result<Vec<std::net::Ipv6Addr>, DnsError>,
) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
    // Port 0: reqwest puts the URL's port in.
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut errors = Vec::new();
    match v4 {
        Ok(ips) => out.extend(ips.into_iter().map(|ip| SocketAddr::from((ip, 0)))),
        Err(e) => errors.push(e),
    }
    match v6 {
        Ok(ips) => out.extend(ips.into_iter().map(|ip| SocketAddr::from((ip, 0)))),
        Err(e) => errors.push(e),
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let error = match errors.iter().position(DnsError::is_temporary) {
        Some(i) => errors.swap_remove(i),
        None => errors.into_iter().next().unwrap_or(DnsError::NoRecords {
            name: String::new(),
            rtype: "A",
        }),
    };
    Err(Box::new(error))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn address_combination() {
        let temp = || DnsError::Temporary {
            name: "h".into(),
            reason: "t".into(),
        };
        let none = || DnsError::NoRecords {
            name: "h".into(),
            rtype: "A",
        };
        let got = addresses(Ok(vec![Ipv4Addr::LOCALHOST]), Err(temp())).unwrap();
        assert_eq!(got, vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))]);
        let got = addresses(Err(none()), Ok(vec![Ipv6Addr::LOCALHOST])).unwrap();
        assert_eq!(got, vec![SocketAddr::from((Ipv6Addr::LOCALHOST, 0))]);
        let err = addresses(Err(none()), Err(temp())).unwrap_err();
        assert!(err.downcast_ref::<DnsError>().unwrap().is_temporary());
        let err = addresses(Err(none()), Err(none())).unwrap_err();
        assert!(err.downcast_ref::<DnsError>().unwrap().is_not_found());
    }
}
