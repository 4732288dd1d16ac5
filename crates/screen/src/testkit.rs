//! What the crate's tests share: a hand-driven clock, the in-memory
//! resolver as the screen's DNS, a real sled store in a temporary directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time that moves only when a test advances it.
#[derive(Debug)]
pub(crate) struct TestClock(AtomicU64);

impl TestClock {
    /// A clock at `millis` since the Unix epoch.
    pub(crate) fn at_millis(millis: u64) -> TestClock {
        TestClock(AtomicU64::new(millis))
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl portcullis_types::Clock for TestClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// [`portcullis_dns::MemoryResolver`] as the screen's DNS (every answer
/// cacheable for a minute).
pub(crate) struct MemDns(pub(crate) portcullis_dns::MemoryResolver);

impl crate::ScreenDns for MemDns {
    fn ipv4_ttl<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::BoxFuture<'a, Result<(Vec<std::net::Ipv4Addr>, Duration), portcullis_dns::DnsError>>
    {
        use portcullis_dns::Resolver;
        Box::pin(async move { Ok((self.0.ipv4(name).await?, Duration::from_secs(60))) })
    }

    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> crate::BoxFuture<'a, Result<Vec<String>, portcullis_dns::DnsError>> {
        use portcullis_dns::Resolver;
        Box::pin(async move { Resolver::txt(&self.0, name).await })
    }
}

/// A real sled store in a temporary directory and the screen's state in
/// it (keep the directory alive as long as the store).
pub(crate) fn store() -> (
    tempfile::TempDir,
    std::sync::Arc<crate::state::SledScreenStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = portcullis_store::Store::open(dir.path()).unwrap();
    let screen = crate::state::SledScreenStore::new(&store).unwrap();
    (dir, std::sync::Arc::new(screen))
}
