//! The inbound side: the server certificate, the bound listeners, and the
//! `Inbound` service with what it verifies and authenticates with.

use anyhow::{Context, Result};
use portcullis_config::Config;
use portcullis_dns::HickoryResolver;
use portcullis_inbound::{Inbound, InboundBuilder, InboundMetrics, ListenerHandle};
use portcullis_queue::Queue;
use portcullis_tls::ServerTls;
use portcullis_types::SystemClock;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The `[tls]` certificate, or a self-signed one in `data_dir/tls`.
pub fn server_tls(config: &Config) -> Result<ServerTls> {
    let tls = match &config.tls.files {
        Some((cert, key)) => {
            ServerTls::from_files(cert, key).context("loading [tls] certificate")?
        }
        None => {
            let dir = config.data_dir.join("tls");
            warn!(dir = %dir.display(), "no [tls] certificate configured: using a self-signed certificate (fine for development, not for the Internet)");
            ServerTls::self_signed(&dir, &config.hostname)
                .context("creating the self-signed certificate")?
        }
    };
    info!(certificate = %tls.describe(), "tls ready");
    Ok(tls)
}

/// The `[[listen]]` sockets, bound but not yet accepting.
pub struct Listeners(Vec<(TcpListener, ListenerHandle)>);

impl Listeners {
    /// Binds every `[[listen]]` address: one that cannot be bound fails the
    /// start, before anything is served.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let mut bound = Vec::new();
        for l in &config.listeners {
            let listener = portcullis_inbound::server::bind(l.address)
                .await
                .with_context(|| {
                    format!("cannot listen on {} (role {})", l.address, l.role.as_str())
                })?;
            let local = listener.local_addr().context("reading the bound address")?;
            bound.push((
                listener,
                ListenerHandle {
                    local_addr: local,
                    role: l.role,
                    max_connections: l.max_connections,
                },
            ));
        }
        Ok(Listeners(bound))
    }

    /// The bound listeners' handles.
    pub fn handles(&self) -> Vec<ListenerHandle> {
        self.0.iter().map(|(_, h)| h.clone()).collect()
    }

    /// The addresses actually bound (ephemeral ports resolved).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|(_, h)| h.local_addr).collect()
    }

    /// The listeners with their handles, to be run.
    pub fn into_inner(self) -> Vec<(TcpListener, ListenerHandle)> {
        self.0
    }
}

/// The inbound service and its counters: sender verification (sharing the
/// one resolver), the DKIM keys of submission and OAuth introspection,
/// each loaded now so a bad setting stops the start.
pub fn build(
    config: &Config,
    queue: &Queue,
    tls: &ServerTls,
    resolver: &HickoryResolver,
) -> Result<(Arc<Inbound>, Arc<InboundMetrics>)> {
    // Sender verification shares the one resolver (and its cache): mail-auth
    // verifies through it, so `[dns]` governs every lookup.
    let verifier = match config.verify.enabled {
        true => Some(Arc::new(
            portcullis_auth::Verifier::new(resolver, &config.hostname, config.verify.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        false => None,
    };
    // DKIM keys of submission, loaded now so a bad key stops the start.
    let dkim = portcullis_inbound::DkimSigners::load(&config.submission.dkim)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let oauth = match &config.submission.oauth {
        Some(o) => Some(Arc::new(build_introspector(config, o, resolver)?)),
        None => None,
    };
    let metrics = Arc::new(InboundMetrics::default());
    let mut builder = InboundBuilder::new(config, queue.clone())
        .tls(tls.clone())
        .metrics(metrics.clone())
        .clock(Arc::new(SystemClock))
        .dkim(dkim);
    if let Some(verifier) = verifier {
        builder = builder.verifier(verifier);
    }
    if let Some(oauth) = oauth {
        builder = builder.oauth(oauth);
    }
    let inbound = builder.build();
    Ok((inbound, metrics))
}

/// The token introspector of `[submission.oauth]`: the strict HTTPS client
/// of policy fetches (PKIX under the web roots, `[tls] extra_roots` and
/// the section's `ca_file`; TLS 1.2+; no redirects; names through `[dns]`)
/// and the client secret read from its file now, so a missing file stops
/// the start.
fn build_introspector(
    config: &Config,
    o: &portcullis_config::OAuth,
    resolver: &HickoryResolver,
) -> anyhow::Result<portcullis_submission::oauth::Introspector> {
    use portcullis_submission::oauth::{IntrospectionSettings, Introspector};
    let secret = std::fs::read_to_string(&o.client_secret_file).with_context(|| {
        format!(
            "reading [submission.oauth] client_secret_file {}",
            o.client_secret_file.display()
        )
    })?;
    let secret = secret.trim();
    if secret.is_empty() {
        anyhow::bail!(
            "[submission.oauth] client_secret_file {} is empty",
            o.client_secret_file.display()
        );
    }
    let mut roots = config.tls.extra_roots.clone();
    roots.extend(o.ca_file.iter().cloned());
    let tls = portcullis_tls::ClientTls::new(&roots)
        .context("loading trust anchors for [submission.oauth]")?;
    let client = portcullis_https::builder(
        resolver.clone(),
        concat!("portcullis-oauth/", env!("CARGO_PKG_VERSION")),
    )
    .tls(tls)
    .timeout(o.timeout)
    .build()
    .map_err(|e| anyhow::anyhow!("building the token introspection client: {e}"))?;
    let mut settings = IntrospectionSettings::new(&o.introspection_url, &o.client_id, secret);
    settings.required_scope = o.required_scope.clone();
    settings.username_claim = o.username_claim.clone();
    settings.cache_ttl = o.cache_ttl;
    settings.max_in_flight = o.max_in_flight as usize;
    settings.breaker = portcullis_submission::breaker::BreakerSettings {
        failures: o.breaker_failures,
        open_for: o.breaker_open,
    };
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("[submission.oauth]: {e}"))?;
    info!(endpoint = %o.introspection_url, "OAUTHBEARER and XOAUTH2 offered (token introspection)");
    Ok(Introspector::new(client, settings, Arc::new(SystemClock)))
}
