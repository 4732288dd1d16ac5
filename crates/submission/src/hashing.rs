//! Bounded password hashing. One argon2id check costs 19 MiB of memory and
//! tens of milliseconds of one core (the parameters are chosen to make
//! guessing expensive, RFC 9106 §4), so a flood of AUTH PLAIN/LOGIN
//! attempts must not each get a blocking-pool thread: that is how a client
//! buys the server's whole CPU and memory with wrong passwords.
//!
//! [`HashGate`] runs the checks on the blocking pool, at most one per core
//! at a time. A check waits at most the configured time for a slot
//! (`[submission] auth_queue_wait`); past it the caller answers `454 4.7.0`
//! (RFC 4954 §6: a temporary authentication failure) and no hash is
//! computed. The slot is held by the blocking job itself, so a session that
//! goes away while its hash runs does not free a slot early. Each slot owns
//! its argon2 working memory ([`HashMemory`]), allocated at its first use
//! and reused by every later check: memory for hashing stays at
//! `slots × 19 MiB` whatever clients do, and the allocator never sees the
//! 19 MiB blocks come and go (it would keep them, per thread).

use crate::password::HashMemory;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Why [`HashGate::run`] gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// Every slot stayed busy for the whole wait: the check was not made
    /// (answer 454 4.7.0).
    #[error("password hashing is saturated")]
    Busy,
    /// The job panicked on the blocking pool (a bug, never a verdict on
    /// the credentials).
    #[error("the password check crashed")]
    Crashed,
}

/// At most `slots` password checks at once, a bounded wait for a slot.
/// Share it behind an `Arc`.
#[derive(Debug)]
pub struct HashGate {
    permits: Arc<Semaphore>,
    slots: usize,
    wait: Duration,
    /// One working memory per slot; a job takes one with its permit and
    /// puts it back when done.
    memory: Arc<Mutex<Vec<HashMemory>>>,
}

impl HashGate {
    /// A gate of `slots` (at least one) concurrent checks; a check waits at
    /// most `wait` for a slot.
    pub fn new(slots: usize, wait: Duration) -> HashGate {
        let slots = slots.max(1);
        HashGate {
            permits: Arc::new(Semaphore::new(slots)),
            slots,
            wait,
            memory: Arc::new(Mutex::new((0..slots).map(|_| HashMemory::new()).collect())),
        }
    }

    /// A gate with one slot per core this process may use
    /// (`std::thread::available_parallelism`, 1 when unknown): more hashes
    /// at once would not finish sooner, they would only hold more memory.
    pub fn per_core(wait: Duration) -> HashGate {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HashGate::new(cores, wait)
    }

    /// How many checks may run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// How many checks are running now.
    pub fn running(&self) -> usize {
        self.slots.saturating_sub(self.permits.available_permits())
    }

    /// Bytes of argon2 working memory the slots hold now.
    pub fn memory_bytes(&self) -> usize {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(HashMemory::bytes)
            .sum()
    }

    /// Runs `job` on the blocking pool once a slot is free, with the slot's
    /// working memory, waiting at most the gate's wait for it;
    /// [`HashError::Busy`] when none came free in time (the job is then not
    /// run at all). Waiters are served in order of arrival (tokio's
    /// semaphore is fair).
    pub async fn run<T, F>(&self, job: F) -> Result<T, HashError>
    where
        F: FnOnce(&mut HashMemory) -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit =
            match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // Timed out, or the semaphore was closed (it never is).
                Ok(Err(_)) | Err(_) => return Err(HashError::Busy),
            };
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            // The slot is released when the hash is done, not when the
            // caller stops waiting for it.
            let _permit = permit;
            let take = || pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            // There is a memory per permit; should one have been lost (a
            // job that panicked), a new one takes its place.
            let mut memory = take().unwrap_or_default();
            let result = job(&mut memory);
            pool.lock().unwrap_or_else(|e| e.into_inner()).push(memory);
            result
        })
        .await
        .map_err(|_| HashError::Crashed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// With every slot busy, a check waits the configured time and is then
    /// refused without running; once a slot is free, checks run again.
    /// (Real time: tokio does not advance paused time while blocking jobs
    /// run, so the wait is short instead.)
    #[tokio::test]
    async fn a_check_waits_then_is_refused_when_all_slots_are_busy() {
        let wait = Duration::from_millis(200);
        let gate = Arc::new(HashGate::new(2, wait));
        let (release, hold) = mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let mut busy = Vec::new();
        for _ in 0..2 {
            let gate = gate.clone();
            let hold = hold.clone();
            busy.push(tokio::spawn(async move {
                gate.run(move |_| {
                    let _ = hold.lock().unwrap().recv();
                })
                .await
            }));
        }
        while gate.running() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let started = tokio::time::Instant::now();
        let refused = gate
            .run(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .await;
        assert_eq!(refused, Err(HashError::Busy));
        assert!(
            started.elapsed() >= wait,
            "refused before the wait was over"
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "not run");
        release.send(()).unwrap();
        release.send(()).unwrap();
        for b in busy {
            assert_eq!(b.await.unwrap(), Ok(()));
        }
        assert_eq!(gate.running(), 0);
        assert_eq!(gate.run(|_| 7).await, Ok(7));
    }

    /// A caller that stops waiting (its session went away) does not free
    /// the slot while its hash still runs.
    #[tokio::test]
    async fn an_abandoned_check_keeps_its_slot_until_it_ends() {
        let gate = Arc::new(HashGate::new(1, Duration::from_millis(100)));
        let (release, hold) = mpsc::channel::<()>();
        let g = gate.clone();
        let task = tokio::spawn(async move {
            g.run(move |_| {
                let _ = hold.recv();
            })
            .await
        });
        while gate.running() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task.abort();
        let _ = task.await;
        assert_eq!(gate.running(), 1, "the hash still runs");
        assert_eq!(gate.run(|_| ()).await, Err(HashError::Busy));
        release.send(()).unwrap();
        while gate.running() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(gate.run(|_| 1).await, Ok(1));
    }

    /// Checks reuse the slots' working memory: after many checks, the gate
    /// holds one argon2 memory per slot that was used, no more.
    #[tokio::test]
    async fn working_memory_is_reused() {
        let gate = Arc::new(HashGate::new(2, Duration::from_secs(30)));
        assert_eq!(gate.memory_bytes(), 0, "allocated at first use");
        let phc = crate::hash_password("pw").unwrap();
        let mut checks = Vec::new();
        for i in 0..6 {
            let gate = gate.clone();
            let phc = phc.clone();
            checks.push(tokio::spawn(async move {
                let password = if i % 2 == 0 { "pw" } else { "wrong" };
                gate.run(move |memory| crate::verify_password_in(&phc, password, memory))
                    .await
            }));
        }
        let results: Vec<_> = futures_results(checks).await;
        assert_eq!(results, [true, false, true, false, true, false]);
        let one = 19 * 1024 * 1024;
        assert!(
            [one, 2 * one].contains(&gate.memory_bytes()),
            "{}",
            gate.memory_bytes()
        );
    }

    async fn futures_results(
        tasks: Vec<tokio::task::JoinHandle<Result<bool, HashError>>>,
    ) -> Vec<bool> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap());
        }
        out
    }

    #[test]
    fn per_core_has_a_slot_per_core() {
        let gate = HashGate::per_core(Duration::from_secs(1));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(gate.slots(), cores);
        assert_eq!(HashGate::new(0, Duration::ZERO).slots(), 1);
    }
}
