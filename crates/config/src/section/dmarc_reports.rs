//! `[dmarc_reports]`: the RFC 7489 §7.2 aggregate reports we send to the
//! domains whose mail we verified. Each key a report needs falls back to
//! the `[tlsrpt]` key of the same meaning, so an operator who set up TLS
//! reports writes only `enabled = true`; validation makes sure a server
//! that sends reports has every key, so the runtime type holds them
//! without `Option`s.

use crate::check::Checker;
use crate::section::tlsrpt::TlsRpt;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[dmarc_reports]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmarcReportsFile {
    /// `enabled`: record aggregates and send daily reports (default false).
    #[serde(default)]
    pub enabled: bool,
    /// `organization`: our `org_name` in reports (default: `[tlsrpt]`'s).
    pub organization: Option<String>,
    /// `contact`: the `email` in reports (default: `[tlsrpt] contact`
    /// without its `mailto:`).
    pub contact: Option<String>,
    /// `from`: the From address of report mail (default: `[tlsrpt] from`,
    /// but only while the key is `[tlsrpt]`'s too).
    pub from: Option<String>,
    /// `dkim_selector`: selector of the key that signs reports (default:
    /// `[tlsrpt]`'s).
    pub dkim_selector: Option<String>,
    /// `dkim_key`: PEM private key that signs reports (default:
    /// `[tlsrpt]`'s).
    pub dkim_key: Option<String>,
    /// `send_window`: reports leave at a random time within this window
    /// after 00:00 UTC (default: `[tlsrpt]`'s, 4 hours).
    pub send_window: Option<String>,
}

/// DMARC aggregate reports as the server runs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DmarcReports {
    /// `enabled = false` (the default): nothing is recorded or sent.
    #[default]
    Off,
    /// `enabled = true`, with every key a report takes.
    On(DmarcReportsSending),
}

impl DmarcReports {
    /// The sending settings, when reports are on.
    pub fn sending(&self) -> Option<&DmarcReportsSending> {
        match self {
            DmarcReports::On(s) => Some(s),
            DmarcReports::Off => None,
        }
    }
}

impl serde::Serialize for DmarcReports {
    /// `config check --json`: `enabled` and, when on, every key in force
    /// (borrowed ones included).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("DmarcReports", 2)?;
        s.serialize_field("enabled", &self.sending().is_some())?;
        s.serialize_field("sending", &self.sending())?;
        s.end()
    }
}

/// Everything recording and sending reports takes, each key present.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DmarcReportsSending {
    /// `org_name` of the reports.
    pub organization: String,
    /// `email` of the reports: an address, without `mailto:`.
    pub contact: String,
    /// The From address of report mail; its domain is the report's
    /// submitter and the `d=` of its signature.
    pub from: String,
    /// The selector of the key that signs report mail.
    pub dkim_selector: String,
    /// The PEM private key that signs report mail.
    pub dkim_key: PathBuf,
    /// Reports leave at a random time within this window after 00:00 UTC.
    pub send_window: Duration,
}

/// The `[tlsrpt]` keys a DMARC report may borrow, as written.
struct Borrowed {
    organization: Option<String>,
    contact: Option<String>,
    from: Option<String>,
    dkim_selector: Option<String>,
    dkim_key: Option<PathBuf>,
    send_window: Duration,
}

fn borrowed(tlsrpt: &TlsRpt) -> Borrowed {
    match tlsrpt {
        TlsRpt::On(on) => Borrowed {
            organization: Some(on.reporter.organization.clone()),
            contact: Some(on.reporter.contact.clone()),
            from: Some(on.from.clone()),
            dkim_selector: Some(on.dkim_selector.clone()),
            dkim_key: Some(on.dkim_key.clone()),
            send_window: on.send_window,
        },
        TlsRpt::Off(off) => Borrowed {
            organization: off.organization.clone(),
            contact: off.contact.clone(),
            from: off.from.clone(),
            dkim_selector: off.dkim_selector.clone(),
            dkim_key: off.dkim_key.clone(),
            send_window: off.send_window,
        },
    }
}

/// `[dmarc_reports]`: with `enabled = true` every key must be present,
/// written here or borrowed from `[tlsrpt]` (the error names the key
/// here). `from` is borrowed only when the key is too: the report is
/// signed with `d=` the From's domain, so a key of its own needs a From of
/// its own.
pub(crate) fn build(f: &DmarcReportsFile, tlsrpt: &TlsRpt, c: &mut Checker) -> DmarcReports {
    let t = borrowed(tlsrpt);
    let send_window = match &f.send_window {
        Some(_) => c.duration("dmarc_reports.send_window", &f.send_window, t.send_window),
        None => t.send_window,
    };
    if !f.enabled {
        return DmarcReports::Off;
    }
    let own_key = f.dkim_key.is_some() || f.dkim_selector.is_some();
    let organization = f.organization.clone().or(t.organization);
    // RFC 7489 §7.2.1.1 `email` is an address; TLS-RPT's contact is
    // usually a `mailto:` URI.
    let contact = f.contact.clone().or_else(|| {
        t.contact
            .map(|c| c.strip_prefix("mailto:").map(str::to_owned).unwrap_or(c))
    });
    let from = f.from.clone().or(if own_key { None } else { t.from });
    let dkim_selector = f.dkim_selector.clone().or(t.dkim_selector);
    let dkim_key = f.dkim_key.as_ref().map(PathBuf::from).or(t.dkim_key);
    let mut missing = false;
    for (key, present) in [
        ("dmarc_reports.organization", organization.is_some()),
        ("dmarc_reports.contact", contact.is_some()),
        ("dmarc_reports.from", from.is_some()),
        ("dmarc_reports.dkim_selector", dkim_selector.is_some()),
        ("dmarc_reports.dkim_key", dkim_key.is_some()),
    ] {
        if !present {
            missing = true;
            c.fail(
                key,
                "required when dmarc_reports.enabled = true (and not borrowed from [tlsrpt])",
            );
        }
    }
    if let Some(from) = &from
        && !is_address(from)
    {
        missing = true;
        c.fail("dmarc_reports.from", format!("{from:?} is not an address"));
    }
    if let Some(contact) = &contact
        && !is_address(contact)
    {
        missing = true;
        c.fail(
            "dmarc_reports.contact",
            format!("{contact:?} is not an address"),
        );
    }
    match (organization, contact, from, dkim_selector, dkim_key) {
        (Some(organization), Some(contact), Some(from), Some(dkim_selector), Some(dkim_key))
            if !missing =>
        {
            DmarcReports::On(DmarcReportsSending {
                organization,
                contact,
                from,
                dkim_selector,
                dkim_key,
                send_window,
            })
        }
        _ => DmarcReports::Off,
    }
}

/// `local@domain` with both parts present and no spaces or angle brackets.
fn is_address(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !s.contains(|ch: char| ch.is_whitespace() || ch == '<' || ch == '>')
        }
        None => false,
    }
}
