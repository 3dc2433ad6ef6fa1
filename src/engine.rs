//! The engine's loaded definition: a validated config, its compiled routes and the runbook
//! catalog, checked against each other. `medic check` prints the problems of loading one;
//! `medic serve` refuses to start on any.

use std::fmt;
use std::path::Path;

use crate::config::{Config, ConfigError, Location, RunbookTarget};
use crate::routing::Router;
use crate::runbook::Catalog;

/// Everything that a config file turns into, immutable once loaded.
#[derive(Debug)]
pub struct Engine {
    pub config: Config,
    pub router: Router,
    pub catalog: Catalog,
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

impl Engine {
    /// Loads and cross-checks the config at `path` and the runbooks it points to,
    /// collecting every problem rather than stopping at the first.
    pub fn load(path: &Path) -> Result<Engine, Vec<Problem>> {
        let config = Config::load(path)
            .map_err(|errs| errs.0.iter().map(Problem::from).collect::<Vec<_>>())?;
        Engine::from_config(config)
    }

    pub fn from_config(config: Config) -> Result<Engine, Vec<Problem>> {
        let mut problems = Vec::new();
        let catalog = match Catalog::load(&config.runbooks.dir) {
            Ok(c) => c,
            Err(errs) => {
                problems.extend(errs.into_iter().map(|e| Problem(e.to_string())));
                Catalog::default()
            }
        };
        if problems.is_empty() {
            for (i, route) in config.routes.iter().enumerate() {
                if let RunbookTarget::File(name) = &route.target {
                    if !catalog.contains(name) {
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
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let router = Router::new(&config.routes);
        Ok(Engine {
            config,
            router,
            catalog,
        })
    }
}
