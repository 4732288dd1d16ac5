//! The screen in front of the queue (`portcullis-screen`): its state (in
//! the server's store, or in cluster mode shared in the cluster's
//! database with the server's store as the fall-back), the screen built
//! for the config (the recipients files read now, so a broken one stops
//! the start), and its sweep of expired state.

use super::shutdown::Lifecycle;
use anyhow::{Context, Result};
use portcullis_cluster::Cluster;
use portcullis_cluster::lists::PgLists;
use portcullis_cluster::screen::PgScreenStore;
use portcullis_cluster::screen_shared::SharedScreenStore;
use portcullis_config::Config;
use portcullis_dns::HickoryResolver;
use portcullis_inbound::Inbound;
use portcullis_screen::recipients::RecipientProbe;
use portcullis_screen::state::{ScreenStore, SledScreenStore};
use portcullis_screen::{ResolverDns, Screen, ScreenBuilder};
use portcullis_store::Store;
use portcullis_types::SystemClock;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How often expired greylist entries and cached probe answers are
/// removed: often enough that the trees stay small, rarely enough that a
/// sweep costs nothing noticeable.
const SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);

/// The screen of `config`, its state from [`screen_store`], its DNS lists
/// and the DMARC policies of greylisting looked up through `[dns]`
/// (`resolver`), recipients asked of their route by `probe`; in cluster
/// mode the DNS-list answers shared through `lists` (see
/// [`super::limits`]).
pub fn build(
    config: &Config,
    store: &Store,
    cluster: Option<&Cluster>,
    lists: Option<Arc<PgLists>>,
    resolver: &HickoryResolver,
    probe: Arc<dyn RecipientProbe>,
) -> Result<Screen> {
    let mut builder = ScreenBuilder::new(screen_store(store, cluster)?)
        .clock(Arc::new(SystemClock))
        .dns(Arc::new(ResolverDns::new(resolver.clone())))
        .probe(probe);
    if let Some(lists) = lists {
        builder = builder.shared_lists(lists);
    }
    builder.build(config).context("loading [recipients] files")
}

/// The screen's state: in `store` on a single node; with a `cluster`,
/// in the cluster's database (greylist passes and cached recipient
/// answers seen by every node), `store` answering while the database
/// cannot.
pub fn screen_store(store: &Store, cluster: Option<&Cluster>) -> Result<Arc<dyn ScreenStore>> {
    let local = Arc::new(
        SledScreenStore::new(store)
            .map_err(|e| anyhow::anyhow!("opening the screen's state in the store: {e}"))?,
    );
    Ok(match cluster {
        None => local,
        Some(cluster) => Arc::new(SharedScreenStore::new(
            PgScreenStore::new(cluster.clone()),
            local,
            cluster.clone(),
        )),
    })
}

/// Sweeps the screen's expired state every [`SWEEP_EVERY`] until
/// shutdown, on the services tracker.
pub fn spawn_sweep(inbound: Arc<Inbound>, life: &Lifecycle) {
    let shutdown = life.shutdown.clone();
    life.services.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: nothing has expired yet at the start.
        every.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            // The generation in force: they all share the state.
            let Some(screen) = inbound.screen() else {
                continue;
            };
            match screen.sweep().await {
                Ok(removed) => debug!(removed, "screen state swept"),
                Err(e) => {
                    warn!(error = %e, "sweeping the screen's state failed; trying again later")
                }
            }
        }
    });
}
