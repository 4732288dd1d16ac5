//! Our own domains' side of transport security (RFC 8461, RFC 8460):
//!
//! - **The policy we serve** ([`OwnPolicy`]): generated from `[publish]`
//!   for each accepted domain, with an `id` derived from its content, so
//!   the `_mta-sts` TXT record's id changes exactly when the policy does.

pub mod policy;

pub use policy::{OwnPolicy, own_policy};
