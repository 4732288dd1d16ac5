//! The pool of connections: the URL parsed by tokio-postgres, the password
//! from the settings (never from the URL the config refuses to hold one),
//! every wait bounded by the one `timeout`, and TLS through our own rustls
//! configuration (ring, TLS 1.3 and 1.2 only).

use crate::{ClusterError, ClusterSettings, DbTls};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::str::FromStr;
use tokio_postgres::config::SslMode;

/// Builds the pool; no connection is made here.
pub(crate) fn build(settings: &ClusterSettings) -> Result<Pool, ClusterError> {
    let mut config = tokio_postgres::Config::from_str(&settings.database)
        .map_err(|e| ClusterError::Settings(format!("database URL: {e}")))?;
    if let Some(password) = &settings.password {
        config.password(password.as_bytes());
    }
    config.connect_timeout(settings.timeout);
    config.application_name("portcullis");
    let manager_config = ManagerConfig {
        // A pooled connection whose socket the database closed (a stop, a
        // restart, a fail-over) is known closed and replaced; one whose
        // peer vanished silently fails its statement within the timeout,
        // which marks the database down. No extra round trip per use: a
        // `SELECT 1` before every statement doubled the cost of each.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &settings.tls {
        DbTls::Disable => {
            config.ssl_mode(SslMode::Disable);
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        DbTls::VerifyFull { roots } => {
            // verify-full: TLS required; rustls checks the chain under
            // `roots` and the certificate's name against the URL's host.
            config.ssl_mode(SslMode::Require);
            let tls = client_config(roots)?;
            Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            )
        }
    };
    let timeouts = Timeouts {
        wait: Some(settings.timeout),
        create: Some(settings.timeout),
        recycle: Some(settings.timeout),
    };
    Pool::builder(manager)
        .max_size(settings.pool_size.max(1))
        .timeouts(timeouts)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| ClusterError::Settings(format!("connection pool: {e}")))
}

/// The rustls client configuration for the database: our ring provider,
/// TLS 1.3 and 1.2, the server verified under `roots`.
fn client_config(
    roots: &std::sync::Arc<rustls::RootCertStore>,
) -> Result<rustls::ClientConfig, ClusterError> {
    let config = rustls::ClientConfig::builder_with_provider(portcullis_tls::provider())
        .with_protocol_versions(portcullis_tls::PROTOCOL_VERSIONS)
        .map_err(|e| ClusterError::Settings(format!("TLS to the database: {e}")))?
        .with_root_certificates(std::sync::Arc::clone(roots))
        .with_no_client_auth();
    Ok(config)
}
