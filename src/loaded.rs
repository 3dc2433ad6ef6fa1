//! What a config file loads into: a validated config, its compiled routes and the runbook
//! catalog, checked against each other. `medic check` prints the problems of loading one;
//! `medic serve` refuses to start on any.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::audit::{Event, NewEntry};
use crate::config::{Config, ConfigError, Location, RouteConfig, RunbookTarget};
use crate::routing::Router;
use crate::runbook::sandbox::Sandbox;
use crate::runbook::Catalog;
use crate::steps::Toolkit;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Everything that a config file turns into, immutable once loaded.
pub struct Loaded {
    pub config: Config,
    pub router: Router,
    pub catalog: Catalog,
    /// The Rhai engine the catalog was compiled with; runs use the same one.
    pub sandbox: Arc<Sandbox>,
    /// What steps need: the resolved allowlist, an HTTP client, limits, secrets.
    pub toolkit: Arc<Toolkit>,
    /// SHA-256 of the config file's text, when loaded from a file.
    pub config_hash: String,
}

/// One problem found while loading, printed as `file:line:col: message` where known.
#[derive(Debug, Clone)]
pub struct Problem(pub String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&ConfigError> for Problem {
    fn from(e: &ConfigError) -> Self {
        Problem(e.to_string())
    }
}

impl Loaded {
    /// Loads and cross-checks the config at `path` and the runbooks it points to,
    /// collecting every problem rather than stopping at the first.
    pub fn load(path: &Path) -> Result<Loaded, Vec<Problem>> {
        let config = Config::load(path)
            .map_err(|errs| errs.0.iter().map(Problem::from).collect::<Vec<_>>())?;
        let mut loaded = Loaded::from_config(config)?;
        let text = std::fs::read(path).unwrap_or_default();
        loaded.config_hash = hex::encode(Sha256::digest(&text));
        Ok(loaded)
    }

    /// The audit entry that records this configuration coming into force.
    pub fn audit_entry(&self, trigger: &str) -> NewEntry {
        NewEntry::new(
            Event::ConfigLoaded,
            &json!({
                "file": self.config.source.display().to_string(),
                "sha256": self.config_hash,
                "trigger": trigger,
                "routes": self.config.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                "runbooks": self.catalog.iter().map(|r| json!({"name": r.name, "sha256": r.hash})).collect::<Vec<_>>(),
            }),
        )
    }

    pub fn from_config(config: Config) -> Result<Loaded, Vec<Problem>> {
        let mut problems = Vec::new();
        let sandbox = Sandbox::new(&config.runbooks);
        let toolkit = match Toolkit::new(&config) {
            Ok(t) => Some(t),
            Err(errs) => {
                let file = config.source.display();
                problems.extend(
                    errs.into_iter()
                        .map(|e| Problem(format!("{file}: runbooks.allowed_commands: {e}"))),
                );
                None
            }
        };
        let (catalog, errors) = Catalog::load(&config.runbooks.dir, &sandbox);
        problems.extend(errors.into_iter().map(|e| Problem(e.to_string())));
        problems.extend(missing_runbooks(&config, &catalog));
        let Some(toolkit) = toolkit.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        let router = Router::new(config.routes.iter().map(RouteConfig::routing));
        Ok(Loaded {
            config,
            router,
            catalog,
            sandbox: Arc::new(sandbox),
            toolkit: Arc::new(toolkit),
            config_hash: String::new(),
        })
    }
}

/// A problem for every route that names a runbook file that does not exist.
pub fn missing_runbooks(config: &Config, catalog: &Catalog) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        if let RunbookTarget::File(name) = &route.target {
            // A file that exists but failed to compile is reported by the catalog.
            if !catalog.contains(name) && !config.runbooks.dir.join(name).is_file() {
                let e = ConfigError {
                    file: config.source.clone(),
                    location: Some(Location {
                        line: route.location.line,
                        column: route.location.column,
                    }),
                    key: format!("routes[{i}].runbook"),
                    message: format!(
                        "runbook {name:?} does not exist in {}",
                        config.runbooks.dir.display()
                    ),
                };
                problems.push(Problem::from(&e));
            }
        }
    }
    problems
}
