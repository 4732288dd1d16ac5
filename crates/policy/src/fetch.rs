//! The HTTPS fetch of a policy (RFC 8461 §3.3).
//!
//! `https://mta-sts.<domain>[:port]/.well-known/mta-sts.txt` with the
//! strict client of `portcullis-https`: the host name is resolved through our own
//! [`Resolver`] (so `[dns]` applies), the certificate is checked for
//! `mta-sts.<domain>` under the configured trust anchors, redirects are not
//! followed, the whole fetch runs under a timeout, and the body is read up
//! to 64 KiB and no further.

use std::error::Error as StdError;
use std::time::Duration;

use portcullis_dns::{DnsError, Resolver};
use portcullis_https::HttpsClientBuilder;
use portcullis_tls::{ClientTls, classify};
use portcullis_types::{Domain, error_chain};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};

use crate::{Policy, StsError};

/// RFC 8461 §3.3 suggests a limit on the policy size; 64 KiB is what the
/// common implementations use.
pub const MAX_POLICY_SIZE: usize = 64 * 1024;

/// The default time allowed for a whole fetch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default HTTPS port of policy hosts.
pub const DEFAULT_PORT: u16 = 443;

/// The policy host of `domain`: `mta-sts.<domain>` (§3.3).
pub fn policy_host(domain: &Domain) -> String {
    format!("mta-sts.{}", domain.as_str())
}

/// Fetches and parses policies over HTTPS. Cheap to clone (one shared
/// connection pool).
#[derive(Debug, Clone)]
pub struct PolicyFetcher {
    client: reqwest::Client,
    port: u16,
    timeout: Duration,
}

/// Builds a [`PolicyFetcher`] (STYLE 22: more than three knobs).
pub struct PolicyFetcherBuilder {
    client: HttpsClientBuilder,
    port: u16,
    timeout: Duration,
}

impl PolicyFetcher {
    /// Starts a builder whose policy-host lookups go through `resolver`.
    pub fn builder<R: Resolver>(resolver: R) -> PolicyFetcherBuilder {
        PolicyFetcherBuilder {
            client: portcullis_https::builder(
                resolver,
                concat!("portcullis-mta-sts/", env!("CARGO_PKG_VERSION")),
            )
            .timeout(DEFAULT_TIMEOUT),
            port: DEFAULT_PORT,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The port policy hosts are contacted on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The time a whole fetch is allowed: how long a node waits for
    /// another node's fetch of the same domain in cluster mode.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The policy URL for `domain` (§3.3), with the port when it is not 443.
    pub fn url(&self, domain: &Domain) -> String {
        let host = policy_host(domain);
        if self.port == DEFAULT_PORT {
            format!("https://{host}/.well-known/mta-sts.txt")
        } else {
            format!("https://{host}:{}/.well-known/mta-sts.txt", self.port)
        }
    }

    /// Fetches and parses `domain`'s policy. Only an HTTP 200 whose media
    /// type is `text/plain` and whose body is at most [`MAX_POLICY_SIZE`]
    /// bytes of valid policy counts; everything else is a typed error.
    pub async fn fetch(&self, domain: &Domain) -> Result<Policy, StsError> {
        let host = policy_host(domain);
        let url = self.url(domain);
        tracing::debug!(%domain, %url, "fetching MTA-STS policy");
        let mut response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| classify_error(&host, &e))?;
        let status = response.status();
        // RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed".
        if status.is_redirection() {
            return Err(StsError::Redirect {
                host,
                status: status.as_u16(),
                location: header(&response, LOCATION),
            });
        }
        // §3.3: only a 200 is a policy.
        if status != reqwest::StatusCode::OK {
            return Err(StsError::Status {
                host,
                status: status.as_u16(),
            });
        }
        // §3.2: "the policy ... served with the media type text/plain"
        // (parameters such as charset are allowed).
        let content_type = header(&response, CONTENT_TYPE);
        if !content_type.as_deref().is_some_and(is_text_plain) {
            return Err(StsError::ContentType { host, content_type });
        }
        let too_large = || StsError::TooLarge {
            host: host.clone(),
            limit: MAX_POLICY_SIZE,
        };
        let declared = header(&response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_POLICY_SIZE as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify_error(&host, &e))?
        {
            if body.len() + chunk.len() > MAX_POLICY_SIZE {
                // Stop reading: the rest is never buffered.
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| StsError::Invalid {
            reason: "the policy is not UTF-8 text".to_owned(),
        })?;
        Policy::parse(&text)
    }
}

impl std::fmt::Debug for PolicyFetcherBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFetcherBuilder")
            .field("port", &self.port)
            .field("client", &self.client)
            .finish()
    }
}

impl PolicyFetcherBuilder {
    /// The trust anchors and clock for the policy host's certificate
    /// (default: the Web PKI roots, [`ClientTls::new`] with no extra roots).
    /// Build it with `ClientTls::new(&config.tls.extra_roots)`.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.client = self.client.tls(tls);
        self
    }

    /// The HTTPS port (`[mta_sts] https_port`, default 443).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The time allowed for a whole fetch: connect, handshake, request and
    /// body (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self.timeout = timeout;
        self
    }

    /// Builds the fetcher: the strict client of `portcullis-https`
    /// (§3.3: redirects are not followed; the certificate is checked for
    /// `mta-sts.<domain>`, the URL's host, which is also the SNI sent).
    pub fn build(self) -> Result<PolicyFetcher, StsError> {
        let client = self.client.build().map_err(|e| StsError::Setup {
            reason: e.to_string(),
        })?;
        Ok(PolicyFetcher {
            client,
            port: self.port,
            timeout: self.timeout,
        })
    }
}

/// The value of header `name`, if present and printable.
fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `text/plain`, case-insensitive, parameters allowed.
fn is_text_plain(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/plain"))
}

/// Maps a reqwest error onto [`StsError`] by walking its source chain for
/// our DNS error, a rustls error or an I/O error.
fn classify_error(host: &str, error: &reqwest::Error) -> StsError {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    let mut found_tls: Option<&rustls::Error> = None;
    let mut found_dns: Option<&DnsError> = None;
    while let Some(e) = current {
        if let Some(dns) = e.downcast_ref::<DnsError>() {
            found_dns = Some(dns);
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            found_tls = Some(tls);
        }
        // io::Error::source() skips the wrapped error itself, and I/O errors
        // are sometimes wrapped in I/O errors: look inside each of them.
        let mut io = e.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                found_tls = Some(tls);
            }
            if let Some(dns) = inner.downcast_ref::<DnsError>() {
                found_dns = Some(dns);
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        current = e.source();
    }
    if let Some(dns) = found_dns {
        return StsError::Dns {
            name: host.to_owned(),
            source: dns.clone(),
        };
    }
    if let Some(tls) = found_tls {
        if let rustls::Error::InvalidCertificate(_) = tls {
            return StsError::Tls {
                host: host.to_owned(),
                certificate: classify(tls),
                reason: tls.to_string(),
            };
        }
        return StsError::Connect {
            host: host.to_owned(),
            reason: format!("TLS handshake failed: {tls}"),
        };
    }
    if error.is_timeout() {
        return StsError::Timeout {
            host: host.to_owned(),
        };
    }
    let reason = error_chain(error);
    if error.is_connect() {
        return StsError::Connect {
            host: host.to_owned(),
            reason,
        };
    }
    StsError::Http {
        host: host.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use portcullis_dns::MemoryResolver;

    use super::*;

    #[test]
    fn media_types() {
        assert!(is_text_plain("text/plain"));
        assert!(is_text_plain("TEXT/Plain"));
        assert!(is_text_plain("text/plain; charset=utf-8"));
        assert!(is_text_plain("text/plain ;charset=us-ascii"));
        assert!(!is_text_plain("text/html"));
        assert!(!is_text_plain("text/plainx"));
        assert!(!is_text_plain("application/octet-stream"));
        assert!(!is_text_plain(""));
    }

    #[test]
    fn url_has_the_port_only_when_not_443() {
        let d = Domain::parse("Example.Test").unwrap();
        let f = PolicyFetcher::builder(MemoryResolver::new())
            .build()
            .unwrap();
        assert_eq!(
            f.url(&d),
            "https://mta-sts.example.test/.well-known/mta-sts.txt"
        );
        let f = PolicyFetcher::builder(MemoryResolver::new())
            .port(8443)
            .build()
            .unwrap();
        assert_eq!(
            f.url(&d),
            "https://mta-sts.example.test:8443/.well-known/mta-sts.txt"
        );
    }

    #[tokio::test]
    async fn unresolvable_policy_host_is_a_dns_error() {
        let d = Domain::parse("example.test").unwrap();
        let f = PolicyFetcher::builder(MemoryResolver::new())
            .build()
            .unwrap();
        let err = f.fetch(&d).await.unwrap_err();
        assert!(
            matches!(&err, StsError::Dns { source, .. } if source.is_not_found()),
            "{err:?}"
        );
        let r = MemoryResolver::new().temp_fail("mta-sts.example.test");
        let f = PolicyFetcher::builder(r).build().unwrap();
        let err = f.fetch(&d).await.unwrap_err();
        assert!(
            matches!(&err, StsError::Dns { source, .. } if source.is_temporary()),
            "{err:?}"
        );
        assert!(err.is_temporary());
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        // Port 9 (discard) on loopback is closed in the test environment.
        let d = Domain::parse("example.test").unwrap();
        let r = MemoryResolver::new().a("mta-sts.example.test", Ipv4Addr::LOCALHOST);
        let f = PolicyFetcher::builder(r).port(9).build().unwrap();
        let err = f.fetch(&d).await.unwrap_err();
        assert!(matches!(err, StsError::Connect { .. }), "{err:?}");
    }
}
