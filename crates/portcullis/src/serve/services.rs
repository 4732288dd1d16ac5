//! The operator's endpoints: the admin socket and the metrics page.

use super::shutdown::Lifecycle;
use crate::handler::AdminHandler;
use crate::metrics::MetricsPage;
use anyhow::{Context, Result};
use portcullis_admin::{AdminListener, MetricsListener};
use portcullis_config::Config;
use std::sync::Arc;
use tracing::{error, info};

/// The admin socket and the metrics endpoint (with `[admin] metrics`),
/// bound but not yet serving.
pub struct Endpoints {
    admin: AdminListener,
    metrics: Option<MetricsListener>,
}

impl Endpoints {
    /// Binds both: a socket in use or an address that cannot be bound
    /// fails the start.
    pub async fn bind(config: &Config) -> Result<Endpoints> {
        let admin =
            portcullis_admin::bind(&config.admin.socket).context("binding the admin socket")?;
        let metrics = match config.admin.metrics {
            Some(addr) => Some(
                portcullis_admin::bind_metrics(addr)
                    .await
                    .context("binding [admin] metrics")?,
            ),
            None => None,
        };
        Ok(Endpoints { admin, metrics })
    }

    /// Serves admin requests with `handler` and scrapes with `page` on the
    /// services of `life`, until its shutdown.
    pub fn spawn(
        self,
        config: &Config,
        handler: AdminHandler,
        page: MetricsPage,
        life: &Lifecycle,
    ) {
        info!(socket = %config.admin.socket.display(), "admin socket ready");
        let handler = Arc::new(handler);
        let admin = self.admin;
        let admin_shutdown = life.shutdown.clone();
        life.services.spawn(async move {
            if let Err(e) = admin.run(handler, admin_shutdown).await {
                error!(error = %e, "admin socket failed");
            }
        });
        if let Some(m) = self.metrics {
            info!(address = %m.local_addr(), "metrics at /metrics");
            let page = Arc::new(page);
            life.services
                .spawn(m.run(Arc::new(move || page.render()), life.shutdown.clone()));
        }
    }
}
