//! What a backend opens: the handle to the one writer and to the readers.
//!
//! A backend (`sqlite.rs`, `postgres.rs`) connects, migrates ([`migrate`]) and hands its
//! connections over as [`Parts`]; [`Engine::start`] starts the writer thread on them
//! (`writer.rs`) and returns the handle that [`Store`] holds. The handle only knows how to
//! run a job: [`Engine::write`] runs one on the writer inside the next group commit,
//! [`Engine::read`] runs one on a read connection. What the jobs do lives in the file of
//! each concern (`incidents.rs`, `runs.rs`, `outbox.rs`, ...), as `impl Store` blocks.
//!
//! With PostgreSQL, several replicas write to one database: each batch first takes a
//! transaction-scoped advisory lock ([`WRITE_LOCK`]), so the writers of all replicas take
//! turns. That one lock is what keeps the audit chain single and every conditional
//! transition (claims, verification deadlines, outbox claims, rate buckets, breakers)
//! exact across the fleet.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};

pub(super) use super::migrate::{migrate, release_all};

use super::audit_log::{audit_head, Chain};
use super::batch::Batch;
use super::db::{Db, Dialect};
use super::writer::{FnJob, Job, Writer};
use super::{Plans, Rules, RulesSource, Store, StoreError};
use crate::clock::Clock;
use crate::metrics::StoreMetrics;

/// Jobs waiting for the writer before senders wait too (back-pressure).
const QUEUE: usize = 8192;
/// The advisory lock every PostgreSQL write transaction takes first ("medic" in ASCII).
pub(super) const WRITE_LOCK: i64 = 0x006d_6564_6963;

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
    Pool(super::postgres::Pool),
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

/// The handle to the writer and the readers. Cheap to clone.
#[derive(Clone)]
pub(super) struct Engine {
    jobs: Jobs,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    on_close: Arc<Mutex<Option<OnClose>>>,
    readers: Readers,
    pub(super) settings: Settings,
    pub(super) outbox_wake: Arc<Notify>,
    dialect: Dialect,
    /// How long this process's leases last unless renewed (`store.lease`, fixed at open).
    lease: Duration,
}

/// What the handle sets and the writer reads: the rules in force and the clock.
#[derive(Clone)]
pub(super) struct Settings {
    rules: Arc<RwLock<RulesIn>>,
    clock: Arc<RwLock<Clock>>,
}

/// Where the rules in force come from.
enum RulesIn {
    /// Set on the store itself (tests, tools).
    Fixed(Arc<Rules>),
    /// Read, whole, from the configuration snapshot in force each time a job asks.
    Following(RulesSource),
}

impl Settings {
    fn new() -> Settings {
        Settings {
            rules: Arc::new(RwLock::new(RulesIn::Fixed(Arc::default()))),
            clock: Arc::new(RwLock::new(Clock::system())),
        }
    }

    /// The rules in force now.
    pub(super) fn rules(&self) -> Arc<Rules> {
        match &*read_lock(&self.rules) {
            RulesIn::Fixed(rules) => rules.clone(),
            RulesIn::Following(source) => source(),
        }
    }

    /// The plans in force now.
    pub(super) fn plans(&self) -> Arc<Plans> {
        self.rules().plans.clone()
    }

    pub(super) fn follow(&self, source: RulesSource) {
        *write_lock(&self.rules) = RulesIn::Following(source);
    }

    /// Fixes the rules from now on, as `change` makes them from the ones in force.
    pub(super) fn fix(&self, change: impl FnOnce(&mut Rules)) {
        let mut rules = (*self.rules()).clone();
        change(&mut rules);
        *write_lock(&self.rules) = RulesIn::Fixed(Arc::new(rules));
    }

    /// The clock the store reads time from.
    pub(super) fn clock(&self) -> Clock {
        read_lock(&self.clock).clone()
    }

    pub(super) fn set_clock(&self, clock: Clock) {
        *write_lock(&self.clock) = clock;
    }
}

/// What the writer's jobs know beyond the connection: who holds leases, for how long, the
/// settings in force, and where new ids come from.
pub(super) struct Context {
    pub(super) settings: Settings,
    /// This process, as the holder of leases.
    pub(super) owner: String,
    /// How long a lease (on a run, or a notification being sent) lasts unless renewed.
    pub(super) lease: chrono::Duration,
    ids: ulid::Generator,
    /// The rules of the batch being run, taken once as it begins ([`Context::begin_batch`]):
    /// a reload during a batch cannot give one job plans from one configuration and a storm
    /// window from the next.
    rules: Arc<Rules>,
}

impl Context {
    /// The time now, from the store's clock.
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.settings.clock().now()
    }

    /// A new id (a ULID of the store's time), for an incident or a storm group.
    pub(super) fn new_id(&mut self) -> String {
        let at = std::time::SystemTime::from(self.now());
        self.ids
            .generate_from_datetime(at)
            .unwrap_or_else(|_| ulid::Ulid::from_datetime(at))
            .to_string()
    }

    /// Takes the rules in force for the batch about to run.
    pub(super) fn begin_batch(&mut self) {
        self.rules = self.settings.rules();
    }

    /// The escalation plans of this batch.
    pub(super) fn plans(&self) -> Arc<Plans> {
        self.rules.plans.clone()
    }

    /// The relapse window of this batch: an alert firing again this soon after an
    /// automated fix is a relapse.
    pub(super) fn relapse_window(&self) -> std::time::Duration {
        self.rules.relapse_window
    }

    /// The storm window of this batch.
    pub(super) fn storm_window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.rules.storm_window).unwrap_or(chrono::TimeDelta::MAX)
    }
}

impl Engine {
    /// Starts the writer on `parts.writer` (migrated already).
    pub(super) fn start(parts: Parts, metrics: StoreMetrics) -> Result<Engine, StoreError> {
        let dialect = parts.writer.dialect();
        let head = audit_head(parts.writer.as_ref())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let settings = Settings::new();
        let outbox_wake = Arc::new(Notify::new());
        let cx = Context {
            settings: settings.clone(),
            owner: parts.owner.clone(),
            lease: chrono::Duration::from_std(parts.lease).unwrap_or(chrono::Duration::seconds(30)),
            ids: ulid::Generator::new(),
            rules: Arc::default(),
        };
        let writer = Writer::new(
            parts.writer,
            parts.reconnect,
            Chain::new(head),
            Batch::new(outbox_wake.clone(), metrics.automation.clone()),
            cx,
        );
        let handle = std::thread::Builder::new()
            .name("medic-store-writer".into())
            .spawn(move || writer.run(rx, metrics))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer: {e}")))?;
        Ok(Engine {
            jobs: Arc::new(Mutex::new(Some(tx))),
            writer: Arc::new(Mutex::new(Some(handle))),
            on_close: Arc::new(Mutex::new(parts.on_close)),
            readers: parts.readers,
            settings,
            outbox_wake,
            dialect,
            lease: parts.lease,
        })
    }

    /// The time now, from the store's clock.
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.settings.clock().now()
    }

    /// Runs `f` on the writer inside the next group commit; answers after the commit.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_weighted(1, f).await
    }

    /// [`Self::write`] for a job worth `weight` units of work (a delivery: its alerts).
    pub(super) async fn write_weighted<T, F>(&self, weight: usize, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(weight, Vec::new(), f).await
    }

    /// Queues a job for the writer. `hints`: what the job is about (a delivery: its alerts'
    /// fingerprints), so that the batch can look them up for all its jobs at once.
    pub(super) async fn submit<T, F>(
        &self,
        weight: usize,
        hints: Vec<String>,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = lock(&self.jobs).clone().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(FnJob::new(f, reply, weight, hints));
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection, off the async threads.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
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
                f(&c)
            }
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// The store as a handle: its settings, and opening and closing it.
impl Store {
    /// How long the leases this process takes last unless renewed: `store.lease` as it was
    /// when the store opened (a reload does not change it; the runner paces its renewals by
    /// this, not by the configuration in force).
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Whether several replicas may share this store (PostgreSQL): the guards then keep
    /// their budgets in it rather than in memory.
    pub fn is_shared(&self) -> bool {
        self.inner.dialect == Dialect::Postgres
    }

    /// Reads time from `clock` from now on (the composition root's, shared by every
    /// component).
    pub fn set_clock(&self, clock: Clock) {
        self.inner.settings.set_clock(clock)
    }

    /// From now on, reads the rules in force (escalation plans, the storm window) from
    /// `source` each time a job needs them: the composition root hands it the configuration
    /// snapshot's, so that a reload changes them in the same swap as everything else.
    pub fn follow_rules(&self, source: RulesSource) {
        self.inner.settings.follow(source)
    }

    /// Fixes the escalation plans (tests and tools; `serve` follows the snapshot).
    pub fn set_plans(&self, plans: Plans) {
        self.inner.settings.fix(|r| r.plans = Arc::new(plans))
    }

    /// Fixes the storm window: escalations of one route and reason within `window` are
    /// grouped (tests and tools; `serve` follows the snapshot).
    pub fn set_storm_window(&self, window: Duration) {
        self.inner.settings.fix(|r| r.storm_window = window)
    }

    /// Fixes the relapse window: an alert firing again within `window` of an automated fix
    /// is a relapse (tests and tools; `serve` follows the snapshot).
    pub fn set_relapse_window(&self, window: Duration) {
        self.inner.settings.fix(|r| r.relapse_window = window)
    }

    /// Notified after a commit that made a notification due (an escalation, a retry moved
    /// forward, a resolution to announce).
    pub fn outbox_wake(&self) -> Arc<Notify> {
        self.inner.outbox_wake.clone()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if lock(&self.inner.jobs).is_none() {
            return Err(StoreError::Closed);
        }
        self.inner
            .read(|c| c.query_row("SELECT 1", (), |_| Ok(())))
            .await
    }

    /// Finishes every pending write and stops the writer. Later writes fail with `Closed`.
    pub async fn close(&self) {
        // Dropping the last sender lets the writer finish what is queued, then exit.
        lock(&self.inner.jobs).take();
        let handle = lock(&self.inner.writer).take();
        let on_close = lock(&self.inner.on_close).take();
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves no broken invariant behind.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_lock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}
