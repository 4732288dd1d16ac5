//! Counters of the `mta-sts` listeners: every request (and every
//! connection that never became one) ends in exactly one [`Outcome`].

use portcullis_metrics::MetricsWriter;
use std::sync::atomic::{AtomicU64, Ordering};

/// How one connection to an `mta-sts` listener ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200: a policy was served.
    Policy,
    /// 404: not one of our `mta-sts.<domain>` hosts, or not a path we serve.
    NotFound,
    /// 404: one of our domains, but its policy cannot be made (no MX yet).
    PolicyUnavailable,
    /// 201: a TLS report was taken.
    ReportStored,
    /// 400: the intake refused the report as not a usable one.
    ReportInvalid,
    /// 503: no intake, or the intake's store failed.
    ReportUnavailable,
    /// 413: the announced report body is over the cap.
    TooLarge,
    /// 415: a POST that is not `application/tlsrpt+gzip` or `+json`.
    UnsupportedMediaType,
    /// 411: a POST with neither `Content-Length` nor a chunked body.
    LengthRequired,
    /// 405: a method the path does not take.
    MethodNotAllowed,
    /// 400: the request head does not parse, or is too large.
    BadRequest,
    /// 408: the head or the body did not arrive in time.
    Timeout,
    /// The TLS handshake failed or timed out.
    TlsFailed,
    /// Refused at once: the listener's connection cap was reached.
    Busy,
    /// The client closed the connection before sending a request.
    Closed,
}

const ALL: [Outcome; 15] = [
    Outcome::Policy,
    Outcome::NotFound,
    Outcome::PolicyUnavailable,
    Outcome::ReportStored,
    Outcome::ReportInvalid,
    Outcome::ReportUnavailable,
    Outcome::TooLarge,
    Outcome::UnsupportedMediaType,
    Outcome::LengthRequired,
    Outcome::MethodNotAllowed,
    Outcome::BadRequest,
    Outcome::Timeout,
    Outcome::TlsFailed,
    Outcome::Busy,
    Outcome::Closed,
];

impl Outcome {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Policy => "policy",
            Outcome::NotFound => "not_found",
            Outcome::PolicyUnavailable => "policy_unavailable",
            Outcome::ReportStored => "report_stored",
            Outcome::ReportInvalid => "report_invalid",
            Outcome::ReportUnavailable => "report_unavailable",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::LengthRequired => "length_required",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::BadRequest => "bad_request",
            Outcome::Timeout => "timeout",
            Outcome::TlsFailed => "tls_failed",
            Outcome::Busy => "busy",
            Outcome::Closed => "closed",
        }
    }

    fn index(self) -> usize {
        ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// Requests of all `mta-sts` listeners, by outcome; shared with the
/// metrics page.
#[derive(Debug, Default)]
pub struct PublishMetrics {
    counts: [AtomicU64; ALL.len()],
}

impl PublishMetrics {
    /// Counts one connection ending with `outcome`.
    pub fn count(&self, outcome: Outcome) {
        if let Some(c) = self.counts.get(outcome.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many ended with `outcome` so far.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts
            .get(outcome.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// `portcullis_mta_sts_requests_total{result}`, every result (zeros
    /// included, so an alert on a rate has a series from the start).
    pub fn render(&self, w: &mut MetricsWriter) {
        for o in ALL {
            w.counter(
                "portcullis_mta_sts_requests_total",
                "Requests to the mta-sts listeners (our MTA-STS policy, TLS-RPT POSTs), by result.",
                &[("result", o.as_str())],
                self.get(o),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_counter_and_label() {
        let m = PublishMetrics::default();
        m.count(Outcome::Policy);
        m.count(Outcome::Policy);
        m.count(Outcome::Closed);
        assert_eq!(m.get(Outcome::Policy), 2);
        assert_eq!(m.get(Outcome::Closed), 1);
        assert_eq!(m.get(Outcome::NotFound), 0);
        let mut w = MetricsWriter::new();
        m.render(&mut w);
        let page = w.finish();
        assert!(
            page.contains("portcullis_mta_sts_requests_total{result=\"policy\"} 2"),
            "{page}"
        );
        let labels: std::collections::HashSet<_> = ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), ALL.len());
    }
}
