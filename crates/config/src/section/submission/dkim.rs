//! `[[submission.dkim]]`: the keys that sign mail from authenticated users.

use crate::check::Checker;
use portcullis_types::Domain;
use serde::Deserialize;
use std::path::PathBuf;

/// One `[[submission.dkim]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyFile {
    /// `domain`: the signing domain (`d=`), matched against the From domain.
    pub domain: String,
    /// `selector`: the selector (`s=`).
    pub selector: String,
    /// `key`: the PEM private key (RSA PKCS#1/PKCS#8 or Ed25519 PKCS#8).
    pub key: String,
}

/// One `[[submission.dkim]]` key: mail from an authenticated user whose
/// From domain is `domain` is signed with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DkimKey {
    /// The signing domain (`d=`).
    pub domain: Domain,
    /// The selector (`s=`).
    pub selector: String,
    /// The PEM private key file.
    pub key: PathBuf,
}

/// `[[submission.dkim]]`: a domain, a selector of DKIM's characters and a
/// key file each; one key per domain. A broken entry is left out.
pub(crate) fn build(keys: &[DkimKeyFile], c: &mut Checker) -> Vec<DkimKey> {
    let mut dkim: Vec<DkimKey> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let key = format!("submission.dkim[{i}]");
        let domain = match Domain::parse(&k.domain) {
            Ok(d) => d,
            Err(e) => {
                c.fail(format!("{key}.domain"), format!("{:?}: {e}", k.domain));
                continue;
            }
        };
        if k.selector.is_empty()
            || !k
                .selector
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' || ch == '_')
        {
            c.fail(
                format!("{key}.selector"),
                format!("{:?} is not a DKIM selector", k.selector),
            );
            continue;
        }
        if k.key.is_empty() {
            c.fail(format!("{key}.key"), "names no key file");
            continue;
        }
        if dkim.iter().any(|d| d.domain == domain) {
            c.fail(
                format!("{key}.domain"),
                format!("{domain} has more than one key"),
            );
            continue;
        }
        dkim.push(DkimKey {
            domain,
            selector: k.selector.clone(),
            key: PathBuf::from(&k.key),
        });
    }
    dkim
}
