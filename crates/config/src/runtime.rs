//! The whole typed runtime configuration: every value parsed, checked and
//! defaulted once, here, by the sections' `build`s; code outside this
//! crate sees only these types and never derives a default again. An
//! `Option` left in a runtime type means "absent" changes what the server
//! does (its doc comment says how), never "use the default".

use crate::check::Checker;
use crate::file::Sections;
use crate::section::admin::Admin;
use crate::section::cluster::Cluster;
use crate::section::delivery::Delivery;
use crate::section::dmarc_reports::DmarcReports;
use crate::section::dns::Dns;
use crate::section::dnsbl::Dnsbl;
use crate::section::greylist::Greylist;
use crate::section::limits::Limits;
use crate::section::listen::Listener;
use crate::section::log::LogFormat;
use crate::section::mta_sts::MtaSts;
use crate::section::publish::Publish;
use crate::section::queue::Queue;
use crate::section::recipients::Recipients;
use crate::section::relay::Relay;
use crate::section::routes::Route;
use crate::section::screen::Screen;
use crate::section::smtp::BareNewline;
use crate::section::submission::Submission;
use crate::section::tls::Tls;
use crate::section::tlsrpt::TlsRpt;
use crate::section::verify::Verify;
use crate::section::{
    admin, cluster, delivery, dmarc_reports, dns, dnsbl, greylist, limits, listen, log, mta_sts,
    publish, queue, recipients, relay, routes, screen, smtp, submission, tls, tlsrpt, top, verify,
};
use portcullis_types::Domain;
use std::path::PathBuf;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    /// Our host name (greeting, EHLO, Received).
    pub hostname: String,
    /// Where the store, generated certificates and the admin socket live.
    pub data_dir: PathBuf,
    /// Listening sockets.
    pub listeners: Vec<Listener>,
    /// Certificates.
    pub tls: Tls,
    /// Relay policy.
    pub relay: Relay,
    /// Static routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
    /// Outbound delivery.
    pub delivery: Delivery,
    /// Queue schedule.
    pub queue: Queue,
    /// MTA-STS policy fetch port.
    pub mta_sts: MtaSts,
    /// TLS-RPT.
    pub tlsrpt: TlsRpt,
    /// `[submission] users_file`; `None`: no password accounts, so SMTP
    /// AUTH is offered only with `[submission.oauth]`.
    pub users_file: Option<PathBuf>,
    /// Authenticated submission.
    pub submission: Submission,
    /// Admin interface.
    pub admin: Admin,
    /// Limits.
    pub limits: Limits,
    /// `[smtp] bare_newline`.
    pub bare_newline: BareNewline,
    /// Sender verification.
    pub verify: Verify,
    /// `[smtp] banner`: text after the hostname in the greeting.
    pub banner: String,
    /// `[log] format`.
    pub log_format: LogFormat,
    /// `[log] level`: the log filter.
    pub log_level: String,
    /// `[recipients]`: recipient verification.
    pub recipients: Recipients,
    /// `[[dnsbl]]`: DNS block and allow lists.
    pub dnsbl: Vec<Dnsbl>,
    /// `[screen]`: the DNSBL threshold and per-client rates.
    pub screen: Screen,
    /// `[greylist]`.
    pub greylist: Greylist,
    /// `[publish]`: our own domains' MTA-STS policy and TLS-RPT address.
    pub publish: Publish,
    /// `[dmarc_reports]`: DMARC aggregate reports we send (RFC 7489 §7.2).
    pub dmarc_reports: DmarcReports,
    /// `[cluster]`: the shared PostgreSQL database; `None`: single node,
    /// every store in the embedded sled only.
    pub cluster: Option<Cluster>,
}

impl Config {
    /// The route for `domain`, if one is configured: an exact entry wins over
    /// a subdomain (`.domain`) entry, and a longer parent over a shorter one.
    pub fn route_for(&self, domain: &Domain) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| {
                &r.domain == domain || (r.include_subdomains && domain.is_within(&r.domain))
            })
            .max_by_key(|r| (&r.domain == domain, r.domain.as_str().len()))
    }
}

/// Turns the sections into the runtime config, recording every problem.
/// Sections that depend on another are built after it: the listeners
/// share `[limits] max_connections`, the admin socket lives in `data_dir`.
pub(crate) fn build(s: Sections, system_hostname: &str, c: &mut Checker) -> Config {
    let hostname = top::hostname(s.hostname, system_hostname, c);
    let data_dir = top::data_dir(s.data_dir);
    let limits = limits::build(&s.limits, c);
    let smtp = smtp::build(s.smtp, c);
    let log = log::build(s.log, c);
    let relay = relay::build(&s.relay, c);
    let recipients = recipients::build(&s.recipients, &relay.accepted_domains, c);
    let tlsrpt = tlsrpt::build(s.tlsrpt, c);
    let dmarc_reports = dmarc_reports::build(&s.dmarc_reports, &tlsrpt, c);
    let cluster = s
        .cluster
        .as_ref()
        .and_then(|f| cluster::build(f, &hostname, c));
    Config {
        hostname,
        listeners: listen::build(s.listen.as_deref(), limits.max_connections, c),
        tls: tls::build(s.tls, c),
        relay,
        routes: routes::build(&s.routes, c),
        dns: dns::build(&s.dns, c),
        delivery: delivery::build(&s.delivery, c),
        queue: queue::build(&s.queue, c),
        mta_sts: mta_sts::build(&s.mta_sts, c),
        tlsrpt,
        dmarc_reports,
        users_file: s.submission.users_file.as_ref().map(PathBuf::from),
        submission: submission::build(&s.submission, c),
        admin: admin::build(&s.admin, &data_dir, c),
        data_dir,
        limits,
        bare_newline: smtp.bare_newline,
        verify: verify::build(&s.verify, c),
        banner: smtp.banner,
        log_format: log.format,
        log_level: log.level,
        recipients,
        dnsbl: dnsbl::build(&s.dnsbl, c),
        screen: screen::build(&s.screen, c),
        greylist: greylist::build(&s.greylist, c),
        publish: publish::build(&s.publish, c),
        cluster,
    }
}
