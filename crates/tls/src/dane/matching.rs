//! Whether a certificate matches a TLSA record (RFC 6698 §2.1.2–2.1.3):
//! the selected bytes (whole certificate or SubjectPublicKeyInfo), compared
//! exactly or through SHA-256 / SHA-512.

use portcullis_types::Tlsa;
use ring::digest;
use rustls::server::ParsedCertificate;
use rustls_pki_types::CertificateDer;

/// A presented certificate with the bytes both selectors pick out of it.
pub(super) struct Presented<'a> {
    /// The certificate as sent (selector 0).
    pub(super) der: &'a CertificateDer<'a>,
    /// Its SubjectPublicKeyInfo DER (selector 1); `None` when the
    /// certificate does not parse, so that no selector-1 record matches it.
    pub(super) spki: Option<Vec<u8>>,
}

impl<'a> Presented<'a> {
    /// Reads the selectable parts of `der`; never fails (a certificate that
    /// does not parse can still match a selector-0 record, and then fails the
    /// handshake signature check).
    pub(super) fn new(der: &'a CertificateDer<'a>) -> Presented<'a> {
        let spki = ParsedCertificate::try_from(der)
            .ok()
            .map(|parsed| parsed.subject_public_key_info().as_ref().to_vec());
        Presented { der, spki }
    }

    /// True when `record`'s selector and matching type, applied to this
    /// certificate, give exactly `record.data`.
    pub(super) fn matches(&self, record: &Tlsa) -> bool {
        let selected: &[u8] = match (record.selector, &self.spki) {
            (0, _) => self.der.as_ref(),
            (1, Some(spki)) => spki,
            _ => return false,
        };
        matches_data(record, selected)
    }
}

/// True when `selected` (the bytes a selector picked) gives `record.data`
/// under the record's matching type.
pub(super) fn matches_data(record: &Tlsa, selected: &[u8]) -> bool {
    match record.matching {
        0 => selected == record.data.as_slice(),
        1 => digest::digest(&digest::SHA256, selected).as_ref() == record.data.as_slice(),
        2 => digest::digest(&digest::SHA512, selected).as_ref() == record.data.as_slice(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage: 3,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn each_matching_type_compares_its_own_digest() {
        let bytes = b"selected bytes";
        let sha256 = digest::digest(&digest::SHA256, bytes).as_ref().to_vec();
        let sha512 = digest::digest(&digest::SHA512, bytes).as_ref().to_vec();
        assert!(matches_data(&record(0, 0, bytes.to_vec()), bytes));
        assert!(matches_data(&record(0, 1, sha256.clone()), bytes));
        assert!(matches_data(&record(0, 2, sha512.clone()), bytes));
        assert!(!matches_data(&record(0, 2, sha256), bytes), "wrong type");
        assert!(!matches_data(&record(0, 1, sha512), bytes), "wrong type");
        assert!(!matches_data(
            &record(0, 0, b"selected byte".to_vec()),
            bytes
        ));
        assert!(!matches_data(&record(0, 3, bytes.to_vec()), bytes));
    }

    #[test]
    fn garbage_certificate_matches_only_by_its_bytes() {
        let der = CertificateDer::from(b"not a certificate".to_vec());
        let presented = Presented::new(&der);
        assert!(presented.spki.is_none());
        assert!(presented.matches(&record(0, 0, b"not a certificate".to_vec())));
        assert!(!presented.matches(&record(1, 0, b"not a certificate".to_vec())));
    }
}
