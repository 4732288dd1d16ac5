//! The screen's rate counts in the cluster's database (table
//! `rate_counts`, migration 5): each node pushes its own counts per client
//! and minute, and pulls the other nodes' sums for the current and
//! previous minutes, which its rate table adds to its own. Run by the
//! periodic exchange ([`crate::limits::LimitsExchange`]), never by a
//! connection.
//!
//! Bounds: a push writes at most what the caller hands it (the rate
//! table's changed clients, [`MAX_PUSH`] at most); a pull returns at most
//! `limit` rows; minutes before the previous one are swept in batches.

use crate::{Cluster, ClusterError};
use portcullis_screen::rates::MinuteCounts;
use portcullis_types::AddrKey;
use std::net::Ipv4Addr;

/// Clients pushed per exchange at most (the rest wait for the next one):
/// one push stays one bounded statement.
pub const MAX_PUSH: usize = 20_000;

/// Rows one sweep statement deletes at most.
const SWEEP_BATCH: i64 = 10_000;

/// The client's octets as stored: 4 for an IPv4 address, the 8 of an
/// IPv6 /64.
pub fn client_octets(key: AddrKey) -> Vec<u8> {
    match key {
        AddrKey::V4(v4) => v4.octets().to_vec(),
        AddrKey::V6(prefix) => prefix.to_be_bytes().to_vec(),
    }
}

/// The client of stored `octets`; `None` for anything else (a row not
/// written by Portcullis is skipped, not trusted).
pub fn client_key(octets: &[u8]) -> Option<AddrKey> {
    match octets.len() {
        4 => Some(AddrKey::V4(Ipv4Addr::new(
            octets[0], octets[1], octets[2], octets[3],
        ))),
        8 => Some(AddrKey::V6(u64::from_be_bytes(octets.try_into().ok()?))),
        _ => None,
    }
}

/// The rate counts in `cluster`'s database.
#[derive(Clone)]
pub struct PgRates {
    cluster: Cluster,
}

impl PgRates {
    /// The counts in `cluster`'s database; each statement bounded by the
    /// cluster's timeout.
    pub fn new(cluster: Cluster) -> PgRates {
        PgRates { cluster }
    }

    /// Writes this node's `counts` (absolute: a row is replaced, so a
    /// push repeated counts nothing twice), at most [`MAX_PUSH`] of them.
    pub async fn push(&self, counts: &[MinuteCounts]) -> Result<(), ClusterError> {
        let counts = &counts[..counts.len().min(MAX_PUSH)];
        if counts.is_empty() {
            return Ok(());
        }
        let clients: Vec<Vec<u8>> = counts.iter().map(|c| client_octets(c.key)).collect();
        let minutes: Vec<i64> = counts.iter().map(|c| to_db(c.minute)).collect();
        let column = |i: usize| -> Vec<i32> {
            counts
                .iter()
                .map(|c| i32::try_from(c.counts[i]).unwrap_or(i32::MAX))
                .collect()
        };
        let (conn, msgs, rcpts) = (column(0), column(1), column(2));
        let client = self.cluster.client().await?;
        let node = self.cluster.node();
        self.cluster
            .bounded(client.execute(
                "INSERT INTO rate_counts (node, client, minute, connections, messages, recipients) \
                 SELECT $1, * FROM unnest($2::bytea[], $3::bigint[], $4::int[], $5::int[], $6::int[]) \
                 ON CONFLICT (node, client, minute) DO UPDATE SET \
                 connections = EXCLUDED.connections, messages = EXCLUDED.messages, \
                 recipients = EXCLUDED.recipients",
                &[&node, &clients, &minutes, &conn, &msgs, &rcpts],
            ))
            .await?;
        Ok(())
    }

    /// The other nodes' counts summed per client and minute, for minutes
    /// from `since` on; at most `limit` rows.
    pub async fn pull(&self, since: u64, limit: usize) -> Result<Vec<MinuteCounts>, ClusterError> {
        let client = self.cluster.client().await?;
        let node = self.cluster.node();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .cluster
            .bounded(client.query(
                "SELECT client, minute, sum(connections)::bigint, sum(messages)::bigint, \
                 sum(recipients)::bigint FROM rate_counts \
                 WHERE node <> $1 AND minute >= $2 GROUP BY client, minute LIMIT $3",
                &[&node, &to_db(since), &limit],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = || -> Result<Option<MinuteCounts>, tokio_postgres::Error> {
                let octets: Vec<u8> = row.try_get(0)?;
                let minute: i64 = row.try_get(1)?;
                let mut counts = [0u32; 3];
                for (i, c) in counts.iter_mut().enumerate() {
                    let n: i64 = row.try_get(2 + i)?;
                    *c = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
                }
                Ok(client_key(&octets).map(|key| MinuteCounts {
                    key,
                    minute: u64::try_from(minute).unwrap_or(0),
                    counts,
                }))
            };
            match read() {
                Ok(Some(c)) => out.push(c),
                Ok(None) => {}
                Err(e) => return Err(self.cluster.statement_failed(&e)),
            }
        }
        Ok(out)
    }

    /// Removes rows of minutes before `before` (every node's), one batch
    /// of at most 10,000 rows; how many. Rows another node is deleting are
    /// skipped.
    pub async fn sweep(&self, before: u64) -> Result<u64, ClusterError> {
        let client = self.cluster.client().await?;
        self.cluster
            .bounded(client.execute(
                "DELETE FROM rate_counts WHERE (node, client, minute) IN \
                 (SELECT node, client, minute FROM rate_counts WHERE minute < $1 \
                  LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&to_db(before), &SWEEP_BATCH],
            ))
            .await
    }
}

/// A count or a minute as a bigint (saturating).
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_round_trip_and_junk_is_refused() {
        for key in [
            AddrKey::V4(Ipv4Addr::new(192, 0, 2, 1)),
            AddrKey::V6(0x2001_0db8_0000_0001),
        ] {
            assert_eq!(client_key(&client_octets(key)), Some(key));
        }
        assert_eq!(client_key(&[1, 2, 3]), None);
        assert_eq!(client_key(&[0; 16]), None);
    }
}
