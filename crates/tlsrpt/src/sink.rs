//! The one sink delivery is given ([`TlsRptSink`]): every outbound TLS
//! outcome is logged and counted for metrics and the downgrade alert
//! ([`LogTlsResults`]) and counted for the daily reports
//! ([`TlsRptRecorder`]). TLS-RPT owns both, so the results go from
//! delivery to TLS-RPT directly and the binary only hands the sink over.

use std::sync::Arc;

use crate::{LogTlsResults, TlsResultSink, TlsRptRecorder, TlsSessionResult};

/// Logs, counts and records every outbound TLS outcome. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsRptSink {
    log: Arc<LogTlsResults>,
    recorder: TlsRptRecorder,
}

impl TlsRptSink {
    /// A sink recording into `recorder` (recorded even with reporting off,
    /// so turning it on later has the day's counts), with fresh counters.
    pub fn new(recorder: TlsRptRecorder) -> TlsRptSink {
        TlsRptSink {
            log: Arc::new(LogTlsResults::default()),
            recorder,
        }
    }

    /// The counters by (policy domain, result) and the downgrades, for
    /// the metrics page.
    pub fn log(&self) -> &Arc<LogTlsResults> {
        &self.log
    }

    /// The daily aggregates.
    pub fn recorder(&self) -> &TlsRptRecorder {
        &self.recorder
    }
}

impl TlsResultSink for TlsRptSink {
    fn record(&self, result: TlsSessionResult) {
        self.log.record(result.clone());
        self.recorder.record(result);
    }
}
