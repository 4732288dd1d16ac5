//! `cluster migrate` and the cluster block of `status`: the cluster
//! crate's answers carried into the admin types, deciding nothing.

use super::refused::Refused;
use portcullis_admin::{ClusterMigrated, ClusterNode, ClusterShow, ClusterVersion, Response};
use portcullis_cluster::Cluster;

/// Why `cluster` commands are refused without cluster mode.
const NO_CLUSTER: &str = "cluster mode is off: the config has no [cluster] section";

/// `cluster migrate`: every version, applied now or already; the
/// database's error when it cannot be reached or its schema is newer.
pub(super) async fn migrate(cluster: Option<&Cluster>) -> Result<ClusterMigrated, Refused> {
    let cluster = cluster.ok_or_else(|| Response::error(NO_CLUSTER))?;
    let applied = cluster
        .migrate()
        .await
        .map_err(|e| Response::error(e.to_string()))?;
    Ok(ClusterMigrated {
        versions: applied
            .into_iter()
            .map(|a| ClusterVersion {
                version: a.version,
                name: a.name,
                applied_now: a.now,
            })
            .collect(),
    })
}

/// The cluster as this node sees it now (a round trip to the database,
/// within its timeout).
pub(super) async fn show(cluster: &Cluster) -> ClusterShow {
    let s = cluster.status().await;
    ClusterShow {
        node: s.node,
        database: s.database,
        reachable: s.reachable,
        error: s.error,
        schema_version: s.schema_version,
        nodes: s
            .nodes
            .into_iter()
            .map(|n| ClusterNode {
                node: n.node,
                seconds_ago: n.seconds_ago,
            })
            .collect(),
    }
}
