//! DANE (RFC 7672 §3) through real TLS handshakes on loopback: a
//! tokio-rustls server presenting rcgen certificates, the client built by
//! `ClientTls::dane_config`.

use std::sync::Arc;
use std::time::SystemTime;

use portcullis_types::Tlsa;
use rcgen::{CertificateParams, DnType, KeyPair};
use ring::digest;
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Ca, DAY, Pair, set_validity};
use crate::*;

const MX: &str = "mx.example.test";

/// Serves `chain` with the private key in `key_pem`, whether or not they
/// belong together (rustls's own builders would refuse a mismatch).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn der(pem: &str) -> Vec<CertificateDer<'static>> {
    crate::pem::certs_from_pem(std::path::Path::new("test"), pem.as_bytes()).unwrap()
}

/// One handshake over TCP on 127.0.0.1 (SNI `MX`): the server sends `chain`
/// and signs with `key_pem`; returns the client's handshake error, if any.
async fn handshake(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &str,
    client: Arc<ClientConfig>,
) -> Result<(), rustls::Error> {
    handshake_versions(chain, key_pem, client, PROTOCOL_VERSIONS).await
}

/// [`handshake`] with a server speaking only `versions`.
async fn handshake_versions(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &str,
    client: Arc<ClientConfig>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(), rustls::Error> {
    let provider = provider();
    let key = crate::pem::key_from_pem(std::path::Path::new("key"), key_pem.as_bytes()).unwrap();
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let resolver = Fixed(Arc::new(CertifiedKey::new(chain, signing)));
    let server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(MX).unwrap();
    let outcome = TlsConnector::from(client).connect(name, tcp).await;
    server_task.abort();
    match outcome {
        Ok(_) => Ok(()),
        Err(e) => Err(*e.into_inner().unwrap().downcast::<rustls::Error>().unwrap()),
    }
}

fn spki(cert: &CertificateDer<'_>) -> Vec<u8> {
    let parsed = ParsedCertificate::try_from(cert).unwrap();
    parsed.subject_public_key_info().as_ref().to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

fn sha512(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA512, data).as_ref().to_vec()
}

fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

fn dane(records: Vec<Tlsa>, names: &[&str]) -> Arc<ClientConfig> {
    dane_with(
        ClientTls::with_roots(RootCertStore::empty()),
        records,
        names,
    )
}

fn dane_with(tls: ClientTls, records: Vec<Tlsa>, names: &[&str]) -> Arc<ClientConfig> {
    let authority = DaneAuthority {
        records,
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    tls.dane_config(&authority).unwrap()
}

/// A self-signed certificate for `name`, expired since yesterday.
fn self_signed_expired(name: &str) -> Pair {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let now = SystemTime::now();
    set_validity(&mut params, now - 60 * DAY, now - DAY);
    Pair {
        cert_pem: params.self_signed(&key).unwrap().pem(),
        key_pem: key.serialize_pem(),
    }
}

#[track_caller]
fn assert_result(outcome: Result<(), rustls::Error>, want: TlsResultType) {
    match outcome {
        Ok(()) => panic!("handshake passed, wanted {want}"),
        Err(e) => assert_eq!(classify(&e), want, "{e:?}"),
    }
}

#[tokio::test]
async fn dane_ee_matches_the_leaf_whatever_its_name_and_dates() {
    let leaf = self_signed_expired("wrong.example.test");
    let cert = der(&leaf.cert_pem).remove(0);
    let records = [
        tlsa(3, 1, 1, sha256(&spki(&cert))),
        tlsa(3, 0, 1, sha256(&cert)),
        tlsa(3, 0, 2, sha512(&cert)),
        tlsa(3, 1, 0, spki(&cert)),
        tlsa(3, 1, 2, sha512(&spki(&cert))),
        tlsa(3, 0, 0, cert.as_ref().to_vec()),
    ];
    for record in records {
        let client = dane(vec![record.clone()], &[MX]);
        let outcome = handshake(vec![cert.clone()], &leaf.key_pem, client).await;
        assert!(outcome.is_ok(), "{record}: {outcome:?}");
    }
}

#[tokio::test]
async fn dane_ee_mismatch_is_tlsa_invalid() {
    let leaf = self_signed_expired(MX);
    let other = der(&self_signed_expired(MX).cert_pem).remove(0);
    let cert = der(&leaf.cert_pem).remove(0);
    let records = vec![
        tlsa(3, 1, 1, sha256(&spki(&other))),
        tlsa(3, 0, 2, sha512(&other)),
        // The right digest under the wrong matching type does not match.
        tlsa(
            3,
            1,
            2,
            [sha256(&spki(&cert)), sha256(&spki(&cert))].concat(),
        ),
    ];
    let outcome = handshake(vec![cert], &leaf.key_pem, dane(records, &[MX])).await;
    assert_result(outcome, TlsResultType::TlsaInvalid);
}

#[tokio::test]
async fn a_matching_certificate_without_its_key_fails() {
    let leaf = self_signed_expired(MX);
    let impostor = self_signed_expired(MX);
    let cert = der(&leaf.cert_pem).remove(0);
    let client = dane(vec![tlsa(3, 1, 1, sha256(&spki(&cert)))], &[MX]);
    let outcome = handshake(vec![cert], &impostor.key_pem, client).await;
    assert!(
        matches!(
            outcome,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature
            ))
        ),
        "signed with another key: {outcome:?}"
    );
}

#[tokio::test]
async fn dane_ta_chain_passes_for_the_right_name_only() {
    let ca = Ca::new();
    let ca_cert = der(&ca.cert_pem).remove(0);
    let leaf = ca.issue(&["*.example.test"]);
    let chain = vec![der(&leaf.cert_pem).remove(0), ca_cert.clone()];
    let records = vec![tlsa(2, 0, 1, sha256(&ca_cert))];

    let good = dane(records.clone(), &[MX]);
    assert_eq!(handshake(chain.clone(), &leaf.key_pem, good).await, Ok(()));
    // The MX name is not the first one: the recipient domain of an implicit MX.
    let implicit = dane(records.clone(), &["mx.other.test", "mail.example.test"]);
    assert_eq!(
        handshake(chain.clone(), &leaf.key_pem, implicit).await,
        Ok(())
    );

    // The wildcard covers only the leftmost label.
    for names in [
        &["mx.other.test"][..],
        &["a.mx.example.test"],
        &["example.test"],
        &[],
    ] {
        let client = dane(records.clone(), names);
        let outcome = handshake(chain.clone(), &leaf.key_pem, client).await;
        assert_result(outcome, TlsResultType::CertificateHostMismatch);
    }
}

#[tokio::test]
async fn dane_ta_chain_expired_is_certificate_expired() {
    let ca = Ca::new();
    let ca_cert = der(&ca.cert_pem).remove(0);
    let now = SystemTime::now();
    let leaf = ca.issue_valid(&[MX], now - 60 * DAY, now - DAY);
    let chain = vec![der(&leaf.cert_pem).remove(0), ca_cert.clone()];
    let client = dane(vec![tlsa(2, 0, 1, sha256(&ca_cert))], &[MX]);
    let outcome = handshake(chain, &leaf.key_pem, client).await;
    assert_result(outcome, TlsResultType::CertificateExpired);
}

/// A clock `ahead` of the system clock.
#[derive(Debug)]
struct Ahead(std::time::Duration);

impl TimeProvider for Ahead {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()?
                + self.0,
        ))
    }
}

#[tokio::test]
async fn dane_ta_dates_follow_the_injected_clock() {
    let ca = Ca::new();
    let ca_cert = der(&ca.cert_pem).remove(0);
    let leaf = ca.issue(&[MX]); // valid for 30 days
    let chain = vec![der(&leaf.cert_pem).remove(0), ca_cert.clone()];
    let tls =
        ClientTls::with_roots(RootCertStore::empty()).with_time_provider(Arc::new(Ahead(60 * DAY)));
    let client = dane_with(tls, vec![tlsa(2, 0, 1, sha256(&ca_cert))], &[MX]);
    let outcome = handshake(chain, &leaf.key_pem, client).await;
    assert_result(outcome, TlsResultType::CertificateExpired);
}

#[tokio::test]
async fn dane_ta_as_a_public_key() {
    let ca = Ca::new();
    let ca_cert = der(&ca.cert_pem).remove(0);
    let leaf = ca.issue(&[MX]);
    let leaf_cert = der(&leaf.cert_pem).remove(0);
    let with_ta = vec![leaf_cert.clone(), ca_cert.clone()];

    // 2 1 1: the TA's key digest, the TA sent by the server.
    let client = dane(vec![tlsa(2, 1, 1, sha256(&spki(&ca_cert)))], &[MX]);
    assert_eq!(
        handshake(with_ta.clone(), &leaf.key_pem, client).await,
        Ok(())
    );

    // 2 1 0: the whole key in the record; the server need not send the TA.
    let client = dane(vec![tlsa(2, 1, 0, spki(&ca_cert))], &[MX]);
    let outcome = handshake(vec![leaf_cert.clone()], &leaf.key_pem, client).await;
    assert_eq!(outcome, Ok(()));

    // A digest alone cannot stand for a TA the server did not send.
    let client = dane(vec![tlsa(2, 1, 1, sha256(&spki(&ca_cert)))], &[MX]);
    let outcome = handshake(vec![leaf_cert.clone()], &leaf.key_pem, client).await;
    assert_result(outcome, TlsResultType::TlsaInvalid);

    // Another CA's key designates no anchor the leaf chains to.
    let stranger = der(&Ca::new().cert_pem).remove(0);
    let client = dane(vec![tlsa(2, 1, 0, spki(&stranger))], &[MX]);
    let outcome = handshake(vec![leaf_cert], &leaf.key_pem, client).await;
    assert_result(outcome, TlsResultType::CertificateNotTrusted);
}

#[tokio::test]
async fn a_leaf_matching_a_dane_ta_record_is_not_its_own_anchor() {
    let ca = Ca::new();
    let leaf = ca.issue(&[MX]);
    let leaf_cert = der(&leaf.cert_pem).remove(0);
    let client = dane(vec![tlsa(2, 0, 1, sha256(&leaf_cert))], &[MX]);
    let outcome = handshake(vec![leaf_cert], &leaf.key_pem, client).await;
    assert_result(outcome, TlsResultType::TlsaInvalid);
}

#[test]
fn no_usable_record_means_no_dane_configuration() {
    let tls = ClientTls::with_roots(RootCertStore::empty());
    let pkix_only = DaneAuthority {
        records: vec![tlsa(1, 1, 1, vec![7; 32]), tlsa(0, 0, 1, vec![7; 32])],
        names: vec![MX.into()],
    };
    assert!(matches!(
        tls.dane_config(&pkix_only),
        Err(TlsError::Verifier { .. })
    ));
    let malformed = DaneAuthority {
        records: vec![tlsa(3, 1, 1, vec![7; 31]), tlsa(3, 2, 1, vec![7; 32])],
        names: vec![MX.into()],
    };
    assert!(tls.dane_config(&malformed).is_err());
    let empty = DaneAuthority {
        records: vec![],
        names: vec![MX.into()],
    };
    assert!(tls.dane_config(&empty).is_err());
}

#[tokio::test]
async fn unusable_records_beside_a_usable_one_are_ignored() {
    let leaf = self_signed_expired(MX);
    let cert = der(&leaf.cert_pem).remove(0);
    let digest = sha256(&spki(&cert));
    // A PKIX-EE record with the right digest does not authenticate (§3.1.3).
    let other = sha256(b"not this server");
    let records = vec![tlsa(1, 1, 1, digest.clone()), tlsa(3, 1, 1, other)];
    let outcome = handshake(vec![cert.clone()], &leaf.key_pem, dane(records, &[MX])).await;
    assert_result(outcome, TlsResultType::TlsaInvalid);
    let records = vec![tlsa(1, 1, 1, digest.clone()), tlsa(3, 1, 1, digest)];
    let outcome = handshake(vec![cert], &leaf.key_pem, dane(records, &[MX])).await;
    assert_eq!(outcome, Ok(()));
}

#[tokio::test]
async fn dane_over_tls12_checks_the_signature_too() {
    let tls12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let leaf = self_signed_expired(MX);
    let impostor = self_signed_expired(MX);
    let cert = der(&leaf.cert_pem).remove(0);
    let record = tlsa(3, 1, 1, sha256(&spki(&cert)));
    let client = dane(vec![record.clone()], &[MX]);
    let outcome = handshake_versions(vec![cert.clone()], &leaf.key_pem, client, tls12).await;
    assert_eq!(outcome, Ok(()));
    let client = dane(vec![record], &[MX]);
    let outcome = handshake_versions(vec![cert], &impostor.key_pem, client, tls12).await;
    assert!(outcome.is_err(), "signed with another key: {outcome:?}");
}
