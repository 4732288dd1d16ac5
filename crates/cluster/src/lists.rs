//! DNS-list answers shared by the nodes (table `dnsbl_answers`,
//! migration 5): [`PgLists`] is the screen's [`SharedLists`] in the
//! cluster's database, so a client one node looked up is answered on the
//! others without a DNS query until the answer's TTL ends.
//!
//! It is asked by the lookup task a connection starts (off the session's
//! critical path), each statement bounded by the cluster's timeout; when
//! the database cannot answer the node asks DNS (the fall-back counted as
//! `dnsbl`) and the store rests a few seconds before trying it again.
//! Bounds: at most [`MAX_ROWS`] answers (enforced by [`PgLists::sweep`]
//! once a minute by the exchange), answers as long as the screen keeps (at most
//! [`MAX_ANSWERS`] records, [`MAX_TTL`]).

use crate::rest::Rest;
use crate::{Cluster, ClusterError};
use portcullis_screen::BoxFuture;
use portcullis_screen::dnsbl::{MAX_ANSWERS, MAX_TTL, SharedAnswer, SharedLists};
use portcullis_types::Domain;
use std::net::{IpAddr, Ipv4Addr};

use std::time::Duration;

/// The name fall-backs are counted under
/// (`portcullis_cluster_fallbacks_total{store="dnsbl"}`).
const STORE: &str = "dnsbl";

/// Answers kept at most: past it the sweep removes those that end
/// soonest. Clients choose their addresses; the table must not grow
/// with them.
pub const MAX_ROWS: i64 = 200_000;

/// Rows one sweep statement deletes at most.
const SWEEP_BATCH: i64 = 10_000;

/// The DNS-list answers in `cluster`'s database.
pub struct PgLists {
    cluster: Cluster,
    /// Until when the database is not tried (after a failure).
    rest: Rest,
}

impl PgLists {
    /// The answers in `cluster`'s database.
    pub fn new(cluster: Cluster) -> PgLists {
        PgLists {
            cluster,
            rest: Rest::new(STORE),
        }
    }

    /// True while the database is not tried (it failed recently).
    fn resting(&self) -> bool {
        self.rest.resting()
    }

    /// The database failed with `error`: count it, rest a while.
    fn failed(&self, error: &ClusterError) {
        self.rest.failed(&self.cluster, error);
    }

    /// The live answer of `zone` about `ip`, or why the database could
    /// not say.
    pub async fn answer(
        &self,
        ip: IpAddr,
        zone: &Domain,
    ) -> Result<Option<SharedAnswer>, ClusterError> {
        let client = self.cluster.client().await?;
        let row = self
            .cluster
            .bounded(client.query_opt(
                "SELECT listed, answers, \
                 (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint \
                 FROM dnsbl_answers WHERE client = $1 AND zone = $2 AND expires_at > now()",
                &[&octets(ip), &zone.to_string()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = || -> Result<SharedAnswer, tokio_postgres::Error> {
            let listed: bool = row.try_get(0)?;
            let answers: Vec<u8> = row.try_get(1)?;
            let ms: i64 = row.try_get(2)?;
            let answers = answers
                .chunks_exact(4)
                .take(MAX_ANSWERS)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect();
            let remaining = Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(MAX_TTL);
            Ok(SharedAnswer {
                listed: listed.then_some(answers),
                remaining,
            })
        };
        read()
            .map(Some)
            .map_err(|e| self.cluster.statement_failed(&e))
    }

    /// Writes (replaces) the answer of `zone` about `ip`.
    pub async fn share(
        &self,
        ip: IpAddr,
        zone: &Domain,
        answer: &SharedAnswer,
    ) -> Result<(), ClusterError> {
        let records: Vec<u8> = answer
            .listed
            .iter()
            .flatten()
            .take(MAX_ANSWERS)
            .flat_map(|a| a.octets())
            .collect();
        let ms = i64::try_from(answer.remaining.min(MAX_TTL).as_millis()).unwrap_or(0);
        let client = self.cluster.client().await?;
        self.cluster
            .bounded(client.execute(
                "INSERT INTO dnsbl_answers (client, zone, listed, answers, expires_at) \
                 VALUES ($1, $2, $3, $4, now() + $5::bigint * interval '1 millisecond') \
                 ON CONFLICT (client, zone) DO UPDATE SET listed = EXCLUDED.listed, \
                 answers = EXCLUDED.answers, expires_at = EXCLUDED.expires_at",
                &[
                    &octets(ip),
                    &zone.to_string(),
                    &answer.listed.is_some(),
                    &records,
                    &ms,
                ],
            ))
            .await?;
        Ok(())
    }

    /// Removes every answer about `ip`; how many.
    pub async fn remove(&self, ip: IpAddr) -> Result<u64, ClusterError> {
        let client = self.cluster.client().await?;
        self.cluster
            .bounded(client.execute(
                "DELETE FROM dnsbl_answers WHERE client = $1",
                &[&octets(ip)],
            ))
            .await
    }

    /// Removes expired answers (one batch), then, when more than
    /// [`MAX_ROWS`] remain, those that end soonest; how many.
    pub async fn sweep(&self) -> Result<u64, ClusterError> {
        let client = self.cluster.client().await?;
        let expired = self
            .cluster
            .bounded(client.execute(
                "DELETE FROM dnsbl_answers WHERE (client, zone) IN \
                 (SELECT client, zone FROM dnsbl_answers WHERE expires_at <= now() \
                  LIMIT $1 FOR UPDATE SKIP LOCKED)",
                &[&SWEEP_BATCH],
            ))
            .await?;
        let held: i64 = self
            .cluster
            .bounded(client.query_one("SELECT count(*) FROM dnsbl_answers", &[]))
            .await?
            .try_get(0)
            .map_err(|e| self.cluster.statement_failed(&e))?;
        let mut over = 0;
        if held > MAX_ROWS {
            over = self
                .cluster
                .bounded(client.execute(
                    "DELETE FROM dnsbl_answers WHERE (client, zone) IN \
                     (SELECT client, zone FROM dnsbl_answers ORDER BY expires_at LIMIT $1 \
                      FOR UPDATE SKIP LOCKED)",
                    &[&(held - MAX_ROWS)],
                ))
                .await?;
        }
        Ok(expired + over)
    }
}

impl SharedLists for PgLists {
    fn get<'a>(&'a self, ip: IpAddr, zone: &'a Domain) -> BoxFuture<'a, Option<SharedAnswer>> {
        Box::pin(async move {
            if self.resting() {
                self.cluster.fell_back(
                    STORE,
                    &ClusterError::Unreachable("failed recently; asking DNS".into()),
                );
                return None;
            }
            match self.answer(ip, zone).await {
                Ok(answer) => answer,
                Err(e) => {
                    self.failed(&e);
                    None
                }
            }
        })
    }

    fn put<'a>(&'a self, ip: IpAddr, zone: &'a Domain, answer: SharedAnswer) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.resting() {
                return;
            }
            if let Err(e) = self.share(ip, zone, &answer).await {
                self.failed(&e);
            }
        })
    }

    fn forget(&self, ip: IpAddr) -> BoxFuture<'_, u64> {
        Box::pin(async move {
            // Tried even while resting: the operator asked for it. A
            // failure leaves the answers to their TTL (logged, counted).
            match self.remove(ip).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(client = %ip, error = %e, "shared DNS-list answers not cleared; they end with their TTL");
                    self.failed(&e);
                    0
                }
            }
        })
    }
}

/// The client's octets as stored (4 or 16; an IPv4-mapped address is
/// its IPv4 address, as the screen looks it up).
fn octets(ip: IpAddr) -> Vec<u8> {
    match portcullis_screen::dnsbl::canonical_ip(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
