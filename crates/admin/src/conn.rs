//! What the admin socket and the metrics endpoint both do around their own
//! protocol: accept under a cap with backoff, write the answer within a
//! time limit, then drain what the client may still be sending.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Accepts connections with `accept` until `shutdown` is cancelled and runs
/// the future `serve` makes of each on `tracker`: at most `max` at once
/// (further ones wait in the backlog), accept errors (EMFILE and friends)
/// retried after a pause that doubles up to a second. `what` names the
/// endpoint in logs.
pub(crate) async fn accept_loop<S, A, AF, V, VF>(
    what: &'static str,
    max: usize,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    mut accept: A,
    mut serve: V,
) where
    A: FnMut() -> AF,
    AF: Future<Output = io::Result<S>>,
    V: FnMut(S) -> VF,
    VF: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max));
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept() => match accepted {
                Ok(stream) => {
                    backoff = Duration::from_millis(10);
                    stream
                }
                Err(e) => {
                    // EMFILE and friends: wait, the condition may pass.
                    warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let task = serve(stream);
        tracker.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}

/// Writes `out` and shuts the writing side down within `timeout`; false
/// (logged at debug level, naming `what`) when that fails or times out.
pub(crate) async fn write_and_close<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &[u8],
    timeout: Duration,
    what: &str,
) -> bool {
    let write = async {
        writer.write_all(out).await?;
        writer.shutdown().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "{what} write failed");
            false
        }
        Err(_) => {
            debug!("{what} write timed out");
            false
        }
    }
}

/// Reads and discards at most `limit` bytes for at most `timeout`, so a
/// client still writing (an over-long request) can finish and read the
/// answer rather than a reset.
pub(crate) async fn drain<R: AsyncRead + Unpin>(reader: R, limit: u64, timeout: Duration) {
    let mut sink = tokio::io::sink();
    let mut rest = reader.take(limit);
    let _ = tokio::time::timeout(timeout, tokio::io::copy(&mut rest, &mut sink)).await;
}
