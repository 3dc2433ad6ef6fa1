//! The runbook catalog: every `*.rhai` file under `runbooks.dir`, compiled and versioned.
//!
//! Each file is compiled once, at load, into an AST that every run reuses, and identified
//! by a content hash (recorded with every run). Routes refer to runbooks by file name; the
//! catalog is the only authority on which names exist, so an alert can never name a path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::calls::{unknown_calls, KnownFunctions};
use super::sandbox::Sandbox;

/// One runbook file as loaded.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub path: PathBuf,
    pub source: String,
    /// SHA-256 of the source, hex: the version recorded with every run.
    pub hash: String,
    /// The compiled script.
    pub ast: Arc<rhai::AST>,
}

/// The loaded runbooks, by file name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    runbooks: BTreeMap<String, Runbook>,
}

/// A runbook directory or file that could not be read or compiled. Displayed as
/// `file:line:col: message` when the position is known.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct LoadError {
    pub path: PathBuf,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl Catalog {
    /// Loads and compiles every `*.rhai` file directly under `dir`. Returns the runbooks
    /// that compiled and a problem for every file that did not, or that calls a function
    /// that does not exist (see [`super::calls`]).
    pub fn load(dir: &Path, sandbox: &Sandbox) -> (Catalog, Vec<LoadError>) {
        let err = |path: &Path, message: String| LoadError {
            path: path.to_path_buf(),
            position: None,
            message,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                let problem = err(dir, format!("cannot read the runbook directory: {e}"));
                return (Catalog::default(), vec![problem]);
            }
        };
        let mut runbooks = BTreeMap::new();
        let mut errors = Vec::new();
        let known = KnownFunctions::of(sandbox.engine());
        let mut compiled = Vec::new();
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
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => source,
                Err(e) => {
                    errors.push(err(&path, format!("cannot read: {e}")));
                    continue;
                }
            };
            match sandbox.compile(&source) {
                Ok(ast) => compiled.push((name, path, source, ast)),
                Err(e) => errors.push(LoadError {
                    path,
                    position: e.position,
                    message: e.message,
                }),
            }
        }
        // What each file offers when another imports it: its public functions.
        let modules: BTreeMap<String, KnownFunctions> = compiled
            .iter()
            .map(|(name, _, _, ast)| (name.clone(), KnownFunctions::exported_by(ast)))
            .collect();
        let module = |import: &str| -> Option<&KnownFunctions> {
            let file = if import.ends_with(".rhai") {
                import.to_owned()
            } else {
                format!("{import}.rhai")
            };
            modules.get(&file)
        };
        for (name, path, source, ast) in compiled {
            // A call that cannot resolve fails only when the run reaches it: refused
            // here, like a syntax error.
            let unknown = unknown_calls(&ast, &known, &module);
            if !unknown.is_empty() {
                errors.extend(unknown.into_iter().map(|u| LoadError {
                    path: path.clone(),
                    position: u.position,
                    message: u.message,
                }));
                continue;
            }
            let hash = hex::encode(Sha256::digest(source.as_bytes()));
            let runbook = Runbook {
                name: name.clone(),
                path,
                source,
                hash,
                ast: Arc::new(ast),
            };
            runbooks.insert(name, runbook);
        }
        (Catalog { runbooks }, errors)
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
    use crate::config::RunbooksConfig;

    fn sandbox(dir: &Path) -> Sandbox {
        let cfg = RunbooksConfig {
            dir: dir.to_path_buf(),
            ..RunbooksConfig::default()
        };
        Sandbox::new(&cfg)
    }

    #[test]
    fn loads_rhai_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.rhai"), "log(\"a\");").unwrap();
        std::fs::write(dir.path().join("notes.md"), "#").unwrap();
        std::fs::write(dir.path().join(".hidden.rhai"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub.rhai")).unwrap();
        let (c, errs) = Catalog::load(dir.path(), &sandbox(dir.path()));
        assert!(errs.is_empty());
        assert_eq!(
            c.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a.rhai"]
        );
        assert_eq!(c.get("a.rhai").unwrap().hash.len(), 64);
    }

    #[test]
    fn compile_errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.rhai"), "log(\"fine\");").unwrap();
        std::fs::write(dir.path().join("bad.rhai"), "let x = 1;\nlet y = ;\n").unwrap();
        std::fs::write(dir.path().join("evil.rhai"), "eval(\"1\");").unwrap();
        let (catalog, errs) = Catalog::load(dir.path(), &sandbox(dir.path()));
        assert!(catalog.contains("ok.rhai") && catalog.len() == 1);
        let mut errs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        errs.sort();
        let d = dir.path().display();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!("{d}/bad.rhai:2:9: ")),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with(&format!("{d}/evil.rhai:1:1: ")),
            "{errs:?}"
        );
        assert!(errs[1].contains("eval"), "{errs:?}");
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let dir = Path::new("/nonexistent/runbooks");
        let (_, errs) = Catalog::load(dir, &sandbox(dir));
        assert!(errs[0]
            .to_string()
            .starts_with("/nonexistent/runbooks: cannot read the runbook directory"));
    }
}
