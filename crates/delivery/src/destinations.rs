//! Where mail goes as the config says now: `[routes]`, `[relay]
//! accepted_domains` and `[delivery] dane_only`, shared between the deliverer and whoever reloads the
//! config. Each delivery of a domain reads them once, so an attempt
//! started after a reload uses the new ones and one started before
//! finishes under the old.

use portcullis_config::Route;
use portcullis_types::Domain;
use std::sync::{Arc, RwLock};

/// The next hops and our own domains of one config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// `[routes]`: the configured next hops (they win over MX).
    pub routes: Vec<Route>,
    /// `[relay] accepted_domains`: ours, delivered only by a route.
    pub accepted: Vec<Domain>,
    /// `[delivery] dane_only`: domains whose MX hosts are contacted only
    /// with usable DANE.
    pub dane_only: Vec<Domain>,
}

/// The [`Destinations`] in force: cheap to clone, clones share them, and
/// [`LiveDestinations::set`] puts new ones in force for every clone.
#[derive(Debug, Clone, Default)]
pub struct LiveDestinations(Arc<RwLock<Arc<Destinations>>>);

impl LiveDestinations {
    /// Shared destinations, starting with `destinations`.
    pub fn new(destinations: Destinations) -> LiveDestinations {
        LiveDestinations(Arc::new(RwLock::new(Arc::new(destinations))))
    }

    /// The destinations in force now (one read, then no lock held).
    pub fn get(&self) -> Arc<Destinations> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `destinations` in force for deliveries started from now on.
    pub fn set(&self, destinations: Destinations) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(destinations);
    }
}
