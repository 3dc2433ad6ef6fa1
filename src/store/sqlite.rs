//! The embedded SQLite backend.
//!
//! One writer thread owns the write connection and commits in groups: it takes the first
//! waiting job, drains whatever else is already queued (up to [`MAX_BATCH`] jobs and
//! [`MAX_BATCH_WEIGHT`] alerts), runs each in
//! its own savepoint inside one transaction, commits once (one fsync in WAL mode with
//! `synchronous=FULL`) and only then answers every caller. A failing job rolls back to its
//! savepoint and fails alone; a failing commit fails the whole batch, and nothing in it was
//! acknowledged. Reads use a separate connection, which WAL lets run beside the writer.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{
    stamp, stamp_exact, AlertEffect, Claim, Delivery, Incident, IncidentFilter, Queued, Refusal,
    Routed, RunResult, StoreError, TimelineEntry,
};
use crate::audit::{self, chain_hash, Event, NewEntry};
use crate::guard::{storm, BreakerEntry, Pause};
use crate::incident::{self, Action, Latest, Outcome, Reason, State};
use crate::ingest::payload::Alert;
use crate::metrics::StoreMetrics;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Most work (alerts, for deliveries; 1 for anything else) in one transaction: a commit
/// stays short, so a small delivery never waits long behind a storm's big ones.
const MAX_BATCH_WEIGHT: usize = 200;
/// Jobs waiting for the writer before senders wait too (back-pressure).
const QUEUE: usize = 8192;

/// Schema migrations, embedded in the binary, applied in order at open.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_runs.sql")),
    (3, include_str!("migrations/sqlite/0003_guards.sql")),
];

/// Describes a claimed run for its `run_started` audit entry.
pub(super) type Describe = Box<dyn Fn(&Claim) -> Value + Send>;

/// Where jobs wait for the writer; `None` once the store is closed.
type Jobs = Arc<Mutex<Option<mpsc::Sender<Box<dyn Job>>>>>;

#[derive(Clone)]
pub(super) struct Sqlite {
    jobs: Jobs,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    checkpointer: Arc<Mutex<Option<Checkpointer>>>,
    reader: Arc<Mutex<Connection>>,
    /// The storm-grouping window in milliseconds, shared with the writer.
    storm_window: Arc<std::sync::atomic::AtomicU64>,
}

/// Copies the WAL back into the database file in the background, so that the writer never
/// spends a commit's time on it. Stopped (and joined) on close.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

impl Sqlite {
    pub(super) fn open(path: &Path, metrics: StoreMetrics) -> Result<Sqlite, StoreError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        }
        let mut conn = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        configure(&conn).map_err(|e| open_err(Box::new(e)))?;
        // The writer's page cache holds a whole group commit; its savepoints stay in memory;
        // checkpoints are the checkpointer's job.
        conn.execute_batch("PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;")
            .map_err(|e| open_err(Box::new(e)))?;
        migrate(&mut conn)?;
        let head = audit_head(&conn)?;
        let reader = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        configure(&reader).map_err(|e| open_err(Box::new(e)))?;

        let (tx, rx) = mpsc::channel(QUEUE);
        let storm_window = Arc::new(std::sync::atomic::AtomicU64::new(60_000));
        let writer = Writer {
            conn,
            head,
            ids: ulid::Generator::new(),
            storm_window: storm_window.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("medic-store-writer".into())
            .spawn(move || writer.run(rx, metrics))
            .map_err(|e| open_err(Box::new(e)))?;
        let checkpoint_conn = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        configure(&checkpoint_conn).map_err(|e| open_err(Box::new(e)))?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let checkpoint = std::thread::Builder::new()
            .name("medic-store-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    if let Err(e) = checkpoint_conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                        tracing::warn!(error = %e, "store: background checkpoint failed; will retry");
                    }
                }
            })
            .map_err(|e| open_err(Box::new(e)))?;
        Ok(Sqlite {
            jobs: Arc::new(Mutex::new(Some(tx))),
            writer: Arc::new(Mutex::new(Some(handle))),
            checkpointer: Arc::new(Mutex::new(Some(Checkpointer {
                stop,
                handle: checkpoint,
            }))),
            reader: Arc::new(Mutex::new(reader)),
            storm_window,
        })
    }

    pub(super) fn set_storm_window(&self, window: Duration) {
        self.storm_window.store(
            window.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub(super) async fn queued(&self, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, route, labels FROM incidents WHERE state = 'queued' ORDER BY id LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, String>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, route, labels) = row?;
                let labels = serde_json::from_str(&labels)
                    .map_err(|_| StoreError::Corrupt(format!("incident {id}: labels are not JSON")))?;
                out.push(Queued { id, route, labels });
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn claim(
        &self,
        ids: Vec<String>,
        started: Describe,
    ) -> Result<Vec<Claim>, StoreError> {
        self.write(move |w| w.claim(&ids, &started)).await
    }

    pub(super) async fn refuse(&self, refusals: Vec<Refusal>) -> Result<(), StoreError> {
        self.write(move |w| {
            let now = stamp(Utc::now());
            for r in refusals {
                let m = Move {
                    reason: Some(r.reason),
                    message: Some(&r.message),
                    extra: json!({ "refused_by": r.limit }),
                    ..Move::new(State::Queued, State::Escalated)
                };
                w.transition(&r.id, m, &now)?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn shed_queue(&self, max_queued: usize) -> Result<usize, StoreError> {
        self.write(move |w| {
            let ids: Vec<String> = {
                let mut stmt = w.conn.prepare_cached(
                    "SELECT id FROM incidents WHERE state = 'queued' ORDER BY id DESC LIMIT -1 OFFSET ?1",
                )?;
                let rows = stmt.query_map([max_queued as i64], |r| r.get(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let now = stamp(Utc::now());
            let message = format!("the queue of incidents waiting to run is full (limits.max_queued = {max_queued})");
            for id in &ids {
                let m = Move {
                    reason: Some(Reason::RateLimited),
                    message: Some(&message),
                    extra: json!({ "refused_by": "max_queued" }),
                    ..Move::new(State::Queued, State::Escalated)
                };
                w.transition(id, m, &now)?;
            }
            Ok(ids.len())
        })
        .await
    }

    pub(super) async fn breakers(&self) -> Result<Vec<BreakerEntry>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, route, key, data FROM breakers ORDER BY route, id")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, route, key, data) = row?;
                let corrupt = |what: &str| StoreError::Corrupt(format!("breaker {id}: {what}"));
                out.push(BreakerEntry {
                    key: serde_json::from_str(&key).map_err(|_| corrupt("key is not JSON"))?,
                    breaker: serde_json::from_str(&data)
                        .map_err(|_| corrupt("state is not valid"))?,
                    id,
                    route,
                });
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn save_breaker(
        &self,
        entry: BreakerEntry,
        detail: Value,
    ) -> Result<(), StoreError> {
        self.write(move |w| {
            let now = stamp(Utc::now());
            w.conn
                .prepare_cached(
                    "INSERT INTO breakers (id, route, key, state, data, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data,
                        updated_at = excluded.updated_at",
                )?
                .execute(params![
                    entry.id,
                    entry.route,
                    to_json(&entry.key),
                    entry.breaker.state.as_str(),
                    to_json(&entry.breaker),
                    now
                ])?;
            let mut detail = detail;
            detail["breaker"] = json!(entry.id);
            detail["route"] = json!(entry.route);
            detail["key"] = json!(entry.key);
            detail["state"] = json!(entry.breaker.state);
            w.append(NewEntry::new(Event::BreakerChanged, &detail), &now)
        })
        .await
    }

    pub(super) async fn pause(&self) -> Result<Option<Pause>, StoreError> {
        self.read(|c| {
            let v: Option<String> = c
                .query_row("SELECT value FROM settings WHERE name = 'pause'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
        })
        .await
    }

    pub(super) async fn set_pause(&self, pause: Option<Pause>, by: &str) -> Result<(), StoreError> {
        let by = by.to_string();
        self.write(move |w| {
            let now = stamp(Utc::now());
            let (event, detail) = match &pause {
                Some(p) => {
                    w.conn
                        .prepare_cached(
                            "INSERT INTO settings (name, value, updated_at) VALUES ('pause', ?1, ?2)
                             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                        )?
                        .execute(params![to_json(p), now])?;
                    (Event::Paused, json!({"by": p.by, "reason": p.reason}))
                }
                None => {
                    w.conn.execute("DELETE FROM settings WHERE name = 'pause'", [])?;
                    (Event::Resumed, json!({ "by": by }))
                }
            };
            w.append(NewEntry::new(event, &detail), &now)
        })
        .await
    }

    /// Runs `f` on the writer inside the next group commit; answers after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_weighted(1, f).await
    }

    /// [`Self::write`] for a job worth `weight` units of work (a delivery: its alerts).
    async fn write_weighted<T, F>(&self, weight: usize, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = lock(&self.jobs).clone().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(FnJob {
            f: Some(f),
            out: None,
            reply,
            weight,
        });
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the read connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&lock(&reader)))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn ingest(&self, d: Delivery) -> Result<Vec<AlertEffect>, StoreError> {
        // Render the JSON here, on the caller's thread; the writer only binds it.
        let prepared = Prepared::new(d);
        let weight = prepared.alerts.len().max(1);
        self.write_weighted(weight, move |w| w.ingest(prepared))
            .await
    }

    pub(super) async fn audit(&self, entries: Vec<NewEntry>) -> Result<(), StoreError> {
        self.write(move |w| {
            let now = stamp(Utc::now());
            entries.into_iter().try_for_each(|e| w.append(e, &now))
        })
        .await
    }

    pub(super) async fn finish_run(
        &self,
        id: &str,
        result: RunResult,
        finished: Value,
    ) -> Result<Option<State>, StoreError> {
        let id = id.to_string();
        self.write(move |w| w.finish_run(&id, result, &finished))
            .await
    }

    pub(super) async fn recover_interrupted(
        &self,
        idempotent: Vec<String>,
    ) -> Result<Vec<(String, State)>, StoreError> {
        self.write(move |w| w.recover_interrupted(&idempotent))
            .await
    }

    pub(super) async fn record_silence(
        &self,
        incident_id: &str,
        silence_id: &str,
        ends_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (incident_id, silence_id) = (incident_id.to_string(), silence_id.to_string());
        self.write(move |w| {
            w.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO silences (silence_id, incident_id, ends_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![silence_id, incident_id, stamp(ends_at), stamp(Utc::now())])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn silences_to_expire(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT s.incident_id, s.silence_id FROM silences s JOIN incidents i ON i.id = s.incident_id
                 WHERE s.expired_at IS NULL AND i.is_open = 0 LIMIT 100",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn silence_expired(
        &self,
        incident_id: &str,
        silence_id: &str,
    ) -> Result<(), StoreError> {
        let (incident_id, silence_id) = (incident_id.to_string(), silence_id.to_string());
        self.write(move |w| {
            let now = stamp(Utc::now());
            w.conn
                .prepare_cached("UPDATE silences SET expired_at = ?2 WHERE silence_id = ?1 AND expired_at IS NULL")?
                .execute(params![silence_id, now])?;
            let detail = json!({ "silence_id": silence_id });
            w.append(NewEntry::for_incident(Event::SilenceExpired, &incident_id, &detail), &now)
        })
        .await
    }

    pub(super) async fn incidents(&self, f: IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        self.read(move |c| {
            let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1=1");
            let mut args: Vec<String> = Vec::new();
            if let Some(state) = f.state {
                args.push(state.as_str().to_string());
                sql.push_str(&format!(" AND state = ?{}", args.len()));
            }
            if let Some(name) = f.alertname {
                args.push(name);
                sql.push_str(&format!(" AND alertname = ?{}", args.len()));
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", f.limit));
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), incident_row)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(|r| r))
                .collect()
        })
        .await
    }

    pub(super) async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            let found = c
                .prepare_cached(&format!(
                    "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"
                ))?
                .query_row([&id], incident_row)
                .optional()?;
            let Some(incident) = found else {
                return Ok(None);
            };
            let mut incident = incident?;
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, event, detail FROM audit WHERE incident_id = ?1 ORDER BY seq",
            )?;
            let timeline = stmt
                .query_map([&id], |r| {
                    let detail: String = r.get(3)?;
                    Ok(TimelineEntry {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        event: r.get(2)?,
                        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            incident.timeline = Some(timeline);
            Ok(Some(incident))
        })
        .await
    }

    pub(super) async fn count_by_state(&self) -> Result<Vec<(State, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT state, COUNT(*) FROM incidents GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (state, n) = row?;
                let state = State::parse(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown incident state {state:?}"))
                })?;
                out.push((state, n as u64));
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn audit_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<audit::Entry>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, event, incident_id, detail, prev_hash, hash FROM audit
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok(audit::Entry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    event: r.get(2)?,
                    incident_id: r.get(3)?,
                    detail: r.get(4)?,
                    prev_hash: r.get(5)?,
                    hash: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        if lock(&self.jobs).is_none() {
            return Err(StoreError::Closed);
        }
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    pub(super) async fn close(&self) {
        // Dropping the last sender lets the writer finish what is queued, then exit.
        lock(&self.jobs).take();
        let handle = lock(&self.writer).take();
        let checkpointer = lock(&self.checkpointer).take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(c) = checkpointer {
                let _ = c.stop.send(());
                let _ = c.handle.join();
            }
            // The writer checkpoints what is left as it exits.
            if let Some(h) = handle {
                let _ = h.join();
            }
        })
        .await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves no broken invariant behind.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_secs(5))?;
    // WAL: readers never block the writer. FULL: a commit is on disk when it returns.
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(c: &mut Connection) -> Result<(), StoreError> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    let current: u32 = c.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = c.transaction()?;
        tx.execute_batch(sql)
            .and_then(|()| {
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    params![version, stamp(Utc::now())],
                )
                .map(drop)
            })
            .map_err(|source| StoreError::Migration {
                version: *version,
                source,
            })?;
        tx.commit()?;
    }
    Ok(())
}

/// The sequence number and hash of the newest audit entry.
fn audit_head(c: &Connection) -> Result<(i64, String), StoreError> {
    let head = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(head.unwrap_or((0, audit::GENESIS.to_string())))
}

/// One unit of work for the writer: `run` inside the transaction, `finish` after commit.
trait Job: Send {
    fn run(&mut self, w: &mut Writer) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
    fn weight(&self) -> usize;
}

struct FnJob<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    weight: usize,
}

impl<T, F> Job for FnJob<T, F>
where
    T: Send,
    F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, w: &mut Writer) -> Result<(), StoreError> {
        let f = self.f.take().ok_or(StoreError::Closed)?;
        match f(w) {
            Ok(v) => {
                self.out = Some(Ok(v));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn weight(&self) -> usize {
        self.weight
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(StoreError::Closed),
            (Err(e), _) => Err(e),
        };
        // The caller may have given up (timeout); the write stands either way.
        let _ = self.reply.send(answer);
    }
}

/// The write connection and what the writer keeps in memory about it.
pub(super) struct Writer {
    conn: Connection,
    /// The newest audit entry's (seq, hash): the link the next entry chains to.
    head: (i64, String),
    ids: ulid::Generator,
    storm_window: Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Box<dyn Job>>, metrics: StoreMetrics) {
        // A job taken from the queue that did not fit in the last batch goes first.
        let mut carry: Option<Box<dyn Job>> = None;
        loop {
            let first = match carry.take() {
                Some(job) => job,
                None => match rx.blocking_recv() {
                    Some(job) => job,
                    None => break,
                },
            };
            let mut weight = first.weight();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && weight < MAX_BATCH_WEIGHT {
                match rx.try_recv() {
                    Ok(job) if weight + job.weight() > MAX_BATCH_WEIGHT => {
                        carry = Some(job);
                        break;
                    }
                    Ok(job) => {
                        weight += job.weight();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let size = batch.len();
            self.commit_batch(batch);
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.batch_size.observe(size as f64);
        }
        // Closed: fold the WAL into the database file so a stopped medic leaves one file.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "store: final checkpoint failed; the WAL is kept and replayed at next open");
        }
    }

    fn commit_batch(&mut self, batch: Vec<Box<dyn Job>>) {
        let head_before = self.head.clone();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            tracing::error!(error = %msg, "store: cannot begin a transaction");
            for job in batch {
                job.finish(Err(StoreError::Commit(msg.clone())));
            }
            return;
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut batch = batch;
        for job in batch.iter_mut() {
            let head = self.head.clone();
            let r = self
                .conn
                .execute_batch("SAVEPOINT job")
                .map_err(StoreError::from)
                .and_then(|()| job.run(self));
            match r {
                Ok(()) => {
                    let released = self
                        .conn
                        .execute_batch("RELEASE job")
                        .map_err(StoreError::from);
                    results.push(released);
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    self.head = head;
                    results.push(Err(e));
                }
            }
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let msg = e.to_string();
            tracing::error!(error = %msg, jobs = batch.len(), "store: commit failed; nothing in this batch was acknowledged");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.head = head_before;
            for job in batch {
                job.finish(Err(StoreError::Commit(msg.clone())));
            }
            return;
        }
        for (job, r) in batch.into_iter().zip(results) {
            job.finish(r);
        }
    }

    /// Appends one audit entry at time `at` (a stored stamp), chained to the current head.
    fn append(&mut self, e: NewEntry, at: &str) -> Result<(), StoreError> {
        let seq = self.head.0 + 1;
        let event = e.event.as_str();
        let hash = chain_hash(
            &self.head.1,
            seq,
            at,
            event,
            e.incident_id.as_deref(),
            &e.detail,
        );
        self.conn
            .prepare_cached(
                "INSERT INTO audit (seq, at, event, incident_id, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                seq,
                at,
                event,
                e.incident_id,
                e.detail,
                self.head.1,
                hash
            ])?;
        self.head = (seq, hash);
        Ok(())
    }

    fn ingest(&mut self, d: Prepared) -> Result<Vec<AlertEffect>, StoreError> {
        self.append(
            NewEntry::raw(Event::DeliveryReceived, None, d.received),
            &d.now,
        )?;
        let mut effects = Vec::with_capacity(d.alerts.len());
        for alert in &d.alerts {
            effects.push(self.ingest_alert(alert, &d.now)?);
        }
        Ok(effects)
    }

    fn ingest_alert(&mut self, p: &PreparedAlert, now: &str) -> Result<AlertEffect, StoreError> {
        let a = &p.alert;
        let latest = self.latest(&a.fingerprint)?;
        match incident::decide(latest.as_ref(), a.status, a.starts_at) {
            Action::Open => Ok(AlertEffect::Opened(self.open(p, now)?)),
            Action::Duplicate { id } => {
                self.conn
                    .prepare_cached(
                        "UPDATE incidents SET deliveries = deliveries + 1, last_seen_at = ?2, annotations = ?3
                         WHERE id = ?1",
                    )?
                    .execute(params![id, now, p.annotations.get()])?;
                let detail = details::Notification {
                    status: a.status,
                    starts_at: &p.starts_at,
                    why: None,
                    extra: &a.extra,
                };
                self.append(
                    NewEntry::for_incident(Event::AlertDeduplicated, &id, &detail),
                    now,
                )?;
                Ok(AlertEffect::Deduplicated)
            }
            Action::Resolve { id, outcome } => {
                let from = latest.map(|l| l.state).unwrap_or(State::Queued);
                self.resolve(&id, from, outcome, a.ends_at, None, now)?;
                Ok(AlertEffect::Resolved { id, outcome })
            }
            Action::Supersede { id, outcome } => {
                let from = latest.map(|l| l.state).unwrap_or(State::Queued);
                let note = "a newer firing arrived; this period's resolution was never delivered";
                self.resolve(&id, from, outcome, None, Some(note), now)?;
                Ok(AlertEffect::Superseded(self.open(p, now)?))
            }
            Action::Stale { id, why } => {
                let detail = details::Notification {
                    status: a.status,
                    starts_at: &p.starts_at,
                    why: Some(why),
                    extra: &a.extra,
                };
                self.append(NewEntry::for_incident(Event::AlertStale, &id, &detail), now)?;
                Ok(AlertEffect::Stale)
            }
            Action::UnknownResolved => {
                let detail = json!({
                    "fingerprint": a.fingerprint, "alertname": a.alertname(), "labels": p.labels,
                    "starts_at": p.starts_at,
                });
                self.append(NewEntry::new(Event::AlertResolvedUnknown, &detail), now)?;
                Ok(AlertEffect::UnknownResolved)
            }
        }
    }

    fn latest(&self, fingerprint: &str) -> Result<Option<Latest>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, state, starts_at FROM incidents WHERE fingerprint = ?1
                 ORDER BY starts_at DESC LIMIT 1",
            )?
            .query_row([fingerprint], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        let Some((id, state, starts_at)) = row else {
            return Ok(None);
        };
        Ok(Some(Latest {
            state: State::parse(&state).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: unknown state {state:?}"))
            })?,
            starts_at: parse_time(&starts_at).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: bad starts_at {starts_at:?}"))
            })?,
            id,
        }))
    }

    /// Moves one incident's state, conditionally on where it is now, and audits the change.
    /// Returns false (and changes nothing) when the incident is not in `from`.
    fn transition(&mut self, id: &str, m: Move<'_>, now: &str) -> Result<bool, StoreError> {
        let Move {
            from,
            to,
            reason,
            message,
            extra,
        } = m;
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE incidents SET state = ?3, reason = COALESCE(?4, reason), message = COALESCE(?5, message),
                    updated_at = ?6
                 WHERE id = ?1 AND state = ?2",
            )?
            .execute(params![id, from.as_str(), to.as_str(), reason.map(Reason::as_str), message, now])?;
        if changed == 0 {
            return Ok(false);
        }
        let mut detail = json!({"from": from, "to": to});
        if let Some(r) = reason {
            detail["reason"] = json!(r);
        }
        if let Some(m) = message {
            detail["message"] = json!(m);
        }
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                detail[k] = v;
            }
        }
        self.append(
            NewEntry::for_incident(Event::StateChanged, id, &detail),
            now,
        )?;
        if let (State::Escalated, Some(reason)) = (to, reason) {
            self.group_escalation(id, reason, now)?;
        }
        Ok(true)
    }

    /// Puts an escalation into its storm group: the open group of its route and reason,
    /// or a new one (see `guard::storm`).
    fn group_escalation(&mut self, id: &str, reason: Reason, now: &str) -> Result<(), StoreError> {
        let route: String = self
            .conn
            .prepare_cached("SELECT COALESCE(route, '') FROM incidents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let latest = self
            .conn
            .prepare_cached(
                "SELECT id, opened_at, size FROM escalation_groups WHERE route = ?1 AND reason = ?2
                 ORDER BY opened_at DESC LIMIT 1",
            )?
            .query_row(params![route, reason.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()?
            .and_then(|(gid, opened, size)| {
                Some(storm::Group {
                    id: gid,
                    opened_at: parse_time(&opened)?,
                    size: size as u32,
                })
            });
        let now_t = parse_time(now).unwrap_or_else(Utc::now);
        let window_ms = self.storm_window.load(std::sync::atomic::Ordering::Relaxed) as i64;
        let (group, size, first) = match storm::assign(
            latest.as_ref(),
            now_t,
            chrono::Duration::milliseconds(window_ms),
        ) {
            storm::Grouping::Join(gid) => {
                self.conn
                    .prepare_cached("UPDATE escalation_groups SET size = size + 1 WHERE id = ?1")?
                    .execute([&gid])?;
                let size = latest.map(|g| g.size + 1).unwrap_or(1);
                (gid, size, false)
            }
            storm::Grouping::Open => {
                let gid = self
                    .ids
                    .generate()
                    .unwrap_or_else(|_| ulid::Ulid::new())
                    .to_string();
                self.conn
                    .prepare_cached(
                        "INSERT INTO escalation_groups (id, route, reason, opened_at, size) VALUES (?1, ?2, ?3, ?4, 1)",
                    )?
                    .execute(params![gid, route, reason.as_str(), now])?;
                (gid, 1, true)
            }
        };
        self.conn
            .prepare_cached("UPDATE incidents SET escalation_group = ?2 WHERE id = ?1")?
            .execute(params![id, group])?;
        let detail =
            json!({"group": group, "route": route, "reason": reason, "first": first, "size": size});
        self.append(
            NewEntry::for_incident(Event::EscalationGrouped, id, &detail),
            now,
        )
    }

    fn claim(&mut self, ids: &[String], started: &Describe) -> Result<Vec<Claim>, StoreError> {
        let now = stamp(Utc::now());
        let mut claims = Vec::with_capacity(ids.len());
        for id in ids {
            let row = self
                .conn
                .prepare_cached(
                    "SELECT fingerprint, alertname, labels, annotations, starts_at, generator_url, route, runbook, attempts
                     FROM incidents WHERE id = ?1 AND state = 'queued'",
                )?
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, i64>(8)?,
                    ))
                })
                .optional()?;
            let Some((
                fingerprint,
                alertname,
                labels,
                annotations,
                starts_at,
                generator_url,
                route,
                runbook,
                attempts,
            )) = row
            else {
                continue;
            };
            let attempt = attempts as u32 + 1;
            self.conn
                .prepare_cached("UPDATE incidents SET attempts = ?2 WHERE id = ?1")?
                .execute(params![id, attempt])?;
            let claimed = Move {
                extra: json!({ "attempt": attempt }),
                ..Move::new(State::Queued, State::Remediating)
            };
            self.transition(id, claimed, &now)?;
            let corrupt = |what: &str| StoreError::Corrupt(format!("incident {id}: {what}"));
            let claim = Claim {
                labels: serde_json::from_str(&labels)
                    .map_err(|_| corrupt("labels are not JSON"))?,
                annotations: serde_json::from_str(&annotations)
                    .map_err(|_| corrupt("annotations are not JSON"))?,
                runbook: runbook.ok_or_else(|| corrupt("queued without a runbook"))?,
                id: id.clone(),
                fingerprint,
                alertname,
                starts_at,
                generator_url,
                route,
                attempt,
            };
            let detail = started(&claim);
            self.append(NewEntry::for_incident(Event::RunStarted, id, &detail), &now)?;
            claims.push(claim);
        }
        Ok(claims)
    }

    fn finish_run(
        &mut self,
        id: &str,
        result: RunResult,
        finished: &Value,
    ) -> Result<Option<State>, StoreError> {
        let now = stamp(Utc::now());
        self.append(
            NewEntry::for_incident(Event::RunFinished, id, finished),
            &now,
        )?;
        let (to, reason, message) = match &result {
            RunResult::Completed => (State::Verifying, None, None),
            RunResult::Escalated { reason, message } => {
                (State::Escalated, Some(*reason), Some(message.as_str()))
            }
            RunResult::Requeue { message } => (State::Queued, None, Some(message.as_str())),
        };
        let m = Move {
            reason,
            message,
            ..Move::new(State::Remediating, to)
        };
        let moved = self.transition(id, m, &now)?;
        Ok(moved.then_some(to))
    }

    fn recover_interrupted(
        &mut self,
        idempotent: &[String],
    ) -> Result<Vec<(String, State)>, StoreError> {
        let rows = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, route, attempts FROM incidents WHERE state = 'remediating' ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let now = stamp(Utc::now());
        let mut out = Vec::new();
        for (id, route, attempts) in rows {
            let rerun = attempts < 2 && route.as_ref().is_some_and(|r| idempotent.contains(r));
            if rerun {
                let message =
                    "medic stopped during the run; the route is idempotent, so it runs once more";
                let m = Move {
                    message: Some(message),
                    ..Move::new(State::Remediating, State::Queued)
                };
                self.transition(&id, m, &now)?;
                out.push((id, State::Queued));
            } else {
                let message = if attempts >= 2 {
                    "medic stopped during the run again; not re-running a second time"
                } else {
                    "medic stopped during the run; steps may have partly run, so it is not re-run"
                };
                let m = Move {
                    reason: Some(Reason::Interrupted),
                    message: Some(message),
                    ..Move::new(State::Remediating, State::Escalated)
                };
                self.transition(&id, m, &now)?;
                out.push((id, State::Escalated));
            }
        }
        Ok(out)
    }

    /// Opens an incident for a new firing period and records how it was routed.
    fn open(&mut self, p: &PreparedAlert, now: &str) -> Result<State, StoreError> {
        let a = &p.alert;
        let id = self
            .ids
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new())
            .to_string();
        let why = match &p.routed {
            Routed::NoRunbook { why } => Some(why.as_str()),
            Routed::Runbook { .. } => None,
        };
        let (state, reason, route, runbook) = match &p.routed {
            Routed::Runbook { route, runbook } => (
                State::Queued,
                None,
                Some(route.as_str()),
                Some(runbook.as_str()),
            ),
            Routed::NoRunbook { .. } => (State::Escalated, Some(Reason::NoRunbook), None, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO incidents (id, fingerprint, alertname, labels, annotations, generator_url,
                    starts_at, state, is_open, reason, route, runbook, deliveries, created_at, updated_at, last_seen_at,
                    message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10, ?11, 1, ?12, ?12, ?12, ?13)",
            )?
            .execute(params![
                id,
                a.fingerprint,
                a.alertname(),
                p.labels.get(),
                p.annotations.get(),
                a.generator_url,
                p.starts_at,
                state.as_str(),
                reason.map(Reason::as_str),
                route,
                runbook,
                now,
                why,
            ])?;
        let opened = details::IncidentOpened {
            fingerprint: &a.fingerprint,
            alertname: a.alertname(),
            labels: &p.labels,
            annotations: &p.annotations,
            starts_at: &p.starts_at,
            generator_url: &a.generator_url,
            state: State::Queued,
            extra: &a.extra,
        };
        self.append(
            NewEntry::for_incident(Event::IncidentOpened, &id, &opened),
            now,
        )?;
        match &p.routed {
            Routed::Runbook { route, runbook } => {
                let detail = details::RouteMatched { route, runbook };
                self.append(
                    NewEntry::for_incident(Event::RouteMatched, &id, &detail),
                    now,
                )?;
            }
            Routed::NoRunbook { why } => {
                self.append(
                    NewEntry::for_incident(Event::RouteMissed, &id, &json!({ "why": why })),
                    now,
                )?;
                let detail = json!({"from": State::Queued, "to": State::Escalated, "reason": Reason::NoRunbook});
                self.append(
                    NewEntry::for_incident(Event::StateChanged, &id, &detail),
                    now,
                )?;
            }
        }
        Ok(state)
    }

    fn resolve(
        &mut self,
        id: &str,
        from: State,
        outcome: Outcome,
        ends_at: Option<DateTime<Utc>>,
        note: Option<&str>,
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE incidents SET state = 'resolved', is_open = 0, outcome = ?2, resolved_at = ?3,
                    updated_at = ?3, last_seen_at = ?3, deliveries = deliveries + 1
                 WHERE id = ?1",
            )?
            .execute(params![id, outcome.as_str(), now])?;
        let mut detail = json!({"from": from, "to": State::Resolved, "outcome": outcome});
        if let Some(t) = ends_at {
            detail["ends_at"] = json!(stamp_exact(t));
        }
        if let Some(note) = note {
            detail["note"] = json!(note);
        }
        self.append(
            NewEntry::for_incident(Event::StateChanged, id, &detail),
            now,
        )
    }
}

/// The audit details written on the intake path, as typed structs: serialized straight to
/// text, with no intermediate JSON tree.
mod details {
    use serde::Serialize;
    use serde_json::value::RawValue;
    use serde_json::{Map, Value};

    use crate::incident::State;
    use crate::ingest::payload::Status;

    #[derive(Serialize)]
    pub struct DeliveryReceived<'a> {
        pub source: &'a str,
        pub receiver: &'a str,
        pub status: Status,
        pub group_key: &'a str,
        pub alerts: usize,
        pub truncated_alerts: u64,
        pub external_url: &'a str,
        #[serde(skip_serializing_if = "Map::is_empty")]
        pub extra: &'a Map<String, Value>,
    }

    #[derive(Serialize)]
    pub struct IncidentOpened<'a> {
        pub fingerprint: &'a str,
        pub alertname: &'a str,
        pub labels: &'a RawValue,
        pub annotations: &'a RawValue,
        pub starts_at: &'a str,
        pub generator_url: &'a str,
        pub state: State,
        #[serde(skip_serializing_if = "Map::is_empty")]
        pub extra: &'a Map<String, Value>,
    }

    #[derive(Serialize)]
    pub struct RouteMatched<'a> {
        pub route: &'a str,
        pub runbook: &'a str,
    }

    /// A notification that changed nothing (a duplicate or a stale one).
    #[derive(Serialize)]
    pub struct Notification<'a> {
        pub status: Status,
        pub starts_at: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub why: Option<&'a str>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        pub extra: &'a Map<String, Value>,
    }
}

/// A conditional state change: `from` → `to`, with why, and extra audit detail.
struct Move<'a> {
    from: State,
    to: State,
    reason: Option<Reason>,
    message: Option<&'a str>,
    extra: Value,
}

impl Move<'_> {
    fn new(from: State, to: State) -> Self {
        Move {
            from,
            to,
            reason: None,
            message: None,
            extra: Value::Null,
        }
    }
}

/// A delivery with its JSON and timestamps rendered on the caller's thread, so that the one
/// writer thread only binds text.
struct Prepared {
    now: String,
    /// The `delivery_received` detail.
    received: String,
    alerts: Vec<PreparedAlert>,
}

struct PreparedAlert {
    alert: Alert,
    routed: Routed,
    starts_at: String,
    labels: Box<RawValue>,
    annotations: Box<RawValue>,
}

impl Prepared {
    fn new(d: Delivery) -> Prepared {
        let received = details::DeliveryReceived {
            source: &d.source,
            receiver: &d.receiver,
            status: d.status,
            group_key: &d.group_key,
            alerts: d.alerts.len(),
            truncated_alerts: d.truncated_alerts,
            external_url: &d.external_url,
            extra: &d.extra,
        };
        let received = serde_json::to_string(&received).unwrap_or_else(|_| "{}".into());
        let alerts = d
            .alerts
            .into_iter()
            .map(|(alert, routed)| PreparedAlert {
                starts_at: stamp_exact(alert.starts_at),
                labels: raw_json(&alert.labels),
                annotations: raw_json(&alert.annotations),
                alert,
                routed,
            })
            .collect();
        Prepared {
            now: stamp(d.received_at),
            received,
            alerts,
        }
    }
}

/// A string map as JSON text (maps of strings always serialize).
fn raw_json(map: &std::collections::BTreeMap<String, String>) -> Box<RawValue> {
    serde_json::value::to_raw_value(map)
        .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

const INCIDENT_COLUMNS: &str =
    "id, fingerprint, alertname, labels, annotations, state, reason, outcome, route, runbook,
    generator_url, starts_at, updated_at, last_seen_at, resolved_at, deliveries, attempts, message, escalation_group";

/// Maps an incident row; the inner result reports values this build cannot read.
fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Incident, StoreError>> {
    let id: String = r.get(0)?;
    let labels: String = r.get(3)?;
    let annotations: String = r.get(4)?;
    let state: String = r.get(5)?;
    let reason: Option<String> = r.get(6)?;
    let outcome: Option<String> = r.get(7)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("incident {id}: {what}"));
    let build = || -> Result<Incident, StoreError> {
        Ok(Incident {
            fingerprint: r.get(1)?,
            alertname: r.get(2)?,
            labels: serde_json::from_str(&labels).map_err(|_| corrupt("labels are not JSON"))?,
            annotations: serde_json::from_str(&annotations)
                .map_err(|_| corrupt("annotations are not JSON"))?,
            state: State::parse(&state).ok_or_else(|| corrupt("unknown state"))?,
            reason: match reason {
                Some(r) => Some(Reason::parse(&r).ok_or_else(|| corrupt("unknown reason"))?),
                None => None,
            },
            outcome: match outcome {
                Some(o) => Some(Outcome::parse(&o).ok_or_else(|| corrupt("unknown outcome"))?),
                None => None,
            },
            route: r.get(8)?,
            runbook: r.get(9)?,
            generator_url: r.get(10)?,
            started_at: r.get(11)?,
            updated_at: r.get(12)?,
            last_seen_at: r.get(13)?,
            resolved_at: r.get(14)?,
            deliveries: r.get::<_, i64>(15)? as u64,
            attempts: r.get::<_, i64>(16)? as u32,
            message: r.get(17)?,
            escalation_group: r.get(18)?,
            timeline: None,
            id: id.clone(),
        })
    };
    Ok(build())
}
