//! The start-up self-check of `[dns] dnssec = "validate"`: once, in the
//! background (never before accepting), the root's keys are asked of the
//! configured nameservers and validated. When the path strips DNSSEC
//! records, every lookup (SPF, DMARC, MX, TLSA) is bogus, which sessions
//! see only as a temporary DNS failure on every message; this says so
//! once, naming the key to change.

use portcullis_dns::{DnssecHealth, HickoryResolver};
use tracing::{error, info, warn};

/// What an operator should do when validation cannot work through the
/// configured nameservers.
const REMEDY: &str = "point [dns] nameservers at resolvers that pass DNSSEC records (unbound, BIND, most public resolvers), or set [dns] dnssec = \"trust-ad\" with a validating resolver on loopback, or \"off\" (no DANE)";

/// Runs the check and logs its finding.
pub async fn run(resolver: HickoryResolver) {
    match resolver.dnssec_self_check().await {
        DnssecHealth::NotValidating => {}
        DnssecHealth::Secure => {
            info!("DNSSEC self-check: the root's keys validate through [dns] nameservers");
        }
        DnssecHealth::Insecure => {
            error!(
                remedy = REMEDY,
                "DNSSEC self-check: the root's keys came back without proof through [dns] nameservers; validation cannot work and lookups may fail"
            );
        }
        DnssecHealth::Bogus(why) => {
            error!(
                error = %why,
                remedy = REMEDY,
                "DNSSEC self-check: the root's keys do not validate through [dns] nameservers; every lookup will be a temporary failure and mail will wait"
            );
        }
        DnssecHealth::Unknown(why) => {
            warn!(error = %why, "DNSSEC self-check: could not ask for the root's keys; validation not checked");
        }
    }
}
