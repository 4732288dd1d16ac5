//! The inbound side: the server certificate, the bound listeners, and the
//! `Inbound` service with what it verifies and authenticates with.

use crate::inbound_parts::InboundParts;
use anyhow::{Context, Result};
use portcullis_auth::Verifier;
use portcullis_config::Config;
use portcullis_dns::HickoryResolver;
use portcullis_inbound::{Inbound, InboundBuilder, InboundMetrics, ListenerHandle};
use portcullis_queue::Queue;
use portcullis_screen::Screen;
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
    /// Binds every SMTP `[[listen]]` address (`mta-sts` listeners are
    /// [`super::publish`]'s): one that cannot be bound fails the start,
    /// before anything is served.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let mut bound = Vec::new();
        for l in config.listeners.iter().filter(|l| l.role.is_smtp()) {
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

/// The inbound service as [`build`] makes it.
pub struct InboundSide {
    /// The service, shared by all listeners.
    pub inbound: Arc<Inbound>,
    /// Its counters.
    pub metrics: Arc<InboundMetrics>,
    /// Its verifier, kept by a reload that does not change `[verify]`.
    pub verifier: Option<Arc<Verifier>>,
}

/// The inbound service with the verifier, DKIM keys and token
/// introspector of `config` ([`InboundParts`]), each loaded now so a bad
/// setting stops the start, and `screen` in front of the queue; verified
/// mail is counted for DMARC reports when `dmarc` is given.
pub fn build(
    config: &Config,
    queue: &Queue,
    tls: &ServerTls,
    resolver: &HickoryResolver,
    screen: Screen,
    dmarc: Option<&crate::dmarc::DmarcReports>,
) -> Result<InboundSide> {
    let parts = InboundParts::load(config, resolver, None)?;
    let verifier = parts.verifier.clone();
    let metrics = Arc::new(InboundMetrics::default());
    let builder = InboundBuilder::new(config, queue.clone())
        .tls(tls.clone())
        .metrics(metrics.clone())
        .clock(Arc::new(SystemClock))
        .screen(screen);
    let builder = match dmarc {
        Some(d) => builder.dmarc_reports(d.recorder.clone()),
        None => builder,
    };
    let inbound = parts.apply(builder).build();
    Ok(InboundSide {
        inbound,
        metrics,
        verifier,
    })
}
