//! Group commit: one task owns the fsync; callers queue a waiter and are all
//! answered by the first flush that starts after they queued.

use crate::StoreError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), StoreError>>;

#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Waiter>,
    flushes: Arc<AtomicU64>,
}

impl Committer {
    pub(crate) fn start(db: sled::Db) -> Committer {
        let (tx, rx) = mpsc::unbounded_channel();
        let flushes = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(db, rx, flushes.clone()));
        Committer { tx, flushes }
    }

    pub(crate) async fn commit(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

async fn run(db: sled::Db, mut rx: mpsc::UnboundedReceiver<Waiter>, flushes: Arc<AtomicU64>) {
    let mut batch: Vec<Waiter> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Everyone who queued before this flush starts wrote before it: one
        // fsync covers them all.
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let db = db.clone();
        let result = match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(e.to_string())),
            Err(e) => Err(StoreError::Io(format!("flush task failed: {e}"))),
        };
        flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "store flush failed");
        }
        for waiter in batch.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}
