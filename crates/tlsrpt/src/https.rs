//! Report delivery over HTTPS (RFC 8460 §5.2): a POST of the gzip report
//! with `Content-Type: application/tlsrpt+gzip` to the `rua` URL. The
//! client is the strict one of `portcullis-https`, as for MTA-STS policy
//! fetches: host
//! names resolved through our [`Resolver`] (so `[dns]` applies), the
//! PKIX-verifying rustls configuration of [`ClientTls`] (the configured
//! trust anchors), no redirects, no proxy, HTTPS only, and the whole
//! request under a timeout. A 2xx answer means delivered; anything else is
//! retried later by the sender.

use std::time::Duration;

use portcullis_dns::Resolver;
use portcullis_https::{HttpsClientBuilder, reqwest};
use portcullis_tls::ClientTls;
use portcullis_types::error_chain;

use crate::TlsRptError;

/// The default time allowed for one POST.
pub const DEFAULT_POST_TIMEOUT: Duration = Duration::from_secs(60);

/// The media type of a gzip report (RFC 8460 §6.4).
pub const TLSRPT_GZIP: &str = "application/tlsrpt+gzip";

/// Why a POST did not deliver the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// The server answered with a status other than 2xx (a 3xx is not
    /// followed).
    #[error("HTTP status {0}")]
    Status(u16),
    /// The request did not complete: DNS, connect, TLS, timeout.
    #[error("{0}")]
    Transport(String),
}

/// Posts reports over HTTPS. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpsPoster {
    client: reqwest::Client,
}

/// Builds an [`HttpsPoster`].
pub struct HttpsPosterBuilder {
    client: HttpsClientBuilder,
}

impl std::fmt::Debug for HttpsPosterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsPosterBuilder")
            .field("client", &self.client)
            .finish()
    }
}

impl HttpsPoster {
    /// A builder whose host lookups go through `resolver`.
    pub fn builder<R: Resolver>(resolver: R) -> HttpsPosterBuilder {
        HttpsPosterBuilder {
            client: portcullis_https::builder(
                resolver,
                concat!("portcullis-tlsrpt/", env!("CARGO_PKG_VERSION")),
            )
            .timeout(DEFAULT_POST_TIMEOUT),
        }
    }

    /// POSTs the gzip report `body` to `url`; `Ok(status)` for a 2xx.
    pub async fn post(&self, url: &str, body: Vec<u8>) -> Result<u16, PostError> {
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, TLSRPT_GZIP)
            .body(body)
            .send()
            .await
            .map_err(|e| PostError::Transport(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(PostError::Status(status.as_u16()))
        }
    }
}

impl HttpsPosterBuilder {
    /// The trust anchors (default: the Web PKI roots). Build it with
    /// `ClientTls::new(&config.tls.extra_roots)`, as for policy fetches.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.client = self.client.tls(tls);
        self
    }

    /// The time allowed for one POST (default [`DEFAULT_POST_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// Builds the poster (a report goes where the record says, not where a
    /// 3xx says: the strict client follows no redirect).
    pub fn build(self) -> Result<HttpsPoster, TlsRptError> {
        let client = self
            .client
            .build()
            .map_err(|e| TlsRptError::HttpSetup(e.to_string()))?;
        Ok(HttpsPoster { client })
    }
}
