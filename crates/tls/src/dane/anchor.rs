//! The trust anchors DANE-TA(2) records designate (RFC 7672 §3.1.2): a
//! certificate of the presented chain that matches a record, or the record
//! itself when it holds the whole TA certificate (2 0 0) or the whole TA
//! public key (2 1 0), so that a server need not send the TA.
//!
//! An anchor is a name and a key only: a bare public key is as good a TA as
//! a certificate (§3.1.2), so the TA certificate's own validity, constraints
//! and extensions are not applied.

use portcullis_types::Tlsa;
use rustls_pki_types::{Der, TrustAnchor};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::matching::Presented;

/// At most this many presented certificates are looked at as TA candidates:
/// real chains are 2–4 long, and the work stays bounded whatever a server sends.
const MAX_CANDIDATES: usize = 8;

/// The anchors `records` (DANE-TA, usable) designate for a server that sent
/// `leaf` followed by `chain`. Empty when no record matches anything.
pub(super) fn anchors(
    records: &[&Tlsa],
    leaf: &Presented<'_>,
    chain: &[Presented<'_>],
) -> Vec<TrustAnchor<'static>> {
    let mut found = Vec::new();
    for candidate in chain.iter().take(MAX_CANDIDATES) {
        if records.iter().any(|r| candidate.matches(r)) {
            found.extend(anchor_from_cert(candidate.der.as_ref()));
        }
    }
    // The issuer the chain leads to, when the record is that TA in full.
    let top = chain.last().unwrap_or(leaf);
    for record in records.iter().filter(|r| r.matching == 0) {
        let anchor = match record.selector {
            0 => anchor_from_cert(&record.data),
            _ => {
                issuer_of(top.der.as_ref()).and_then(|issuer| anchor_from_key(issuer, &record.data))
            }
        };
        found.extend(anchor);
    }
    found
}

/// The subject and key of the certificate `der`, as an anchor.
fn anchor_from_cert(der: &[u8]) -> Option<TrustAnchor<'static>> {
    let cert = parse(der)?;
    let subject = sequence_contents(cert.tbs_certificate.subject.as_raw())?;
    anchor_from_key(subject, cert.tbs_certificate.subject_pki.raw)
}

/// An anchor named by `subject` (the DER contents of a Name) whose key is
/// the SubjectPublicKeyInfo DER `spki`.
fn anchor_from_key(subject: &[u8], spki: &[u8]) -> Option<TrustAnchor<'static>> {
    Some(TrustAnchor {
        subject: Der::from(subject.to_vec()),
        subject_public_key_info: Der::from(sequence_contents(spki)?.to_vec()),
        name_constraints: None,
    })
}

/// The issuer Name contents of the certificate `der`.
fn issuer_of(der: &[u8]) -> Option<&[u8]> {
    sequence_contents(parse(der)?.tbs_certificate.issuer.as_raw())
}

/// `der` as one X.509 certificate with nothing after it.
fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

/// The contents of the DER SEQUENCE that is exactly `der` (tag, definite
/// length up to four octets, then precisely that many octets).
fn sequence_contents(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (len, rest) = rest.split_at(octets);
        let len = len.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, rest)
    };
    (rest.len() == len).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_contents_is_strict() {
        assert_eq!(sequence_contents(&[0x30, 0x02, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(
            sequence_contents(&[0x30, 0x81, 0x02, 1, 2]),
            Some(&[1u8, 2][..])
        );
        assert_eq!(sequence_contents(&[0x30, 0x03, 1, 2]), None, "short");
        assert_eq!(sequence_contents(&[0x30, 0x01, 1, 2]), None, "trailing");
        assert_eq!(sequence_contents(&[0x31, 0x02, 1, 2]), None, "a SET");
        assert_eq!(sequence_contents(&[0x30, 0x80, 1, 2]), None, "indefinite");
        assert_eq!(sequence_contents(&[0x30, 0x85, 0, 0, 0, 0, 2]), None);
        assert_eq!(sequence_contents(&[0x30]), None);
        assert_eq!(sequence_contents(&[]), None);
    }

    #[test]
    fn garbage_records_designate_no_anchor() {
        assert!(anchor_from_cert(b"\x30\x03abc").is_none());
        assert!(anchor_from_key(b"name", b"not der").is_none());
    }
}
