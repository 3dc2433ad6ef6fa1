//! Schema migrations and what a backend does to its database as it opens.
//!
//! Each backend embeds its own migrations (`sqlite.rs`, `postgres.rs`) and applies them
//! here, in order, each in its own transaction.

use super::db::{params, Db};
use super::{stamp, StoreError};
use crate::clock::Clock;

/// Applies the `migrations` this database lacks, in order, each in its own transaction.
pub(super) fn migrate(c: &dyn Db, migrations: &[(u32, &str)]) -> Result<(), StoreError> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    let current: u32 = c.query_row(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations",
        (),
        |r| r.get(0),
    )?;
    let known = migrations.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    // A schema's history is stamped with the wall clock: it is written as the database
    // opens, before the store is handed the clock it runs on.
    let clock = Clock::system();
    for (version, sql) in migrations.iter().filter(|m| m.0 > current) {
        let failed = |source: StoreError| StoreError::Migration {
            version: *version,
            source: Box::new(source),
        };
        c.execute_batch("BEGIN").map_err(failed)?;
        let applied = c.execute_batch(sql).and_then(|()| {
            c.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, stamp(clock.now())],
            )
            .map(drop)
        });
        if let Err(e) = applied {
            let _ = c.execute_batch("ROLLBACK");
            return Err(failed(e));
        }
        c.execute_batch("COMMIT").map_err(failed)?;
    }
    Ok(())
}

/// Frees every lease and claim: at open, when one process owns the database (SQLite), whatever
/// an earlier process held is free. Runs left `remediating` are then recovered at once.
pub(super) fn release_all(c: &dyn Db) -> Result<(), StoreError> {
    c.execute(
        "UPDATE incidents SET lease_until = NULL WHERE state = 'remediating'",
        (),
    )?;
    c.execute(
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by IS NOT NULL",
        (),
    )?;
    Ok(())
}
