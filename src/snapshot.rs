//! The configuration in force: the loaded config, routes and runbooks, and what is derived
//! from them, kept as one snapshot that a reload replaces whole.
//!
//! Every component that reads the configuration holds a [`Current`] and takes the snapshot
//! in force with [`Current::get`]; what it took stays valid (a run keeps the snapshot it
//! started with) whatever a reload does meanwhile. [`Current::replace`] is the one place a
//! new configuration is put in force.

use std::sync::{Arc, RwLock};

use crate::guard::Guards;
use crate::loaded::Loaded;
use crate::store::{Plans, Store};

/// The configuration in force, shared by every component. Cheap to clone.
#[derive(Clone)]
pub struct Current {
    loaded: Arc<RwLock<Arc<Loaded>>>,
}

impl Current {
    /// Puts `loaded` in force at start-up, with what the guards and the store derive from it.
    pub fn new(loaded: Loaded, guards: &Guards, store: &Store) -> Current {
        apply(&loaded, guards, store);
        Current {
            loaded: Arc::new(RwLock::new(Arc::new(loaded))),
        }
    }

    /// The loaded config, routes and runbooks in force now. Holders keep the version they took.
    pub fn get(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts a newly loaded configuration in force. Runs in flight keep the one they took.
    pub fn replace(&self, loaded: Loaded, guards: &Guards, store: &Store) {
        apply(&loaded, guards, store);
        *self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
    }
}

/// What the guards and the store keep of a configuration.
fn apply(loaded: &Loaded, guards: &Guards, store: &Store) {
    guards.reconfigure(Arc::new(loaded.config.clone()));
    store.set_storm_window(loaded.config.limits.storm_window);
    store.set_plans(Plans::from_config(&loaded.config));
}
