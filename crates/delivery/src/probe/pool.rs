//! The connections of one route: at most `size` probes at once (a slot
//! each), the idle connections between them, and a reaper that closes a
//! connection idle for longer than the idle limit.

use super::dialogue::ProbeConn;
use crate::client::Timeouts;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One route's probe connections.
pub(crate) struct RoutePool {
    /// One permit per probe (and connection) at once.
    slots: Arc<Semaphore>,
    /// Idle connections with when they became idle, oldest first; never
    /// more than `size` (each came back from a slot).
    idle: Mutex<Vec<(ProbeConn, Instant)>>,
    /// True while a reaper task watches `idle`.
    reaping: AtomicBool,
    /// How long a connection may stay idle.
    idle_limit: Duration,
    /// For the QUIT of reaped connections.
    timeouts: Timeouts,
}

impl RoutePool {
    /// A pool of `size` slots whose connections close after `idle_limit`.
    pub(crate) fn new(size: usize, idle_limit: Duration, timeouts: Timeouts) -> Arc<RoutePool> {
        Arc::new(RoutePool {
            slots: Arc::new(Semaphore::new(size.max(1))),
            idle: Mutex::new(Vec::new()),
            reaping: AtomicBool::new(false),
            idle_limit,
            timeouts,
        })
    }

    /// A slot for one probe, waiting at most `wait` for one to be free.
    pub(crate) async fn slot(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let acquire = Arc::clone(&self.slots).acquire_owned();
        tokio::time::timeout(wait, acquire).await.ok()?.ok()
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(ProbeConn, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is not past the idle
    /// limit (older ones are left to the reaper).
    pub(crate) fn take(&self) -> Option<ProbeConn> {
        let mut idle = self.idle();
        let (_, since) = idle.last()?;
        if since.elapsed() >= self.idle_limit {
            return None;
        }
        idle.pop().map(|(conn, _)| conn)
    }

    /// Keeps `conn` for the next probe, and makes sure a reaper runs.
    pub(crate) fn put(self: &Arc<Self>, conn: ProbeConn) {
        self.idle().push((conn, Instant::now()));
        if !self.reaping.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Removes the connections idle for the limit; when the next one is
    /// due, `None` when none is left.
    fn expire(&self) -> (Vec<ProbeConn>, Option<Instant>) {
        let mut idle = self.idle();
        let now = Instant::now();
        let fresh = idle
            .iter()
            .position(|(_, since)| now.duration_since(*since) < self.idle_limit)
            .unwrap_or(idle.len());
        let expired = idle.drain(..fresh).map(|(conn, _)| conn).collect();
        let next = idle.first().map(|(_, since)| *since + self.idle_limit);
        (expired, next)
    }
}

/// Closes the pool's idle connections as they pass the idle limit; ends
/// when none is left (or the pool is gone).
async fn reap(pool: std::sync::Weak<RoutePool>) {
    loop {
        let Some(strong) = pool.upgrade() else { return };
        let (expired, next) = strong.expire();
        let timeouts = strong.timeouts;
        let next = match next {
            Some(next) => next,
            None => {
                strong.reaping.store(false, Ordering::Release);
                // A connection put back meanwhile found the flag still set
                // and started no reaper: keep watching it.
                let again =
                    !strong.idle().is_empty() && !strong.reaping.swap(true, Ordering::AcqRel);
                if !again {
                    drop(strong);
                    close(expired, &timeouts).await;
                    return;
                }
                Instant::now()
            }
        };
        drop(strong);
        close(expired, &timeouts).await;
        tokio::time::sleep_until(next).await;
    }
}

async fn close(conns: Vec<ProbeConn>, timeouts: &Timeouts) {
    for conn in conns {
        conn.quit(timeouts).await;
    }
}
