//! MTA-STS for Portcullis (RFC 8461, SMTP MTA Strict Transport Security):
//! discovery of the `_mta-sts` TXT record (§3.1, [`record`]), the strict
//! policy parser and MX matching (§3.2, §4.1, [`Policy`]), the HTTPS fetch
//! (§3.3, [`PolicyFetcher`]), the policy cache (§5.1) and operator pins
//! behind [`PolicyStore`] (in sled, [`SledPolicyStore`] over
//! [`PolicyCache`], or shared by a cluster's nodes in its database, where
//! [`PolicyStore::fetch_turn`] also elects one fetcher per domain),
//! proactive refresh ([`run_refresh`]), pinned policies
//! ([`load_pins_dir`], [`PolicyEngine::pin`]), and the engine that decides
//! which policy applies to a delivery ([`PolicyEngine::policy_for`]).
//! Failures map onto RFC 8460 (TLS-RPT) result types through
//! `TlsResultType::from(&StsError)`.
//!
//! Threat model (RFC 8461 §10.2): an attacker who controls the network
//! between us and a recipient domain can remove or forge unsigned DNS
//! records, block or tamper with the HTTPS fetch of the policy, and strip
//! STARTTLS from the SMTP session. MTA-STS cannot stop that on first
//! contact (trust on first use); what makes it work afterwards is the
//! **cache**: once a policy has been fetched over PKIX-validated HTTPS, it
//! stays in force until its `max_age` expires, whatever DNS or the policy
//! host say in the meantime. Only a successfully fetched policy replaces it
//! (a domain withdraws with mode `none`), a vanished TXT record, a temporary
//! DNS failure or a failed fetch never does, nothing is evicted for space,
//! and policies are refreshed before they expire so that they do not lapse.
//! The fetch itself follows no redirects, uses only our resolver and our
//! trust anchors, caps the body at 64 KiB and parses strictly. Pins let an
//! operator protect important partners before the first fetch, or override
//! a broken policy for a bounded time, with a logged reason.
//!
//! This crate decides *which* policy applies; applying it to an SMTP
//! session (MX filtering, mandatory PKIX-verified STARTTLS) is the delivery
//! crate's job.

#![forbid(unsafe_code)]

mod cache;
mod diff;
mod engine;
mod error;
mod fetch;
mod metrics;
mod pin;
mod policy;
pub mod record;
mod refresh;
mod state;
mod stored;

pub use cache::{CachedPolicy, PolicyCache};
pub use diff::line_diff;
pub use engine::{NoPolicy, PolicyEngine, PolicyLookup, PolicySource, RefreshOutcome};
pub use error::StsError;
pub use fetch::{
    DEFAULT_PORT, DEFAULT_TIMEOUT, MAX_POLICY_SIZE, PolicyFetcher, PolicyFetcherBuilder,
    policy_host,
};
pub use pin::{PIN_ID, Pin, PinSource, load_pins_dir};
pub use policy::{MAX_MAX_AGE, Mode, MxPattern, Policy};
pub use record::{NoPolicyReason, RecordLookup, StsRecord};
pub use refresh::{
    EXPIRED_GRACE, RefreshOptions, refresh_at, refresh_due, refresh_pass, run_refresh,
    run_refresh_with,
};
pub use state::{BoxFuture, PolicyStore, SledPolicyStore, Turn};
