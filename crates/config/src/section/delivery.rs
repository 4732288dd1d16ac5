//! `[delivery]`: outbound connections.

use crate::check::Checker;
use portcullis_types::Domain;
use serde::Deserialize;
use std::time::Duration;

/// `[delivery]`: outbound connections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFile {
    /// `port`: the port MX hosts are contacted on (default 25).
    pub port: Option<u16>,
    /// `max_concurrent`: messages in delivery at once (default 50).
    pub max_concurrent: Option<u32>,
    /// `per_domain`: concurrent sessions to one destination domain (default 10).
    pub per_domain: Option<u32>,
    /// `connect_timeout`: TCP connect to a mail host (default `"30s"`).
    pub connect_timeout: Option<String>,
    /// `tls_required_no`: who may waive TLS with a `TLS-Required: No`
    /// header (RFC 8689 §5): `trusted` (default), `anyone` or `never`.
    pub tls_required_no: Option<String>,
    /// `dane_only`: recipient domains whose MX hosts are contacted only
    /// with usable DANE (RFC 7672); the others wait.
    #[serde(default)]
    pub dane_only: Vec<String>,
}

/// Whose `TLS-Required: No` header field (RFC 8689 §5) is honoured: such
/// a message is delivered opportunistically even where MTA-STS or DANE
/// would refuse. Decided from what the session recorded about the client
/// (authentication, trusted network), never from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsRequiredNo {
    /// Authenticated users and clients in `trusted_networks` (default).
    #[default]
    Trusted,
    /// Every sender, including unauthenticated mail on port 25.
    Anyone,
    /// Nobody: the header field is always ignored.
    Never,
}

impl TlsRequiredNo {
    /// True when a client that is (or is not) `authenticated` or in a
    /// trusted network (`trusted`) may waive TLS.
    pub fn allows(self, authenticated: bool, trusted: bool) -> bool {
        match self {
            TlsRequiredNo::Trusted => authenticated || trusted,
            TlsRequiredNo::Anyone => true,
            TlsRequiredNo::Never => false,
        }
    }
}

/// Outbound delivery settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// The port MX hosts are contacted on.
    pub port: u16,
    /// Messages in delivery at once.
    pub max_concurrent: u32,
    /// Concurrent sessions per destination domain.
    pub per_domain: u32,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Who may waive TLS with `TLS-Required: No`.
    pub tls_required_no: TlsRequiredNo,
    /// Recipient domains delivered only to MX hosts with usable DANE
    /// (like Postfix's `dane-only`): a host without it (insecure zone, no
    /// TLSA records, none usable) is never contacted, and the mail waits.
    pub dane_only: Vec<Domain>,
}

impl Default for Delivery {
    /// Port 25, 50 messages at once, 10 sessions a domain, 30 s to connect.
    fn default() -> Delivery {
        Delivery {
            port: 25,
            max_concurrent: 50,
            per_domain: 10,
            connect_timeout: Duration::from_secs(30),
            tls_required_no: TlsRequiredNo::Trusted,
            dane_only: Vec::new(),
        }
    }
}

/// `tls_required_no`: one of the three names, else the default (recorded).
fn tls_required_no(value: Option<&str>, c: &mut Checker) -> TlsRequiredNo {
    match value {
        None | Some("trusted") => TlsRequiredNo::Trusted,
        Some("anyone") => TlsRequiredNo::Anyone,
        Some("never") => TlsRequiredNo::Never,
        Some(other) => {
            c.fail(
                "delivery.tls_required_no",
                format!("{other:?} is not \"trusted\", \"anyone\" or \"never\""),
            );
            TlsRequiredNo::Trusted
        }
    }
}

/// `[delivery]`: the counts must not be zero.
pub(crate) fn build(f: &DeliveryFile, c: &mut Checker) -> Delivery {
    let d = Delivery::default();
    Delivery {
        port: f.port.unwrap_or(d.port),
        max_concurrent: c.positive(
            "delivery.max_concurrent",
            f.max_concurrent,
            d.max_concurrent,
        ),
        per_domain: c.positive("delivery.per_domain", f.per_domain, d.per_domain),
        connect_timeout: c.duration(
            "delivery.connect_timeout",
            &f.connect_timeout,
            d.connect_timeout,
        ),
        tls_required_no: tls_required_no(f.tls_required_no.as_deref(), c),
        dane_only: f
            .dane_only
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                Domain::parse(d)
                    .map_err(|e| c.fail(format!("delivery.dane_only[{i}]"), e.to_string()))
                    .ok()
            })
            .collect(),
    }
}
