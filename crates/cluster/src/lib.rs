//! Cluster mode (`[cluster]`): the PostgreSQL database several edge nodes
//! share their state in. Without `[cluster]` nothing here runs and every
//! store stays in the node's embedded sled.
//!
//! - **[`Cluster`]**: the pool of connections (deadpool over
//!   tokio-postgres, TLS through our own rustls configuration), the node's
//!   name, and the database's health as last seen: every store that uses
//!   the database asks [`Cluster::client`], so an unreachable database is
//!   noticed once, logged, counted, and the callers fall back to their
//!   local state.
//! - **Migrations** ([`MIGRATIONS`], [`Cluster::migrate`]): the schema is
//!   owned by the binary, versioned, applied in order under an advisory
//!   lock (two nodes starting at once apply each version once), at start
//!   and by `portcullis cluster migrate`.
//! - **Nodes** ([`Cluster::heartbeat`], [`Cluster::status`]): each node
//!   writes its name and the time every few seconds; `portcullis status`
//!   shows the nodes seen recently.
//!
//! - **The screen's state** ([`screen::PgScreenStore`],
//!   [`screen_shared::SharedScreenStore`]): greylist entries and cached
//!   recipient answers shared by every node, the node's sled store
//!   answering while the database cannot.
//!
//! The database is never on the accept path's critical section: stores
//! built on it keep a local answer (cache, buffer) and use the database
//! beside it.

pub mod migrations;
pub mod screen;
pub mod screen_shared;

pub use migrations::{MIGRATIONS, Migration};

use std::sync::Arc;
use std::time::Duration;

/// How the connection to the database is protected (`[cluster] tls`),
/// named as libpq's `sslmode` values administrators know.
#[derive(Debug, Clone)]
pub enum DbTls {
    /// Plain TCP (a database on loopback or a private link).
    Disable,
    /// TLS, the server's certificate verified for the host name under
    /// `roots` (`verify-full`).
    VerifyFull {
        /// The trust anchors (`[cluster] tls_ca`, else the web PKI roots).
        roots: Arc<rustls::RootCertStore>,
    },
}

/// What [`Cluster::new`] needs: `[cluster]` as checked, the password
/// already read (from `[cluster] password_file` or `PGPASSWORD`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `postgresql://user@host:port/db`, without a password.
    pub database: String,
    /// The password, when one is needed.
    pub password: Option<String>,
    /// This node's name (`[cluster] node`, default the host name).
    pub node: String,
    /// TLS to the database.
    pub tls: DbTls,
    /// Connections in the pool at most.
    pub pool_size: usize,
    /// How long one database operation may take before the caller falls
    /// back (connect, query).
    pub timeout: Duration,
}

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The settings cannot work (bad URL, TLS set-up).
    #[error("cluster settings: {0}")]
    Settings(String),
    /// The database cannot be reached or refused us (connect, auth,
    /// timeout): callers fall back to local state.
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// A statement failed.
    #[error("database error: {0}")]
    Query(String),
}

/// One applied migration, as `cluster migrate` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// True when this run applied it; false when it already was.
    pub now: bool,
}

/// A node as the registry last saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeSeen {
    /// Its `[cluster] node` name.
    pub node: String,
    /// Seconds since it last wrote its heartbeat.
    pub seconds_ago: u64,
}

/// What `portcullis status` shows of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// The database URL (no password).
    pub database: String,
    /// True when the last operation reached the database.
    pub reachable: bool,
    /// The last error, when not reachable.
    pub error: Option<String>,
    /// The schema version applied (0: none or unknown).
    pub schema_version: u32,
    /// Nodes whose heartbeat is recent, this one included.
    pub nodes: Vec<NodeSeen>,
}

/// The shared database of a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClusterSettings,
}

impl Cluster {
    /// Builds the pool (no connection is made yet: a node starts while the
    /// database is down, and connects when it comes back).
    pub fn new(settings: ClusterSettings) -> Result<Cluster, ClusterError> {
        Ok(Cluster {
            inner: Arc::new(Inner { settings }),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.settings.node
    }

    /// A pooled connection within the timeout, or why not; the outcome
    /// updates the health ([`Cluster::status`], the metrics).
    pub async fn client(&self) -> Result<deadpool_postgres::Object, ClusterError> {
        Err(ClusterError::Unreachable("not built yet".into()))
    }

    /// Applies every migration of [`MIGRATIONS`] not yet applied, in
    /// order, each in its own transaction under an advisory lock.
    pub async fn migrate(&self) -> Result<Vec<Applied>, ClusterError> {
        Err(ClusterError::Unreachable("not built yet".into()))
    }

    /// Writes this node's heartbeat.
    pub async fn heartbeat(&self) -> Result<(), ClusterError> {
        Err(ClusterError::Unreachable("not built yet".into()))
    }

    /// The cluster as this node sees it now.
    pub async fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node: self.node().to_owned(),
            database: self.inner.settings.database.clone(),
            reachable: false,
            error: Some("not built yet".into()),
            schema_version: 0,
            nodes: Vec::new(),
        }
    }

    /// Appends the cluster's metrics (`portcullis_cluster_database_up`,
    /// `portcullis_cluster_fallbacks_total{store}`) to a Prometheus page.
    pub fn render_metrics(&self, _out: &mut String) {}

    /// Counts one fall-back to local state by `store` (e.g. `greylist`),
    /// and logs it at warn at most once a minute per store.
    pub fn fell_back(&self, _store: &'static str, _error: &ClusterError) {}
}
