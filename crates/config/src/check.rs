//! The collector every section validates into: each problem is kept with
//! its key path, none stops the others from being found. The small value
//! checks shared by several sections live here too, so a key of the same
//! kind is checked (and its error worded) the same way in every section.

use crate::duration::parse_duration;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One problem: the key path and what is wrong. The line is filled in later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// e.g. `relay.accepted_domains[1]`.
    pub key: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// Collects problems while the sections are built.
#[derive(Default)]
pub(crate) struct Checker {
    /// Everything found so far, in the order found (the report sorts by
    /// line; problems on one line keep this order).
    pub problems: Vec<Problem>,
}

impl Checker {
    /// Records that `key` is wrong.
    pub fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// A duration key: `default` when absent, and when malformed (then
    /// the problem is recorded).
    pub fn duration(&mut self, key: &str, value: &Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => parse_duration(text).unwrap_or_else(|e| {
                self.fail(key, e);
                default
            }),
        }
    }

    /// A key naming one of two choices: the first when absent, and when
    /// the value is neither (recorded).
    pub fn one_of<T: Copy>(
        &mut self,
        key: &str,
        value: Option<&str>,
        choices: [(&str, T); 2],
    ) -> T {
        let [(a, first), (b, second)] = choices;
        match value {
            None => first,
            Some(v) if v == a => first,
            Some(v) if v == b => second,
            Some(other) => {
                self.fail(key, format!("{other:?} is not {a:?} or {b:?}"));
                first
            }
        }
    }

    /// An `ip:port` key; `None` (and a recorded problem) when malformed.
    pub fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail(
                    key,
                    format!("{text:?} is not an ip:port address (IPv6 as \"[::1]:25\")"),
                );
                None
            }
        }
    }

    /// A count that must not be zero: `default` when absent or zero (zero
    /// is recorded as a problem).
    pub fn positive(&mut self, key: &str, value: Option<u32>, default: u32) -> u32 {
        match value {
            Some(0) => {
                self.fail(key, "must be greater than zero");
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    /// A size of what a session holds in memory, from 4 KiB (a header
    /// section of some length must fit) to 64 MiB (more defeats the point
    /// of the bound: 1,000 sessions would hold 64 GiB); `default` when
    /// absent or out of range (recorded).
    pub fn memory_size(&mut self, key: &str, value: Option<u64>, default: usize) -> usize {
        match value {
            None => default,
            Some(v) if (4096..=64 * 1024 * 1024).contains(&v) => v as usize,
            Some(_) => {
                self.fail(key, "must be between 4096 and 67108864 octets");
                default
            }
        }
    }
}

/// A network written as a CIDR (`"192.0.2.0/24"`) or a single address
/// (a /32 or /128); `None` when it is neither.
pub(crate) fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}
