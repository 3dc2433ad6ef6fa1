//! The store: every durable fact medic keeps, behind one interface.
//!
//! Incidents, their timelines and the audit log live here, and only here is SQL written.
//! Callers use [`Store`]'s methods and the plain types below; they never see a connection,
//! a table or a backend-specific type. The embedded backend is SQLite ([`sqlite`]); a
//! PostgreSQL backend for several replicas implements the same methods.
//!
//! Writes go through a single writer that commits in groups: concurrent deliveries share
//! one transaction and one fsync, and each caller is answered only after the commit that
//! holds its change is durable.

mod changelog;
pub(crate) mod db;
mod engine;
mod key;
pub mod postgres;
mod sqlite;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::alert::{Alert, Status};
use crate::audit::{self, NewEntry};
use crate::config::{Config, Policy, StoreConfig, DEFAULT_VERIFY_FOR};
use crate::guard::{BreakerEntry, Pause, Shared};
use crate::incident::{Outcome, Reason, State};
use crate::metrics::StoreMetrics;

/// What went wrong in the store. `is_transient` tells callers whether to ask for a retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("database migration {version} failed: {source}")]
    Migration {
        version: u32,
        source: Box<StoreError>,
    },
    #[error("the database is newer than this medic: schema version {found}, this build knows up to {known}")]
    TooNew { found: u32, known: u32 },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    #[error("the query returned no row")]
    NoRows,
    #[error("cannot commit: {0}")]
    Commit(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("the store is shut down")]
    Closed,
}

impl StoreError {
    /// A transient error may succeed if tried again (Alertmanager will retry on 503).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(_)
                | StoreError::Postgres(_)
                | StoreError::Unavailable(_)
                | StoreError::Commit(_)
                | StoreError::Closed
        )
    }
}

pub use crate::routing::Decision as Routed;
pub use key::NotificationKey;

/// One webhook delivery, parsed and routed, ready to be committed.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub received_at: DateTime<Utc>,
    /// The peer address the delivery came from.
    pub source: String,
    pub receiver: String,
    pub status: Status,
    pub group_key: String,
    pub external_url: String,
    pub truncated_alerts: u64,
    /// Top-level webhook fields medic does not know, kept as received.
    pub extra: Map<String, Value>,
    pub alerts: Vec<(Alert, Routed)>,
}

/// What a committed delivery did to each of its alerts, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertEffect {
    Opened(State),
    Deduplicated,
    /// Incident `id` was resolved, with this outcome.
    Resolved {
        id: String,
        outcome: Outcome,
    },
    /// An open incident was closed by a newer firing, and a new one opened.
    Superseded(State),
    Stale,
    UnknownResolved,
}

/// A filter for listing incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub state: Option<State>,
    pub alertname: Option<String>,
    pub limit: usize,
}

/// An incident as the API shows it (the public JSON contract).
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: String,
    pub fingerprint: String,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: State,
    pub reason: Option<Reason>,
    pub outcome: Option<Outcome>,
    pub route: Option<String>,
    pub runbook: Option<String>,
    pub generator_url: String,
    pub started_at: String,
    pub updated_at: String,
    pub last_seen_at: String,
    pub resolved_at: Option<String>,
    /// How many notifications were received for this incident (resends included).
    pub deliveries: u64,
    /// How many times its runbook was started.
    pub attempts: u32,
    /// Why it was escalated, in words (with `reason`).
    pub message: Option<String>,
    /// The storm group of its escalation, shared with other escalations of the same route
    /// and reason close in time.
    pub escalation_group: Option<String>,
    /// Alertmanager's external URL, from the latest delivery about this alert.
    pub external_url: String,
    /// While `verifying`: when it is escalated `still_firing` unless the alert resolves.
    pub verify_until: Option<String>,
    /// When it was escalated.
    pub escalated_at: Option<String>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TimelineEntry>>,
}

/// One event in an incident's history (an audit entry about it).
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub seq: i64,
    pub at: String,
    pub event: String,
    pub detail: Value,
}

/// An incident claimed for a run: moved from `queued` to `remediating`, with what the
/// runbook needs to know about its alert.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub fingerprint: String,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub generator_url: String,
    pub route: Option<String>,
    pub runbook: String,
    /// This run's number: 1 for the first.
    pub attempt: u32,
}

/// What a checked claim did.
#[derive(Debug, Default)]
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// Incidents a shared guard refused (and escalated), with the limit that refused.
    pub refused: Vec<(String, &'static str)>,
}

/// One incident of a storm group, for the group's summary notification.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    pub id: String,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub state: String,
}

/// A queued incident, as the guards need to see it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: String,
    pub route: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A queued incident the guards refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub id: String,
    pub reason: Reason,
    /// The limit that refused (`route_rate`, `breaker`, `paused`, ...).
    pub limit: &'static str,
    pub message: String,
}

/// How a run ended, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    /// The runbook ended normally: the incident waits for verification.
    Completed,
    /// The runbook was stopped: escalate.
    Escalated { reason: Reason, message: String },
    /// The run was interrupted and the route allows one more try: back to `queued`.
    Requeue { message: String },
}

/// What the store needs of the configuration to plan what happens next, inside the same
/// transaction that escalates or starts a verification: each route's verification window
/// and escalation policy, and the default policy. Replaced on every reload.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    pub default: Policy,
    pub routes: HashMap<String, RoutePlan>,
}

/// One route's part of [`Plans`].
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub verify_for: Duration,
    pub policy: Policy,
}

impl Plans {
    pub fn from_config(config: &Config) -> Plans {
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let policy = config.policy_for(Some(&r.name)).clone();
                let plan = RoutePlan {
                    verify_for: r.verify_for,
                    policy,
                };
                (r.name.clone(), plan)
            })
            .collect();
        Plans {
            default: config.escalation.policy.clone(),
            routes,
        }
    }

    /// The policy of incidents of `route` (the default for none, or a route since removed).
    pub fn policy(&self, route: Option<&str>) -> &Policy {
        route
            .and_then(|r| self.routes.get(r))
            .map(|r| &r.policy)
            .unwrap_or(&self.default)
    }

    pub fn verify_for(&self, route: Option<&str>) -> Duration {
        route
            .and_then(|r| self.routes.get(r))
            .map(|r| r.verify_for)
            .unwrap_or(DEFAULT_VERIFY_FOR)
    }
}

/// An incident waiting, after its run, for its alert to resolve.
#[derive(Debug, Clone)]
pub struct Verifying {
    pub id: String,
    pub route: Option<String>,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub verify_until: DateTime<Utc>,
}

/// What a notification tells a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The incident was escalated: a person is needed.
    Escalated,
    /// An escalated incident's alert resolved.
    Resolved,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 2] =
        [NotificationKind::Escalated, NotificationKind::Resolved];

    /// Its name, as stored in the outbox's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Escalated => "escalated",
            NotificationKind::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationKind> {
        NotificationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a notification of the outbox stands (its `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Owed: sent when due (and not claimed by a sender).
    Pending,
    /// Delivered.
    Sent,
    /// Given up on: a permanent error, or out of retries.
    Failed,
    /// No longer needed: acknowledged, resolved, or nobody left to tell.
    Cancelled,
}

impl OutboxState {
    pub const ALL: [OutboxState; 4] = [
        OutboxState::Pending,
        OutboxState::Sent,
        OutboxState::Failed,
        OutboxState::Cancelled,
    ];

    /// Its name, as stored in the outbox's `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
            OutboxState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxState> {
        OutboxState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A notification owed, as the sender takes it from the outbox.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: i64,
    /// Its idempotency key.
    pub key: NotificationKey,
    pub incident_id: String,
    pub kind: NotificationKind,
    pub round: u32,
    pub tier: u32,
    pub channel: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// For a storm group's summary, the group: it lists the group's incidents still
    /// escalated, told through `incident_id`, one of them.
    pub group: Option<String>,
}

/// How one delivery attempt went, as the store records it.
#[derive(Debug, Clone)]
pub enum Attempt {
    Sent,
    Failed {
        error: String,
        permanent: bool,
        /// When to try again; `None`: give up.
        retry_at: Option<DateTime<Utc>>,
        /// Make the next tier due now (the channel keeps failing, or cannot deliver).
        fall_through: bool,
    },
}

/// What an ack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Acknowledged,
    /// It was already acknowledged, by this person (if known).
    Already(Option<String>),
    /// Only an escalated incident can be acknowledged; it is in this state.
    NotEscalated(State),
    NotFound,
}

/// Counts of the outbox, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub failed: u64,
}

/// How the store connects and how long its leases last.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a run's claim (and a notification's) lasts unless renewed.
    pub lease: Duration,
    /// PostgreSQL: the longest any one statement may run.
    pub statement_timeout: Duration,
    /// PostgreSQL: read connections per replica.
    pub pool_size: u32,
}

impl Default for Options {
    fn default() -> Options {
        let d = StoreConfig::default();
        Options {
            lease: d.lease,
            statement_timeout: d.statement_timeout,
            pool_size: d.pool_size,
        }
    }
}

/// The handle every other module uses. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: engine::Engine,
}

impl Store {
    /// Opens (creating and migrating as needed) the store at `url`, with default options.
    pub fn open(url: &str, metrics: StoreMetrics) -> Result<Store, StoreError> {
        Store::open_with(url, &Options::default(), metrics)
    }

    /// Opens the store of a configuration.
    pub fn connect(config: &StoreConfig, metrics: StoreMetrics) -> Result<Store, StoreError> {
        let options = Options {
            lease: config.lease,
            statement_timeout: config.statement_timeout,
            pool_size: config.pool_size,
        };
        Store::open_with(&config.url, &options, metrics)
    }

    fn open_with(url: &str, options: &Options, metrics: StoreMetrics) -> Result<Store, StoreError> {
        // Who holds this process's leases: unique per start, readable in the audit log.
        let owner = format!("{}/{}", std::process::id(), ulid::Ulid::new());
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Url {
                    url: url.into(),
                    message: "no database path after sqlite://".into(),
                });
            }
            let inner = sqlite::open(path.as_ref(), options.lease, owner, metrics)?;
            return Ok(Store { inner });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let inner = postgres::open(url, options, owner, metrics)?;
            return Ok(Store { inner });
        }
        Err(StoreError::Url {
            url: crate::config::redact_url_password(url),
            message: "unsupported scheme; expected sqlite://, postgres:// or postgresql://".into(),
        })
    }

    /// Whether several replicas may share this store (PostgreSQL): the guards then keep
    /// their budgets in it rather than in memory.
    pub fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    /// Commits a delivery: its audit entries and the incidents its alerts open, join or
    /// resolve. Returns only once the commit is durable.
    pub async fn ingest(&self, delivery: Delivery) -> Result<Vec<AlertEffect>, StoreError> {
        self.inner.ingest(delivery).await
    }

    /// Appends entries to the audit log, durably.
    pub async fn audit(&self, entries: Vec<NewEntry>) -> Result<(), StoreError> {
        self.inner.audit(entries).await
    }

    /// Records how the run of incident `id` ended: its `run_finished` entry (`finished`)
    /// and the state change, in one commit. Returns the new state, or `None` when the
    /// incident had already moved on (its alert resolved during the run).
    pub async fn finish_run(
        &self,
        id: &str,
        result: RunResult,
        finished: Value,
    ) -> Result<Option<State>, StoreError> {
        self.inner.finish_run(id, result, finished).await
    }

    /// Extends the leases on runs `ids`, which this process is running (see
    /// `store.lease`); returns how many it still holds.
    pub async fn renew_leases(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        self.inner.renew_leases(ids).await
    }

    /// Incidents left `remediating` by a process that died: whose lease ran out (with
    /// SQLite, at start-up, every one). Each is requeued once if its route is idempotent
    /// (`routes[].idempotent`, listed in `idempotent_routes`) and it ran only once, else escalated `interrupted`. Returns what
    /// was done to each.
    pub async fn recover_interrupted(
        &self,
        idempotent_routes: Vec<String>,
    ) -> Result<Vec<(String, State)>, StoreError> {
        self.inner.recover_interrupted(idempotent_routes).await
    }

    /// Remembers a silence created for an incident, to expire it when the incident ends.
    pub async fn record_silence(
        &self,
        incident_id: &str,
        silence_id: &str,
        ends_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .record_silence(incident_id, silence_id, ends_at)
            .await
    }

    /// Silences whose incident has ended and that were not expired yet: (incident, silence).
    pub async fn silences_to_expire(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.silences_to_expire().await
    }

    /// Marks a silence expired and audits it.
    pub async fn silence_expired(
        &self,
        incident_id: &str,
        silence_id: &str,
    ) -> Result<(), StoreError> {
        self.inner.silence_expired(incident_id, silence_id).await
    }

    /// Up to `limit` queued incidents, oldest first, as the guards see them (a read).
    pub async fn queued(&self, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.inner.queued(limit).await
    }

    /// Claims the given queued incidents (queued → remediating), writing each one's
    /// `run_started` entry (`started`) in the same commit. Incidents no longer queued are
    /// skipped.
    pub async fn claim(
        &self,
        ids: Vec<String>,
        started: impl Fn(&Claim) -> Value + Send + 'static,
    ) -> Result<Vec<Claim>, StoreError> {
        let ids = ids.into_iter().map(|id| (id, None)).collect();
        Ok(self.inner.claim(ids, Box::new(started)).await?.claims)
    }

    /// [`Store::claim`] with the shared guards of each run checked in the same transaction:
    /// a run whose in-flight cap is full stays queued; one refused by its breaker or a rate
    /// bucket is escalated, and listed in [`Claimed::refused`].
    pub async fn claim_checked(
        &self,
        ids: Vec<(String, Option<Shared>)>,
        started: impl Fn(&Claim) -> Value + Send + 'static,
    ) -> Result<Claimed, StoreError> {
        self.inner.claim(ids, Box::new(started)).await
    }

    /// Records a remediation's result with a breaker kept in the store (shared guards):
    /// read, updated and audited in one transaction. Returns the breaker if it changed.
    pub async fn record_breaker(
        &self,
        id: &str,
        incident: &str,
        success: bool,
        thresholds: HashMap<String, u32>,
    ) -> Result<Option<BreakerEntry>, StoreError> {
        self.inner
            .record_breaker(id.into(), incident.into(), success, thresholds)
            .await
    }

    /// Escalates queued incidents the guards refused, each with its reason, message and
    /// the limit that refused it, in one commit.
    pub async fn refuse(&self, refusals: Vec<Refusal>) -> Result<(), StoreError> {
        self.inner.refuse(refusals).await
    }

    /// Escalates the newest queued incidents beyond `max_queued` (`rate_limited`), at most
    /// a commit's worth per call. Returns how many.
    pub async fn shed_queue(&self, max_queued: usize) -> Result<usize, StoreError> {
        self.inner.shed_queue(max_queued).await
    }

    /// Every persisted circuit breaker.
    pub async fn breakers(&self) -> Result<Vec<BreakerEntry>, StoreError> {
        self.inner.breakers().await
    }

    /// Persists a breaker and audits why (`detail`).
    pub async fn save_breaker(&self, entry: BreakerEntry, detail: Value) -> Result<(), StoreError> {
        self.inner.save_breaker(entry, detail).await
    }

    /// The persisted pause switch.
    pub async fn pause(&self) -> Result<Option<Pause>, StoreError> {
        self.inner.pause().await
    }

    /// Sets (or clears) the pause switch and audits who did it.
    pub async fn set_pause(&self, pause: Option<Pause>, by: &str) -> Result<(), StoreError> {
        self.inner.set_pause(pause, by).await
    }

    /// The incidents of storm group `group` still escalated (at most `limit`, its first
    /// incident first), with how many there are: what its summary lists when it goes out.
    pub async fn group_members(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<(u64, Vec<GroupMember>), StoreError> {
        self.inner.group_members(group, limit).await
    }

    /// Escalations of one route and reason within `window` are grouped (storm handling).
    pub fn set_storm_window(&self, window: std::time::Duration) {
        self.inner.set_storm_window(window)
    }

    /// Incidents matching `filter`, newest first, without timelines.
    pub async fn incidents(&self, filter: IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        self.inner.incidents(filter).await
    }

    /// One incident with its timeline.
    pub async fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        self.inner.incident(id).await
    }

    /// How many incidents are in each state.
    pub async fn count_by_state(&self) -> Result<Vec<(State, u64)>, StoreError> {
        self.inner.count_by_state().await
    }

    /// Up to `limit` audit entries with `seq` greater than `after`, in order.
    pub async fn audit_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<audit::Entry>, StoreError> {
        self.inner.audit_page(after, limit).await
    }

    /// Puts the plans of a newly loaded configuration in force.
    pub fn set_plans(&self, plans: Plans) {
        self.inner.set_plans(plans)
    }

    /// Notified after a commit that made a notification due (an escalation, a retry moved
    /// forward, a resolution to announce).
    pub fn outbox_wake(&self) -> Arc<tokio::sync::Notify> {
        self.inner.outbox_wake()
    }

    /// Incidents in `verifying`, soonest deadline first.
    pub async fn verifying(&self, limit: usize) -> Result<Vec<Verifying>, StoreError> {
        self.inner.verifying(limit).await
    }

    /// The wait after a run ended and the alert still fires: escalates `still_firing` with
    /// `message` (and schedules its notifications in the same commit). False when the
    /// incident was no longer verifying.
    pub async fn verification_failed(&self, id: &str, message: &str) -> Result<bool, StoreError> {
        self.inner.verification_failed(id, message).await
    }

    /// The alert of a verifying incident is gone (`how` says how medic knows): resolved,
    /// `auto_remediated`. False when the incident was no longer verifying.
    pub async fn verification_resolved(&self, id: &str, how: &str) -> Result<bool, StoreError> {
        self.inner.verification_resolved(id, how).await
    }

    /// A person (`by`, if given) takes an escalated incident over: → `acknowledged`, and
    /// the notifications of later tiers are cancelled.
    pub async fn ack(&self, id: &str, by: Option<String>) -> Result<Ack, StoreError> {
        self.inner.ack(id, by).await
    }

    /// Notifications due at `now`, oldest first, claimed for this process's sender for
    /// one lease: no other replica takes them meanwhile.
    pub async fn outbox_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.inner.outbox_due(now, limit).await
    }

    /// Notifications due at `now`, without claiming them (for tests).
    #[cfg(test)]
    pub(crate) async fn outbox_peek(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.inner.outbox_peek(now, limit).await
    }

    /// When the next pending notification is due, if any.
    pub async fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.outbox_next_due().await
    }

    /// Records one delivery attempt of notification `id` and audits it.
    pub async fn outbox_attempt(&self, id: i64, attempt: Attempt) -> Result<(), StoreError> {
        self.inner.outbox_attempt(id, attempt).await
    }

    /// Starts a new escalation round for every escalated, unacknowledged incident whose
    /// policy renotifies and whose last round is that old. Returns how many.
    pub async fn renotify_due(&self) -> Result<usize, StoreError> {
        self.inner.renotify_due().await
    }

    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.inner.outbox_counts().await
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    /// Finishes every pending write and stops the writer. Later writes fail with `Closed`.
    pub async fn close(&self) {
        self.inner.close().await
    }
}

impl crate::guard::BreakerStore for Store {
    type Error = StoreError;

    async fn record_shared(
        &self,
        id: &str,
        incident: &str,
        success: bool,
        thresholds: HashMap<String, u32>,
    ) -> Result<Option<BreakerEntry>, StoreError> {
        self.record_breaker(id, incident, success, thresholds).await
    }

    async fn save(&self, entry: BreakerEntry, detail: Value) -> Result<(), StoreError> {
        self.save_breaker(entry, detail).await
    }
}

/// Timestamps as stored: RFC 3339 in UTC with a fixed number of digits, so that text
/// order is time order.
pub(crate) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An alert's `startsAt` as stored: exact to the nanosecond, fixed width.
pub(crate) fn stamp_exact(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod escalation_tests;

#[cfg(test)]
mod model_tests;
