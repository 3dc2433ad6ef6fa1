//! The embedded SQLite backend: one database file, one process.
//!
//! WAL mode with `synchronous=FULL`: a commit is on disk when it returns, and the reader
//! never blocks the writer. A background thread copies the WAL back into the database
//! file, so that the writer never spends a commit's time on it.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::engine::{self, Engine, Parts, Readers};
use super::StoreError;
use crate::metrics::StoreMetrics;

/// Schema migrations, embedded in the binary, applied in order at open.
pub(super) const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_runs.sql")),
    (3, include_str!("migrations/sqlite/0003_guards.sql")),
    (4, include_str!("migrations/sqlite/0004_escalation.sql")),
    (5, include_str!("migrations/sqlite/0005_replicas.sql")),
    (
        6,
        include_str!("migrations/sqlite/0006_group_summaries.sql"),
    ),
    (7, include_str!("migrations/sqlite/0007_used_links.sql")),
    (8, include_str!("migrations/sqlite/0008_approvals.sql")),
];

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

pub(super) fn open(
    path: &Path,
    lease: Duration,
    owner: String,
    metrics: StoreMetrics,
) -> Result<Engine, StoreError> {
    let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
    }
    let connect = || -> Result<Connection, StoreError> {
        let c = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        configure(&c).map_err(|e| open_err(Box::new(e)))?;
        Ok(c)
    };
    let conn = connect()?;
    // The writer's page cache holds a whole group commit; its savepoints stay in memory;
    // checkpoints are the checkpointer's job.
    conn.execute_batch(
        "PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;",
    )
    .map_err(|e| open_err(Box::new(e)))?;
    engine::migrate(&conn, MIGRATIONS)?;
    // One process owns this file: whatever an earlier process held is free now.
    engine::release_all(&conn)?;
    let reader = connect()?;
    let checkpoint_conn = connect()?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let checkpoint = std::thread::Builder::new()
        .name("medic-store-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = checkpoint_conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    tracing::warn!(error = %e, "store: background checkpoint failed; will retry");
                }
            }
        })
        .map_err(|e| open_err(Box::new(e)))?;
    let parts = Parts {
        writer: Box::new(conn),
        reconnect: None,
        readers: Readers::One(std::sync::Arc::new(std::sync::Mutex::new(Box::new(reader)))),
        on_close: Some(Box::new(move || {
            let _ = stop.send(());
            let _ = checkpoint.join();
        })),
        owner,
        lease,
    };
    Engine::start(parts, metrics)
}

fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_secs(5))?;
    // WAL: readers never block the writer. FULL: a commit is on disk when it returns.
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}
