//! Queue ids: short, unique, sortable by arrival, safe to show in replies and
//! logs.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

/// A queue id: 44 bits of milliseconds since the Unix epoch and 20 bits of a
/// per-process sequence mixed with randomness from the caller, shown as 16
/// uppercase hex digits. Ids sort by arrival time, and keys in the store sort
/// the same way as the displayed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(u64);

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl QueueId {
    /// A new id for a message arriving at `unix_millis`. `salt` (random per
    /// process start) keeps ids from two runs in the same millisecond apart.
    pub fn generate(unix_millis: u64, salt: u32) -> QueueId {
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed).wrapping_add(salt) & 0xF_FFFF;
        QueueId(((unix_millis & 0xFFF_FFFF_FFFF) << 20) | u64::from(seq))
    }

    /// The id from its 8-byte big-endian store key.
    pub fn from_bytes(bytes: [u8; 8]) -> QueueId {
        QueueId(u64::from_be_bytes(bytes))
    }

    /// The 8-byte big-endian store key (sorts by arrival).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Milliseconds since the epoch at which the id was made.
    pub fn unix_millis(self) -> u64 {
        self.0 >> 20
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl std::str::FromStr for QueueId {
    type Err = String;
    /// Parses the 16-hex-digit form (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(format!("queue id {s:?} is not 16 hex digits"));
        }
        u64::from_str_radix(s, 16)
            .map(QueueId)
            .map_err(|_| format!("queue id {s:?} is not 16 hex digits"))
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts() {
        let a = QueueId::generate(1_700_000_000_000, 7);
        let b = QueueId::generate(1_700_000_000_001, 7);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<QueueId>().unwrap(), a);
        assert_eq!(QueueId::from_bytes(a.to_bytes()), a);
        assert_eq!(a.unix_millis(), 1_700_000_000_000);
        assert!(a.to_string().to_lowercase().parse::<QueueId>().is_ok());
        assert!("XYZ".parse::<QueueId>().is_err());
    }

    #[test]
    fn ids_in_one_millisecond_differ() {
        let ids: std::collections::HashSet<_> =
            (0..1000).map(|_| QueueId::generate(5, 0)).collect();
        assert_eq!(ids.len(), 1000);
    }
}
