//! Certificate hygiene: how long the certificate each listener presents
//! stays valid, for the metrics page
//! (`portcullis_tls_certificate_expiry_seconds{listener}`), `status`, and
//! a warning in the log [`WARN_BEFORE`] ahead of the end (at start and
//! daily). Read from the certificate in force at each look, so a reload
//! that swaps it is seen at once.

use portcullis_inbound::ListenerHandle;
use portcullis_metrics::MetricsWriter;
use portcullis_tls::ServerTls;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long before the end of its validity a certificate is warned about.
pub const WARN_BEFORE: Duration = Duration::from_secs(14 * 86_400);
/// What the warning asks of the operator.
const RENEW: &str = "renew it and run `portcullis reload`";
/// How often the warning is repeated while it applies.
const CHECK_EVERY: Duration = Duration::from_secs(86_400);

/// The certificate of every listener, SMTP and `mta-sts`.
#[derive(Clone, Default)]
pub struct CertWatch {
    listeners: Vec<(ListenerHandle, ServerTls)>,
}

impl CertWatch {
    /// Watches `tls`, the certificate `handle`'s listener presents.
    pub fn add(&mut self, handle: ListenerHandle, tls: ServerTls) {
        self.listeners.push((handle, tls));
    }

    /// The end of validity (`notAfter`, Unix seconds) of the certificate
    /// the listener on `address` presents now.
    pub fn not_after(&self, address: SocketAddr) -> Option<u64> {
        self.listeners
            .iter()
            .find(|(h, _)| h.local_addr == address)
            .map(|(_, tls)| unix_secs(tls.describe().not_after))
    }

    /// `portcullis_tls_certificate_expiry_seconds{listener, role}`:
    /// seconds until each listener's certificate expires, negative once
    /// it has.
    pub fn render(&self, w: &mut MetricsWriter) {
        let now = SystemTime::now();
        for (h, tls) in &self.listeners {
            let address = h.local_addr.to_string();
            w.gauge(
                "portcullis_tls_certificate_expiry_seconds",
                "Seconds until the certificate a listener presents expires (negative: expired).",
                &[("listener", &address), ("role", h.role.as_str())],
                seconds_left(tls.describe().not_after, now),
            );
        }
    }

    /// Logs a warning for each certificate that expires within
    /// [`WARN_BEFORE`] (or has expired); an info line otherwise.
    pub fn check(&self) {
        let now = SystemTime::now();
        for (h, tls) in &self.listeners {
            let cert = tls.describe();
            let left = seconds_left(cert.not_after, now);
            let not_after = portcullis_tls::rfc3339(cert.not_after);
            let days_left = left.div_euclid(86_400);
            if left <= 0 {
                warn!(listener = %h.local_addr, role = h.role.as_str(), %not_after, subject = %cert.subject, action = RENEW, "TLS certificate has expired");
            } else if left <= WARN_BEFORE.as_secs() as i64 {
                warn!(listener = %h.local_addr, role = h.role.as_str(), %not_after, days_left, subject = %cert.subject, action = RENEW, "TLS certificate expires soon");
            } else {
                info!(listener = %h.local_addr, role = h.role.as_str(), %not_after, days_left, "TLS certificate valid");
            }
        }
    }

    /// Checks at once, then every day, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.check();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds from `now` to `end`, negative when `end` is past.
fn seconds_left(end: SystemTime, now: SystemTime) -> i64 {
    match end.duration_since(now) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_left_is_negative_once_expired() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(seconds_left(now + Duration::from_secs(60), now), 60);
        assert_eq!(seconds_left(now - Duration::from_secs(60), now), -60);
        assert_eq!(seconds_left(now, now), 0);
    }
}
