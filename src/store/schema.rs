//! The schema's version, read without changing anything (`medic migrate --status`): what
//! the database has, what this binary knows, and the migrations it would apply at its
//! next start.
//!
//! Each migration is named by the first sentence of the comment that opens its file
//! (`migrations/{sqlite,postgres}/NNNN_*.sql`); every migration starts with one.

use std::path::Path;

use super::db::{Db, Dialect};
use super::{Options, StoreError};
use crate::config::StoreConfig;

/// One migration this binary embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    /// The first sentence of its opening comment.
    pub summary: String,
}

/// A migration the database has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u32,
    pub applied_at: String,
}

/// Where a database's schema stands against this binary.
#[derive(Debug, Clone)]
pub struct SchemaStatus {
    /// The store, password hidden.
    pub store: String,
    /// `false`: no SQLite file yet (the first start creates it).
    pub exists: bool,
    /// The migrations the database has, oldest first.
    pub applied: Vec<Applied>,
    /// The newest schema version this binary knows.
    pub known: u32,
    /// What this binary would apply at its next start, in order.
    pub pending: Vec<Migration>,
}

impl SchemaStatus {
    /// The database's schema version (0: none yet).
    pub fn current(&self) -> u32 {
        self.applied.iter().map(|a| a.version).max().unwrap_or(0)
    }

    /// A newer medic migrated this database: this one refuses to start on it.
    pub fn is_too_new(&self) -> bool {
        self.current() > self.known
    }

    /// The status as `medic migrate --status` prints it.
    pub fn render(&self) -> String {
        let mut out = format!("store: {}\n", self.store);
        let current = self.current();
        if !self.exists {
            out.push_str("schema version: none (no database yet; the first start creates it)\n");
        } else {
            let when = self
                .applied
                .iter()
                .find(|a| a.version == current)
                .map(|a| format!(", applied {}", a.applied_at))
                .unwrap_or_default();
            out.push_str(&format!("schema version: {current}{when}\n"));
        }
        out.push_str(&format!(
            "this medic: {} (schema versions up to {})\n",
            env!("CARGO_PKG_VERSION"),
            self.known
        ));
        if self.is_too_new() {
            out.push_str(&format!(
                "newer than this medic: it refuses to start on this database (schema {current}, \
                 it knows up to {}). Run the release that migrated it, or a later one; to go \
                 back, restore the backup taken before the upgrade (docs/upgrading.md).\n",
                self.known
            ));
        } else if self.pending.is_empty() {
            out.push_str("up to date: nothing to apply\n");
        } else {
            out.push_str(&format!(
                "pending: {} migration(s), applied at the next start, in order:\n",
                self.pending.len()
            ));
            for m in &self.pending {
                out.push_str(&format!("  {:04}  {}\n", m.version, m.summary));
            }
        }
        out
    }
}

/// The migrations of a backend, with their names.
pub(super) fn migrations(embedded: &[(u32, &str)]) -> Vec<Migration> {
    embedded
        .iter()
        .map(|(version, sql)| Migration {
            version: *version,
            summary: summary(sql),
        })
        .collect()
}

/// The longest summary shown, in characters.
const SUMMARY_MAX: usize = 160;

/// The first sentence of the comment that opens `sql`, at most [`SUMMARY_MAX`] characters.
fn summary(sql: &str) -> String {
    let comment: Vec<&str> = sql
        .lines()
        .map_while(|l| l.trim().strip_prefix("--"))
        .map(str::trim)
        .collect();
    let text = comment.join(" ");
    let end = text
        .match_indices('.')
        .map(|(i, _)| i)
        .find(|&i| text[i + 1..].starts_with(' ') || i + 1 == text.len());
    let sentence = match end {
        Some(i) => &text[..=i],
        None => &text,
    };
    if sentence.chars().count() <= SUMMARY_MAX {
        return sentence.to_string();
    }
    let cut: String = sentence.chars().take(SUMMARY_MAX - 1).collect();
    format!("{}…", cut.trim_end())
}

/// Reads the schema status of the store of `config`. SQLite: the file is read, never
/// created. PostgreSQL: one connection, one read.
pub fn status(config: &StoreConfig) -> Result<SchemaStatus, StoreError> {
    let url = &config.url;
    let store = crate::config::redact_url_password(url);
    if let Some(path) = url.strip_prefix("sqlite://") {
        let all = migrations(super::sqlite::MIGRATIONS);
        let path = Path::new(path);
        if !path.is_file() {
            return Ok(build(store, false, Vec::new(), all));
        }
        let c = open_existing(path)?;
        let applied = read(&c)?;
        return Ok(build(store, true, applied, all));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let all = migrations(super::postgres::MIGRATIONS);
        let options = Options {
            lease: config.lease,
            statement_timeout: config.statement_timeout,
            pool_size: 1,
        };
        // Waiting on the driver: from a plain thread, as the store opens.
        let applied = std::thread::scope(|s| {
            s.spawn(|| {
                let c = super::postgres::connect_one(url, &options)?;
                read(&c)
            })
            .join()
            .unwrap_or_else(|_| Err(StoreError::Commit("reading the schema panicked".into())))
        })?;
        return Ok(build(store, true, applied, all));
    }
    Err(StoreError::Url {
        url: store,
        message: "unsupported scheme; expected sqlite://, postgres:// or postgresql://".into(),
    })
}

/// The SQLite file at `path`, opened to read: never created, its journal mode left as
/// it is.
fn open_existing(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let c = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    Ok(c)
}

fn build(store: String, exists: bool, applied: Vec<Applied>, all: Vec<Migration>) -> SchemaStatus {
    let current = applied.iter().map(|a| a.version).max().unwrap_or(0);
    let known = all.last().map(|m| m.version).unwrap_or(0);
    let pending = all.into_iter().filter(|m| m.version > current).collect();
    SchemaStatus {
        store,
        exists,
        applied,
        known,
        pending,
    }
}

/// The migrations recorded in `schema_migrations` (none when the table does not exist).
fn read(c: &dyn Db) -> Result<Vec<Applied>, StoreError> {
    let exists = match c.dialect() {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        }
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
        }
    };
    let n: i64 = c.rows(exists, &[])?[0].get(0)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    c.rows(
        "SELECT version, applied_at FROM schema_migrations ORDER BY version",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(Applied {
            version: r.get(0)?,
            applied_at: r.get(1)?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_is_named_by_its_opening_comment() {
        for (backend, embedded) in [
            ("sqlite", super::super::sqlite::MIGRATIONS),
            ("postgres", super::super::postgres::MIGRATIONS),
        ] {
            let all = migrations(embedded);
            for (i, m) in all.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{backend}: versions 1, 2, ...");
                assert!(
                    m.summary.len() > 10,
                    "{backend} migration {}: its file opens with a comment saying what it \
                     does (`-- ...`): {:?}",
                    m.version,
                    m.summary
                );
            }
        }
    }

    #[test]
    fn a_summary_is_the_first_sentence_of_the_opening_comment() {
        let check = |sql: &str, want: &str| assert_eq!(summary(sql), want, "{sql}");
        check(
            "-- Runs: why it stopped.\nALTER TABLE x;",
            "Runs: why it stopped.",
        );
        check(
            "-- Leases on runs, claims: what replicas\n-- need (one.lock). More.\nSELECT 1;",
            "Leases on runs, claims: what replicas need (one.lock).",
        );
        check("-- No full stop\nSELECT 1;", "No full stop");
        check("SELECT 1; -- late", "");
        let long = format!("-- {}\nSELECT 1;", "word ".repeat(100));
        let got = summary(&long);
        assert_eq!(got.chars().count(), SUMMARY_MAX, "{got}");
        assert!(got.ends_with("word…"), "{got}");
    }

    fn status_of(applied: &[u32], known: &[u32]) -> SchemaStatus {
        build(
            "sqlite://x".into(),
            true,
            applied
                .iter()
                .map(|&v| Applied {
                    version: v,
                    applied_at: format!("t{v}"),
                })
                .collect(),
            known
                .iter()
                .map(|&v| Migration {
                    version: v,
                    summary: format!("Migration {v}."),
                })
                .collect(),
        )
    }

    #[test]
    fn pending_is_what_the_database_lacks() {
        let s = status_of(&[1, 2], &[1, 2, 3, 4]);
        assert_eq!(s.current(), 2);
        assert!(!s.is_too_new());
        let text = s.render();
        assert!(text.contains("schema version: 2, applied t2"), "{text}");
        assert!(text.contains("pending: 2 migration(s)"), "{text}");
        assert!(
            text.contains("  0003  Migration 3.\n  0004  Migration 4.\n"),
            "{text}"
        );

        let text = status_of(&[1, 2, 3, 4], &[1, 2, 3, 4]).render();
        assert!(text.contains("up to date: nothing to apply"), "{text}");
    }

    #[test]
    fn a_newer_database_is_named_with_both_versions() {
        let s = status_of(&[1, 2, 3, 9], &[1, 2, 3]);
        assert!(s.is_too_new());
        assert!(s.pending.is_empty());
        let text = s.render();
        assert!(text.contains("schema 9, it knows up to 3"), "{text}");
        assert!(text.contains("restore the backup"), "{text}");
    }
}
