//! Our own domains' side of transport security (RFC 8461, RFC 8460):
//!
//! - **The policy we serve** ([`OwnPolicy`]): generated from `[publish]`
//!   for each accepted domain, with an `id` derived from its content, so
//!   the `_mta-sts` TXT record's id changes exactly when the policy does.
//! - **The outside-in check** ([`check`], `portcullis policy own`): what a
//!   remote sender sees of our domains (the TXT records, the policy
//!   served over HTTPS, the MX hosts and their certificates) against what
//!   we mean to publish, with the records that fix each gap.

pub mod check;
pub mod policy;

pub use policy::{OwnPolicy, own_policy};
