//! Applying the versioned schema ([`crate::MIGRATIONS`]) and reading the
//! version a database has. The versions applied are rows of
//! `portcullis_schema`; migrations run in one transaction holding a
//! transaction-level advisory lock, so nodes starting together serialise
//! and each version is applied once, and the lock goes with the
//! transaction whatever happens to the connection.

use crate::{Applied, Cluster, ClusterError, MIGRATIONS, migrations};
use std::time::Duration;

/// The advisory lock every node takes to migrate ("portcull" in ASCII):
/// fixed for all versions of Portcullis, so old and new nodes exclude each
/// other.
const LOCK_KEY: i64 = 0x706f_7274_6375_6c6c;

/// How long a migration run may take at most once connected (waiting for
/// another node's run, the DDL itself): with the connection's own limit
/// it stays under the admin client's 30 s, so `cluster migrate` always
/// gets the answer.
const MIGRATE_LIMIT: Duration = Duration::from_secs(20);

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS portcullis_schema (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Applies what is missing; see [`Cluster::migrate`].
pub(crate) async fn migrate(
    cluster: &Cluster,
    client: &mut deadpool_postgres::Object,
) -> Result<Vec<Applied>, ClusterError> {
    let deadline = tokio::time::Instant::now() + MIGRATE_LIMIT;
    let run = async {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        tx.batch_execute(CREATE_SCHEMA_TABLE).await?;
        let rows = tx
            .query(
                "SELECT version FROM portcullis_schema ORDER BY version",
                &[],
            )
            .await?;
        let mut have = Vec::with_capacity(rows.len());
        for row in &rows {
            have.push(row.try_get::<_, i32>(0)?);
        }
        Ok::<_, tokio_postgres::Error>((tx, have))
    };
    let (tx, have) = bounded(cluster, deadline, run).await?;
    let newest = have.iter().copied().max().unwrap_or(0);
    let binary = migrations::latest();
    if newest > 0 && u32::try_from(newest).unwrap_or(0) > binary {
        // The transaction rolls back when dropped: nothing was changed.
        return Err(ClusterError::SchemaNewer {
            database: u32::try_from(newest).unwrap_or(u32::MAX),
            binary,
        });
    }
    let apply = async {
        let mut report = Vec::with_capacity(MIGRATIONS.len());
        for m in MIGRATIONS {
            let version = i32::try_from(m.version).unwrap_or(i32::MAX);
            let now = !have.contains(&version);
            if now {
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO portcullis_schema (version, name) VALUES ($1, $2)",
                    &[&version, &m.name],
                )
                .await?;
            }
            report.push(Applied {
                version: m.version,
                name: m.name.to_owned(),
                now,
            });
        }
        tx.commit().await?;
        Ok::<_, tokio_postgres::Error>(report)
    };
    let report = bounded(cluster, deadline, apply).await?;
    for a in report.iter().filter(|a| a.now) {
        tracing::info!(version = a.version, name = %a.name, "cluster schema migration applied");
    }
    Ok(report)
}

/// The newest version applied to the database (0 when none).
pub(crate) async fn version(
    cluster: &Cluster,
    client: &deadpool_postgres::Object,
) -> Result<u32, ClusterError> {
    let run = async {
        let exists: bool = client
            .query_one("SELECT to_regclass('portcullis_schema') IS NOT NULL", &[])
            .await?
            .try_get(0)?;
        if !exists {
            return Ok(0);
        }
        let v: i32 = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM portcullis_schema",
                &[],
            )
            .await?
            .try_get(0)?;
        Ok(v)
    };
    let v = cluster.bounded(run).await?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// `fut` before `deadline`, its errors recorded in the cluster's health.
async fn bounded<T>(
    cluster: &Cluster,
    deadline: tokio::time::Instant,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(cluster.statement_failed(&e)),
        Err(_) => Err(ClusterError::Unreachable(format!(
            "migration did not finish within {MIGRATE_LIMIT:?}"
        ))),
    }
}
