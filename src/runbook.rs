//! Runbooks: the Rhai scripts under `runbooks.dir`, loaded and versioned.
//!
//! This module owns finding the runbook files and identifying each version by a content
//! hash (recorded in the audit log). Routes refer to runbooks by file name; the catalog is
//! the only authority on which names exist, so an alert can never name a path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One runbook file as loaded.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub path: PathBuf,
    pub source: String,
    /// SHA-256 of the source, hex: the version recorded with every run.
    pub hash: String,
}

/// The loaded runbooks, by file name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    runbooks: BTreeMap<String, Runbook>,
}

/// A runbook directory or file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

impl Catalog {
    /// Loads every `*.rhai` file directly under `dir`.
    pub fn load(dir: &Path) -> Result<Catalog, Vec<LoadError>> {
        let err = |path: &Path, message: String| LoadError {
            path: path.to_path_buf(),
            message,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| vec![err(dir, format!("cannot read the runbook directory: {e}"))])?;
        let mut runbooks = BTreeMap::new();
        let mut errors = Vec::new();
        for entry in entries {
            let path = match entry {
                Ok(e) => e.path(),
                Err(e) => {
                    errors.push(err(dir, e.to_string()));
                    continue;
                }
            };
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if !name.ends_with(".rhai") || name.starts_with('.') || !path.is_file() {
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(source) => {
                    let hash = hex::encode(Sha256::digest(source.as_bytes()));
                    runbooks.insert(
                        name.clone(),
                        Runbook {
                            name,
                            path,
                            source,
                            hash,
                        },
                    );
                }
                Err(e) => errors.push(err(&path, format!("cannot read: {e}"))),
            }
        }
        if errors.is_empty() {
            Ok(Catalog { runbooks })
        } else {
            Err(errors)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.runbooks.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Runbook> {
        self.runbooks.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Runbook> {
        self.runbooks.values()
    }

    pub fn len(&self) -> usize {
        self.runbooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runbooks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_rhai_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.rhai"), "log(\"a\");").unwrap();
        std::fs::write(dir.path().join("notes.md"), "#").unwrap();
        std::fs::write(dir.path().join(".hidden.rhai"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub.rhai")).unwrap();
        let c = Catalog::load(dir.path()).unwrap();
        assert_eq!(
            c.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a.rhai"]
        );
        assert_eq!(c.get("a.rhai").unwrap().hash.len(), 64);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let errs = Catalog::load(Path::new("/nonexistent/runbooks")).unwrap_err();
        assert!(errs[0]
            .to_string()
            .starts_with("/nonexistent/runbooks: cannot read the runbook directory"));
    }
}
