//! Reading PEM certificate chains and private keys from files.

use std::fs;
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every `CERTIFICATE` section of the PEM file at `path`, leaf first; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from_pem(path, &read(path)?)
}

/// Every `CERTIFICATE` section of `bytes` (read from `path`); at least one.
pub(crate) fn certs_from_pem(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_from_pem(path, &read(path)?)
}

/// The first private key of `bytes` (read from `path`).
pub(crate) fn key_from_pem(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        other => bad_pem(path, &other),
    })
}

fn bad_pem(path: &Path, err: &pem::Error) -> TlsError {
    TlsError::BadPem {
        path: path.to_path_buf(),
        detail: err.to_string(),
    }
}
