//! The operator's commands on the store: `medic backup PATH` and `medic migrate --status`.
//!
//! Each reads only the `[store]` part of the configuration (the server's and channels'
//! secrets need not be set), does its work through `store`, and prints what it found on
//! standard output; `cli` turns an error into a message and an exit code.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ConfigErrors, Purpose, StoreConfig};
use crate::store::backup::{self, BackupError, Pace};
use crate::store::schema;
use crate::store::StoreError;

/// Why an operator's command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("{store}: {error}")]
    Store { store: String, error: StoreError },
}

/// `medic backup PATH`: a consistent copy of the SQLite store at `dest`, also while
/// `medic serve` runs.
pub fn backup(config: &Path, dest: &Path, force: bool) -> Result<ExitCode, OperateError> {
    let store = store_config(config)?;
    let report = backup::backup(&store.url, dest, force, Pace::default())?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// `medic migrate --status`: the store's schema version and what this binary would apply
/// at its next start, without applying it. Exit 1 when the database is newer than this
/// binary (it would refuse to start on it).
pub fn migrate_status(config: &Path) -> Result<ExitCode, OperateError> {
    let store = store_config(config)?;
    let status = schema::status(&store).map_err(|error| OperateError::Store {
        store: crate::config::redact_url_password(&store.url),
        error,
    })?;
    print!("{}", status.render());
    Ok(if status.is_too_new() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn store_config(path: &Path) -> Result<StoreConfig, OperateError> {
    Ok(Config::load_for(path, Purpose::Audit)?.store)
}
