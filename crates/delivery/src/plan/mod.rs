//! The outbound decision (STYLE 6: one decision, one place): where mail for
//! a domain goes and what TLS each host must show, decided by one pure
//! function, [`decide`], from [`Facts`] gathered beforehand by a
//! [`Planner`]. The deliverer executes the [`DeliveryPlan`]; `portcullis
//! policy explain` prints the same plan.
//!
//! A configured route wins. Otherwise the MX records, sorted by preference
//! with equal preferences shuffled; no MX records means the domain itself
//! is the one host (implicit MX); a null MX (RFC 7505) means the domain
//! accepts no mail. MX addresses that are this server are dropped. The
//! recipient domain's MTA-STS policy (RFC 8461) decides which MX hosts
//! qualify and whether PKIX-valid TLS is mandatory.

mod decide;
mod facts;
mod gather;
mod outcome;
#[cfg(test)]
mod tests;

pub use decide::{consults_dns, consults_policy, decide};
pub use facts::{Dane, Facts, HostAddresses, HostSource, MxAnswer, NoHosts, route_for};
pub use gather::Planner;
pub use outcome::{
    Contact, DeferCause, DeliveryPlan, Outcome, PlannedHost, PolicyMatch, Rule, SkipReason,
    StsRule, TlsRequirement,
};
