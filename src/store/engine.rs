//! The engine both backends share: one writer that commits in groups, and readers.
//!
//! One writer thread owns the write connection and commits in groups: it takes the first
//! waiting job, drains whatever else is already queued (up to [`MAX_BATCH`] jobs and
//! [`MAX_BATCH_WEIGHT`] alerts), runs each in its own savepoint inside one transaction,
//! commits once (one fsync) and only then answers every caller. A failing job rolls back
//! to its savepoint and fails alone; a failing commit fails the whole batch, and nothing in
//! it was acknowledged. Reads use other connections.
//!
//! The SQL is written once for both databases (see [`super::db`]). With PostgreSQL,
//! several replicas write to one database: each batch first takes a transaction-scoped
//! advisory lock, so the writers of all replicas take turns. That one lock is what keeps
//! the audit chain single and every conditional transition (claims, verification
//! deadlines, outbox claims, rate buckets, breakers) exact across the fleet.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::db::{params, AuditRow, Db, Dialect, OptionalExtension, Row, ToVal};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{
    stamp, stamp_exact, Ack, AlertEffect, Attempt, Claim, Claimed, Delivery, GroupMember, Incident,
    IncidentFilter, Notification, NotificationKey, NotificationKind, OutboxCounts, OutboxState,
    Plans, Queued, Refusal, Routed, RunResult, StoreError, TimelineEntry, Verifying,
};
use crate::alert::Alert;
use crate::audit::{self, chain_hash, Event, NewEntry};
use crate::guard::breaker::Admit;
use crate::guard::{self, storm, BreakerEntry, Pause, Shared};
use crate::incident::{self, Action, Latest, Outcome, Reason, State};
use crate::metrics::StoreMetrics;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Most work (alerts, for deliveries; 1 for anything else) in one transaction: a commit
/// stays short, so a small delivery never waits long behind a storm's big ones.
const MAX_BATCH_WEIGHT: usize = 200;
/// Jobs waiting for the writer before senders wait too (back-pressure).
const QUEUE: usize = 8192;
/// The advisory lock every PostgreSQL write transaction takes first ("medic" in ASCII).
pub(super) const WRITE_LOCK: i64 = 0x006d_6564_6963;

/// Describes a claimed run for its `run_started` audit entry.
pub(super) type Describe = Box<dyn Fn(&Claim) -> Value + Send>;

/// Where jobs wait for the writer; `None` once the store is closed.
type Jobs = Arc<Mutex<Option<mpsc::Sender<Box<dyn Job>>>>>;

/// Opens a new write connection, after the old one broke.
pub(super) type Connector = Box<dyn Fn() -> Result<Box<dyn Db>, StoreError> + Send>;

/// Where reads run.
#[derive(Clone)]
pub(super) enum Readers {
    /// One connection (SQLite: WAL lets it read beside the writer).
    One(Arc<Mutex<Box<dyn Db>>>),
    /// A pool (PostgreSQL).
    Pool(r2d2::Pool<super::postgres::Manager>),
}

/// What a backend runs after the writer stopped.
pub(super) type OnClose = Box<dyn FnOnce() + Send>;

/// What a backend hands the engine when it opens.
pub(super) struct Parts {
    pub writer: Box<dyn Db>,
    pub reconnect: Option<Connector>,
    pub readers: Readers,
    /// Run after the writer has stopped, at close (SQLite stops its checkpointer).
    pub on_close: Option<OnClose>,
    /// Who this process is, for the leases it holds.
    pub owner: String,
    /// How long its leases last unless renewed.
    pub lease: Duration,
}

#[derive(Clone)]
pub(super) struct Engine {
    jobs: Jobs,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    on_close: Arc<Mutex<Option<OnClose>>>,
    readers: Readers,
    /// The storm-grouping window in milliseconds, shared with the writer.
    storm_window: Arc<std::sync::atomic::AtomicU64>,
    plans: SharedPlans,
    outbox_wake: Arc<Notify>,
    dialect: Dialect,
}

/// The plans in force, shared by the handle (which replaces them) and the writer.
type SharedPlans = Arc<RwLock<Arc<Plans>>>;

impl Engine {
    /// Starts the writer on `parts.writer` (migrated already).
    pub(super) fn start(parts: Parts, metrics: StoreMetrics) -> Result<Engine, StoreError> {
        let dialect = parts.writer.dialect();
        let head = audit_head(parts.writer.as_ref())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let storm_window = Arc::new(std::sync::atomic::AtomicU64::new(60_000));
        let plans: SharedPlans = Arc::default();
        let outbox_wake = Arc::new(Notify::new());
        let writer = Writer {
            conn: parts.writer,
            reconnect: parts.reconnect,
            head,
            ids: ulid::Generator::new(),
            storm_window: storm_window.clone(),
            plans: plans.clone(),
            outbox_wake: outbox_wake.clone(),
            outbox_touched: false,
            changes: Vec::new(),
            log: super::changelog::Log::start(),
            owner: parts.owner.clone(),
            lease: chrono::Duration::from_std(parts.lease).unwrap_or(chrono::Duration::seconds(30)),
            audit_rows: Vec::new(),
            groups: Default::default(),
            prefetched: Default::default(),
        };
        let handle = std::thread::Builder::new()
            .name("medic-store-writer".into())
            .spawn(move || writer.run(rx, metrics))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer: {e}")))?;
        Ok(Engine {
            jobs: Arc::new(Mutex::new(Some(tx))),
            writer: Arc::new(Mutex::new(Some(handle))),
            on_close: Arc::new(Mutex::new(parts.on_close)),
            readers: parts.readers,
            storm_window,
            plans,
            outbox_wake,
            dialect,
        })
    }

    pub(super) fn is_shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    pub(super) fn set_plans(&self, plans: Plans) {
        *self
            .plans
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(plans);
    }

    pub(super) fn outbox_wake(&self) -> Arc<Notify> {
        self.outbox_wake.clone()
    }

    pub(super) async fn verifying(&self, limit: usize) -> Result<Vec<Verifying>, StoreError> {
        let plans = current(&self.plans);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, route, fingerprint, labels, verify_until, updated_at FROM incidents
                 WHERE state = 'verifying' ORDER BY verify_until LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, route, fingerprint, labels, until, updated) = row?;
                // Verifying since before timers were stored: from its last change.
                let until = match until.as_deref().and_then(parse_time) {
                    Some(t) => t,
                    None => {
                        parse_time(&updated).unwrap_or_else(Utc::now)
                            + plans.verify_for(route.as_deref())
                    }
                };
                out.push(Verifying {
                    labels: serde_json::from_str(&labels).map_err(|_| {
                        StoreError::Corrupt(format!("incident {id}: labels are not JSON"))
                    })?,
                    id,
                    route,
                    fingerprint,
                    verify_until: until,
                });
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn verification_failed(
        &self,
        id: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let (id, message) = (id.to_string(), message.to_string());
        self.write(move |w| {
            let now = stamp(Utc::now());
            if w.state_of(&id)? != Some(State::Verifying) {
                return Ok(false);
            }
            w.verification_ended(&id, false, &message, &now)?;
            let m = Move {
                reason: Some(Reason::StillFiring),
                message: Some(&message),
                ..Move::new(State::Verifying, State::Escalated)
            };
            w.transition(&id, m, &now)
        })
        .await
    }

    pub(super) async fn verification_resolved(
        &self,
        id: &str,
        how: &str,
    ) -> Result<bool, StoreError> {
        let (id, how) = (id.to_string(), how.to_string());
        self.write(move |w| {
            let now = stamp(Utc::now());
            if w.state_of(&id)? != Some(State::Verifying) {
                return Ok(false);
            }
            let r = Resolution {
                outcome: Outcome::AutoRemediated,
                ends_at: None,
                note: Some(&how),
                delivery: false,
            };
            w.resolve(&id, State::Verifying, r, &now)?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn ack(&self, id: &str, by: Option<String>) -> Result<Ack, StoreError> {
        let id = id.to_string();
        self.write(move |w| w.ack(&id, by)).await
    }

    pub(super) async fn outbox_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        // Claimed, not just read: a replica's sender never takes a notification another is
        // delivering, until that claim runs out.
        // `'pending'` is `OutboxState::Pending`, written out in these queries of due
        // notifications so that the partial index `outbox_due` (`WHERE state = 'pending'`)
        // serves them.
        self.write(move |w| {
            let now_s = stamp(now);
            let until = stamp(now + w.lease);
            let mut stmt = w.conn.prepare_cached(
                "SELECT id, key, incident_id, kind, round, tier, channel, attempts, group_id FROM outbox
                 WHERE state = 'pending' AND due_at <= ?1 AND (claimed_until IS NULL OR claimed_until < ?1)
                 ORDER BY due_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_s, limit as i64], |r| {
                let id: i64 = r.get(0)?;
                let incident: String = r.get(2)?;
                Ok((id, incident, notification_row(r)))
            })?;
            let rows = rows.collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            let mut due = Vec::with_capacity(rows.len());
            for (id, incident, n) in rows {
                // A row that cannot be read must not hold up every other notification: it
                // is set aside (failed), audited and logged, and the others go on.
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        w.set_aside(id, &incident, &e, &now_s)?;
                        continue;
                    }
                };
                // A storm group's summary goes out only while a member is still escalated.
                match &n.group {
                    Some(_) => due.extend(w.summary_due(n, &now_s)?),
                    None => due.push(n),
                }
            }
            for n in &due {
                w.conn
                    .prepare_cached(
                        "UPDATE outbox SET claimed_by = ?2, claimed_until = ?3 WHERE id = ?1",
                    )?
                    .execute(params![n.id, w.owner, until])?;
            }
            Ok(due)
        })
        .await
    }

    /// Notifications due at `now`, claimed or not, without claiming them (for tests).
    #[cfg(test)]
    pub(super) async fn outbox_peek(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, key, incident_id, kind, round, tier, channel, attempts, group_id FROM outbox
                 WHERE state = 'pending' AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![stamp(now), limit as i64], notification_row)?;
            rows.collect()
        })
        .await
    }

    /// Every outbox row (key, incident, tier, channel, state, group) and every storm group's
    /// first incident (for tests).
    #[cfg(test)]
    pub(super) async fn outbox_rows(&self) -> Result<OutboxDump, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, incident_id, tier, channel, state, group_id FROM outbox ORDER BY id",
            )?;
            let rows = stmt.query_map((), |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            let rows = rows.collect::<Result<Vec<_>, _>>()?;
            let mut stmt = c.prepare_cached("SELECT id, leader FROM escalation_groups")?;
            let leaders = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((rows, leaders.collect::<Result<_, _>>()?))
        })
        .await
    }

    pub(super) async fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|c| {
            let next: Option<String> = c.query_row(
                "SELECT MIN(CASE WHEN claimed_until > due_at THEN claimed_until ELSE due_at END)
                 FROM outbox WHERE state = 'pending'",
                (),
                |r| r.get(0),
            )?;
            Ok(next.as_deref().and_then(parse_time))
        })
        .await
    }

    pub(super) async fn outbox_attempt(&self, id: i64, attempt: Attempt) -> Result<(), StoreError> {
        self.write(move |w| w.outbox_attempt(id, attempt)).await
    }

    pub(super) async fn renotify_due(&self) -> Result<usize, StoreError> {
        self.write(|w| w.renotify_due()).await
    }

    pub(super) async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT state, COUNT(*) FROM outbox WHERE state IN (?1, ?2) GROUP BY state",
            )?;
            let (pending, failed) = (OutboxState::Pending, OutboxState::Failed);
            let rows = stmt.query_map(params![pending.as_str(), failed.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut counts = OutboxCounts::default();
            for row in rows {
                let (state, n) = row?;
                match OutboxState::parse(&state) {
                    Some(OutboxState::Pending) => counts.pending = n as u64,
                    Some(OutboxState::Failed) => counts.failed = n as u64,
                    _ => {
                        return Err(StoreError::Corrupt(format!(
                            "outbox: unexpected state {state:?} counted"
                        )))
                    }
                }
            }
            Ok(counts)
        })
        .await
    }

    pub(super) async fn group_members(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<(u64, Vec<GroupMember>), StoreError> {
        let group = group.to_string();
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM incidents WHERE escalation_group = ?1 AND state = 'escalated'",
                )?
                .query_row([&group], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(
                "SELECT i.id, i.alertname, i.labels, i.state FROM incidents i
                 JOIN escalation_groups g ON g.id = i.escalation_group
                 WHERE i.escalation_group = ?1 AND i.state = 'escalated'
                 ORDER BY CASE WHEN i.id = g.leader THEN 0 ELSE 1 END, i.id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![group, limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, alertname, labels, state) = row?;
                out.push(GroupMember {
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    id,
                    alertname,
                    state,
                });
            }
            Ok((total as u64, out))
        })
        .await
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

    pub(super) async fn record_breaker(
        &self,
        id: String,
        incident: String,
        success: bool,
        thresholds: std::collections::HashMap<String, u32>,
    ) -> Result<Option<BreakerEntry>, StoreError> {
        self.write(move |w| w.record_breaker(&id, &incident, success, &thresholds))
            .await
    }

    pub(super) async fn claim(
        &self,
        ids: Vec<(String, Option<Shared>)>,
        started: Describe,
    ) -> Result<Claimed, StoreError> {
        self.write_weighted(ids.len().max(1), move |w| w.claim(&ids, &started))
            .await
    }

    pub(super) async fn refuse(&self, refusals: Vec<Refusal>) -> Result<(), StoreError> {
        self.write_weighted(refusals.len().max(1), move |w| {
            let now = stamp(Utc::now());
            for r in refusals {
                w.refuse(&r.id, r.reason, r.limit, &r.message, &now)?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn shed_queue(&self, max_queued: usize) -> Result<usize, StoreError> {
        // A bounded share per call (the runner calls again a few times a second), so that a
        // storm's shedding never holds a commit long enough to time deliveries out.
        self.write_weighted(MAX_BATCH_WEIGHT, move |w| {
            let ids: Vec<String> = {
                let mut stmt = w.conn.prepare_cached(
                    "SELECT id FROM incidents WHERE state = 'queued' ORDER BY id DESC LIMIT ?2 OFFSET ?1",
                )?;
                let rows =
                    stmt.query_map(params![max_queued as i64, MAX_BATCH_WEIGHT as i64], |r| r.get(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let now = stamp(Utc::now());
            let message = format!("the queue of incidents waiting to run is full (limits.max_queued = {max_queued})");
            for id in &ids {
                w.refuse(id, Reason::RateLimited, "max_queued", &message, &now)?;
            }
            Ok(ids.len())
        })
        .await
    }

    pub(super) async fn breakers(&self) -> Result<Vec<BreakerEntry>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, route, key, data FROM breakers ORDER BY route, id")?;
            let rows = stmt.query_map((), breaker_row)?;
            rows.collect()
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
            w.store_breaker(&entry, &now)?;
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
                .query_row("SELECT value FROM settings WHERE name = 'pause'", (), |r| {
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
                    w.conn.execute("DELETE FROM settings WHERE name = 'pause'", ())?;
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
        self.submit(weight, Vec::new(), f).await
    }

    /// Queues a job for the writer. `fingerprints`: the alerts a delivery is about, so that
    /// the writer can look their incidents up for the whole batch at once.
    async fn submit<T, F>(
        &self,
        weight: usize,
        fingerprints: Vec<String>,
        f: F,
    ) -> Result<T, StoreError>
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
            fingerprints,
        });
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || match readers {
            Readers::One(c) => f(lock(&c).as_ref()),
            Readers::Pool(pool) => {
                let c = pool
                    .get()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                f(&*c)
            }
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn ingest(&self, d: Delivery) -> Result<Vec<AlertEffect>, StoreError> {
        // Render the JSON here, on the caller's thread; the writer only binds it.
        let prepared = Prepared::new(d);
        let weight = prepared.alerts.len().max(1);
        let fingerprints = prepared
            .alerts
            .iter()
            .map(|a| a.alert.fingerprint.clone())
            .collect();
        self.submit(weight, fingerprints, move |w| w.ingest(prepared))
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

    /// Extends the leases of runs `ids`, which this process is running; returns how many
    /// it still holds. A run whose end could not be recorded is not renewed: its lease runs
    /// out and it is recovered like any other.
    pub(super) async fn renew_leases(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(move |w| {
            let until = stamp(Utc::now() + w.lease);
            let mut held = 0;
            for id in &ids {
                held += w
                    .conn
                    .prepare_cached(
                        "UPDATE incidents SET lease_until = ?3
                         WHERE id = ?1 AND state = 'remediating' AND lease_owner = ?2",
                    )?
                    .execute(params![id, w.owner, until])?;
            }
            Ok(held)
        })
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
                    "INSERT INTO silences (silence_id, incident_id, ends_at, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
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
            let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<_>, _>>()
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
            let rows = stmt.query_map(
                args.iter().map(ToVal::to_val).collect::<Vec<_>>(),
                incident_row,
            )?;
            rows.map(|r| r.and_then(|r| r)).collect()
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
            let rows = stmt.query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
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
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        if lock(&self.jobs).is_none() {
            return Err(StoreError::Closed);
        }
        self.read(|c| c.query_row("SELECT 1", (), |_| Ok(()))).await
    }

    pub(super) async fn close(&self) {
        // Dropping the last sender lets the writer finish what is queued, then exit.
        lock(&self.jobs).take();
        let handle = lock(&self.writer).take();
        let on_close = lock(&self.on_close).take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(h) = handle {
                let _ = h.join();
            }
            if let Some(f) = on_close {
                f();
            }
        })
        .await;
    }
}

/// Maps a row of `SELECT id, route, key, data FROM breakers`.
fn breaker_row(r: &Row) -> Result<BreakerEntry, StoreError> {
    let id: String = r.get(0)?;
    let (key, data): (String, String) = (r.get(2)?, r.get(3)?);
    let corrupt = |what: &str| StoreError::Corrupt(format!("breaker {id}: {what}"));
    Ok(BreakerEntry {
        route: r.get(1)?,
        key: serde_json::from_str(&key).map_err(|_| corrupt("key is not JSON"))?,
        breaker: serde_json::from_str(&data).map_err(|_| corrupt("state is not valid"))?,
        id,
    })
}

/// Maps a row of `SELECT id, key, incident_id, kind, round, tier, channel, attempts`.
fn notification_row(r: &Row) -> Result<Notification, StoreError> {
    let id: i64 = r.get(0)?;
    let (key, kind): (String, String) = (r.get(1)?, r.get(3)?);
    Ok(Notification {
        id,
        key: NotificationKey::parse(&key)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox {id}: bad key {key:?}")))?,
        incident_id: r.get(2)?,
        kind: NotificationKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox {id}: unknown kind {kind:?}")))?,
        round: r.get(4)?,
        tier: r.get(5)?,
        channel: r.get(6)?,
        attempts: r.get(7)?,
        group: r.get(8)?,
    })
}

/// The plans in force now.
fn current(plans: &SharedPlans) -> Arc<Plans> {
    plans
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves no broken invariant behind.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    for (version, sql) in migrations.iter().filter(|m| m.0 > current) {
        let failed = |source: StoreError| StoreError::Migration {
            version: *version,
            source: Box::new(source),
        };
        c.execute_batch("BEGIN").map_err(failed)?;
        let applied = c.execute_batch(sql).and_then(|()| {
            c.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, stamp(Utc::now())],
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

/// The sequence number and hash of the newest audit entry.
fn audit_head(c: &dyn Db) -> Result<(i64, String), StoreError> {
    let head = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(head.unwrap_or((0, audit::GENESIS.to_string())))
}

/// Outbox rows (key, incident, tier, channel, state, group) and storm groups' first
/// incidents, for tests.
#[cfg(test)]
pub(super) type OutboxDump = (
    Vec<(String, String, i64, String, String, Option<String>)>,
    std::collections::HashMap<String, String>,
);

/// A storm group as the writer knows it: read once per batch, then kept up to date.
#[derive(Debug, Clone)]
struct GroupState {
    id: String,
    opened_at: String,
    size: i64,
    leader: String,
    /// Its size grew in this batch and is not written yet.
    grown: bool,
}

/// What a run's shared guards said, in the claim transaction.
enum SharedCheck {
    Pass,
    /// Its in-flight cap is full: it stays queued.
    Wait,
    /// Escalated, by this limit.
    Refused(&'static str),
}

/// One unit of work for the writer: `run` inside the transaction, `finish` after commit.
trait Job: Send {
    fn run(&mut self, w: &mut Writer) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
    fn weight(&self) -> usize;
    /// The alerts a delivery is about; empty for any other job.
    fn fingerprints(&self) -> &[String];
}

struct FnJob<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    weight: usize,
    fingerprints: Vec<String>,
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

    fn fingerprints(&self) -> &[String] {
        &self.fingerprints
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
    conn: Box<dyn Db>,
    /// Opens a new connection when this one broke (PostgreSQL restarted or unreachable).
    reconnect: Option<Connector>,
    /// This process, as the holder of leases.
    owner: String,
    /// How long a lease (on a run, or a notification being sent) lasts unless renewed.
    lease: chrono::Duration,
    /// The current batch's audit entries, written just before its commit.
    audit_rows: Vec<AuditRow>,
    /// The newest incident (id, state, starts_at) of the fingerprints of this batch's
    /// deliveries, or `None` for none, as looked up when the batch began.
    prefetched: std::collections::HashMap<String, Option<(String, String, String, String)>>,
    /// The newest storm group of each route and reason, as this batch has seen it (the
    /// write lock makes it exact until the commit), with sizes written at the commit. A job
    /// that rolls back puts back what it found.
    groups: std::collections::HashMap<(String, Reason), GroupState>,
    /// The newest audit entry's (seq, hash): the link the next entry chains to.
    head: (i64, String),
    ids: ulid::Generator,
    storm_window: Arc<std::sync::atomic::AtomicU64>,
    plans: SharedPlans,
    /// Wakes the sender after a commit that made a notification due.
    outbox_wake: Arc<Notify>,
    /// Set by a job of the current batch that touched the outbox.
    outbox_touched: bool,
    /// The current batch's state changes, logged after its commit.
    changes: Vec<super::changelog::Change>,
    /// Logs the committed changes off the writer's thread.
    log: super::changelog::Log,
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
        if self.conn.dialect() == Dialect::Sqlite {
            if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "store: final checkpoint failed; the WAL is kept and replayed at next open");
            }
        }
    }

    /// Opens the transaction of a batch. With PostgreSQL it waits for the other replicas'
    /// writers (the advisory lock) and takes the audit chain's head as they left it.
    fn begin(&mut self) -> Result<(), StoreError> {
        if self.conn.is_broken() {
            if let Some(reconnect) = &self.reconnect {
                self.conn = reconnect()?;
                tracing::info!("store: reconnected to the database");
            }
        }
        match self.conn.dialect() {
            Dialect::Sqlite => self.conn.execute_batch("BEGIN IMMEDIATE"),
            Dialect::Postgres => {
                self.conn.execute_batch(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
                ))?;
                match audit_head(self.conn.as_ref()) {
                    Ok(head) => {
                        self.head = head;
                        Ok(())
                    }
                    Err(e) => {
                        let _ = self.conn.execute_batch("ROLLBACK");
                        Err(e)
                    }
                }
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Box<dyn Job>>) {
        let head_before = self.head.clone();
        self.outbox_touched = false;
        if let Err(e) = self.begin() {
            let msg = e.to_string();
            tracing::error!(error = %msg, "store: cannot begin a transaction");
            for job in batch {
                job.finish(Err(StoreError::Commit(msg.clone())));
            }
            return;
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut batch = batch;
        self.audit_rows.clear();
        self.groups.clear();
        // Each job runs after a savepoint: a failing job rolls back to it and fails alone.
        // Releasing one job's savepoint and setting the next's is one round trip.
        let mut savepoint = self
            .prefetch_latest(&batch)
            .and_then(|()| self.conn.execute_batch("SAVEPOINT job"))
            .map_err(|e| e.to_string());
        // The first savepoint step that failed, if any: the batch cannot be trusted then.
        let mut doubt = savepoint.clone().err();
        for job in batch.iter_mut() {
            if job.fingerprints().is_empty() {
                self.prefetched.clear();
            }
            let head = self.head.clone();
            let appended = self.audit_rows.len();
            let changed = self.changes.len();
            let groups = self.groups.clone();
            let r = match &savepoint {
                Ok(()) => job.run(self),
                Err(m) => Err(StoreError::Commit(m.clone())),
            };
            match r {
                Ok(()) => {
                    savepoint = self
                        .conn
                        .execute_batch("RELEASE job; SAVEPOINT job")
                        .map_err(|e| e.to_string());
                    if let Err(m) = &savepoint {
                        doubt.get_or_insert_with(|| m.clone());
                    }
                    results.push(Ok(()));
                }
                Err(e) => {
                    // The savepoint stays, for the next job.
                    savepoint = self
                        .conn
                        .execute_batch("ROLLBACK TO job")
                        .map_err(|e| e.to_string());
                    if let Err(m) = &savepoint {
                        doubt.get_or_insert_with(|| m.clone());
                    }
                    self.head = head;
                    self.audit_rows.truncate(appended);
                    self.changes.truncate(changed);
                    self.groups = groups;
                    self.prefetched.clear();
                    results.push(Err(e));
                }
            }
        }
        // The batch's audit entries, in one go, then the commit: both or neither. A savepoint
        // that could not be set or released leaves the transaction in doubt (PostgreSQL
        // would turn the COMMIT of an aborted transaction into a rollback): fail the batch.
        let audit_rows = std::mem::take(&mut self.audit_rows);
        let committed = doubt
            .map_or(Ok(()), |m| Err(StoreError::Commit(m)))
            .and_then(|()| self.flush_groups())
            .and_then(|()| self.conn.insert_audit(&audit_rows))
            .and_then(|()| self.conn.execute_batch("COMMIT"));
        self.audit_rows = audit_rows;
        self.audit_rows.clear();
        if let Err(e) = committed {
            let msg = e.to_string();
            tracing::error!(error = %msg, jobs = batch.len(), "store: commit failed; nothing in this batch was acknowledged");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.head = head_before;
            self.changes.clear();
            for job in batch {
                job.finish(Err(StoreError::Commit(msg.clone())));
            }
            return;
        }
        if self.outbox_touched {
            self.outbox_wake.notify_one();
        }
        self.log.committed(&mut self.changes);
        for (job, r) in batch.into_iter().zip(results) {
            job.finish(r);
        }
    }

    /// Appends one audit entry at time `at` (a stored stamp), chained to the current head.
    /// The entry is written with the rest of the batch's entries, just before the commit
    /// (nothing in a batch reads the audit log back).
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
        let prev_hash = std::mem::replace(&mut self.head, (seq, hash.clone())).1;
        self.audit_rows.push(AuditRow {
            seq,
            at: at.to_string(),
            event,
            incident_id: e.incident_id,
            detail: e.detail,
            prev_hash,
            hash,
        });
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
        match incident::decide(latest.as_ref(), a.status, a.starts_at, a.ends_at) {
            Action::Open => Ok(AlertEffect::Opened(self.open(p, now)?)),
            Action::Duplicate { id } => {
                self.conn
                    .prepare_cached(
                        "UPDATE incidents SET deliveries = deliveries + 1, last_seen_at = ?2, annotations = ?3,
                            external_url = ?4
                         WHERE id = ?1",
                    )?
                    .execute(params![id, now, p.annotations.get(), p.external_url])?;
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
                let r = Resolution {
                    outcome,
                    ends_at: a.ends_at,
                    note: None,
                    delivery: true,
                };
                self.resolve(&id, from, r, now)?;
                Ok(AlertEffect::Resolved { id, outcome })
            }
            Action::Supersede { id, outcome } => {
                let from = latest.map(|l| l.state).unwrap_or(State::Queued);
                let note = "a newer firing arrived; this period's resolution was never delivered";
                let r = Resolution {
                    outcome,
                    ends_at: None,
                    note: Some(note),
                    delivery: true,
                };
                self.resolve(&id, from, r, now)?;
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

    /// The newest incident of `fingerprint`: looked up for the whole batch when it started
    /// (PostgreSQL, see [`Self::prefetch_latest`]), once; else read now.
    fn latest(&mut self, fingerprint: &str) -> Result<Option<Latest>, StoreError> {
        let row = match self.prefetched.remove(fingerprint) {
            Some(found) => found,
            None => self
                .conn
                .prepare_cached(
                    "SELECT id, state, starts_at, last_seen_at FROM incidents WHERE fingerprint = ?1
                     ORDER BY starts_at DESC LIMIT 1",
                )?
                .query_row([fingerprint], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?,
        };
        let Some((id, state, starts_at, last_seen_at)) = row else {
            return Ok(None);
        };
        Ok(Some(Latest {
            state: State::parse(&state).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: unknown state {state:?}"))
            })?,
            starts_at: parse_time(&starts_at).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: bad starts_at {starts_at:?}"))
            })?,
            last_seen_at: parse_time(&last_seen_at).ok_or_else(|| {
                StoreError::Corrupt(format!("incident {id}: bad last_seen_at {last_seen_at:?}"))
            })?,
            id,
        }))
    }

    /// Looks up the newest incident of every alert the batch's deliveries are about, in one
    /// statement where the database offers one. Valid until a job that is not a delivery
    /// runs (it may change an incident) or a job rolls back; each answer is used once.
    fn prefetch_latest(&mut self, batch: &[Box<dyn Job>]) -> Result<(), StoreError> {
        self.prefetched.clear();
        let fingerprints: Vec<&str> = batch
            .iter()
            .flat_map(|j| j.fingerprints())
            .map(String::as_str)
            .collect();
        if fingerprints.is_empty() {
            return Ok(());
        }
        let Some(rows) = self.conn.latest_incidents(&fingerprints)? else {
            return Ok(());
        };
        for fp in &fingerprints {
            self.prefetched.insert(fp.to_string(), None);
        }
        for r in rows {
            self.prefetched.insert(
                r.get(0)?,
                Some((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            );
        }
        Ok(())
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
        // Entering `verifying` starts the verification timer; leaving it stops it.
        let verify_until = match to {
            State::Verifying => {
                let route = self.route_of(id)?;
                let verify_for = current(&self.plans).verify_for(route.as_deref());
                Some(stamp(parse_time(now).unwrap_or_else(Utc::now) + verify_for))
            }
            _ => None,
        };
        let changed: Option<(String, String, String)> = self
            .conn
            .prepare_cached(
                "UPDATE incidents SET state = ?3, reason = COALESCE(?4, reason), message = COALESCE(?5, message),
                    updated_at = ?6, verify_until = ?7
                 WHERE id = ?1 AND state = ?2
                 RETURNING COALESCE(route, ''), alertname, fingerprint",
            )?
            .query_row(params![id, from.as_str(), to.as_str(), reason.map(Reason::as_str), message, now, verify_until], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((route, alertname, fingerprint)) = changed else {
            return Ok(false);
        };
        self.changes.push(super::changelog::Change {
            id: id.to_string(),
            alertname,
            fingerprint,
            route: route.clone(),
            from: Some(from),
            to,
            reason,
            channels: None,
        });
        let mut detail = json!({"from": from, "to": to});
        if let Some(until) = &verify_until {
            detail["verify_until"] = json!(until);
        }
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
        if to == State::Escalated {
            let group = match reason {
                Some(reason) => Some(self.group_escalation(id, &route, reason, now)?),
                None => None,
            };
            // The notifications are committed with the escalation: none is ever lost.
            self.escalate(id, group, now)?;
        }
        Ok(true)
    }

    /// Puts an escalation into its storm group and audits it (see [`Self::assign_group`]).
    fn group_escalation(
        &mut self,
        id: &str,
        route: &str,
        reason: Reason,
        now: &str,
    ) -> Result<GroupState, StoreError> {
        let (group, first) = self.assign_group(id, route, reason, now)?;
        self.audit_grouping(id, route, reason, &group, first, now)?;
        Ok(group)
    }

    fn audit_grouping(
        &mut self,
        id: &str,
        route: &str,
        reason: Reason,
        group: &GroupState,
        first: bool,
        now: &str,
    ) -> Result<(), StoreError> {
        let detail = json!({"group": group.id, "route": route, "reason": reason, "first": first, "size": group.size});
        self.append(
            NewEntry::for_incident(Event::EscalationGrouped, id, &detail),
            now,
        )
    }

    /// Chooses an escalation's storm group: the open group of its route and reason, or a
    /// new one (see `guard::storm`); returns it, and whether it is new. A group's size is
    /// counted here and written with the batch (see [`Self::flush_groups`]).
    fn assign_group(
        &mut self,
        id: &str,
        route: &str,
        reason: Reason,
        now: &str,
    ) -> Result<(GroupState, bool), StoreError> {
        let key = (route.to_string(), reason);
        let latest = match self.groups.get(&key) {
            Some(g) => Some(g.clone()),
            None => self
                .conn
                .prepare_cached(
                    "SELECT id, opened_at, size, leader FROM escalation_groups WHERE route = ?1 AND reason = ?2
                     ORDER BY opened_at DESC LIMIT 1",
                )?
                .query_row(params![route, reason.as_str()], |r| {
                    Ok(GroupState {
                        id: r.get(0)?,
                        opened_at: r.get(1)?,
                        size: r.get(2)?,
                        leader: r.get(3)?,
                        grown: false,
                    })
                })
                .optional()?,
        };
        let as_storm = latest.as_ref().and_then(|g| {
            Some(storm::Group {
                id: g.id.clone(),
                opened_at: parse_time(&g.opened_at)?,
                size: g.size as u32,
            })
        });
        let now_t = parse_time(now).unwrap_or_else(Utc::now);
        let window_ms = self.storm_window.load(std::sync::atomic::Ordering::Relaxed) as i64;
        let grouping = storm::assign(
            as_storm.as_ref(),
            now_t,
            chrono::Duration::milliseconds(window_ms),
        );
        let (group, first) = match (grouping, latest) {
            (storm::Grouping::Join(_), Some(mut g)) => {
                g.size += 1;
                g.grown = true;
                (g, false)
            }
            _ => {
                let gid = self
                    .ids
                    .generate()
                    .unwrap_or_else(|_| ulid::Ulid::new())
                    .to_string();
                self.conn
                    .prepare_cached(
                        "INSERT INTO escalation_groups (id, route, reason, opened_at, size, leader)
                         VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                    )?
                    .execute(params![gid, route, reason.as_str(), now, id])?;
                let g = GroupState {
                    id: gid,
                    opened_at: now.to_string(),
                    size: 1,
                    leader: id.to_string(),
                    grown: false,
                };
                (g, true)
            }
        };
        self.groups.insert(key, group.clone());
        Ok((group, first))
    }

    /// Writes the sizes of the groups this batch grew (once each, not once per member).
    fn flush_groups(&mut self) -> Result<(), StoreError> {
        for g in self.groups.values().filter(|g| g.grown) {
            self.conn
                .prepare_cached("UPDATE escalation_groups SET size = ?2 WHERE id = ?1")?
                .execute(params![g.id, g.size])?;
        }
        Ok(())
    }

    fn claim(
        &mut self,
        ids: &[(String, Option<Shared>)],
        started: &Describe,
    ) -> Result<Claimed, StoreError> {
        let now_t = Utc::now();
        let now = stamp(now_t);
        let mut claimed = Claimed::default();
        for (id, shared) in ids {
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
            let mut in_flight_key = None;
            if let Some(shared) = shared {
                match self.check_shared(id, shared, now_t, &now)? {
                    SharedCheck::Pass => in_flight_key = shared.in_flight.as_ref().map(|k| &k.0),
                    SharedCheck::Wait => continue,
                    SharedCheck::Refused(limit) => {
                        claimed.refused.push((id.clone(), limit));
                        continue;
                    }
                }
            }
            let attempt = attempts as u32 + 1;
            let until = stamp(now_t + self.lease);
            self.conn
                .prepare_cached(
                    "UPDATE incidents SET attempts = ?2, lease_owner = ?3, lease_until = ?4, in_flight_key = ?5
                     WHERE id = ?1",
                )?
                .execute(params![id, attempt, self.owner, until, in_flight_key])?;
            let started_run = Move {
                extra: json!({ "attempt": attempt }),
                ..Move::new(State::Queued, State::Remediating)
            };
            self.transition(id, started_run, &now)?;
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
            claimed.claims.push(claim);
        }
        Ok(claimed)
    }

    /// Applies a run's shared guards, inside the claim's transaction: the in-flight cap,
    /// the breaker (taking its half-open trial), then the rate buckets. A refusal escalates
    /// the incident here.
    fn check_shared(
        &mut self,
        id: &str,
        shared: &Shared,
        now_t: DateTime<Utc>,
        now: &str,
    ) -> Result<SharedCheck, StoreError> {
        if let Some((key, max)) = &shared.in_flight {
            let running: i64 = self
                .conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM incidents WHERE state = 'remediating' AND in_flight_key = ?1",
                )?
                .query_row([key], |r| r.get(0))?;
            if running >= i64::from(*max) {
                return Ok(SharedCheck::Wait);
            }
        }
        let refuse = |w: &mut Writer, reason: Reason, limit: &'static str, message: &str| {
            w.refuse(id, reason, limit, message, now)
                .map(|_| SharedCheck::Refused(limit))
        };
        if let Some(b) = &shared.breaker {
            let stored = self.load_breaker(&b.id)?;
            let new = stored.is_none();
            let mut entry = stored.unwrap_or_else(|| BreakerEntry {
                id: b.id.clone(),
                route: b.route.clone(),
                key: b.key.clone(),
                breaker: Default::default(),
            });
            let before = entry.breaker.clone();
            if let Admit::Refuse { failures, until } = entry.breaker.admit(id, now_t, b.cooldown) {
                let message = guard::breaker_refusal(&b.route, &failures, until);
                return refuse(self, Reason::CircuitOpen, "breaker", &message);
            }
            // Stored from its first run on, so that every replica records into the same one.
            if new || entry.breaker != before {
                self.store_breaker(&entry, now)?;
            }
        }
        let now_us = now_t.timestamp_micros();
        for r in &shared.rates {
            let tat: Option<i64> = self
                .conn
                .prepare_cached("SELECT tat_us FROM rate_buckets WHERE key = ?1")?
                .query_row([&r.bucket], |row| row.get(0))
                .optional()?;
            let Some(next) = guard::gcra(tat, now_us, r.rate) else {
                return refuse(self, Reason::RateLimited, r.limit, &r.message);
            };
            self.conn
                .prepare_cached(
                    "INSERT INTO rate_buckets (key, tat_us) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET tat_us = excluded.tat_us",
                )?
                .execute(params![r.bucket, next])?;
        }
        Ok(SharedCheck::Pass)
    }

    /// Escalates a queued incident a guard refused, naming the limit (`refused_by`).
    fn refuse(
        &mut self,
        id: &str,
        reason: Reason,
        limit: &str,
        message: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        let m = Move {
            reason: Some(reason),
            message: Some(message),
            extra: json!({ "refused_by": limit }),
            ..Move::new(State::Queued, State::Escalated)
        };
        self.transition(id, m, now)
    }

    fn load_breaker(&self, id: &str) -> Result<Option<BreakerEntry>, StoreError> {
        self.conn
            .prepare_cached("SELECT id, route, key, data FROM breakers WHERE id = ?1")?
            .query_row([id], breaker_row)
            .optional()
    }

    fn store_breaker(&mut self, entry: &BreakerEntry, now: &str) -> Result<(), StoreError> {
        self.conn
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
        Ok(())
    }

    /// Records a remediation's result with breaker `id`, read and written in this
    /// transaction (shared guards). Returns the breaker when it changed.
    fn record_breaker(
        &mut self,
        id: &str,
        incident: &str,
        success: bool,
        thresholds: &std::collections::HashMap<String, u32>,
    ) -> Result<Option<BreakerEntry>, StoreError> {
        let Some(mut entry) = self.load_breaker(id)? else {
            return Ok(None);
        };
        let now_t = Utc::now();
        let threshold = thresholds.get(&entry.route).copied().unwrap_or(u32::MAX);
        let before = entry.breaker.clone();
        entry.breaker.record(incident, success, now_t, threshold);
        if entry.breaker == before {
            return Ok(None);
        }
        let now = stamp(now_t);
        self.store_breaker(&entry, &now)?;
        let detail = json!({
            "incident": incident, "success": success, "breaker": entry.id, "route": entry.route,
            "key": entry.key, "state": entry.breaker.state,
        });
        self.append(NewEntry::new(Event::BreakerChanged, &detail), &now)?;
        Ok(Some(entry))
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
        // A run whose lease ran out was taken over (escalated, or run again elsewhere):
        // its end changes nothing.
        let holder: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT lease_owner FROM incidents WHERE id = ?1 AND state = 'remediating'",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten();
        if holder.as_deref().is_some_and(|h| h != self.owner) {
            return Ok(None);
        }
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
                "SELECT id, route, attempts, lease_owner FROM incidents
                 WHERE state = 'remediating' AND (lease_until IS NULL OR lease_until < ?1) ORDER BY id",
            )?;
            let rows = stmt.query_map([stamp(Utc::now())], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let now = stamp(Utc::now());
        let mut out = Vec::new();
        for (id, route, attempts, holder) in rows {
            let rerun = attempts < 2 && route.as_ref().is_some_and(|r| idempotent.contains(r));
            // Whose run it was: this process's past self, or a replica that stopped renewing.
            let extra = match holder {
                Some(h) if h != self.owner => json!({ "lease_owner": h }),
                _ => Value::Null,
            };
            if rerun {
                let message =
                    "medic stopped during the run; the route is idempotent, so it runs once more";
                let m = Move {
                    message: Some(message),
                    extra: extra.clone(),
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
                    extra,
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
        // What the incident is from its first row: queued for its runbook, taken on purpose
        // (ignored), or escalated at once (no runbook, or content over medic's limits).
        let (state, reason, route, runbook, why) = match &p.routed {
            Routed::Runbook { route, runbook } => (
                State::Queued,
                None,
                Some(route.as_str()),
                Some(runbook.as_str()),
                None,
            ),
            Routed::Ignore { route } => (State::Ignored, None, Some(route.as_str()), None, None),
            Routed::NoRunbook { why } => (
                State::Escalated,
                Some(Reason::NoRunbook),
                None,
                None,
                Some(why.as_str()),
            ),
            Routed::Invalid { route, why } => (
                State::Escalated,
                Some(Reason::InvalidAlert),
                route.as_deref(),
                None,
                Some(why.as_str()),
            ),
        };
        // An alert escalated as it opens gets its storm group and first round in the same row.
        let group = match reason {
            Some(reason) => Some(self.assign_group(&id, route.unwrap_or(""), reason, now)?),
            None => None,
        };
        let escalated_at = group.as_ref().map(|_| now);
        self.conn
            .prepare_cached(
                "INSERT INTO incidents (id, fingerprint, alertname, labels, annotations, generator_url,
                    starts_at, state, is_open, reason, route, runbook, deliveries, created_at, updated_at, last_seen_at,
                    message, external_url, escalation_group, escalated_at, round, round_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?18, ?9, ?10, ?11, 1, ?12, ?12, ?12, ?13, ?14, ?15, ?16, ?17, ?16)",
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
                p.external_url,
                group.as_ref().map(|(g, _)| &g.id),
                escalated_at,
                i64::from(group.is_some()),
                i64::from(state.is_open()),
            ])?;
        self.changes.push(super::changelog::Change {
            id: id.clone(),
            alertname: a.alertname().to_string(),
            fingerprint: a.fingerprint.clone(),
            route: route.unwrap_or_default().to_string(),
            from: None,
            to: state,
            reason,
            channels: None,
        });
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
            Routed::Ignore { route } => {
                let detail = json!({"from": State::Queued, "to": State::Ignored, "route": route,
                    "message": "the route ignores this alert: nothing is run and nobody is told"});
                self.append(
                    NewEntry::for_incident(Event::StateChanged, &id, &detail),
                    now,
                )?;
            }
            Routed::NoRunbook { why } | Routed::Invalid { why, .. } => {
                if matches!(p.routed, Routed::NoRunbook { .. }) {
                    self.append(
                        NewEntry::for_incident(Event::RouteMissed, &id, &json!({ "why": why })),
                        now,
                    )?;
                }
                let mut detail =
                    json!({"from": State::Queued, "to": State::Escalated, "reason": reason});
                if route.is_some() {
                    detail["route"] = json!(route);
                }
                if matches!(p.routed, Routed::Invalid { .. }) {
                    detail["message"] = json!(why);
                }
                self.append(
                    NewEntry::for_incident(Event::StateChanged, &id, &detail),
                    now,
                )?;
                if let (Some((group, first)), Some(reason)) = (group, reason) {
                    self.audit_grouping(&id, route.unwrap_or(""), reason, &group, first, now)?;
                    self.schedule_escalation(&id, Some(group), now)?;
                }
            }
        }
        Ok(state)
    }

    fn resolve(
        &mut self,
        id: &str,
        from: State,
        r: Resolution<'_>,
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE incidents SET state = 'resolved', is_open = 0, outcome = ?2, resolved_at = ?3,
                    updated_at = ?3, last_seen_at = ?3, deliveries = deliveries + ?4, verify_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, r.outcome.as_str(), now, i64::from(r.delivery)])?;
        if from == State::Verifying {
            let how = r
                .note
                .unwrap_or("Alertmanager sent the resolved notification");
            self.verification_ended(id, true, how, now)?;
        }
        let mut detail = json!({"from": from, "to": State::Resolved, "outcome": r.outcome});
        if let Some(t) = r.ends_at {
            detail["ends_at"] = json!(stamp_exact(t));
        }
        if let Some(note) = r.note {
            detail["note"] = json!(note);
        }
        self.append(
            NewEntry::for_incident(Event::StateChanged, id, &detail),
            now,
        )?;
        if matches!(from, State::Escalated | State::Acknowledged) {
            self.announce_resolution(id, now)?;
        }
        Ok(())
    }

    /// The end of a verification: `success` when the alert resolved while medic waited
    /// after a run, not when the wait ran out. Every verification ends here, inside the
    /// transaction that resolves or escalates the incident: this is where a route's
    /// circuit breaker records its success or failure.
    fn verification_ended(
        &mut self,
        id: &str,
        success: bool,
        how: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let event = if success {
            Event::VerificationSucceeded
        } else {
            Event::VerificationFailed
        };
        let route = self.route_of(id)?;
        let detail = json!({"route": route, "how": how});
        self.append(NewEntry::for_incident(event, id, &detail), now)
    }

    fn state_of(&self, id: &str) -> Result<Option<State>, StoreError> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM incidents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        state
            .map(|s| {
                State::parse(&s).ok_or_else(|| {
                    StoreError::Corrupt(format!("incident {id}: unknown state {s:?}"))
                })
            })
            .transpose()
    }

    fn route_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT route FROM incidents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// An incident was just escalated: its first round of notifications.
    fn escalate(
        &mut self,
        id: &str,
        group: Option<GroupState>,
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE incidents SET escalation_group = COALESCE(?3, escalation_group),
                    escalated_at = COALESCE(escalated_at, ?2), round = 1, round_at = ?2
                 WHERE id = ?1",
            )?
            .execute(params![id, now, group.as_ref().map(|g| &g.id)])?;
        self.schedule_escalation(id, group, now)
    }

    /// Schedules an escalation's notifications.
    fn schedule_escalation(
        &mut self,
        id: &str,
        group: Option<GroupState>,
        now: &str,
    ) -> Result<(), StoreError> {
        // Storm grouping: the group's first incident is notified at once, as usual. The others
        // are not notified one by one: when the first of them joins, one summary notification
        // of the group is scheduled for the end of its window, listing every member then.
        // A member that joins when the summary's first tier can no longer list it (it went
        // out, is going out, or was not sent: a window made longer by a reload, a delivery
        // committed after the window's end, a replica whose clock is behind) is told on its
        // own.
        match group {
            // Its `escalation_grouped` entry already says it is covered by the summary.
            Some(g) if g.leader != id => match g.size == 2 {
                true => self.schedule_group_summary(&g, id, now),
                false if self.summary_will_list(&g.id, now)? => Ok(()),
                false => self.schedule_round(id, 1, now),
            },
            _ => self.schedule_round(id, 1, now),
        }
    }

    /// Puts the summary notification of storm group `g` in the outbox, on its route's
    /// channels, due when the group's window ends. The summary belongs to the group (its key
    /// and `group_id`), not to an incident: `member`, the first to join, is only who it is
    /// told through until it is due (see [`Self::summary_due`]).
    fn schedule_group_summary(
        &mut self,
        g: &GroupState,
        member: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let (gid, opened_at) = (&g.id, &g.opened_at);
        let route = self.route_of(&g.leader)?;
        let plans = current(&self.plans);
        let policy = plans.policy(route.as_deref());
        let window = self.storm_window.load(std::sync::atomic::Ordering::Relaxed) as i64;
        let start =
            parse_time(opened_at).unwrap_or_else(Utc::now) + chrono::Duration::milliseconds(window);
        for (index, tier) in policy.tiers.iter().enumerate() {
            let number = index + 1;
            let due = stamp(start + tier.after);
            for channel in &tier.notify {
                self.conn
                    .prepare_cached(
                        "INSERT INTO outbox (key, incident_id, kind, round, tier, channel, state, due_at, created_at, group_id)
                         VALUES (?1, ?2, ?8, 1, ?3, ?4, ?9, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        NotificationKey::GroupSummary {
                            group: gid.clone(),
                            tier: number as u32,
                            channel: channel.clone()
                        }
                        .to_string(),
                        member,
                        number as i64,
                        channel,
                        due,
                        now,
                        gid,
                        NotificationKind::Escalated.as_str(),
                        OutboxState::Pending.as_str()
                    ])?;
            }
        }
        self.outbox_touched = true;
        let detail = json!({"group": gid, "summary_due_at": stamp(start)});
        self.append(
            NewEntry::for_incident(Event::EscalationScheduled, member, &detail),
            now,
        )
    }

    /// Whether storm group `gid`'s summary will still list a member that joins now: every
    /// notification of its first tier is pending and not being sent (each is rendered, with
    /// the members escalated then, when it is claimed).
    fn summary_will_list(&self, gid: &str, now: &str) -> Result<bool, StoreError> {
        let (all, waiting): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = ?3
                        AND (claimed_until IS NULL OR claimed_until < ?2) THEN 1 ELSE 0 END), 0)
                 FROM outbox WHERE group_id = ?1 AND kind = ?4 AND tier = 1",
            )?
            .query_row(
                params![
                    gid,
                    now,
                    OutboxState::Pending.as_str(),
                    NotificationKind::Escalated.as_str()
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
        Ok(all > 0 && waiting == all)
    }

    /// Storm group `n.group`'s summary `n` is due. It goes out while an incident that
    /// joined the group is still escalated (the group's first has notifications of its own),
    /// told through the first incident if it is still escalated, else the first such member;
    /// when every one was acknowledged or resolved it is not sent, and the audit log says so.
    fn summary_due(
        &mut self,
        mut n: Notification,
        now: &str,
    ) -> Result<Option<Notification>, StoreError> {
        let gid = n.group.clone().unwrap_or_default();
        let leader: Option<String> = self
            .conn
            .prepare_cached("SELECT leader FROM escalation_groups WHERE id = ?1")?
            .query_row([&gid], |r| r.get(0))
            .optional()?;
        let leader = leader.unwrap_or_default();
        let unhandled = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM incidents WHERE escalation_group = ?1 AND state = 'escalated'
                 ORDER BY CASE WHEN id = ?2 THEN 0 ELSE 1 END, id LIMIT 2",
            )?;
            let rows = stmt.query_map(params![gid, leader], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let through = match unhandled.iter().any(|id| *id != leader) {
            true => unhandled.into_iter().next(),
            false => None,
        };
        if let Some(id) = through {
            if id != n.incident_id {
                self.conn
                    .prepare_cached("UPDATE outbox SET incident_id = ?2 WHERE id = ?1")?
                    .execute(params![n.id, id])?;
                n.incident_id = id;
            }
            return Ok(Some(n));
        }
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = ?3, done_at = ?2 WHERE id = ?1 AND state = ?4",
            )?
            .execute(params![
                n.id,
                now,
                OutboxState::Cancelled.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        let detail = json!({
            "notifications": 1, "group": gid, "key": n.key.to_string(), "tier": n.tier, "channel": n.channel,
            "why": "every incident of the storm group was acknowledged or resolved before its summary was due",
        });
        self.append(
            NewEntry::for_incident(Event::NotificationsCancelled, &n.incident_id, &detail),
            now,
        )?;
        Ok(None)
    }

    /// Puts one round of the incident's escalation policy in the outbox: each tier's
    /// channels, due `after` from now. The idempotency key refuses a second copy.
    fn schedule_round(&mut self, id: &str, round: u32, now: &str) -> Result<(), StoreError> {
        self.schedule_round_from(id, round, now, now)
    }

    fn schedule_round_from(
        &mut self,
        id: &str,
        round: u32,
        from: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let route = self.route_of(id)?;
        let plans = current(&self.plans);
        let policy = plans.policy(route.as_deref());
        let start = parse_time(from).unwrap_or_else(Utc::now);
        let mut tiers = Vec::with_capacity(policy.tiers.len());
        for (index, tier) in policy.tiers.iter().enumerate() {
            let number = index + 1;
            let due = stamp(start + tier.after);
            for channel in &tier.notify {
                self.conn
                    .prepare_cached(
                        "INSERT INTO outbox (key, incident_id, kind, round, tier, channel, state, due_at, created_at)
                         VALUES (?1, ?2, ?8, ?3, ?4, ?5, ?9, ?6, ?7) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        NotificationKey::Round {
                            incident: id.to_string(),
                            round,
                            tier: number as u32,
                            channel: channel.clone()
                        }
                        .to_string(),
                        id,
                        round,
                        number as i64,
                        channel,
                        due,
                        now,
                        NotificationKind::Escalated.as_str(),
                        OutboxState::Pending.as_str()
                    ])?;
            }
            tiers.push(json!({
                "tier": number, "after": humantime::format_duration(tier.after).to_string(),
                "notify": tier.notify, "due_at": due,
            }));
        }
        // Wake the sender only when something was put in the outbox.
        self.outbox_touched |= policy.tiers.iter().any(|t| !t.notify.is_empty());
        let told = policy.tiers.iter().flat_map(|t| &t.notify);
        super::changelog::told(&mut self.changes, id, told);
        let mut detail = json!({"round": round, "tiers": tiers});
        if policy.tiers.is_empty() {
            detail["note"] = json!("no escalation policy names a channel: nobody is notified");
        }
        if let Some(every) = policy.renotify {
            detail["renotify"] = json!(humantime::format_duration(every).to_string());
        }
        self.append(
            NewEntry::for_incident(Event::EscalationScheduled, id, &detail),
            now,
        )
    }

    /// Sets aside an outbox row that cannot be read (`error`): marked failed, audited on its
    /// incident and logged, so that it cannot block the notifications due after it.
    fn set_aside(
        &mut self,
        id: i64,
        incident: &str,
        error: &StoreError,
        now: &str,
    ) -> Result<(), StoreError> {
        tracing::error!(outbox = id, incident, error = %error, "an outbox row cannot be read: set aside as failed");
        self.conn
            .prepare_cached("UPDATE outbox SET state = ?2, done_at = ?3 WHERE id = ?1")?
            .execute(params![id, OutboxState::Failed.as_str(), now])?;
        let detail = json!({"outbox": id, "error": error.to_string(), "permanent": true,
            "next": "set aside: the row cannot be read"});
        self.append(
            NewEntry::for_incident(Event::NotificationFailed, incident, &detail),
            now,
        )
    }

    /// Cancels what was not sent yet of the incident's escalation, because of `why`.
    fn cancel_pending(&mut self, id: &str, why: &str, now: &str) -> Result<(), StoreError> {
        let cancelled = self
            .conn
            .prepare_cached(
                "UPDATE outbox SET state = ?3, done_at = ?2
                 WHERE incident_id = ?1 AND kind = ?4 AND state = ?5 AND group_id IS NULL",
            )?
            .execute(params![
                id,
                now,
                OutboxState::Cancelled.as_str(),
                NotificationKind::Escalated.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        if cancelled > 0 {
            let detail = json!({"notifications": cancelled, "why": why});
            self.append(
                NewEntry::for_incident(Event::NotificationsCancelled, id, &detail),
                now,
            )?;
        }
        Ok(())
    }

    /// An escalated incident's alert resolved: later tiers are not needed, and every
    /// channel that was told about it is told, once, that it is over.
    fn announce_resolution(&mut self, id: &str, now: &str) -> Result<(), StoreError> {
        self.cancel_pending(id, "the alert resolved", now)?;
        let channels = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT DISTINCT channel FROM outbox WHERE incident_id = ?1 AND kind = ?2 AND state = ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    id,
                    NotificationKind::Escalated.as_str(),
                    OutboxState::Sent.as_str()
                ],
                |r| r.get::<_, String>(0),
            )?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        for channel in channels {
            self.owe_resolution(id, &channel, now)?;
        }
        Ok(())
    }

    fn owe_resolution(&mut self, id: &str, channel: &str, now: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (key, incident_id, kind, round, tier, channel, state, due_at, created_at)
                         VALUES (?1, ?2, ?5, 0, 0, ?3, ?6, ?4, ?4) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                NotificationKey::Resolution {
                    incident: id.to_string(),
                    channel: channel.to_string()
                }
                .to_string(),
                id,
                channel,
                now,
                NotificationKind::Resolved.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        self.outbox_touched = true;
        Ok(())
    }

    fn ack(&mut self, id: &str, by: Option<String>) -> Result<Ack, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .prepare_cached("SELECT state, acked_by FROM incidents WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((state, acked_by)) = row else {
            return Ok(Ack::NotFound);
        };
        let state = State::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("incident {id}: unknown state {state:?}"))
        })?;
        match state {
            State::Acknowledged => return Ok(Ack::Already(acked_by)),
            State::Escalated => {}
            other => return Ok(Ack::NotEscalated(other)),
        }
        let now = stamp(Utc::now());
        let m = Move {
            extra: json!({ "by": by }),
            ..Move::new(State::Escalated, State::Acknowledged)
        };
        self.transition(id, m, &now)?;
        self.conn
            .prepare_cached("UPDATE incidents SET acked_by = ?2 WHERE id = ?1")?
            .execute(params![id, by])?;
        self.append(
            NewEntry::for_incident(Event::IncidentAcknowledged, id, &json!({ "by": by })),
            &now,
        )?;
        self.cancel_pending(id, "acknowledged", &now)?;
        Ok(Ack::Acknowledged)
    }

    fn outbox_attempt(&mut self, id: i64, attempt: Attempt) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = ?1",
            )?
            .execute([id])?;
        let row = self
            .conn
            .prepare_cached(
                "SELECT o.incident_id, o.kind, o.round, o.tier, o.channel, o.attempts, o.state, i.is_open, i.state,
                    o.group_id
                 FROM outbox o JOIN incidents i ON i.id = o.incident_id WHERE o.id = ?1",
            )?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })
            .optional()?;
        let Some((
            incident,
            kind,
            round,
            tier,
            channel,
            attempts,
            state,
            is_open,
            incident_state,
            group,
        )) = row
        else {
            return Ok(());
        };
        let corrupt = |what: String| StoreError::Corrupt(format!("outbox {id}: {what}"));
        let kind = NotificationKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?;
        let state = OutboxState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown state {state:?}")))?;
        let incident_state = State::parse(&incident_state).ok_or_else(|| {
            corrupt(format!(
                "incident {incident}: unknown state {incident_state:?}"
            ))
        })?;
        let attempt_no = attempts + 1;
        let now = stamp(Utc::now());
        let mut detail = json!({
            "channel": channel, "kind": kind, "round": round, "tier": tier, "attempt": attempt_no,
        });
        if let Some(g) = &group {
            detail["group"] = json!(g);
        }
        match attempt {
            Attempt::Sent => {
                self.conn
                    .prepare_cached(
                        "UPDATE outbox SET state = ?4, attempts = ?2, done_at = ?3, last_error = NULL WHERE id = ?1",
                    )?
                    .execute(params![id, attempt_no, now, OutboxState::Sent.as_str()])?;
                self.append(
                    NewEntry::for_incident(Event::NotificationSent, &incident, &detail),
                    &now,
                )?;
                // Delivered while the alert resolved: this channel is owed the end too.
                if kind == NotificationKind::Escalated && is_open == 0 {
                    self.owe_resolution(&incident, &channel, &now)?;
                }
            }
            Attempt::Failed {
                error,
                permanent,
                retry_at,
                fall_through,
            } => {
                let next = match (&retry_at, permanent, state) {
                    (_, _, OutboxState::Cancelled) => OutboxState::Cancelled,
                    (Some(_), false, _) => OutboxState::Pending,
                    _ => OutboxState::Failed,
                };
                self.conn
                    .prepare_cached(
                        "UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4,
                            due_at = COALESCE(?5, due_at), done_at = CASE WHEN ?2 = ?7 THEN NULL ELSE ?6 END
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        next.as_str(),
                        attempt_no,
                        error,
                        retry_at.filter(|_| next == OutboxState::Pending).map(stamp),
                        now,
                        OutboxState::Pending.as_str()
                    ])?;
                detail["error"] = json!(error);
                detail["permanent"] = json!(permanent);
                match (next, &retry_at) {
                    (OutboxState::Pending, Some(at)) => {
                        detail["next_attempt_at"] = json!(stamp(*at))
                    }
                    (OutboxState::Failed, _) => detail["gave_up"] = json!(true),
                    _ => {}
                }
                self.append(
                    NewEntry::for_incident(Event::NotificationFailed, &incident, &detail),
                    &now,
                )?;
                // A summary's later tiers decide when due whether anyone is left to tell.
                let falls = match &group {
                    Some(_) => true,
                    None => incident_state == State::Escalated,
                };
                if fall_through && kind == NotificationKind::Escalated && falls {
                    self.fall_through(&incident, group.as_deref(), round, tier, &channel, &now)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the next tier of the round (after `tier`) due now, if it is not yet: of the
    /// incident's own notifications, or of storm group `group`'s summary.
    fn fall_through(
        &mut self,
        incident: &str,
        group: Option<&str>,
        round: i64,
        tier: i64,
        channel: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        // The round's tiers: the incident's own notifications, or the group's summary.
        let (owner, of) = match group {
            Some(g) => (g, "group_id = ?1"),
            None => (incident, "incident_id = ?1 AND group_id IS NULL"),
        };
        let next: Option<i64> = self
            .conn
            .prepare_cached(&format!(
                "SELECT MIN(tier) FROM outbox WHERE {of} AND round = ?2 AND kind = ?4 AND tier > ?3"
            ))?
            .query_row(
                params![owner, round, tier, NotificationKind::Escalated.as_str()],
                |r| r.get(0),
            )?;
        let Some(next) = next else {
            return Ok(());
        };
        let moved = self
            .conn
            .prepare_cached(&format!(
                "UPDATE outbox SET due_at = ?4 WHERE {of} AND round = ?2 AND kind = ?5
                    AND state = ?6 AND tier = ?3 AND due_at > ?4"
            ))?
            .execute(params![
                owner,
                round,
                next,
                now,
                NotificationKind::Escalated.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        if moved == 0 {
            // Already due, sent or cancelled.
            return Ok(());
        }
        self.outbox_touched = true;
        let detail =
            json!({"round": round, "from_tier": tier, "to_tier": next, "failing_channel": channel});
        self.append(
            NewEntry::for_incident(Event::EscalationFellThrough, incident, &detail),
            now,
        )
    }

    fn renotify_due(&mut self) -> Result<usize, StoreError> {
        let plans = current(&self.plans);
        // Only rounds old enough for the shortest renotify interval in force can be due;
        // with no policy that renotifies, none is.
        let shortest = std::iter::once(&plans.default)
            .chain(plans.routes.values().map(|r| &r.policy))
            .filter_map(|p| p.renotify)
            .min();
        let Some(shortest) = shortest else {
            return Ok(0);
        };
        let now_t = Utc::now();
        let Some(cutoff) = chrono::Duration::from_std(shortest)
            .ok()
            .and_then(|d| now_t.checked_sub_signed(d))
        else {
            return Ok(0);
        };
        let cutoff = stamp(cutoff);
        let rows = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, route, round, round_at FROM incidents
                 WHERE state = 'escalated' AND round_at IS NOT NULL AND round_at <= ?1",
            )?;
            let rows = stmt.query_map([cutoff], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let now = stamp(now_t);
        let mut started = 0;
        for (id, route, round, round_at) in rows {
            let Some(every) = plans.policy(route.as_deref()).renotify else {
                continue;
            };
            let due = parse_time(&round_at).is_some_and(|at| at + every <= now_t);
            if !due {
                continue;
            }
            let round = round as u32 + 1;
            self.conn
                .prepare_cached("UPDATE incidents SET round = ?2, round_at = ?3 WHERE id = ?1")?
                .execute(params![id, round, now])?;
            self.schedule_round(&id, round, &now)?;
            started += 1;
        }
        Ok(started)
    }
}

/// How an incident is resolved: its outcome, the alert's end, a note, and whether a
/// notification (a delivery) said so.
struct Resolution<'a> {
    outcome: Outcome,
    ends_at: Option<DateTime<Utc>>,
    note: Option<&'a str>,
    delivery: bool,
}

/// The audit details written on the intake path, as typed structs: serialized straight to
/// text, with no intermediate JSON tree.
mod details {
    use serde::Serialize;
    use serde_json::value::RawValue;
    use serde_json::{Map, Value};

    use crate::alert::Status;
    use crate::incident::State;

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
    /// Alertmanager's external URL, from the delivery.
    external_url: String,
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
                external_url: d.external_url.clone(),
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
    generator_url, starts_at, updated_at, last_seen_at, resolved_at, deliveries, attempts, message,
    external_url, verify_until, escalated_at, acked_by, escalation_group";

/// Maps an incident row; the inner result reports values this build cannot read.
fn incident_row(r: &Row) -> Result<Result<Incident, StoreError>, StoreError> {
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
            external_url: r.get(18)?,
            verify_until: r.get(19)?,
            escalated_at: r.get(20)?,
            acknowledged_by: r.get(21)?,
            escalation_group: r.get(22)?,
            timeline: None,
            id: id.clone(),
        })
    };
    Ok(build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Verifier;

    /// Jobs committed together: one fails (and is rolled back to its savepoint, its audit
    /// entry with it), the others commit, and the chain stays whole.
    #[tokio::test]
    async fn a_failing_job_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
        let store = crate::store::Store::open(&url, StoreMetrics::default()).unwrap();
        let engine = &store.inner;
        fn entry(n: u32) -> NewEntry {
            NewEntry::new(Event::Paused, &json!({ "n": n }))
        }
        let ok = |n: u32| {
            engine.write(move |w| {
                let now = stamp(Utc::now());
                w.append(entry(n), &now)
            })
        };
        let failing = engine.write(|w| {
            let now = stamp(Utc::now());
            w.append(entry(99), &now)?;
            w.conn.execute("INSERT INTO no_such_table VALUES (1)", ())?;
            Ok(())
        });
        let (a, bad, b) = tokio::join!(ok(1), failing, ok(2));
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert!(bad.is_err());
        let entries = store.audit_page(0, 100).await.unwrap();
        let details: Vec<&str> = entries.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, [r#"{"n":1}"#, r#"{"n":2}"#]);
        let mut v = Verifier::default();
        for e in &entries {
            v.check(e).unwrap();
        }
        store.close().await;
    }
}
