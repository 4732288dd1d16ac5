//! Our own domains' side of transport security (RFC 8461, RFC 8460):
//!
//! - **The policy we serve** ([`OwnPolicy`]): generated from `[publish]`
//!   for each accepted domain, with an `id` derived from its content, so
//!   the `_mta-sts` TXT record's id changes exactly when the policy does.
//! - **The outside-in check** ([`check`], `portcullis policy own`): what a
//!   remote sender sees of our domains (the TXT records, the policy
//!   served over HTTPS, the MX hosts and their certificates) against what
//!   we mean to publish, with the records that fix each gap.
//! - **The `mta-sts` listener** ([`server`]): HTTPS serving that policy at
//!   `https://mta-sts.<domain>/.well-known/mta-sts.txt` for the domains of
//!   the [`Site`], and taking TLS reports POSTed to `/tlsrpt`.
//!
//! Threat model: the listener faces anyone on the Internet. It speaks one
//! request per connection, parses heads strictly, bounds connections,
//! bytes and time, never redirects, and reads the policy's MX names only
//! from our own DNS answers (kept through DNS failures).

pub mod check;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod site;

pub use metrics::{Outcome, PublishMetrics};
pub use policy::{OwnPolicy, own_policy};
pub use server::{Limits, Server};
pub use site::{Lookup, Site};
