//! The screen in front of the queue: what decides, before a message is
//! taken, whether this client may send to this recipient now.
//!
//! - **Recipient verification** ([`recipients`]): a file of valid addresses
//!   per accepted domain, or an RCPT probe of the domain's route (cached in
//!   the state store, a few probes at once per route). Unknown recipients
//!   get 550 5.1.1 at RCPT, so the server never emits backscatter.
//! - **DNS lists** ([`dnsbl`]): the client's address looked up in every
//!   `[[dnsbl]]` zone while the greeting is sent, scored by weight (negative:
//!   an allow list), cached by TTL. A DNS failure scores nothing.
//! - **Rates** ([`rates`]): connections, messages and recipients per minute
//!   per IPv4 address / IPv6 /64, in a bounded in-memory table.
//! - **Greylisting** ([`greylist`]): keyed on the SPF-verified sender
//!   domain and the recipient when SPF passed, else on the classic triplet
//!   (client /24 or /64, sender, recipient).
//!
//! State that must outlive a restart (greylist entries, cached probe
//! answers) lives behind the narrow [`state::ScreenStore`] trait, so a
//! shared backend can hold it later; [`state::SledScreenStore`] keeps it in
//! the server's sled store. Time comes from an injected
//! [`Clock`](portcullis_types::Clock).
//!
//! Trusted networks and authenticated sessions are never screened (no
//! DNSBL, rates or greylisting); recipient verification applies to every
//! recipient at an accepted domain. `postmaster@` of an accepted domain is
//! never refused by the DNSBL or greylisted.

#![forbid(unsafe_code)]

pub mod dnsbl;
pub mod greylist;
pub mod rates;
pub mod recipients;
pub mod state;

mod screen;
#[cfg(test)]
mod testkit;

pub use dnsbl::ResolverDns;
pub use screen::{
    ClearTarget, Cleared, GreylistLine, ListLine, RateLine, RcptFacts, Screen, ScreenBuilder,
    ScreenError, ScreenReport,
};

/// A boxed future, for the object-safe traits of this crate (the state
/// store, the recipient probe, the DNS lookups).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The DNS lookups of the screen, object-safe: the DNS list queries (with
/// their TTL, which the cache keeps answers for) and TXT (DMARC policies).
/// [`ResolverDns`] implements it on any [`portcullis_dns::Resolver`].
pub trait ScreenDns: Send + Sync + 'static {
    /// A records of `name` and how long they may be cached.
    fn ipv4_ttl<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<
        'a,
        Result<(Vec<std::net::Ipv4Addr>, std::time::Duration), portcullis_dns::DnsError>,
    >;
    /// [`ScreenDns::ipv4_ttl`], and for a negative answer (NXDOMAIN, no
    /// records) how long it may be cached, when DNS said so (the SOA's
    /// negative TTL, RFC 2308 §5). What the DNS lists look clients up with;
    /// the default knows no negative TTL (the lists then use their own).
    fn ipv4_cacheable<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<
        'a,
        Result<(Vec<std::net::Ipv4Addr>, std::time::Duration), portcullis_dns::TtlError>,
    > {
        Box::pin(async move {
            self.ipv4_ttl(name)
                .await
                .map_err(portcullis_dns::TtlError::from)
        })
    }
    /// TXT records of `name`.
    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, portcullis_dns::DnsError>>;
}
