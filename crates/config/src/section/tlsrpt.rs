//! `[tlsrpt]`: the RFC 8460 reports we send about our outbound TLS
//! sessions. Validation makes sure a server that sends reports has every
//! key sending takes, so the runtime type holds them without `Option`s.

use crate::check::Checker;
use serde::Deserialize;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::path::PathBuf;
use std::time::Duration;

/// `[tlsrpt]`: RFC 8460 reports we send.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRptFile {
    /// `enabled`: send daily reports (default false).
    #[serde(default)]
    pub enabled: bool,
    /// `organization`: our organisation's name in reports.
    pub organization: Option<String>,
    /// `contact`: contact info in reports, e.g. `mailto:postmaster@...`.
    pub contact: Option<String>,
    /// `submitter`: the domain named as report submitter.
    pub submitter: Option<String>,
    /// `from`: the From address of report mail.
    pub from: Option<String>,
    /// `dkim_selector`: selector of the DKIM key that signs reports.
    pub dkim_selector: Option<String>,
    /// `dkim_key`: PEM private key that signs reports.
    pub dkim_key: Option<String>,
    /// `send_window`: reports leave at a random time within this window after 00:00 UTC.
    pub send_window: Option<String>,
}

/// TLS-RPT as the server runs it: reports are sent, or they are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRpt {
    /// `enabled = false` (the default): no report leaves.
    Off(TlsRptOff),
    /// `enabled = true`: daily reports, with every key sending takes.
    On(TlsRptSending),
}

/// `[tlsrpt]` with reporting off: the keys as written (checked all the
/// same) for `config check` to show. Only the reporter is used, by
/// `tlsrpt show` (see [`TlsRpt::reporter`]); an absent key stays absent,
/// as no default applies to a report that is not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsRptOff {
    /// `organization`.
    pub organization: Option<String>,
    /// `contact`.
    pub contact: Option<String>,
    /// `submitter`.
    pub submitter: Option<String>,
    /// `from`.
    pub from: Option<String>,
    /// `dkim_selector`.
    pub dkim_selector: Option<String>,
    /// `dkim_key`.
    pub dkim_key: Option<PathBuf>,
    /// `send_window` (4 hours when absent).
    pub send_window: Duration,
}

/// Who a report says made it (RFC 8460 §4.4 `organization-name`,
/// `contact-info`, and the submitter domain of the report mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRptReporter {
    /// `organization`.
    pub organization: String,
    /// `contact`.
    pub contact: String,
    /// `submitter`.
    pub submitter: String,
}

/// Everything sending reports takes, each key checked present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRptSending {
    /// Who the reports name.
    pub reporter: TlsRptReporter,
    /// The From address of report mail.
    pub from: String,
    /// The selector of the DKIM key that signs report mail.
    pub dkim_selector: String,
    /// The PEM private key that signs report mail.
    pub dkim_key: PathBuf,
    /// Reports leave at a random time within this window after 00:00 UTC.
    pub send_window: Duration,
}

/// The send window when `send_window` is absent.
const SEND_WINDOW: Duration = Duration::from_secs(4 * 3600);

impl Default for TlsRpt {
    /// Off, with no key written.
    fn default() -> TlsRpt {
        TlsRpt::Off(TlsRptOff {
            send_window: SEND_WINDOW,
            ..TlsRptOff::default()
        })
    }
}

impl TlsRpt {
    /// The sending settings, when reports are sent.
    pub fn sending(&self) -> Option<&TlsRptSending> {
        match self {
            TlsRpt::On(s) => Some(s),
            TlsRpt::Off(_) => None,
        }
    }

    /// Who reports name: always known when they are sent; with reporting
    /// off, only when `organization`, `contact` and `submitter` are all set.
    pub fn reporter(&self) -> Option<TlsRptReporter> {
        match self {
            TlsRpt::On(s) => Some(s.reporter.clone()),
            TlsRpt::Off(off) => Some(TlsRptReporter {
                organization: off.organization.clone()?,
                contact: off.contact.clone()?,
                submitter: off.submitter.clone()?,
            }),
        }
    }
}

impl Serialize for TlsRpt {
    /// The keys of the `[tlsrpt]` section, as `config check --json` has
    /// always shown them (an absent key is `null`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let off = match self {
            TlsRpt::Off(off) => off.clone(),
            TlsRpt::On(on) => TlsRptOff {
                organization: Some(on.reporter.organization.clone()),
                contact: Some(on.reporter.contact.clone()),
                submitter: Some(on.reporter.submitter.clone()),
                from: Some(on.from.clone()),
                dkim_selector: Some(on.dkim_selector.clone()),
                dkim_key: Some(on.dkim_key.clone()),
                send_window: on.send_window,
            },
        };
        let mut s = serializer.serialize_struct("TlsRpt", 8)?;
        s.serialize_field("enabled", &self.sending().is_some())?;
        s.serialize_field("organization", &off.organization)?;
        s.serialize_field("contact", &off.contact)?;
        s.serialize_field("submitter", &off.submitter)?;
        s.serialize_field("from", &off.from)?;
        s.serialize_field("dkim_selector", &off.dkim_selector)?;
        s.serialize_field("dkim_key", &off.dkim_key)?;
        s.serialize_field("send_window", &off.send_window)?;
        s.end()
    }
}

/// `[tlsrpt]`: with `enabled = true` every key but `send_window` (4 hours
/// by default) is required.
pub(crate) fn build(f: TlsRptFile, c: &mut Checker) -> TlsRpt {
    let off = TlsRptOff {
        send_window: c.duration("tlsrpt.send_window", &f.send_window, SEND_WINDOW),
        organization: f.organization,
        contact: f.contact,
        submitter: f.submitter,
        from: f.from,
        dkim_selector: f.dkim_selector,
        dkim_key: f.dkim_key.map(PathBuf::from),
    };
    if !f.enabled {
        return TlsRpt::Off(off);
    }
    for (key, present) in [
        ("tlsrpt.organization", off.organization.is_some()),
        ("tlsrpt.contact", off.contact.is_some()),
        ("tlsrpt.submitter", off.submitter.is_some()),
        ("tlsrpt.from", off.from.is_some()),
        ("tlsrpt.dkim_selector", off.dkim_selector.is_some()),
        ("tlsrpt.dkim_key", off.dkim_key.is_some()),
    ] {
        if !present {
            c.fail(key, "required when tlsrpt.enabled = true");
        }
    }
    sending(off).map_or_else(TlsRpt::default, TlsRpt::On)
}

/// The sending settings when every key is present (`None`: a problem was
/// recorded and the config is not used).
fn sending(off: TlsRptOff) -> Option<TlsRptSending> {
    Some(TlsRptSending {
        reporter: TlsRptReporter {
            organization: off.organization?,
            contact: off.contact?,
            submitter: off.submitter?,
        },
        from: off.from?,
        dkim_selector: off.dkim_selector?,
        dkim_key: off.dkim_key?,
        send_window: off.send_window,
    })
}
