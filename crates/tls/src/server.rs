//! Server-side TLS material that can be swapped at runtime.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::provider::{PROTOCOL_VERSIONS, provider};
use crate::summary::CertSummary;
use crate::{TlsError, pem, selfsigned};

/// Where the server's certificate comes from, so that `reload` can read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTlsSource {
    /// Operator-provided PEM files.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// The self-signed development certificate in `dir`.
    SelfSigned {
        /// The directory holding `cert.pem` and `key.pem`.
        dir: PathBuf,
        /// The hostname the certificate is made for.
        hostname: String,
    },
}

/// One loaded certificate and key.
struct Loaded {
    key: Arc<CertifiedKey>,
    summary: CertSummary,
}

/// The swappable slot shared by [`ServerTls`] and the rustls configuration.
struct Slot(RwLock<Arc<Loaded>>);

impl Slot {
    fn get(&self) -> Arc<Loaded> {
        // A poisoned lock only means a writer panicked between two whole values.
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set(&self, loaded: Loaded) {
        let loaded = Arc::new(loaded);
        match self.0.write() {
            Ok(mut guard) => *guard = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Slot").field(&self.get().summary).finish()
    }
}

impl ResolvesServerCert for Slot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.get().key))
    }
}

/// Server-side TLS material, reloadable at runtime (SIGHUP) without dropping sessions.
///
/// The rustls configuration is built once around a certificate resolver whose
/// certificate can be swapped: sessions already established keep the key
/// they negotiated with, every handshake after a [`reload`](ServerTls::reload)
/// uses the new certificate — also through acceptors obtained before it.
/// Cloning is cheap and clones share the slot.
#[derive(Debug, Clone)]
pub struct ServerTls {
    source: ServerTlsSource,
    slot: Arc<Slot>,
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// Errors name the path and what is wrong: missing file, no certificate in
    /// the file, no key, key does not match the certificate.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_source(ServerTlsSource::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Development default: a self-signed certificate for `hostname` (plus
    /// `localhost`) kept in `dir` as `cert.pem` and `key.pem`.
    ///
    /// The files are created on first use (the key with mode 0600) and reused
    /// on later starts while valid for `hostname`. Logs a warning that the
    /// certificate is self-signed.
    pub fn self_signed(dir: &Path, hostname: &str) -> Result<Self, TlsError> {
        Self::from_source(ServerTlsSource::SelfSigned {
            dir: dir.to_path_buf(),
            hostname: hostname.to_owned(),
        })
    }

    /// Loads from `source`, either kind.
    pub fn from_source(source: ServerTlsSource) -> Result<Self, TlsError> {
        let loaded = load(&source)?;
        let slot = Arc::new(Slot(RwLock::new(Arc::new(loaded))));
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|source| TlsError::Config { source })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&slot) as Arc<dyn ResolvesServerCert>);
        Ok(ServerTls {
            source,
            slot,
            config: Arc::new(config),
        })
    }

    /// A tokio-rustls acceptor for the current configuration (cheap: clones an Arc).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// The rustls server configuration behind [`acceptor`](ServerTls::acceptor).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Where the material comes from.
    pub fn source(&self) -> &ServerTlsSource {
        &self.source
    }

    /// Re-reads the files; on any error the old configuration stays in force and
    /// the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.source)?;
        tracing::info!(certificate = %loaded.summary, "TLS certificate reloaded");
        self.slot.set(loaded);
        Ok(())
    }

    /// SHA-256 fingerprint (hex), subject names and validity of the current leaf,
    /// for logs and `status`.
    pub fn describe(&self) -> CertSummary {
        self.slot.get().summary.clone()
    }
}

fn load(source: &ServerTlsSource) -> Result<Loaded, TlsError> {
    match source {
        ServerTlsSource::Files { cert, key } => load_pair(cert, key),
        ServerTlsSource::SelfSigned { dir, hostname } => {
            let (cert, key) = selfsigned::ensure(dir, hostname)?;
            let loaded = load_pair(&cert, &key)?;
            tracing::warn!(
                path = %cert.display(),
                sha256 = %loaded.summary.sha256,
                "using a self-signed TLS certificate; configure [tls] certificate and private_key for production"
            );
            Ok(loaded)
        }
    }
}

/// Loads and cross-checks a certificate chain and its private key.
fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
    let certs = pem::load_certs(cert_path)?;
    let key_der = pem::load_key(key_path)?;
    let leaf = certs.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert_path.to_path_buf(),
    })?;
    let summary = CertSummary::from_der(cert_path, leaf)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::BadPrivateKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_path_buf(),
                detail: e.to_string(),
            });
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        summary,
    })
}
