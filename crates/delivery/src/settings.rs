//! What a [`Deliverer`](crate::Deliverer) is built from: named fields
//! instead of a long positional constructor (STYLE 22).

use crate::client::Timeouts;
use crate::metrics::DeliveryMetrics;
use crate::plan::Planner;
use portcullis_tls::ClientTls;
use std::sync::Arc;

/// The settings of a deliverer; the binary fills them from the config.
#[derive(Debug)]
pub struct DelivererSettings<R, C> {
    /// Where mail goes: the resolver, `[routes]`, our domains and
    /// listeners, the MX port. Also what `policy explain` plans with.
    pub planner: Planner<R>,
    /// Opens outbound TCP connections (injectable for tests, STYLE 10).
    pub connector: C,
    /// Our host name, said in EHLO.
    pub hostname: String,
    /// Outbound TLS configurations (PKIX-verifying or opportunistic).
    pub tls: ClientTls,
    /// Per-stage SMTP client timeouts.
    pub timeouts: Timeouts,
    /// Concurrent sessions per destination domain (at least one is used).
    pub per_domain: usize,
    /// Where the deliverer counts sessions, outcomes and policy decisions.
    pub metrics: Arc<DeliveryMetrics>,
}
