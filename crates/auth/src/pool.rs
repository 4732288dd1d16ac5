//! Where verification runs: a runtime of its own, never the threads that
//! serve sessions.
//!
//! mail-auth's checks are `async` for their DNS lookups, but hashing and
//! public-key operations between two lookups run without yielding; on the
//! session runtime's worker threads they would hold up every session
//! scheduled there (greetings, replies, timeouts). So every check is a task
//! on a dedicated multi-thread runtime with one worker per core: checks
//! waiting for DNS hold no thread (a sender's slow zone cannot starve the
//! others), checks hashing hold at most all the cores, side by side with
//! the session threads that the operating system keeps scheduling.
//!
//! The caller waits only until its deadline: when that passes it gets
//! [`Unfinished::TimedOut`] at once, even while the check is busy in a
//! loop; the check is aborted (it stops at its next await point) and its
//! result is dropped.

use std::future::Future;

use tokio::runtime::Runtime;
use tokio::time::Instant;

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// The deadline passed.
    TimedOut,
    /// The job panicked.
    Failed(String),
}

/// The verification runtime.
#[derive(Debug)]
pub(crate) struct Pool {
    // Always `Some` until dropped (see `Drop`).
    runtime: Option<Runtime>,
}

impl Pool {
    /// A runtime of `threads` worker threads (at least one).
    pub(crate) fn new(threads: usize) -> std::io::Result<Pool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("portcullis-verify")
            .enable_all()
            .build()?;
        Ok(Pool {
            runtime: Some(runtime),
        })
    }

    /// A runtime with one worker thread per core.
    pub(crate) fn for_this_machine() -> std::io::Result<Pool> {
        Pool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `job` on the verification runtime and returns its output, or
    /// [`Unfinished`] when `deadline` passes first (the job is then aborted
    /// and stops at its next await point) or the job panics. The caller
    /// may be on any runtime.
    pub(crate) async fn run<F>(&self, deadline: Instant, job: F) -> Result<F::Output, Unfinished>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(Unfinished::Failed("verification runtime stopped".into()));
        };
        // The job carries the deadline too, so an abandoned job also stops
        // waiting for DNS when its caller has stopped waiting for it.
        let task = runtime.spawn(tokio::time::timeout_at(deadline, job));
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(_elapsed))) => Err(Unfinished::TimedOut),
            Ok(Err(e)) if e.is_panic() => Err(Unfinished::Failed(e.to_string())),
            Ok(Err(_cancelled)) => Err(Unfinished::TimedOut),
            Err(_elapsed) => {
                abort.abort();
                Err(Unfinished::TimedOut)
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which is not allowed
        // inside another runtime (where the verifier lives): let them go.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Long enough never to be reached by a passing test; a failing one
    /// (a job run on the caller's thread) stops there instead of hanging.
    const NEVER: Duration = Duration::from_secs(10);

    /// Regression test: verification ran inside the session task, so a
    /// check busy in a loop held the thread that serves sessions. Here the
    /// caller's runtime has ONE thread and the job blocks its own thread
    /// until a task on the caller's runtime ("a session") has run: it
    /// completes only if the job is not on the caller's thread.
    #[tokio::test(flavor = "current_thread")]
    async fn sessions_run_while_a_job_is_busy() {
        let pool = Pool::new(1).expect("pool");
        let (tx, rx) = mpsc::channel::<()>();
        let job = async move { rx.recv_timeout(NEVER).is_ok() };
        let session = tokio::spawn(async move {
            // Runs on the caller's only thread while the job blocks.
            tx.send(()).is_ok()
        });
        let verified = pool.run(Instant::now() + NEVER * 2, job).await;
        assert_eq!(verified, Ok(true), "the job saw the session run");
        assert!(session.await.expect("session task"));
    }

    /// The deadline gives the caller its answer while the job is still
    /// busy: the job is released only after the answer came, and then
    /// runs to its end with nobody waiting for its result.
    #[tokio::test(flavor = "current_thread")]
    async fn deadline_answers_while_the_job_is_busy() {
        let pool = Pool::new(1).expect("pool");
        // A job that has not started by its deadline is aborted unstarted,
        // which proves nothing here: on a loaded machine, try again with a
        // longer deadline until the job was busy when the answer came.
        for wait in [50, 200, 1000, 5000] {
            let (started_tx, started_rx) = mpsc::channel::<()>();
            let (release, rx) = mpsc::channel::<()>();
            let (done_tx, done_rx) = mpsc::channel::<bool>();
            let job = async move {
                let _ = started_tx.send(());
                let released = rx.recv_timeout(NEVER).is_ok();
                let _ = done_tx.send(released);
            };
            let answer = pool
                .run(Instant::now() + Duration::from_millis(wait), job)
                .await;
            assert_eq!(answer, Err(Unfinished::TimedOut));
            if started_rx.recv_timeout(NEVER).is_err() {
                continue;
            }
            assert!(done_rx.try_recv().is_err(), "answered while busy");
            release.send(()).expect("job still waiting");
            assert_eq!(done_rx.recv_timeout(NEVER), Ok(true));
            return;
        }
        panic!("the job never started within 5 s");
    }

    /// CPU is bounded by the threads: with the only thread busy, another
    /// job does not start before its deadline.
    #[tokio::test(flavor = "current_thread")]
    async fn at_most_threads_jobs_on_the_cpu() {
        let pool = Pool::new(1).expect("pool");
        let (release, rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let busy = pool.run(Instant::now() + NEVER, async move {
            let _ = started_tx.send(());
            rx.recv_timeout(NEVER).is_ok()
        });
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&started);
        let second = async {
            // Once the first job holds the thread.
            tokio::task::spawn_blocking(move || started_rx.recv_timeout(NEVER))
                .await
                .expect("join")
                .expect("first job started");
            let r = pool
                .run(Instant::now() + Duration::from_millis(50), async move {
                    flag.store(true, Ordering::SeqCst);
                })
                .await;
            release.send(()).expect("first still waiting");
            r
        };
        let (busy, second) = tokio::join!(busy, second);
        assert_eq!(busy, Ok(true));
        assert_eq!(second, Err(Unfinished::TimedOut));
        assert!(!started.load(Ordering::SeqCst), "second job never ran");
    }

    /// A job waiting for I/O (as a check waits for DNS) holds no thread:
    /// with one thread, another job runs to its end meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn a_job_waiting_for_io_holds_no_thread() {
        let pool = Pool::new(1).expect("pool");
        let (answer, wait) = tokio::sync::oneshot::channel::<u8>();
        let waiting = pool.run(Instant::now() + NEVER, async move { wait.await.ok() });
        let other = async {
            let r = pool.run(Instant::now() + NEVER, async { 7u8 }).await;
            // Only now does the waiting job get its "DNS answer".
            answer.send(1).expect("first job still waiting");
            r
        };
        let (waiting, other) = tokio::join!(waiting, other);
        assert_eq!(other, Ok(7));
        assert_eq!(waiting, Ok(Some(1)));
    }

    /// A job that panics is an error for its caller, not for the server.
    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_an_error() {
        let pool = Pool::new(1).expect("pool");
        let r = pool
            .run(Instant::now() + NEVER, async { panic!("boom") })
            .await;
        assert!(matches!(r, Err(Unfinished::Failed(_))), "{r:?}");
        // The runtime still runs jobs.
        assert_eq!(pool.run(Instant::now() + NEVER, async { 1 }).await, Ok(1));
    }
}
