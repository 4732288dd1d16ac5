//! Resting the database after a failure: a store that could not reach it
//! answers from the node's local state for a while without trying again,
//! so a database that swallows packets does not cost every SMTP command
//! (or every delivery) the whole `[cluster] timeout`.

use crate::{Cluster, ClusterError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a failure the database is not tried.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The resting state of one store: until when it answers locally.
#[derive(Debug)]
pub(crate) struct Rest {
    /// The store's name in `portcullis_cluster_fallbacks_total{store}`.
    store: &'static str,
    until: Mutex<Option<Instant>>,
    after: Duration,
}

impl Rest {
    /// Not resting; counted as `store`; rests [`RETRY_AFTER`] per failure.
    pub(crate) fn new(store: &'static str) -> Rest {
        Rest {
            store,
            until: Mutex::new(None),
            after: RETRY_AFTER,
        }
    }

    /// Rests `after` per failure instead.
    pub(crate) fn with_after(mut self, after: Duration) -> Rest {
        self.after = after;
        self
    }

    /// True while the store answers locally without trying the database.
    pub(crate) fn resting(&self) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// The database failed with `error`: counted on `cluster`, and the
    /// store rests.
    pub(crate) fn failed(&self, cluster: &Cluster, error: &ClusterError) {
        cluster.fell_back(self.store, error);
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        *until = Some(Instant::now() + self.after);
    }
}
