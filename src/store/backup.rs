//! A consistent copy of the SQLite store, taken while medic serves (`medic backup PATH`).
//!
//! SQLite's online backup API copies the database page by page. The copy reads one
//! snapshot: the source connection holds a read transaction from the first page to the
//! last, so the copy is the database as one commit left it, and the backup never starts
//! over when medic commits meanwhile (without that transaction, SQLite restarts a backup
//! whenever another connection writes, and a busy medic would never let one finish). In
//! WAL mode a reader never blocks the writer: medic keeps committing while the copy is
//! made, and only its checkpoints wait for the copy to end before they empty the log.
//! The copy goes in steps of [`Pace::pages`], with a pause between them, so that it shares
//! the disk and the CPU with the server.
//!
//! The copy is written beside its destination under a temporary name, checked
//! (`PRAGMA quick_check`), made a single file (rollback journal, no `-wal`), flushed to
//! disk and only then renamed to its name: a copy that exists is a whole one.
//!
//! PostgreSQL is refused: its own tools (`pg_dump`, or a base backup with WAL archiving)
//! are the way, see docs/operating.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// Why a backup was not made. Nothing is left at the destination when it fails.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "store.url {url} is PostgreSQL: `medic backup` copies the SQLite store only. Back up \
         PostgreSQL with its own tools: `pg_dump --format=custom` for a copy, or a base backup \
         with WAL archiving for point-in-time recovery (see docs/operating.md, \"Backups\")"
    )]
    Postgres { url: String },
    #[error("store.url {url:?}: not a store medic knows (sqlite:// or postgres://)")]
    UnknownUrl { url: String },
    #[error("no database at {0}: nothing to back up (is store.url the one medic serves?)")]
    Missing(PathBuf),
    #[error("{0} exists: choose a new path, or pass --force to replace it")]
    Exists(PathBuf),
    #[error("{0} is the store itself: choose another path")]
    SameFile(PathBuf),
    #[error("reading the store {path}: {error}")]
    Source {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("writing the copy {path}: {error}")]
    Dest {
        path: PathBuf,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the store {path} stayed locked for {waited:?}: nothing was copied; try again")]
    Busy { path: PathBuf, waited: Duration },
    #[error("the copy of {path} fails SQLite's check ({problem}): it was not kept")]
    Check { path: PathBuf, problem: String },
}

/// How the copy shares the machine with the server.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Pages copied per step (4 KiB each, SQLite's default page size).
    pub pages: u32,
    /// The pause after each step.
    pub pause: Duration,
    /// How long the store may stay locked (a step answered busy) before giving up.
    pub busy_timeout: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            // 4 MiB a step.
            pages: 1024,
            pause: Duration::from_millis(2),
            busy_timeout: Duration::from_secs(30),
        }
    }
}

/// What a backup made.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// The copy's schema version (`schema_migrations`).
    pub schema_version: u32,
    pub incidents: u64,
    pub audit_entries: u64,
    /// How many steps the copy took.
    pub steps: u64,
    pub took: Duration,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backup written: {} ({} bytes, schema version {}, {} incidents, {} audit entries, \
             {} ms)",
            self.path.display(),
            self.bytes,
            self.schema_version,
            self.incidents,
            self.audit_entries,
            self.took.as_millis()
        )
    }
}

/// Copies the SQLite store at `url` (`sqlite://PATH`) to `dest`. With `force`, an existing
/// `dest` is replaced (once the new copy is whole).
pub fn backup(
    url: &str,
    dest: &Path,
    force: bool,
    pace: Pace,
) -> Result<BackupReport, BackupError> {
    let source = sqlite_path(url)?;
    backup_file(&source, dest, force, pace)
}

/// The database file of a store URL, or why it cannot be backed up.
fn sqlite_path(url: &str) -> Result<PathBuf, BackupError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(PathBuf::from(path));
    }
    let url = crate::config::redact_url_password(url);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::Postgres { url });
    }
    Err(BackupError::UnknownUrl { url })
}

/// [`backup`], from a database file.
pub fn backup_file(
    source: &Path,
    dest: &Path,
    force: bool,
    pace: Pace,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    if !source.is_file() {
        return Err(BackupError::Missing(source.to_path_buf()));
    }
    if same_file(source, dest) {
        return Err(BackupError::SameFile(dest.to_path_buf()));
    }
    // A -wal or -shm left at the destination would be read as part of the new copy.
    let leftovers = [
        dest.to_path_buf(),
        sidecar(dest, "-wal"),
        sidecar(dest, "-shm"),
    ];
    if !force && leftovers.iter().any(|p| p.exists()) {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let dest_err = |error: Box<dyn std::error::Error + Send + Sync>| BackupError::Dest {
        path: dest.to_path_buf(),
        error,
    };
    let dir = parent_dir(dest);
    if !dir.is_dir() {
        return Err(dest_err(format!("no directory {}", dir.display()).into()));
    }
    let partial = partial_path(dest);
    remove_copy(&partial);
    let made = copy(source, &partial, pace)
        .and_then(|steps| finish(&partial, dest).map(|r| (steps, r)))
        .and_then(|(steps, report)| {
            for leftover in &leftovers[1..] {
                match std::fs::remove_file(leftover) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(dest_err(Box::new(e)))
                    }
                    _ => {}
                }
            }
            std::fs::rename(&partial, dest).map_err(|e| dest_err(Box::new(e)))?;
            sync_dir(dest).map_err(|e| dest_err(Box::new(e)))?;
            Ok((steps, report))
        });
    let (steps, (schema_version, incidents, audit_entries)) = match made {
        Ok(m) => m,
        Err(e) => {
            remove_copy(&partial);
            return Err(e);
        }
    };
    let bytes = std::fs::metadata(dest)
        .map(|m| m.len())
        .map_err(|e| dest_err(Box::new(e)))?;
    Ok(BackupReport {
        path: dest.to_path_buf(),
        bytes,
        schema_version,
        incidents,
        audit_entries,
        steps,
        took: started.elapsed(),
    })
}

/// Copies `source` into a new database at `partial`, in steps, from one snapshot.
/// Returns how many steps it took.
fn copy(source: &Path, partial: &Path, pace: Pace) -> Result<u64, BackupError> {
    let src_err = |error: rusqlite::Error| BackupError::Source {
        path: source.to_path_buf(),
        error,
    };
    let dest_err = |e: rusqlite::Error| BackupError::Dest {
        path: partial.to_path_buf(),
        error: Box::new(e),
    };
    // Never created: a missing store is an error, not an empty copy.
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(src_err)?;
    src.busy_timeout(pace.busy_timeout).map_err(src_err)?;
    // The snapshot: a read transaction, begun by a read, held until the last page. medic
    // keeps its store in WAL mode, where this blocks no writer (in a rollback journal it
    // would, but then no medic is writing).
    src.execute_batch("BEGIN DEFERRED").map_err(src_err)?;
    src.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(src_err)?;
    let mut dst = Connection::open(partial).map_err(dest_err)?;
    let steps = {
        let backup = Backup::new(&src, &mut dst).map_err(dest_err)?;
        step_all(&backup, source, pace)?
    };
    src.execute_batch("COMMIT").map_err(src_err)?;
    drop(src);
    // The copy is one file: the source's WAL mode, copied with its first page, is turned
    // back into a rollback journal. medic sets WAL again when it opens the copy.
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(dest_err)?;
    dst.close().map_err(|(_, e)| dest_err(e))?;
    Ok(steps)
}

/// Runs the backup's steps to the end.
fn step_all(backup: &Backup<'_, '_>, source: &Path, pace: Pace) -> Result<u64, BackupError> {
    let pages = i32::try_from(pace.pages.max(1)).unwrap_or(i32::MAX);
    let mut steps = 0u64;
    let mut busy_since: Option<Instant> = None;
    loop {
        let step = backup.step(pages).map_err(|error| BackupError::Source {
            path: source.to_path_buf(),
            error,
        })?;
        steps += 1;
        match step {
            StepResult::Done => return Ok(steps),
            StepResult::More => {
                busy_since = None;
                std::thread::sleep(pace.pause);
            }
            StepResult::Busy | StepResult::Locked => {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= pace.busy_timeout {
                    return Err(BackupError::Busy {
                        path: source.to_path_buf(),
                        waited: since.elapsed(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // A future variant of the enum: treated as busy for one more step.
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Checks the copy at `partial` and reads what the report says of it; flushes it to disk.
fn finish(partial: &Path, dest: &Path) -> Result<(u32, u64, u64), BackupError> {
    let dest_err = |e: rusqlite::Error| BackupError::Dest {
        path: partial.to_path_buf(),
        error: Box::new(e),
    };
    let c =
        Connection::open_with_flags(partial, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(dest_err)?;
    let problem: String = c
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(dest_err)?;
    if problem != "ok" {
        return Err(BackupError::Check {
            path: dest.to_path_buf(),
            problem,
        });
    }
    // A database without medic's tables is not a store medic can start on.
    let count = |sql: &str| -> Result<i64, BackupError> {
        c.query_row(sql, [], |r| r.get(0))
            .map_err(|e| BackupError::Check {
                path: dest.to_path_buf(),
                problem: format!("not a medic store: {e}"),
            })
    };
    let version = count("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")?;
    let incidents = count("SELECT COUNT(*) FROM incidents")?;
    let audit = count("SELECT COUNT(*) FROM audit")?;
    drop(c);
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| BackupError::Dest {
            path: partial.to_path_buf(),
            error: Box::new(e),
        })?;
    Ok((
        u32::try_from(version).unwrap_or(0),
        u64::try_from(incidents).unwrap_or(0),
        u64::try_from(audit).unwrap_or(0),
    ))
}

/// `path` with `suffix` added to its file name (SQLite's `-wal`, `-shm`, `-journal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Where the copy is made before it is renamed: beside `dest`, so the rename is atomic.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(format!(".partial-{}", std::process::id()));
    dest.with_file_name(name)
}

/// Removes a copy in the making and the files SQLite keeps beside it.
fn remove_copy(partial: &Path) {
    for p in [
        partial.to_path_buf(),
        sidecar(partial, "-journal"),
        sidecar(partial, "-wal"),
        sidecar(partial, "-shm"),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The directory `path` is in.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Flushes the directory of `path`, so that the rename survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(parent_dir(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    /// A database shaped as the report reads it, in WAL mode as medic keeps its store,
    /// with `rows` incidents, each with one audit entry and 2 KiB of payload.
    fn store(path: &Path, rows: u32) -> Connection {
        let c = Connection::open(path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL);
             INSERT INTO schema_migrations VALUES (7, 'then');
             CREATE TABLE incidents (id INTEGER PRIMARY KEY, payload BLOB);
             CREATE TABLE audit (seq INTEGER PRIMARY KEY, incident INTEGER);",
        )
        .unwrap();
        c.execute_batch("BEGIN").unwrap();
        for _ in 0..rows {
            add_incident(&c);
        }
        c.execute_batch("COMMIT").unwrap();
        c
    }

    /// One incident and its audit entry, in the caller's transaction or one of their own.
    fn add_incident(c: &Connection) {
        c.execute(
            "INSERT INTO incidents (payload) VALUES (randomblob(2048))",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO audit (incident) VALUES (last_insert_rowid())",
            [],
        )
        .unwrap();
    }

    fn quick() -> Pace {
        Pace {
            pages: 1,
            pause: Duration::from_millis(1),
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// Another connection commits all through the copy, one incident and its audit entry
    /// per transaction. Copied a page at a time, a backup without a snapshot of its own
    /// starts over at every commit and never ends; this one ends, and holds the database
    /// as one commit left it: as many audit entries as incidents, none cut in half.
    #[test]
    fn a_copy_taken_while_another_connection_commits_is_one_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("medic.db");
        drop(store(&source, 1000));
        let commits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (source, commits, stop) = (source.clone(), commits.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = Connection::open(&source).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    c.execute_batch("BEGIN IMMEDIATE").unwrap();
                    add_incident(&c);
                    c.execute_batch("COMMIT").unwrap();
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // The writer is under way before the copy starts.
        while commits.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        let dest = tmp.path().join("copy.db");
        let before = commits.load(Ordering::Relaxed);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let (source, dest) = (source.clone(), dest.clone());
            std::thread::spawn(move || {
                let _ = done_tx.send(backup_file(&source, &dest, false, quick()));
            });
        }
        // Not a bound on its speed: without a snapshot it would never end.
        let report = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the backup ends while the writer commits")
            .unwrap();
        let during = commits.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(during > 0, "the writer committed while the copy was made");
        assert!(report.steps > 100, "copied in many steps: {report:?}");

        let copy = Connection::open(&dest).unwrap();
        let count = |sql: &str| -> i64 { copy.query_row(sql, [], |r| r.get(0)).unwrap() };
        let incidents = count("SELECT COUNT(*) FROM incidents");
        assert!(
            incidents >= 1010,
            "{incidents}: at least what was there at the start"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM audit"),
            incidents,
            "one snapshot"
        );
        assert_eq!(report.incidents, incidents as u64);
        assert_eq!(report.audit_entries, incidents as u64);
        assert_eq!(report.schema_version, 7);
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "the copy is a single file");
        assert!(!sidecar(&dest, "-wal").exists());
        let files: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(files.is_empty(), "nothing left over: {files:?}");
    }

    #[test]
    fn postgres_is_refused_with_its_own_procedure_and_no_password() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("copy.db");
        let e = backup(
            "postgres://medic:s3cret@db.example/medic",
            &dest,
            false,
            Pace::default(),
        )
        .unwrap_err();
        assert!(matches!(e, BackupError::Postgres { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("pg_dump"), "{text}");
        assert!(text.contains("docs/operating.md"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!dest.exists());
        let e = backup("mysql://db/medic", &dest, false, Pace::default()).unwrap_err();
        assert!(matches!(e, BackupError::UnknownUrl { .. }), "{e}");
    }

    #[test]
    fn a_missing_store_is_an_error_and_is_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("data/medic.db");
        let dest = tmp.path().join("copy.db");
        let url = format!("sqlite://{}", source.display());
        let e = backup(&url, &dest, false, Pace::default()).unwrap_err();
        assert!(matches!(e, BackupError::Missing(_)), "{e}");
        assert!(!source.exists() && !dest.exists());
    }

    #[test]
    fn an_existing_copy_is_replaced_only_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("medic.db");
        drop(store(&source, 3));
        let dest = tmp.path().join("copy.db");
        std::fs::write(&dest, "an older copy").unwrap();
        let e = backup_file(&source, &dest, false, Pace::default()).unwrap_err();
        assert!(matches!(e, BackupError::Exists(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "an older copy");

        // A write-ahead log left beside the destination would be read with the new copy.
        std::fs::remove_file(&dest).unwrap();
        std::fs::write(sidecar(&dest, "-wal"), "a stale log").unwrap();
        let e = backup_file(&source, &dest, false, Pace::default()).unwrap_err();
        assert!(matches!(e, BackupError::Exists(_)), "{e}");

        std::fs::write(&dest, "an older copy").unwrap();
        let report = backup_file(&source, &dest, true, Pace::default()).unwrap();
        assert_eq!(report.incidents, 3);
        assert!(!sidecar(&dest, "-wal").exists(), "the stale log is gone");
        let copy = Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn the_store_itself_is_never_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("medic.db");
        drop(store(&source, 3));
        let same = tmp.path().join(".").join("medic.db");
        let e = backup_file(&source, &same, true, Pace::default()).unwrap_err();
        assert!(matches!(e, BackupError::SameFile(_)), "{e}");
        let c = Connection::open(&source).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM incidents", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3, "the store is untouched");
    }

    #[test]
    fn a_database_that_is_not_a_store_is_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("other.db");
        Connection::open(&source)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        let dest = tmp.path().join("copy.db");
        let e = backup_file(&source, &dest, false, Pace::default()).unwrap_err();
        assert!(e.to_string().contains("not a medic store"), "{e}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_failed_copy_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("medic.db");
        std::fs::write(&source, vec![b'x'; 8192]).unwrap();
        let dest = tmp.path().join("copy.db");
        let e = backup_file(&source, &dest, false, Pace::default()).unwrap_err();
        assert!(
            matches!(e, BackupError::Source { .. } | BackupError::Dest { .. }),
            "{e}"
        );
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["medic.db"], "no copy, no partial file");

        let e = backup_file(
            &tmp.path().join("medic.db"),
            &tmp.path().join("no/such/dir/copy.db"),
            false,
            Pace::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no directory"), "{e}");
    }
}
