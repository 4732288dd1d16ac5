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
//! - **TLS-RPT** ([`tlsrpt::PgTlsRpt`]): every node's TLS-RPT counts
//!   summed, one report per (day, policy domain) sent by the node holding
//!   its claim (see `portcullis_tlsrpt::shared`).
//!
//! - **Limits** ([`limits::LimitsExchange`], [`rates`], [`lockouts`],
//!   [`lists`]): rates and AUTH failures counted locally and exchanged
//!   every `sync_interval`; DNS-list answers shared until their TTL.
//!
//! - **DMARC reports** ([`dmarc::ClusterDmarc`]): every node's daily
//!   aggregates summed into one report per (day, domain), sent by one node
//!   under a lease, over the report tables of [`reports`].
//!
//! The database is never on the accept path's critical section: stores
//! built on it keep a local answer (cache, buffer) and use the database
//! beside it.

pub mod dmarc;
mod errors;
mod health;
pub mod limits;
pub mod lists;
pub mod lockouts;
pub mod migrations;
mod nodes;
pub mod policy;
pub mod policy_shared;
mod pool;
pub mod rates;
pub mod reports;
mod rest;
mod schema;
pub mod screen;
pub mod screen_shared;
pub mod tlsrpt;

pub use migrations::{MIGRATIONS, Migration};

use health::Health;
use portcullis_metrics::MetricsWriter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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
    /// How often stores that keep shared state locally (counts, rates)
    /// exchange it with the database (`[cluster] sync_interval`).
    pub sync_interval: Duration,
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
    /// The database's schema is newer than this binary knows: another
    /// node runs a newer Portcullis. This node refuses to use it rather
    /// than read or write tables it does not understand.
    #[error(
        "the cluster database has schema version {database}, newer than this binary's {binary}: upgrade this node"
    )]
    SchemaNewer {
        /// The version the database has.
        database: u32,
        /// The newest version this binary knows.
        binary: u32,
    },
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
    pool: deadpool_postgres::Pool,
    health: Health,
    /// Set when `migrate` found a schema newer than ours: from then on no
    /// store is handed a connection (0: not refused).
    refused_schema: AtomicU32,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.settings.node)
            .field("database", &self.inner.settings.database)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds the pool (no connection is made yet: a node starts while the
    /// database is down, and connects when it comes back). Fails only on
    /// settings that can never work (an unparsable URL, TLS set-up).
    pub fn new(settings: ClusterSettings) -> Result<Cluster, ClusterError> {
        let pool = pool::build(&settings)?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                settings,
                pool,
                health: Health::default(),
                refused_schema: AtomicU32::new(0),
            }),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.settings.node
    }

    /// The database URL (no password).
    pub fn database(&self) -> &str {
        &self.inner.settings.database
    }

    /// The timeout of one database operation (`[cluster] timeout`), for
    /// callers bounding their own statements.
    pub fn timeout(&self) -> Duration {
        self.inner.settings.timeout
    }

    /// How often locally kept shared state is exchanged with the database
    /// (`[cluster] sync_interval`).
    pub fn sync_interval(&self) -> Duration {
        self.inner.settings.sync_interval
    }

    /// A pooled connection within the timeout, or why not; the outcome
    /// updates the health ([`Cluster::status`], the metrics). A database
    /// whose schema is newer than this binary's is refused
    /// ([`ClusterError::SchemaNewer`]) once `migrate` has seen it.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, ClusterError> {
        let refused = self.inner.refused_schema.load(Ordering::Relaxed);
        if refused != 0 {
            return Err(ClusterError::SchemaNewer {
                database: refused,
                binary: migrations::latest(),
            });
        }
        self.connect().await
    }

    /// A pooled connection, schema refusal aside (`migrate` looks again).
    async fn connect(&self) -> Result<deadpool_postgres::Object, ClusterError> {
        // deadpool bounds its wait, connect and recycle steps each; the
        // whole is bounded too, so a caller never waits more than about
        // one timeout (connect plus the check of a pooled connection).
        let limit = self.inner.settings.timeout.saturating_mul(2);
        let outcome = match tokio::time::timeout(limit, self.inner.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(errors::from_pool(&e)),
            Err(_) => Err(ClusterError::Unreachable(format!(
                "no connection within {limit:?}"
            ))),
        };
        match &outcome {
            Ok(_) => self.inner.health.reached(),
            Err(e) => self.inner.health.unreachable(e),
        }
        outcome
    }

    /// Records the outcome of a statement run on a connection from
    /// [`Cluster::client`]: a lost connection marks the database down.
    /// Stores call it with their statement errors; the error is returned
    /// as a [`ClusterError`].
    pub fn statement_failed(&self, error: &tokio_postgres::Error) -> ClusterError {
        let e = errors::from_query(error);
        if matches!(e, ClusterError::Unreachable(_)) {
            self.inner.health.unreachable(&e);
        }
        e
    }

    /// Runs `fut` (statements on a pooled connection) under the timeout;
    /// its errors and a timeout are recorded like [`Cluster::client`]'s.
    pub async fn bounded<T, F>(&self, fut: F) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        self.bounded_for(self.inner.settings.timeout, fut).await
    }

    /// [`Cluster::bounded`] with its own `limit`, for work of many
    /// statements (a transaction writing a day's counts).
    pub async fn bounded_for<T, F>(&self, limit: Duration, fut: F) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.statement_failed(&e)),
            Err(_) => {
                let e = ClusterError::Unreachable(format!("no answer within {limit:?}"));
                self.inner.health.unreachable(&e);
                Err(e)
            }
        }
    }

    /// Applies every migration of [`MIGRATIONS`] not yet applied, in
    /// order, in one transaction under an advisory lock (two nodes
    /// migrating at once apply each version once; a failed migration
    /// leaves the schema as it was). Refuses a database whose schema is
    /// newer than this binary knows ([`ClusterError::SchemaNewer`]).
    pub async fn migrate(&self) -> Result<Vec<Applied>, ClusterError> {
        let mut client = self.connect().await?;
        let outcome = schema::migrate(self, &mut client).await;
        match &outcome {
            Err(ClusterError::SchemaNewer { database, .. }) => {
                self.inner
                    .refused_schema
                    .store(*database, Ordering::Relaxed);
            }
            Ok(_) => self.inner.refused_schema.store(0, Ordering::Relaxed),
            Err(_) => {}
        }
        outcome
    }

    /// Writes this node's heartbeat (its name and the database's time).
    pub async fn heartbeat(&self) -> Result<(), ClusterError> {
        let client = self.client().await?;
        nodes::heartbeat(self, &client).await
    }

    /// The cluster as this node sees it now: asks the database (within the
    /// timeout); when that fails, says unreachable and why.
    pub async fn status(&self) -> ClusterStatus {
        let mut status = ClusterStatus {
            node: self.node().to_owned(),
            database: self.inner.settings.database.clone(),
            reachable: false,
            error: None,
            schema_version: 0,
            nodes: Vec::new(),
        };
        let looked = async {
            let client = self.client().await?;
            let version = schema::version(self, &client).await?;
            let seen = nodes::seen(self, &client).await?;
            Ok::<_, ClusterError>((version, seen))
        }
        .await;
        match looked {
            Ok((version, seen)) => {
                status.reachable = true;
                status.schema_version = version;
                status.nodes = seen;
            }
            Err(e) => status.error = Some(e.to_string()),
        }
        status
    }

    /// Whether the last use of the database reached it (no round trip).
    pub fn is_up(&self) -> bool {
        self.inner.health.is_up()
    }

    /// The last error, when the last use of the database failed.
    pub fn last_error(&self) -> Option<String> {
        self.inner.health.last_error()
    }

    /// Appends the cluster's metrics (`portcullis_cluster_database_up`,
    /// `portcullis_cluster_fallbacks_total{store}`) to a Prometheus page.
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        self.inner.health.render(w);
    }

    /// Counts one fall-back to local state by `store` (e.g. `greylist`),
    /// and logs it at warn at most once a minute per store.
    pub fn fell_back(&self, store: &'static str, error: &ClusterError) {
        self.inner.health.fell_back(store, error);
    }
}
