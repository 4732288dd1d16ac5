//! The `mta-sts` listeners: bound with the SMTP ones (a bad address or
//! certificate fails the start), each with the `[tls]` certificate or its
//! own, all serving one [`Site`] (the policies of the accepted domains
//! under `[publish]`), which a reload updates.

use super::shutdown::Lifecycle;
use anyhow::{Context, Result};
use portcullis_config::{Config, Role};
use portcullis_dns::HickoryResolver;
use portcullis_inbound::ListenerHandle;
use portcullis_publish::{Limits, PublishMetrics, Server, Site};
use portcullis_tls::ServerTls;
use portcullis_tlsrpt::received::ReportIntake;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::info;

/// The site the `mta-sts` listeners serve, as the binary builds it.
pub type PublishSite = Site<HickoryResolver>;

/// One bound `mta-sts` listener.
pub struct MtaStsListener {
    listener: TcpListener,
    /// Its address (ephemeral port resolved), role and cap.
    pub handle: ListenerHandle,
    /// The certificate it presents.
    pub tls: ServerTls,
    /// True when `tls` is the listener's own (a reload reads it again);
    /// false for the shared `[tls]` one.
    pub own_certificate: bool,
}

/// The `mta-sts` side: its listeners, the site and the counters.
pub struct PublishSide {
    /// The bound listeners, not yet serving.
    pub listeners: Vec<MtaStsListener>,
    /// The policies served (updated by a reload).
    pub site: Arc<PublishSite>,
    /// Requests by outcome, for the metrics page.
    pub metrics: Arc<PublishMetrics>,
}

impl PublishSide {
    /// Binds every `role = "mta-sts"` listener of `config` and loads its
    /// own certificate (else it presents `tls`); the site is made for the
    /// accepted domains and `[publish]`, with `resolver` for MX names.
    pub async fn bind(
        config: &Config,
        tls: &ServerTls,
        resolver: &HickoryResolver,
    ) -> Result<PublishSide> {
        let mut listeners = Vec::new();
        for l in config.listeners.iter().filter(|l| l.role == Role::MtaSts) {
            let (tls, own_certificate) = match &l.certificate {
                Some((cert, key)) => (
                    ServerTls::from_files(cert, key).with_context(|| {
                        format!(
                            "loading the certificate of the mta-sts listener {}",
                            l.address
                        )
                    })?,
                    true,
                ),
                None => (tls.clone(), false),
            };
            let listener = TcpListener::bind(l.address)
                .await
                .with_context(|| format!("cannot listen on {} (role mta-sts)", l.address))?;
            let local_addr = listener.local_addr().context("reading the bound address")?;
            listeners.push(MtaStsListener {
                listener,
                handle: ListenerHandle {
                    local_addr,
                    role: l.role,
                    max_connections: l.max_connections,
                },
                tls,
                own_certificate,
            });
        }
        let site = Site::new(
            resolver.clone(),
            config.publish.clone(),
            &config.relay.accepted_domains,
        );
        Ok(PublishSide {
            listeners,
            site,
            metrics: Arc::new(PublishMetrics::default()),
        })
    }

    /// The listeners' handles, for `status`.
    pub fn handles(&self) -> Vec<ListenerHandle> {
        self.listeners.iter().map(|l| l.handle.clone()).collect()
    }

    /// The listeners' own certificates, which a reload reads again.
    pub fn own_certificates(&self) -> Vec<ServerTls> {
        self.listeners
            .iter()
            .filter(|l| l.own_certificate)
            .map(|l| l.tls.clone())
            .collect()
    }

    /// Starts serving every listener, and the MX refresh when there is
    /// one, on the services of `life`; POSTed reports go to `intake`.
    pub fn spawn(self, intake: Option<Arc<dyn ReportIntake>>, life: &Lifecycle) {
        if self.listeners.is_empty() {
            return;
        }
        life.services
            .spawn(self.site.clone().run_refresh(life.shutdown.clone()));
        let server = Arc::new(Server {
            site: self.site,
            intake,
            metrics: self.metrics,
            limits: Limits::default(),
        });
        for l in self.listeners {
            let h = &l.handle;
            info!(address = %h.local_addr, role = h.role.as_str(), max_connections = h.max_connections, certificate = %l.tls.describe(), "listening");
            life.services.spawn(server.clone().run(
                l.listener,
                l.tls,
                h.max_connections,
                life.shutdown.clone(),
            ));
        }
    }
}
