//! [`ResolverDns`]: the screen's DNS on any [`Resolver`].

use crate::{BoxFuture, ScreenDns};
use portcullis_dns::{DnsError, Resolver, TtlError};
use std::net::Ipv4Addr;
use std::time::Duration;

/// [`ScreenDns`] on a [`Resolver`] (the server's `HickoryResolver` built
/// from `[dns]`, shared as `Arc<HickoryResolver>`; a `MemoryResolver` in
/// unit tests): every lookup of the screen goes through `[dns]`.
#[derive(Debug, Clone)]
pub struct ResolverDns<R: Resolver> {
    resolver: R,
}

impl<R: Resolver> ResolverDns<R> {
    /// The screen's DNS on `resolver`.
    pub fn new(resolver: R) -> ResolverDns<R> {
        ResolverDns { resolver }
    }

    /// The resolver underneath.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }
}

impl<R: Resolver> ScreenDns for ResolverDns<R> {
    fn ipv4_ttl<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<Ipv4Addr>, Duration), DnsError>> {
        Box::pin(async move { self.resolver.ipv4_ttl(name).await.map_err(|e| e.error) })
    }

    fn ipv4_cacheable<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<Ipv4Addr>, Duration), TtlError>> {
        Box::pin(self.resolver.ipv4_ttl(name))
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(self.resolver.txt(name))
    }
}
