//! Runbooks: the Rhai scripts that remediate alerts.
//!
//! [`catalog`] finds and compiles the files under `runbooks.dir`, once, at load, and
//! [`calls`] checks that every function they call exists; [`sandbox`]
//! is the one configured Rhai engine that runs them, with limits on operations, depth,
//! sizes and wall-clock time. A runbook reaches the world only through the functions the
//! sandbox registers, and those only through a [`sandbox::Host`] (the `steps` module).
//! [`scope`] builds the maps a runbook sees (`alert`, `incident`, `secrets`).

pub mod calls;
pub mod catalog;
pub mod sandbox;
pub mod scope;

pub use catalog::{Catalog, Runbook};
