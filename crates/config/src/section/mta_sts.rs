//! `[mta_sts]`: fetching recipient domains' MTA-STS policies, and the
//! policies pinned for remote domains.

use crate::check::Checker;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[mta_sts]`: policy fetching.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaStsFile {
    /// `https_port`: the port policy hosts are fetched from (default 443).
    pub https_port: Option<u16>,
    /// `fetch_timeout`: the whole HTTPS policy fetch (default `"30s"`).
    pub fetch_timeout: Option<String>,
    /// `pins_dir`: directory of `<domain>.txt` policies pinned for remote
    /// domains; they win over DNS (default: none).
    pub pins_dir: Option<String>,
}

/// MTA-STS settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MtaSts {
    /// Port of policy hosts.
    pub https_port: u16,
    /// Policy fetch timeout.
    pub fetch_timeout: Duration,
    /// Pinned policies for remote domains; `None`: no file pins (pins made
    /// with `portcullis policy pin` still apply), not a default directory.
    pub pins_dir: Option<PathBuf>,
}

impl Default for MtaSts {
    /// Port 443, 30 seconds a fetch, no pins directory.
    fn default() -> MtaSts {
        MtaSts {
            https_port: 443,
            fetch_timeout: Duration::from_secs(30),
            pins_dir: None,
        }
    }
}

/// `[mta_sts]`.
pub(crate) fn build(f: &MtaStsFile, c: &mut Checker) -> MtaSts {
    let d = MtaSts::default();
    MtaSts {
        https_port: f.https_port.unwrap_or(d.https_port),
        fetch_timeout: c.duration("mta_sts.fetch_timeout", &f.fetch_timeout, d.fetch_timeout),
        pins_dir: f.pins_dir.as_ref().map(PathBuf::from),
    }
}
