//! The node registry: each node upserts its name with the database's
//! time (so the nodes' own clocks do not matter), and `status` lists the
//! nodes seen within the last minute.

use crate::{Cluster, ClusterError, NodeSeen};

/// How many nodes `status` lists at most.
const MAX_LISTED: i64 = 1000;

/// Writes `cluster`'s node as seen now.
pub(crate) async fn heartbeat(
    cluster: &Cluster,
    client: &deadpool_postgres::Object,
) -> Result<(), ClusterError> {
    let node = cluster.node();
    cluster
        .bounded(client.execute(
            "INSERT INTO portcullis_nodes (node, last_seen) VALUES ($1, now())
             ON CONFLICT (node) DO UPDATE SET last_seen = now()",
            &[&node],
        ))
        .await?;
    Ok(())
}

/// The nodes whose heartbeat is at most 60 seconds old, by name.
pub(crate) async fn seen(
    cluster: &Cluster,
    client: &deadpool_postgres::Object,
) -> Result<Vec<NodeSeen>, ClusterError> {
    let run = async {
        let exists: bool = client
            .query_one("SELECT to_regclass('portcullis_nodes') IS NOT NULL", &[])
            .await?
            .try_get(0)?;
        if !exists {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                "SELECT node, GREATEST(0, floor(EXTRACT(EPOCH FROM now() - last_seen)))::bigint
                 FROM portcullis_nodes
                 WHERE last_seen > now() - interval '60 seconds'
                 ORDER BY node LIMIT $1",
                &[&MAX_LISTED],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let node: String = row.try_get(0)?;
            let ago: i64 = row.try_get(1)?;
            out.push(NodeSeen {
                node,
                seconds_ago: u64::try_from(ago).unwrap_or(0),
            });
        }
        Ok(out)
    };
    cluster.bounded(run).await
}
