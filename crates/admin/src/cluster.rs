//! The bodies of `cluster migrate` and of the cluster block of `status`,
//! mirroring the cluster crate's types so that `admin` depends on no
//! business crate.

use serde::{Deserialize, Serialize};

/// What `portcullis cluster migrate` did: every version this binary
/// knows, in order, each applied now or already.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterMigrated {
    /// The versions, oldest first.
    pub versions: Vec<ClusterVersion>,
}

/// One schema version in a [`ClusterMigrated`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterVersion {
    /// The version.
    pub version: u32,
    /// Its short name.
    pub name: String,
    /// True when this run applied it; false when it already was.
    pub applied_now: bool,
}

/// The cluster block of `portcullis status` (present with `[cluster]`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterShow {
    /// This node's name.
    pub node: String,
    /// The database URL (no password).
    pub database: String,
    /// True when the database answered just now.
    pub reachable: bool,
    /// Why not, when not reachable.
    pub error: Option<String>,
    /// The schema version the database has (0: none or unknown).
    pub schema_version: u32,
    /// The nodes seen within the last minute, by name.
    pub nodes: Vec<ClusterNode>,
}

/// One node in a [`ClusterShow`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its `[cluster] node` name.
    pub node: String,
    /// Seconds since its last heartbeat.
    pub seconds_ago: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Answer, Request};

    /// The CLI decodes what the server sends for `cluster migrate`.
    #[test]
    fn cluster_migrate_round_trips() {
        let done = ClusterMigrated {
            versions: vec![ClusterVersion {
                version: 1,
                name: "nodes".into(),
                applied_now: false,
            }],
        };
        let body = serde_json::to_value(Answer::ClusterMigrate(done.clone())).unwrap();
        assert_eq!(
            Answer::decode(&Request::ClusterMigrate, body).unwrap(),
            Answer::ClusterMigrate(done)
        );
        assert_eq!(
            serde_json::to_string(&Request::ClusterMigrate).unwrap(),
            r#"{"op":"cluster_migrate"}"#
        );
    }
}
