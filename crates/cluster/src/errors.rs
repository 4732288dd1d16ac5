//! tokio-postgres and deadpool errors worded for an operator, and sorted
//! into "the database cannot be reached" and "a statement failed".
//! tokio-postgres's own `Display` says only "db error" for what the server
//! answered, so the server's message is taken from the error itself.

use crate::ClusterError;
use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// What a failed `pool.get()` means: always unreachable (the database did
/// not give us a working connection in time), with the reason.
pub(crate) fn from_pool(error: &PoolError) -> ClusterError {
    let text = match error {
        PoolError::Timeout(kind) => format!("no connection within the timeout ({kind:?})"),
        PoolError::Backend(e) => describe(e),
        PoolError::Closed => "the connection pool is closed".to_owned(),
        PoolError::NoRuntimeSpecified => "no runtime for the pool".to_owned(),
        PoolError::PostCreateHook(e) => e.to_string(),
    };
    ClusterError::Unreachable(text)
}

/// What a failed statement means: a lost connection is unreachable, the
/// rest a query error.
pub(crate) fn from_query(error: &tokio_postgres::Error) -> ClusterError {
    if error.is_closed() || (error.as_db_error().is_none() && is_io(error)) {
        ClusterError::Unreachable(describe(error))
    } else {
        ClusterError::Query(describe(error))
    }
}

/// True when the error came from the socket (connection lost mid-query).
fn is_io(error: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error in one line: the server's own message when it answered
/// (authentication refusals named as such), else the error and its causes.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        let prefix = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            "authentication refused: "
        } else {
            ""
        };
        return format!("{prefix}{} ({})", db.message(), code.code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
