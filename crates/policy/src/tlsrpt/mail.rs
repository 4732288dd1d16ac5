//! The report as mail (RFC 8460 §5.3): a `multipart/report;
//! report-type="tlsrpt"` message with a short text part and the gzip JSON
//! as `application/tlsrpt+gzip`, named
//! `submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz`,
//! with the `TLS-Report-Domain` and `TLS-Report-Submitter` headers and the
//! subject `Report Domain: <domain> Submitter: <submitter> Report-ID: <<id>>`,
//! DKIM-signed (RFC 8460 §5.3: report mail MUST be DKIM-signed) by the
//! domain of the `From` address with mail-auth's signer.
//!
//! mail-auth's own `TlsReport::write_rfc5322` leaves the unique-id out of
//! the file name and takes the date from the system clock, so the message
//! is built here with the same MIME builder (mail-builder) instead.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::{Day, ReportJson, TlsRptError};

/// The headers the DKIM signature covers.
const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "TLS-Report-Domain",
    "TLS-Report-Submitter",
    "Auto-Submitted",
];

/// The kind of DKIM key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerKeyType {
    /// RSA (`k=rsa`, `a=rsa-sha256`).
    Rsa,
    /// Ed25519 (`k=ed25519`, `a=ed25519-sha256`, RFC 8463).
    Ed25519,
}

/// Signs report mail with the `[tlsrpt]` DKIM key: `d=` the domain of the
/// `from` address, `s=` the configured selector.
pub struct ReportSigner {
    signer: DkimSigner<DkimKey, Done>,
    domain: String,
    selector: String,
    key_type: SignerKeyType,
    /// RSA: PKCS#1 RSAPublicKey DER; Ed25519: the 32 raw bytes.
    public_key: Vec<u8>,
}

impl std::fmt::Debug for ReportSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl ReportSigner {
    /// Loads the PEM key in `path`: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`)
    /// or PKCS#8 (`BEGIN PRIVATE KEY`), or Ed25519 as PKCS#8. Anything else
    /// (EC keys, encrypted keys, no key) is a clear
    /// [`TlsRptError::KeyUnsupported`].
    pub fn from_pem_file(
        path: &Path,
        domain: &str,
        selector: &str,
    ) -> Result<ReportSigner, TlsRptError> {
        Self::from_pem_file_with_headers(path, domain, selector, &SIGNED_HEADERS)
    }

    /// Like [`ReportSigner::from_pem_file`], signing `headers` (`h=`)
    /// instead of the report headers: submission signs ordinary mail with
    /// the same signer.
    pub fn from_pem_file_with_headers(
        path: &Path,
        domain: &str,
        selector: &str,
        headers: &[&str],
    ) -> Result<ReportSigner, TlsRptError> {
        let pem = std::fs::read(path).map_err(|e| TlsRptError::KeyRead {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_pem_with_headers(&pem, domain, selector, headers).map_err(|e| match e {
            TlsRptError::KeyUnsupported { reason, .. } => TlsRptError::KeyUnsupported {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Like [`ReportSigner::from_pem_file`], from the PEM text.
    pub fn from_pem(pem: &[u8], domain: &str, selector: &str) -> Result<ReportSigner, TlsRptError> {
        Self::from_pem_with_headers(pem, domain, selector, &SIGNED_HEADERS)
    }

    /// Like [`ReportSigner::from_pem`], signing `headers` (`h=`).
    pub fn from_pem_with_headers(
        pem: &[u8],
        domain: &str,
        selector: &str,
        headers: &[&str],
    ) -> Result<ReportSigner, TlsRptError> {
        let unsupported = |reason: String| TlsRptError::KeyUnsupported {
            path: PathBuf::new(),
            reason,
        };
        if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == ';') {
            return Err(TlsRptError::Setting {
                key: "from",
                reason: format!("{domain:?} is not a signing domain"),
            });
        }
        if selector.is_empty()
            || !selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(TlsRptError::Setting {
                key: "dkim_selector",
                reason: format!("{selector:?} is not a DKIM selector"),
            });
        }
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            unsupported(format!(
                "no RSA (PKCS#1/PKCS#8) or Ed25519 (PKCS#8) private key in PEM: {e}"
            ))
        })?;
        let (key, key_type, public_key): (DkimKey, _, _) = match &der {
            PrivateKeyDer::Pkcs1(_) => {
                let k = RsaKey::<Sha256>::from_key_der(der.clone_key())
                    .map_err(|e| unsupported(format!("RSA key rejected: {e}")))?;
                let public = k.public_key();
                (k.into(), SignerKeyType::Rsa, public)
            }
            PrivateKeyDer::Pkcs8(p8) => {
                match RsaKey::<Sha256>::from_key_der(der.clone_key()) {
                    Ok(k) => {
                        let public = k.public_key();
                        (k.into(), SignerKeyType::Rsa, public)
                    }
                    // Not RSA: Ed25519? (`maybe_unchecked` also takes the
                    // PKCS#8 v1 keys OpenSSL writes, without the public key.)
                    Err(rsa) => {
                        let k = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                            .map_err(|ed| {
                            unsupported(format!(
                                "PKCS#8 key is neither RSA ({rsa}) nor Ed25519 ({ed})"
                            ))
                        })?;
                        let public = k.public_key();
                        (k.into(), SignerKeyType::Ed25519, public)
                    }
                }
            }
            PrivateKeyDer::Sec1(_) => {
                return Err(unsupported(
                    "EC (SEC1) keys cannot sign DKIM; use RSA or Ed25519".to_owned(),
                ));
            }
            _ => return Err(unsupported("unknown private key format".to_owned())),
        };
        let signer = DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(headers.iter().copied());
        Ok(ReportSigner {
            signer,
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            key_type,
            public_key,
        })
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The key type.
    pub fn key_type(&self) -> SignerKeyType {
        self.key_type
    }

    /// Where the public key is published: `<selector>._domainkey.<domain>`.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record to publish at [`ReportSigner::dns_name`]
    /// (RFC 6376 §3.6.1), restricted to TLS reports with `s=tlsrpt`
    /// (RFC 8460 §5.3 and §8.3), e.g. `v=DKIM1; k=rsa; s=tlsrpt; p=MIIB…`.
    pub fn dns_record(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self.key_type {
            SignerKeyType::Rsa => format!(
                "v=DKIM1; k=rsa; s=tlsrpt; p={}",
                b64.encode(rsa_spki(&self.public_key))
            ),
            SignerKeyType::Ed25519 => format!(
                "v=DKIM1; k=ed25519; s=tlsrpt; p={}",
                b64.encode(&self.public_key)
            ),
        }
    }

    /// Signs `message` and returns the `DKIM-Signature` header alone
    /// (folded, CRLF-terminated), to go in front of it.
    pub fn signature_header(&self, message: &[u8]) -> Result<String, TlsRptError> {
        let signature = self
            .signer
            .sign(message)
            .map_err(|e| TlsRptError::Sign(e.to_string()))?;
        Ok(signature.to_header())
    }

    /// Signs `message` and returns it with the `DKIM-Signature` header in
    /// front.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TlsRptError> {
        let header = self.signature_header(message)?;
        let mut out = Vec::with_capacity(header.len() + message.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (the form DKIM
/// records conventionally carry).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    fn der_len(n: usize, out: &mut Vec<u8>) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
    }
    // SEQUENCE { OID rsaEncryption, NULL }
    const ALG: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bits);
    bits.push(0);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(ALG.len() + bits.len(), &mut out);
    out.extend_from_slice(&ALG);
    out.extend(bits);
    out
}

/// The attachment's file name (RFC 8460 §5.3):
/// `submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz`,
/// the unique-id being the letters and digits of the report-id's left-hand
/// side (at most 64, the last ones: they carry its random part).
pub fn report_filename(submitter: &str, domain: &str, day: Day, report_id: &str) -> String {
    let left = report_id.split('@').next().unwrap_or_default();
    let alnum: Vec<char> = left.chars().filter(char::is_ascii_alphanumeric).collect();
    let unique: String = alnum[alnum.len().saturating_sub(64)..].iter().collect();
    format!(
        "{submitter}!{domain}!{}!{}!{unique}.json.gz",
        day.start_timestamp(),
        day.end_timestamp()
    )
}

/// What a report message needs besides the report.
#[derive(Debug, Clone, Copy)]
pub struct MessageParts<'a> {
    /// The policy domain (`TLS-Report-Domain`).
    pub domain: &'a str,
    /// The submitter domain (`TLS-Report-Submitter`).
    pub submitter: &'a str,
    /// The `From` address.
    pub from: &'a str,
    /// The `To` address (one `mailto:` destination).
    pub to: &'a str,
    /// The `Date`.
    pub date: SystemTime,
    /// The day reported on.
    pub day: Day,
}

/// Builds and signs the RFC 8460 §5.3 message carrying `report` (its gzip
/// body `gz`) to one `mailto:` destination.
pub fn build_report_message(
    report: &ReportJson,
    gz: &[u8],
    parts: MessageParts<'_>,
    signer: &ReportSigner,
) -> Result<Vec<u8>, TlsRptError> {
    let id = report.report_id();
    let filename = report_filename(parts.submitter, parts.domain, parts.day, id);
    let date = parts
        .date
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let message_id = format!(
        "{}.{}@{}",
        id.split('@').next().unwrap_or_default(),
        mail_builder::mime::make_boundary("."),
        parts.submitter
    );
    let text = format!(
        "This is an aggregate TLS report (RFC 8460) from {submitter}.\r\n\r\n\
         Report Domain: {domain}\r\n\
         Submitter: {submitter}\r\n\
         Report-ID: <{id}>\r\n",
        submitter = parts.submitter,
        domain = parts.domain,
    );
    let message = MessageBuilder::new()
        .from(parts.from)
        .to(parts.to)
        .date(date)
        .message_id(message_id)
        .subject(format!(
            "Report Domain: {} Submitter: {} Report-ID: <{id}>",
            parts.domain, parts.submitter
        ))
        .header(
            "TLS-Report-Domain",
            HeaderType::Text(Text::new(parts.domain.to_owned())),
        )
        .header(
            "TLS-Report-Submitter",
            HeaderType::Text(Text::new(parts.submitter.to_owned())),
        )
        .header(
            "Auto-Submitted",
            HeaderType::Text(Text::new("auto-generated")),
        )
        .header("MIME-Version", HeaderType::Text(Text::new("1.0")))
        .body(MimePart::new(
            ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
            BodyPart::Multipart(vec![
                MimePart::new(ContentType::new("text/plain"), BodyPart::Text(text.into())),
                MimePart::new(
                    ContentType::new("application/tlsrpt+gzip"),
                    BodyPart::Binary(gz.to_vec().into()),
                )
                .attachment(filename),
            ]),
        ))
        .write_to_vec()
        .map_err(|e| TlsRptError::Build(format!("MIME: {e}")))?;
    signer.sign(&message)
}
