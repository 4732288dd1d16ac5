//! Where verification runs: never on the threads that serve sessions.
//!
//! mail-auth's checks are `async` for their DNS lookups, but hashing and
//! public-key operations between two lookups run without yielding; on the
//! runtime's worker threads they would hold up every session scheduled
//! there (greetings, replies, timeouts). So each check runs as a blocking
//! task that drives its future with [`Handle::block_on`] (its lookups still
//! go through the runtime's I/O driver and the shared resolver), at most
//! `size` of them at once (a semaphore sized to the cores, so verification
//! cannot take more CPU than the machine has), and the caller waits only
//! until its deadline: when that passes it gets [`Unfinished::TimedOut`]
//! at once, even if the check is busy in a loop. The abandoned check stops
//! at its next await point (it carries the same deadline), its result is
//! dropped, and its slot is freed only when it has really stopped, so
//! abandoned work still counts against the bound.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// The deadline passed (waiting for a slot, or running).
    TimedOut,
    /// The job panicked.
    Failed(String),
}

/// A bounded set of blocking threads for verification.
#[derive(Debug)]
pub(crate) struct Pool {
    slots: Arc<Semaphore>,
}

impl Pool {
    /// A pool running at most `size` jobs at once (at least one).
    pub(crate) fn new(size: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// A pool as large as the machine has cores.
    pub(crate) fn for_this_machine() -> Pool {
        Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `job` on a blocking thread once a slot is free and returns its
    /// output, or [`Unfinished`] when `deadline` passes first (the job is
    /// then left to stop at its next await point) or the job panics. Must
    /// be called within a tokio runtime.
    pub(crate) async fn run<F>(&self, deadline: Instant, job: F) -> Result<F::Output, Unfinished>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let slots = Arc::clone(&self.slots);
        let work = async move {
            let Ok(slot) = slots.acquire_owned().await else {
                return Err(Unfinished::Failed("verification pool closed".into()));
            };
            let handle = Handle::current();
            let task = tokio::task::spawn_blocking(move || {
                // Held until the job has really stopped, deadline or not.
                let _slot = slot;
                handle.block_on(tokio::time::timeout_at(deadline, job)).ok()
            });
            match task.await {
                Ok(Some(output)) => Ok(output),
                Ok(None) => Err(Unfinished::TimedOut),
                Err(e) => Err(Unfinished::Failed(e.to_string())),
            }
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .unwrap_or(Err(Unfinished::TimedOut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Long enough never to be reached by a passing test; a failing one
    /// (a job run on the runtime thread) stops there instead of hanging.
    const NEVER: Duration = Duration::from_secs(10);

    /// Regression test: verification ran inside the session task, so a
    /// check busy in a loop held the thread that serves sessions. Here the
    /// runtime has ONE thread and the job blocks its own thread until a
    /// task on the runtime ("a session") has run: it completes only if the
    /// job is not on the runtime's thread.
    #[tokio::test(flavor = "current_thread")]
    async fn sessions_run_while_a_job_is_busy() {
        let pool = Pool::new(1);
        let (tx, rx) = mpsc::channel::<()>();
        let job = async move { rx.recv_timeout(NEVER).is_ok() };
        let session = tokio::spawn(async move {
            // Runs on the runtime's only thread while the job blocks.
            tx.send(()).is_ok()
        });
        let verified = pool.run(Instant::now() + NEVER * 2, job).await;
        assert_eq!(verified, Ok(true), "the job saw the session run");
        assert!(session.await.expect("session task"));
    }

    /// The deadline gives the caller its answer while the job is still
    /// busy (it is released only after the answer came); the job's slot
    /// comes back only when the job has stopped.
    #[tokio::test(flavor = "current_thread")]
    async fn deadline_answers_while_the_job_is_busy() {
        let pool = Pool::new(1);
        let (release, rx) = mpsc::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&finished);
        let job = async move {
            let released = rx.recv_timeout(NEVER).is_ok();
            done.store(true, Ordering::SeqCst);
            released
        };
        let answer = pool
            .run(Instant::now() + Duration::from_millis(50), job)
            .await;
        assert_eq!(answer, Err(Unfinished::TimedOut));
        assert!(!finished.load(Ordering::SeqCst), "answered while busy");
        assert_eq!(pool.slots.available_permits(), 0, "slot still held");
        release.send(()).expect("job still waiting");
        let _slot = tokio::time::timeout(NEVER, pool.slots.acquire())
            .await
            .expect("slot freed when the job stops");
        assert!(finished.load(Ordering::SeqCst));
    }

    /// No more than `size` jobs at once: with the only slot taken, a second
    /// job never starts before its deadline.
    #[tokio::test(flavor = "current_thread")]
    async fn at_most_size_jobs_at_once() {
        let pool = Pool::new(1);
        let (release, rx) = mpsc::channel::<()>();
        let first = pool.run(Instant::now() + NEVER, async move {
            rx.recv_timeout(NEVER).is_ok()
        });
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&started);
        let second = async {
            // Let the first take the slot.
            tokio::task::yield_now().await;
            let r = pool
                .run(Instant::now() + Duration::from_millis(50), async move {
                    flag.store(true, Ordering::SeqCst);
                })
                .await;
            release.send(()).expect("first still waiting");
            r
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first, Ok(true));
        assert_eq!(second, Err(Unfinished::TimedOut));
        assert!(!started.load(Ordering::SeqCst), "second job never ran");
    }

    /// A job that panics is an error for its caller, not for the server.
    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_an_error() {
        let pool = Pool::new(1);
        let r = pool
            .run(Instant::now() + NEVER, async { panic!("boom") })
            .await;
        assert!(matches!(r, Err(Unfinished::Failed(_))), "{r:?}");
        // The slot came back.
        assert_eq!(pool.slots.available_permits(), 1);
    }
}
