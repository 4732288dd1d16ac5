//! DKIM signing of mail we originate (`[[submission.dkim]]`): mail
//! accepted from an authenticated user or relayed for a client in
//! `trusted_networks`, and the DSNs the queue makes, is signed with the key of the domain of its
//! `From` header (the MAIL FROM domain when the message has no `From`),
//! relaxed/relaxed, so that DMARC passes at the receivers. The signer is
//! the server's one DKIM signer ([`DkimSigner`], also used for TLS
//! reports), with the headers of ordinary mail.

use std::collections::HashMap;

use portcullis_auth::{DkimSigner, SignerError};
use portcullis_config::DkimKey;
use portcullis_types::ReversePath;

/// The headers a submission signature covers (`h=`). mail-auth signs only
/// those present in the message.
pub const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
];

/// The submission signers, by (lower-case) domain.
#[derive(Debug, Default)]
pub struct DkimSigners {
    by_domain: HashMap<String, DkimSigner>,
}

impl DkimSigners {
    /// Loads every `[[submission.dkim]]` key; the error names the key.
    pub fn load(keys: &[DkimKey]) -> Result<DkimSigners, String> {
        let mut by_domain = HashMap::new();
        for k in keys {
            let domain = k.domain.to_string().to_ascii_lowercase();
            let signer = DkimSigner::from_pem_file(&k.key, &domain, &k.selector, &SIGNED_HEADERS)
                .map_err(|e| {
                // The key is named below: the reason alone, in our words.
                let reason = match e {
                    SignerError::KeyRead { reason, .. } => format!("cannot read it: {reason}"),
                    SignerError::KeyUnsupported { reason, .. } => format!("unusable: {reason}"),
                    SignerError::Setting { reason, .. } => reason,
                    other => other.to_string(),
                };
                format!(
                    "[[submission.dkim]] key {} (domain {domain}, selector {}): {reason}",
                    k.key.display(),
                    k.selector,
                )
            })?;
            by_domain.insert(domain, signer);
        }
        Ok(DkimSigners { by_domain })
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The signer for `message`: the key of its `From` domain, or of the
    /// MAIL FROM domain when it has no `From` header. `None` when that
    /// domain has no key.
    pub fn signer_for(&self, message: &[u8], sender: &ReversePath) -> Option<&DkimSigner> {
        let domain = match header_value(message, "from") {
            Some(from) => from_domain(&from)?,
            None => match sender {
                ReversePath::Mailbox(a) => a.domain.to_string().to_ascii_lowercase(),
                ReversePath::Null => return None,
            },
        };
        self.by_domain.get(&domain)
    }
}

/// The DSNs the queue makes are signed with the same keys, by their From
/// domain (our host name's, `MAILER-DAEMON@<hostname>`).
impl portcullis_queue::LocalSigner for DkimSigners {
    fn signature(&self, message: &[u8]) -> Option<String> {
        let signer = self.signer_for(message, &ReversePath::Null)?;
        match signer.signature_header(message) {
            Ok(sig) => Some(sig),
            Err(e) => {
                tracing::error!(domain = signer.domain(), error = %e, "DKIM signing of a notification failed; queued unsigned");
                None
            }
        }
    }
}

/// The unfolded value of the first header `name` (lower case) in the
/// header section of `message`.
fn header_value(message: &[u8], name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(line).trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let field = String::from_utf8_lossy(&line[..colon]);
        if field.trim().eq_ignore_ascii_case(name) {
            found = Some(
                String::from_utf8_lossy(&line[colon + 1..])
                    .trim()
                    .to_owned(),
            );
        }
    }
    found
}

/// The domain (lower case) of the first address in a `From` value:
/// `Name <a@b>` or `a@b`. `None` when there is none.
fn from_domain(value: &str) -> Option<String> {
    let addr = match (value.find('<'), value.find('>')) {
        (Some(l), Some(r)) if l < r => &value[l + 1..r],
        _ => value.split(',').next().unwrap_or(value),
    };
    let domain = addr.trim().rsplit_once('@')?.1.trim();
    let domain = domain.trim_end_matches(|c: char| c == ')' || c.is_whitespace());
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domain_of_common_forms() {
        assert_eq!(
            from_domain("Alice <alice@Example.TEST>").as_deref(),
            Some("example.test")
        );
        assert_eq!(
            from_domain("alice@example.test").as_deref(),
            Some("example.test")
        );
        assert_eq!(from_domain("nobody"), None);
    }

    #[test]
    fn header_value_unfolds_and_stops_at_body() {
        let msg = b"Subject: hi\r\nFROM: Alice\r\n <alice@example.test>\r\n\r\nFrom: x@y.test\r\n";
        assert_eq!(
            header_value(msg, "from").as_deref(),
            Some("Alice <alice@example.test>")
        );
        assert_eq!(
            header_value(b"Subject: x\r\n\r\nFrom: a@b.test\r\n", "from"),
            None
        );
    }
}
