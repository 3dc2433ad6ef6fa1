//! The configuration in force: the loaded config, routes and runbooks, and the guards'
//! limits derived from them, kept as one [`Snapshot`] that a reload replaces whole.
//!
//! Every component that reads the configuration holds a [`Current`] and takes the snapshot
//! in force with [`Current::get`]. The swap is atomic (`arc-swap`): a reader sees the old
//! snapshot or the new one, never a mix of the two, and what it took stays valid (a run
//! keeps the snapshot it started with) whatever a reload does meanwhile.
//! [`Current::replace`] is the one place a new configuration is put in force.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::guard::{Guards, Limits};
use crate::loaded::Loaded;
use crate::store::{Plans, Store};

/// One configuration and what is derived from it.
pub struct Snapshot {
    loaded: Loaded,
    /// The guards' limits of this configuration (rates, caps, breakers' settings).
    pub limits: Arc<Limits>,
}

impl Snapshot {
    fn new(loaded: Loaded, guards: &Guards) -> Snapshot {
        let limits = Arc::new(guards.limits(Arc::new(loaded.config.clone())));
        Snapshot { loaded, limits }
    }
}

/// A snapshot reads as the loaded configuration it was made from.
impl Deref for Snapshot {
    type Target = Loaded;

    fn deref(&self) -> &Loaded {
        &self.loaded
    }
}

/// The configuration in force, shared by every component. Cheap to clone.
#[derive(Clone)]
pub struct Current {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl Current {
    /// Puts `loaded` in force at start-up.
    pub fn new(loaded: Loaded, guards: &Guards, store: &Store) -> Current {
        let snapshot = Snapshot::new(loaded, guards);
        tell_store(&snapshot, store);
        Current {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
        }
    }

    /// The snapshot in force now. Holders keep the version they took.
    pub fn get(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a newly loaded configuration in force, in one swap. Runs in flight keep the
    /// snapshot they took.
    pub fn replace(&self, loaded: Loaded, guards: &Guards, store: &Store) {
        let snapshot = Snapshot::new(loaded, guards);
        tell_store(&snapshot, store);
        self.snapshot.store(Arc::new(snapshot));
    }
}

/// The store keeps its own copies of the storm window and the escalation plans, set here,
/// next to the swap, until it reads them from the snapshot.
fn tell_store(snapshot: &Snapshot, store: &Store) {
    store.set_storm_window(snapshot.config.limits.storm_window);
    store.set_plans(Plans::from_config(&snapshot.config));
}
