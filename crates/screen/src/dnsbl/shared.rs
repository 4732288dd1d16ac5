//! Cluster mode: the DNS lists' answers shared by the nodes, so a client
//! looked up by one node is not looked up again by the others until the
//! answer's TTL runs out. Consulted by the lookup task (started at
//! connect, off the session's critical path) before its DNS query, and
//! given every answer the local cache keeps; a failed lookup is never
//! shared. On a single node there is none.

use crate::BoxFuture;
use portcullis_types::Domain;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// A list's answer about a client, as nodes share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAnswer {
    /// The list's A records when the client is listed; `None`: not
    /// listed.
    pub listed: Option<Vec<Ipv4Addr>>,
    /// How much longer it may be used.
    pub remaining: Duration,
}

/// Where the nodes of a cluster share list answers. Implementations deal
/// with their own failures (counted, logged): an answer they cannot give
/// is `None`, and the node asks DNS.
pub trait SharedLists: Send + Sync + 'static {
    /// The live answer of `zone` about `ip`, when a node has one.
    fn get<'a>(&'a self, ip: IpAddr, zone: &'a Domain) -> BoxFuture<'a, Option<SharedAnswer>>;

    /// Shares `answer` of `zone` about `ip`.
    fn put<'a>(&'a self, ip: IpAddr, zone: &'a Domain, answer: SharedAnswer) -> BoxFuture<'a, ()>;

    /// Removes every answer about `ip` (`screen clear`), so that no node
    /// uses them again; how many.
    fn forget(&self, ip: IpAddr) -> BoxFuture<'_, u64>;
}
