//! The `/metrics` page: each part of the server renders its own families
//! through one `MetricsWriter`; this module only puts them one after the
//! other.

use crate::serve::CertWatch;
use crate::state::Engine;
use portcullis_delivery::{DeliveryMetrics, LogTlsResults};
use portcullis_inbound::{Inbound, InboundMetrics};
use portcullis_metrics::MetricsWriter;
use portcullis_publish::PublishMetrics;
use portcullis_queue::{Queue, QueueMetrics};
use portcullis_store::Store;
use portcullis_tlsrpt::ReportMetrics;
use portcullis_tlsrpt::received::ReceivedReports;
use portcullis_types::{Clock, SystemClock};
use std::sync::Arc;
use std::time::Instant;

/// Everything that has metrics, as the page reads it at each scrape.
pub struct MetricsPage {
    /// Sessions, messages, verification, AUTH.
    pub inbound: Arc<InboundMetrics>,
    /// The inbound service, for the screen in force (DNS lists, rates,
    /// recipient verification, greylisting).
    pub screen: Arc<Inbound>,
    /// The queue (size, age of the oldest message).
    pub queue: Queue,
    /// The scheduler's counters.
    pub queue_counters: Arc<QueueMetrics>,
    /// Delivery outcomes and attempts.
    pub delivery: Arc<DeliveryMetrics>,
    /// Outbound TLS outcomes.
    pub tls_results: Arc<LogTlsResults>,
    /// MTA-STS fetches and the cache.
    pub policy: Arc<Engine>,
    /// TLS-RPT reports sent.
    pub tlsrpt: Arc<ReportMetrics>,
    /// TLS-RPT reports received about our domains.
    pub received: ReceivedReports,
    /// DMARC messages counted and reports sent; `None` with reports off.
    pub dmarc: Option<Arc<portcullis_dmarc::DmarcMetrics>>,
    /// The cluster database's health and fall-backs; `None` without
    /// `[cluster]`.
    pub cluster: Option<portcullis_cluster::Cluster>,
    /// The store (group commits).
    pub store: Store,
    /// Requests to the `mta-sts` listeners.
    pub publish: Arc<PublishMetrics>,
    /// The certificate each listener presents.
    pub certificates: CertWatch,
    /// When the server started.
    pub started: Instant,
}

impl MetricsPage {
    /// The page as Prometheus reads it now.
    pub fn render(&self) -> String {
        let mut w = MetricsWriter::new();
        self.inbound.render(&mut w);
        if let Some(screen) = self.screen.screen() {
            screen.render_metrics(&mut w);
        }
        self.queue
            .render_metrics(&self.queue_counters, SystemClock.unix_secs(), &mut w);
        self.delivery.render(&mut w);
        self.tls_results.render(&mut w);
        self.policy.render_metrics(&mut w);
        self.tlsrpt.render(&mut w);
        self.received.render_metrics(&mut w);
        if let Some(dmarc) = &self.dmarc {
            dmarc.render(&mut w);
        }
        if let Some(cluster) = &self.cluster {
            cluster.render_metrics(&mut w);
        }
        self.store.render_metrics(&mut w);
        self.publish.render(&mut w);
        self.certificates.render(&mut w);
        w.gauge(
            "portcullis_uptime_seconds",
            "Seconds since the server started.",
            &[],
            self.started.elapsed().as_secs(),
        );
        w.finish()
    }
}
