//! The configuration file as serde sees it: every top-level key
//! deserialised into its section's model (see [`crate::section`]), a
//! broken or unknown one recorded as a problem without stopping the rest.

use crate::check::{Checker, Problem};
use crate::section::admin::AdminFile;
use crate::section::cluster::ClusterFile;
use crate::section::delivery::DeliveryFile;
use crate::section::dmarc_reports::DmarcReportsFile;
use crate::section::dns::DnsFile;
use crate::section::dnsbl::DnsblFile;
use crate::section::greylist::GreylistFile;
use crate::section::limits::LimitsFile;
use crate::section::listen::ListenFile;
use crate::section::log::LogFile;
use crate::section::mta_sts::MtaStsFile;
use crate::section::publish::PublishFile;
use crate::section::queue::QueueFile;
use crate::section::recipients::RecipientsFile;
use crate::section::relay::RelayFile;
use crate::section::routes::RoutesFile;
use crate::section::screen::ScreenFile;
use crate::section::smtp::SmtpFile;
use crate::section::submission::SubmissionFile;
use crate::section::tls::TlsFile;
use crate::section::tlsrpt::TlsRptFile;
use crate::section::verify::VerifyFile;

/// All sections of the file, each already deserialised (or defaulted when
/// absent or broken: its problem is recorded separately).
#[derive(Default)]
pub(crate) struct Sections {
    /// `hostname`.
    pub hostname: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<String>,
    /// `[[listen]]`; `None` when absent.
    pub listen: Option<Vec<ListenFile>>,
    /// `[tls]`.
    pub tls: TlsFile,
    /// `[relay]`.
    pub relay: RelayFile,
    /// `[routes]`.
    pub routes: RoutesFile,
    /// `[dns]`.
    pub dns: DnsFile,
    /// `[delivery]`.
    pub delivery: DeliveryFile,
    /// `[queue]`.
    pub queue: QueueFile,
    /// `[mta_sts]`.
    pub mta_sts: MtaStsFile,
    /// `[tlsrpt]`.
    pub tlsrpt: TlsRptFile,
    /// `[submission]`.
    pub submission: SubmissionFile,
    /// `[admin]`.
    pub admin: AdminFile,
    /// `[limits]`.
    pub limits: LimitsFile,
    /// `[smtp]`.
    pub smtp: SmtpFile,
    /// `[log]`.
    pub log: LogFile,
    /// `[verify]`.
    pub verify: VerifyFile,
    /// `[recipients]`.
    pub recipients: RecipientsFile,
    /// `[[dnsbl]]`.
    pub dnsbl: Vec<DnsblFile>,
    /// `[screen]`.
    pub screen: ScreenFile,
    /// `[greylist]`.
    pub greylist: GreylistFile,
    /// `[publish]`.
    pub publish: PublishFile,
    /// `[dmarc_reports]`.
    pub dmarc_reports: DmarcReportsFile,
    /// `[cluster]`; `None` when absent.
    pub cluster: Option<ClusterFile>,
}

impl Sections {
    /// Deserialises one top-level key into its section, recording a
    /// problem (with the offending nested key when serde names one) on
    /// failure, and an unknown key as a problem of its own.
    pub fn insert(&mut self, key: &str, value: toml::Value, c: &mut Checker) {
        match key {
            "hostname" => self.hostname = take::<Option<String>>(key, value, c),
            "data_dir" => self.data_dir = take::<Option<String>>(key, value, c),
            "listen" => self.listen = Some(take::<Vec<ListenFile>>(key, value, c)),
            "tls" => self.tls = take(key, value, c),
            "relay" => self.relay = take(key, value, c),
            "routes" => self.routes = take(key, value, c),
            "dns" => self.dns = take(key, value, c),
            "delivery" => self.delivery = take(key, value, c),
            "queue" => self.queue = take(key, value, c),
            "mta_sts" => self.mta_sts = take(key, value, c),
            "tlsrpt" => self.tlsrpt = take(key, value, c),
            "submission" => self.submission = take(key, value, c),
            "admin" => self.admin = take(key, value, c),
            "limits" => self.limits = take(key, value, c),
            "smtp" => self.smtp = take(key, value, c),
            "log" => self.log = take(key, value, c),
            "verify" => self.verify = take(key, value, c),
            "recipients" => self.recipients = take(key, value, c),
            "dnsbl" => self.dnsbl = take::<Vec<DnsblFile>>(key, value, c),
            "screen" => self.screen = take(key, value, c),
            "greylist" => self.greylist = take(key, value, c),
            "publish" => self.publish = take(key, value, c),
            "dmarc_reports" => self.dmarc_reports = take(key, value, c),
            "cluster" => self.cluster = Some(take(key, value, c)),
            other => c.fail(other, format!("unknown key {other:?}")),
        }
    }
}

/// One section's model from its TOML value. Every problem serde finds is
/// recorded; an unknown key is dropped and the rest checked again, so one
/// misspelt key does not hide a bad value beside it. A section that still
/// does not deserialise is its default (its problem is recorded).
fn take<T: serde::de::DeserializeOwned + Default>(
    key: &str,
    mut value: toml::Value,
    c: &mut Checker,
) -> T {
    loop {
        match value.clone().try_into::<T>() {
            Ok(v) => return v,
            Err(e) => {
                let message = e.message().trim().to_string();
                // serde names the unknown field: point at it, not at the table.
                let field = message
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split_once('`'))
                    .map(|(field, _)| field.to_string());
                c.problems.push(Problem {
                    key: field
                        .as_ref()
                        .map(|f| format!("{key}.{f}"))
                        .unwrap_or_else(|| key.to_string()),
                    message,
                });
                let removed = match (field, &mut value) {
                    (Some(f), toml::Value::Table(t)) => t.remove(&f).is_some(),
                    _ => false,
                };
                if !removed {
                    return T::default();
                }
            }
        }
    }
}
