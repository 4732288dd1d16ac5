//! `[delivery]`: outbound connections.

use crate::check::Checker;
use serde::Deserialize;
use std::time::Duration;

/// `[delivery]`: outbound connections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFile {
    /// `port`: the port MX hosts are contacted on (default 25).
    pub port: Option<u16>,
    /// `max_concurrent`: messages in delivery at once (default 50).
    pub max_concurrent: Option<u32>,
    /// `per_domain`: concurrent sessions to one destination domain (default 10).
    pub per_domain: Option<u32>,
    /// `connect_timeout`: TCP connect to a mail host (default `"30s"`).
    pub connect_timeout: Option<String>,
}

/// Outbound delivery settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// The port MX hosts are contacted on.
    pub port: u16,
    /// Messages in delivery at once.
    pub max_concurrent: u32,
    /// Concurrent sessions per destination domain.
    pub per_domain: u32,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

impl Default for Delivery {
    /// Port 25, 50 messages at once, 10 sessions a domain, 30 s to connect.
    fn default() -> Delivery {
        Delivery {
            port: 25,
            max_concurrent: 50,
            per_domain: 10,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// `[delivery]`: the counts must not be zero.
pub(crate) fn build(f: &DeliveryFile, c: &mut Checker) -> Delivery {
    let d = Delivery::default();
    Delivery {
        port: f.port.unwrap_or(d.port),
        max_concurrent: c.positive(
            "delivery.max_concurrent",
            f.max_concurrent,
            d.max_concurrent,
        ),
        per_domain: c.positive("delivery.per_domain", f.per_domain, d.per_domain),
        connect_timeout: c.duration(
            "delivery.connect_timeout",
            &f.connect_timeout,
            d.connect_timeout,
        ),
    }
}
