//! The configuration in force: the loaded config, routes and runbooks, and the guards'
//! limits derived from them, kept as one [`Snapshot`] that a reload replaces whole.
//!
//! Every component that reads the configuration holds a [`Current`] and takes the snapshot
//! in force with [`Current::get`]. The swap is atomic (`arc-swap`): a reader sees the old
//! snapshot or the new one, never a mix of the two, and what it took stays valid (a run
//! keeps the snapshot it started with) whatever a reload does meanwhile.
//! [`Current::replace`] is the one place a new configuration is put in force; the guards'
//! limits and the store's rules are part of the snapshot, so they change in the same swap.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::guard::{Guards, Limits};
use crate::loaded::Loaded;
use crate::store::{Rules, Store};

/// One configuration and what is derived from it.
pub struct Snapshot {
    loaded: Loaded,
    /// The guards' limits of this configuration (rates, caps, breakers' settings).
    pub limits: Arc<Limits>,
    /// What the store takes from this configuration (escalation plans, storm window).
    pub rules: Arc<Rules>,
}

impl Snapshot {
    fn new(loaded: Loaded, guards: &Guards) -> Snapshot {
        let limits = Arc::new(guards.limits(Arc::new(loaded.config.clone())));
        let rules = Arc::new(Rules::from_config(&loaded.config));
        Snapshot {
            loaded,
            limits,
            rules,
        }
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
    /// Puts `loaded` in force at start-up. The store follows the snapshot from then on: it
    /// reads its rules from the one in force whenever a job needs them.
    pub fn new(loaded: Loaded, guards: &Guards, store: &Store) -> Current {
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::new(loaded, guards)));
        let followed = snapshot.clone();
        store.follow_rules(Arc::new(move || followed.load().rules.clone()));
        Current { snapshot }
    }

    /// The snapshot in force now. Holders keep the version they took.
    pub fn get(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a newly loaded configuration in force, in one swap. Runs in flight keep the
    /// snapshot they took.
    pub fn replace(&self, loaded: Loaded, guards: &Guards) {
        self.snapshot.store(Arc::new(Snapshot::new(loaded, guards)));
    }
}
