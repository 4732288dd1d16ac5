//! DKIM signing (RFC 6376, RFC 8463) with mail-auth's signer: the one
//! signer of the server, for submitted mail, TLS reports and, later, DMARC
//! reports. Each user chooses the headers its signatures cover.
//!
//! Threat model: the key file is the operator's; a key mail-auth cannot
//! use (EC, encrypted, garbage) is refused when it is loaded, with the
//! reason, so a bad key stops the start instead of leaving mail unsigned.
//! The message signed is ours to sign (we made it, or an authenticated
//! user submitted it); the signature is computed over it as it will be
//! sent, never rewritten afterwards.

use std::path::{Path, PathBuf};

use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner as MailAuthSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// Why a key cannot sign, or a signature could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The key file could not be read.
    #[error("cannot read the DKIM key {}: {reason}", path.display())]
    KeyRead {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The key file holds no usable key: mail-auth signs with RSA (PKCS#1
    /// or PKCS#8 PEM) or Ed25519 (PKCS#8 PEM) keys only.
    #[error("unusable DKIM key {}: {reason}", path.display())]
    KeyUnsupported {
        /// The file (empty when the key came from memory).
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The signing domain or the selector is not usable.
    #[error("DKIM setting {key}: {reason}")]
    Setting {
        /// `from` (the signing domain) or `dkim_selector`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Signing failed.
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// The kind of DKIM key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerKeyType {
    /// RSA (`k=rsa`, `a=rsa-sha256`).
    Rsa,
    /// Ed25519 (`k=ed25519`, `a=ed25519-sha256`, RFC 8463).
    Ed25519,
}

/// Signs mail with one DKIM key (RFC 6376; RFC 8463 for Ed25519),
/// relaxed/relaxed, as `d=` a domain with `s=` a selector, over a fixed
/// list of headers: submitted mail (`[[submission.dkim]]`), TLS reports
/// (RFC 8460 §5.3 requires them signed) and, later, DMARC reports.
pub struct DkimSigner {
    signer: MailAuthSigner<DkimKey, Done>,
    domain: String,
    selector: String,
    key_type: SignerKeyType,
    /// RSA: PKCS#1 RSAPublicKey DER; Ed25519: the 32 raw bytes.
    public_key: Vec<u8>,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// Loads the PEM key in `path`: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`)
    /// or PKCS#8 (`BEGIN PRIVATE KEY`), or Ed25519 as PKCS#8, to sign as
    /// `domain` (`d=`) with `selector` (`s=`) over `headers` (`h=`; only
    /// those present in a message are signed). Anything else (EC keys,
    /// encrypted keys, no key) is a clear [`SignerError::KeyUnsupported`].
    pub fn from_pem_file(
        path: &Path,
        domain: &str,
        selector: &str,
        headers: &[&str],
    ) -> Result<DkimSigner, SignerError> {
        let pem = std::fs::read(path).map_err(|e| SignerError::KeyRead {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&pem, domain, selector, headers).map_err(|e| match e {
            SignerError::KeyUnsupported { reason, .. } => SignerError::KeyUnsupported {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Like [`DkimSigner::from_pem_file`], from the PEM text.
    pub fn from_pem(
        pem: &[u8],
        domain: &str,
        selector: &str,
        headers: &[&str],
    ) -> Result<DkimSigner, SignerError> {
        let unsupported = |reason: String| SignerError::KeyUnsupported {
            path: PathBuf::new(),
            reason,
        };
        if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == ';') {
            return Err(SignerError::Setting {
                key: "from",
                reason: format!("{domain:?} is not a signing domain"),
            });
        }
        if selector.is_empty()
            || !selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(SignerError::Setting {
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
        let signer = MailAuthSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(headers.iter().copied());
        Ok(DkimSigner {
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

    /// The TXT record to publish at [`DkimSigner::dns_name`]
    /// (RFC 6376 §3.6.1), restricted to `service` (`s=`, e.g. `tlsrpt` for
    /// TLS reports, RFC 8460 §5.3 and §8.3) when one is given, e.g.
    /// `v=DKIM1; k=rsa; s=tlsrpt; p=MIIB…`.
    pub fn dns_record(&self, service: Option<&str>) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let service = service.map(|s| format!(" s={s};")).unwrap_or_default();
        match self.key_type {
            SignerKeyType::Rsa => format!(
                "v=DKIM1; k=rsa;{service} p={}",
                b64.encode(rsa_spki(&self.public_key))
            ),
            SignerKeyType::Ed25519 => format!(
                "v=DKIM1; k=ed25519;{service} p={}",
                b64.encode(&self.public_key)
            ),
        }
    }

    /// Signs `message` and returns the `DKIM-Signature` header alone
    /// (folded, CRLF-terminated), to go in front of it.
    pub fn signature_header(&self, message: &[u8]) -> Result<String, SignerError> {
        let signature = self
            .signer
            .sign(message)
            .map_err(|e| SignerError::Sign(e.to_string()))?;
        Ok(signature.to_header())
    }

    /// Signs `message` and returns it with the `DKIM-Signature` header in
    /// front.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ed25519 key as OpenSSL writes it (PKCS#8 v1, no public key).
    const ED25519: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIPduBFJ69OEeWd+/xMmq0/T5phXuEgLE//1Bjm6QGn5G\n\
-----END PRIVATE KEY-----\n";

    #[test]
    fn the_caller_chooses_the_headers_and_the_service() {
        let signer =
            DkimSigner::from_pem(ED25519.as_bytes(), "example.test", "s1", &["From"]).expect("key");
        assert_eq!(signer.key_type(), SignerKeyType::Ed25519);
        assert_eq!(signer.dns_name(), "s1._domainkey.example.test");
        let general = signer.dns_record(None);
        assert!(general.starts_with("v=DKIM1; k=ed25519; p="), "{general}");
        let reports = signer.dns_record(Some("tlsrpt"));
        assert!(
            reports.starts_with("v=DKIM1; k=ed25519; s=tlsrpt; p="),
            "{reports}"
        );
        let header = signer
            .signature_header(b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n")
            .expect("sign");
        assert!(header.starts_with("DKIM-Signature:"), "{header}");
        assert!(
            header.contains("h=From;") || header.contains("h=From:"),
            "{header}"
        );
        assert!(!header.contains("Subject"), "{header}");
    }

    #[test]
    fn bad_settings_and_keys_are_refused_with_the_reason() {
        let key = ED25519.as_bytes();
        assert!(matches!(
            DkimSigner::from_pem(key, "example.test", "bad selector", &["From"]),
            Err(SignerError::Setting {
                key: "dkim_selector",
                ..
            })
        ));
        assert!(matches!(
            DkimSigner::from_pem(key, "", "s1", &["From"]),
            Err(SignerError::Setting { key: "from", .. })
        ));
        assert!(matches!(
            DkimSigner::from_pem(b"not a key", "example.test", "s1", &["From"]),
            Err(SignerError::KeyUnsupported { .. })
        ));
        let missing = std::path::Path::new("/nonexistent/portcullis/dkim.key");
        assert!(matches!(
            DkimSigner::from_pem_file(missing, "example.test", "s1", &["From"]),
            Err(SignerError::KeyRead { .. })
        ));
    }
}
