//! Cluster mode as the server runs it (`[cluster]`): the [`Cluster`] built
//! at start (the password read from `password_file` or `PGPASSWORD`, the
//! CA certificates for `verify-full`), the schema migrated at start, and
//! a background task that keeps trying to migrate while the database is
//! unreachable and then writes this node's heartbeat every
//! [`HEARTBEAT_EVERY`]. Nothing here ever waits on the database before
//! the listeners accept: a node whose database is down starts and
//! accepts mail, and joins the cluster when the database returns.

use super::shutdown::Lifecycle;
use anyhow::{Context, Result};
use portcullis_cluster::{Cluster, ClusterError, ClusterSettings, DbTls};
use portcullis_config::{ClusterTls, Config};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// How often the node writes its heartbeat (and, until the schema is
/// migrated, tries again to migrate). `status` lists nodes seen within the
/// last minute, so a live node is never missing from it.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// The longest password file read: a password, not a data file.
const MAX_PASSWORD_FILE: u64 = 4096;

/// The [`Cluster`] of `[cluster]`; `None` without the section. A password
/// file or CA file that cannot be read stops the start, with its path.
pub fn build(config: &Config) -> Result<Option<Cluster>> {
    let Some(c) = &config.cluster else {
        return Ok(None);
    };
    let password = match &c.password_file {
        Some(path) => Some(read_password(path)?),
        // libpq's variable: what administrators already use.
        None => std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()),
    };
    let tls = match c.tls {
        ClusterTls::Disable => DbTls::Disable,
        ClusterTls::VerifyFull => {
            let roots = match &c.tls_ca {
                Some(path) => {
                    let mut roots = portcullis_tls::rustls::RootCertStore::empty();
                    portcullis_tls::add_roots_from_file(&mut roots, path)
                        .with_context(|| format!("reading [cluster] tls_ca {}", path.display()))?;
                    roots
                }
                None => portcullis_tls::web_roots(),
            };
            DbTls::VerifyFull {
                roots: Arc::new(roots),
            }
        }
    };
    let settings = ClusterSettings {
        database: c.database.clone(),
        password,
        node: c.node.clone(),
        tls,
        pool_size: usize::try_from(c.pool_size).unwrap_or(8),
        timeout: c.timeout,
        sync_interval: c.sync_interval,
    };
    let cluster = Cluster::new(settings).context("[cluster]")?;
    Ok(Some(cluster))
}

/// The password in `path`: its first line (a trailing newline is not part
/// of it).
fn read_password(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading [cluster] password_file {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_PASSWORD_FILE)
        .read_to_string(&mut text)
        .with_context(|| format!("reading [cluster] password_file {}", path.display()))?;
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        anyhow::bail!("[cluster] password_file {} is empty", path.display());
    }
    Ok(password)
}

/// Migrates the schema at start. Unreachable database: a warning, and the
/// start goes on (the background task tries again). A schema newer than
/// this binary's stops the start: this node must not read or write
/// tables it does not understand. Returns whether the schema is current.
pub async fn migrate_at_start(cluster: &Cluster) -> Result<bool> {
    // Bounded more tightly than `cluster migrate`: a database that accepts
    // connections but hangs (a fail-over) must not hold the start for long;
    // the background task finishes the job. A cut-off transaction is rolled
    // back by the database.
    let limit = cluster.timeout().saturating_mul(3);
    let Ok(outcome) = tokio::time::timeout(limit, cluster.migrate()).await else {
        warn!(
            node = cluster.node(),
            "cluster schema not migrated within {limit:?} at start: this node runs on its local state and tries again every 10s"
        );
        return Ok(false);
    };
    match outcome {
        Ok(applied) => {
            let now = applied.iter().filter(|a| a.now).count();
            info!(
                node = cluster.node(),
                applied_now = now,
                versions = applied.len(),
                "cluster schema current"
            );
            Ok(true)
        }
        Err(e @ ClusterError::SchemaNewer { .. }) => Err(anyhow::anyhow!("{e}")),
        Err(e) => {
            warn!(node = cluster.node(), error = %e, "cluster database not usable at start: this node runs on its local state and tries again every 10s");
            Ok(false)
        }
    }
}

/// Until shutdown: migrate if not done yet, then a heartbeat every
/// [`HEARTBEAT_EVERY`].
pub fn spawn(cluster: Cluster, mut migrated: bool, life: &Lifecycle) {
    let shutdown = life.shutdown.clone();
    life.services.spawn(async move {
        let mut every = tokio::time::interval(HEARTBEAT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if !migrated {
                match cluster.migrate().await {
                    Ok(_) => {
                        info!(node = cluster.node(), "cluster schema current");
                        migrated = true;
                    }
                    Err(e @ ClusterError::SchemaNewer { .. }) => {
                        error!(error = %e, "cluster database refused");
                        continue;
                    }
                    // Logged by the cluster's health when it changes.
                    Err(_) => continue,
                }
            }
            // A failure is logged by the cluster's health when the state
            // changes; the next tick tries again.
            let _ = cluster.heartbeat().await;
        }
    });
}
