//! Connection accounting: a total cap and a per-client-IP cap, released by
//! dropping the returned guard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` reached.
    Total,
    /// `limits.max_connections_per_ip` reached for this IP.
    PerIp,
}

/// Counts open connections.
#[derive(Clone)]
pub struct ConnLimit {
    inner: Arc<Mutex<Counts>>,
    max_total: u32,
    max_per_ip: u32,
}

struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// Holds one connection's place; dropping it frees the place.
pub struct ConnGuard {
    limit: ConnLimit,
    ip: IpAddr,
}

impl ConnLimit {
    /// A tracker with the two caps.
    pub fn new(max_total: u32, max_per_ip: u32) -> ConnLimit {
        ConnLimit {
            inner: Arc::new(Mutex::new(Counts {
                total: 0,
                per_ip: HashMap::new(),
            })),
            max_total,
            max_per_ip,
        }
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub fn acquire(&self, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnGuard {
            limit: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.limit.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let l = ConnLimit::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = l.acquire(a).unwrap();
        let _g2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(Refusal::PerIp));
        let _g3 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).err(), Some(Refusal::Total));
        drop(g1);
        assert!(l.acquire(a).is_ok());
    }
}
