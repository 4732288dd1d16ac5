//! Cluster mode's shared limits as the server runs them: the DNS-list
//! answer store the screen is built with, and a task that every
//! `[cluster] sync_interval` exchanges the rate table's and the AUTH
//! guard's counts with the other nodes ([`LimitsExchange`]). Sessions
//! only ever read memory; this task is the only one that waits on the
//! database for them.

use super::shutdown::Lifecycle;
use portcullis_cluster::Cluster;
use portcullis_cluster::limits::LimitsExchange;
use portcullis_cluster::lists::PgLists;
use portcullis_inbound::Inbound;
use std::sync::Arc;

/// The DNS-list answers shared in `cluster`'s database.
pub fn lists(cluster: &Cluster) -> Arc<PgLists> {
    Arc::new(PgLists::new(cluster.clone()))
}

/// Until shutdown: one exchange every `sync_interval`, on the services
/// tracker. The screen generation in force is taken at each round (every
/// generation shares one rate table); the AUTH guard outlives reloads.
/// Called before the listeners accept, so that the rate table and the
/// guard remember every change from the first connection on.
pub fn spawn(cluster: Cluster, lists: Arc<PgLists>, inbound: Arc<Inbound>, life: &Lifecycle) {
    let shutdown = life.shutdown.clone();
    let exchange = LimitsExchange::new(cluster.clone(), lists);
    let guard = inbound.auth_guard();
    guard.share();
    if let Some(screen) = inbound.screen() {
        screen.rates().share();
    }
    life.services.spawn(async move {
        let mut every = tokio::time::interval(cluster.sync_interval());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            let Some(screen) = inbound.screen() else {
                continue;
            };
            // Bounded: each statement by the cluster's timeout; a round
            // cut short by shutdown loses nothing the database needs.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = exchange.exchange(screen.rates(), &guard) => {}
            }
        }
    });
}
