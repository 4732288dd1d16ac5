//! `[verify]`: SPF, DKIM, DMARC and ARC checks of mail arriving on `smtp`
//! listeners, what their verdict does, and the bounds on their work.

use crate::check::{Checker, parse_network};
use ipnet::IpNet;
use portcullis_types::Domain;
use serde::Deserialize;
use std::time::Duration;

/// `[verify]`: SPF, DKIM, DMARC and ARC checks of mail arriving on `smtp`
/// listeners, and what their verdict does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    /// `enabled`: verify every message on `smtp` listeners (default true).
    pub enabled: Option<bool>,
    /// `skip_trusted`: no verification for clients in
    /// `relay.trusted_networks` (default true).
    pub skip_trusted: Option<bool>,
    /// `dmarc_reject`: refuse a DMARC failure under `p=reject` with
    /// 550 5.7.1 (default true); false handles it like `p=quarantine`.
    pub dmarc_reject: Option<bool>,
    /// `dmarc_quarantine`: a DMARC failure under `p=quarantine` is `tag`ged
    /// with a header (default) or `reject`ed.
    pub dmarc_quarantine: Option<String>,
    /// `spf_fail`: an SPF `fail` is only `record`ed (default; DMARC decides)
    /// or `reject`ed at MAIL FROM with 550 5.7.23.
    pub spf_fail: Option<String>,
    /// `exceptions`: domains (and their subdomains) or networks whose mail
    /// verification never refuses or tags.
    #[serde(default)]
    pub exceptions: Vec<String>,
    /// `timeout`: the longest all checks of one message may take (default
    /// `"30s"`); then the message gets 451 4.7.0.
    pub timeout: Option<String>,
    /// `dkim_max_signatures`: DKIM-Signature fields verified per message
    /// (default 5); the others are recorded as `dkim=policy`.
    pub dkim_max_signatures: Option<u32>,
    /// `dkim_max_signed_headers`: `h=` entries a DKIM or ARC signature may
    /// list and still be verified (default 64).
    pub dkim_max_signed_headers: Option<u32>,
    /// `max_header_fields`: header fields a message may have and still get
    /// its DKIM and ARC signatures verified (default 1000).
    pub max_header_fields: Option<u32>,
}

/// What a DMARC failure under `p=quarantine` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcQuarantine {
    /// Accept and add `X-Portcullis-Quarantine: dmarc` for the mail store.
    Tag,
    /// Refuse with 550 5.7.1.
    Reject,
}

/// What an SPF `fail` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfFail {
    /// Only record it (Authentication-Results, Received-SPF); DMARC decides.
    Record,
    /// Refuse the sender at MAIL FROM with 550 5.7.23 (RFC 7372).
    Reject,
}

/// One `[verify] exceptions` entry: whose mail verification never refuses
/// or tags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum VerifyException {
    /// A domain and its subdomains; it applies only when the client is
    /// authenticated as that domain (see the `auth` crate).
    Domain(Domain),
    /// Clients in this network.
    Network(IpNet),
}

/// Sender verification (`[verify]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verify {
    /// Verify mail on `smtp` listeners.
    pub enabled: bool,
    /// No verification for clients in trusted networks.
    pub skip_trusted: bool,
    /// Refuse DMARC failures under `p=reject`.
    pub dmarc_reject: bool,
    /// What a DMARC failure under `p=quarantine` does.
    pub dmarc_quarantine: DmarcQuarantine,
    /// What an SPF `fail` does.
    pub spf_fail: SpfFail,
    /// Senders and clients whose mail is never refused or tagged.
    pub exceptions: Vec<VerifyException>,
    /// Bound on the checks of one message.
    pub timeout: Duration,
    /// DKIM signatures verified per message; the others get `dkim=policy`.
    pub dkim_max_signatures: u32,
    /// Most `h=` entries of a DKIM or ARC signature that is verified.
    pub dkim_max_signed_headers: u32,
    /// Most header fields of a message whose signatures are verified.
    pub max_header_fields: u32,
}

impl Default for Verify {
    /// The defaults of the reference configuration.
    fn default() -> Verify {
        Verify {
            enabled: true,
            skip_trusted: true,
            dmarc_reject: true,
            dmarc_quarantine: DmarcQuarantine::Tag,
            spf_fail: SpfFail::Record,
            exceptions: Vec::new(),
            timeout: Duration::from_secs(30),
            dkim_max_signatures: 5,
            dkim_max_signed_headers: 64,
            max_header_fields: 1000,
        }
    }
}

/// `[verify]`: every value checked, defaults from [`Verify::default`].
pub(crate) fn build(v: &VerifyFile, c: &mut Checker) -> Verify {
    let d = Verify::default();
    let dmarc_quarantine = c.one_of(
        "verify.dmarc_quarantine",
        v.dmarc_quarantine.as_deref(),
        [
            ("tag", DmarcQuarantine::Tag),
            ("reject", DmarcQuarantine::Reject),
        ],
    );
    let spf_fail = c.one_of(
        "verify.spf_fail",
        v.spf_fail.as_deref(),
        [("record", SpfFail::Record), ("reject", SpfFail::Reject)],
    );
    let exceptions = exceptions(&v.exceptions, c);
    let timeout = c.duration("verify.timeout", &v.timeout, d.timeout);
    if timeout.is_zero() {
        c.fail("verify.timeout", "must be greater than zero");
    }
    Verify {
        enabled: v.enabled.unwrap_or(d.enabled),
        skip_trusted: v.skip_trusted.unwrap_or(d.skip_trusted),
        dmarc_reject: v.dmarc_reject.unwrap_or(d.dmarc_reject),
        dmarc_quarantine,
        spf_fail,
        exceptions,
        timeout,
        dkim_max_signatures: c.positive(
            "verify.dkim_max_signatures",
            v.dkim_max_signatures,
            d.dkim_max_signatures,
        ),
        dkim_max_signed_headers: c.positive(
            "verify.dkim_max_signed_headers",
            v.dkim_max_signed_headers,
            d.dkim_max_signed_headers,
        ),
        max_header_fields: c.positive(
            "verify.max_header_fields",
            v.max_header_fields,
            d.max_header_fields,
        ),
    }
}

/// `verify.exceptions`: networks (never /0: that would switch verification
/// off for everyone) and domains (a leading `.` is allowed and ignored).
fn exceptions(written: &[String], c: &mut Checker) -> Vec<VerifyException> {
    written
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            if let Some(net) = parse_network(e) {
                if net.prefix_len() == 0 {
                    c.fail(
                        format!("verify.exceptions[{i}]"),
                        "a /0 network would switch verification off for everyone",
                    );
                    return None;
                }
                return Some(VerifyException::Network(net));
            }
            match Domain::parse(e.strip_prefix('.').unwrap_or(e)) {
                Ok(d) => Some(VerifyException::Domain(d)),
                Err(err) => {
                    c.fail(
                        format!("verify.exceptions[{i}]"),
                        format!("{e:?} is neither a domain nor a network: {err}"),
                    );
                    None
                }
            }
        })
        .collect()
}
