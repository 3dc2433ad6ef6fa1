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
//!
//! The files, by what they keep. The machinery: `engine.rs` (the handle a backend opens),
//! `writer.rs` (the writer thread and its group commit, which knows nothing of incidents),
//! `batch.rs` (what jobs keep in memory over one batch), `migrate.rs`, `db.rs` (the
//! connection trait), `sqlite.rs` and `postgres.rs` (opening connections). The concerns,
//! each with its `impl Store` methods and the writer's side of them: `incidents.rs`
//! (ingest: open, deduplicate, resolve; verification's end; acks), `transition.rs` (the one
//! checked write of an incident's state), `runs.rs` (queue, claims, leases, interrupted
//! runs, silences), `guards.rs` (shared rates and in-flight caps, breakers, refusals, the
//! pause switch), `outbox.rs` (scheduling, due notifications, attempts, fall-through,
//! renotify), `storm.rs` (storm groups and their summaries), `manual.rs` (notes, re-runs,
//! a storm group acknowledged through one link), `audit_log.rs` (the chain),
//! `reads.rs` (incident lists, details, counts), `runbook_runs.rs` (a runbook's runs and
//! success rate), `sessions.rs` (console sessions, and removing expired sessions and used
//! links), `history.rs` (looking back, for postmortems), `changelog.rs` and `key.rs`.
//! The operator's tools: `schema.rs` (the schema's version and what a start would apply,
//! read without migrating) and `backup.rs` (a consistent copy of the SQLite store).
//!
//! `approvals.rs` keeps the approval before a run: the plan, the decision, its deadline and
//! the request's notifications.
//! renotify), `storm.rs` (storm groups and their summaries), `audit_log.rs` (the chain),
//! `reads.rs` (incident lists, details, counts), `changelog.rs` and `key.rs`;
//! `retention.rs` (removing what is older than `store.retention`, behind an audit
//! checkpoint) and `audit_scan.rs` (the whole log in one snapshot, for verify and export).
//!
//! The store reads time only from the [`Clock`] it is given ([`Store::open_with_clock`]).

mod approvals;
mod audit_log;
mod audit_scan;
pub mod backup;
mod batch;
mod changelog;
pub(crate) mod db;
mod engine;
mod guards;
mod history;
mod incidents;
mod key;
mod manual;
mod migrate;
mod outbox;
pub mod postgres;
mod reads;
mod retention;
mod runbook_runs;
mod runs;
pub mod schema;
mod sessions;
mod sqlite;
mod storm;
mod transition;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::alert::{Alert, Status};
use crate::clock::Clock;
use crate::config::{ApprovalConfig, Config, Policy, StoreConfig, DEFAULT_VERIFY_FOR};
use crate::guard::Limit;
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
    #[error(
        "the database's schema is version {found}, but this medic ({}) knows schema versions \
         up to {known}: a newer medic has migrated it. Run that release or a later one; to go back, \
         restore the backup taken before the upgrade (see docs/upgrading.md)",
        env!("CARGO_PKG_VERSION")
    )]
    TooNew { found: u32, known: u32 },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
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
    /// A state change the transition table does not allow (`incident::State::can_move_to`):
    /// refused, nothing written.
    #[error("incident {id}: the move from {} to {} is not allowed", .from.map_or("nothing (a new incident)", State::as_str), .to.as_str())]
    IllegalMove {
        id: String,
        /// `None`: the incident's first state.
        from: Option<State>,
        to: State,
    },
    /// An incident that waited for approval may not be queued or run without its approval
    /// record: refused, nothing written.
    #[error("incident {id}: it waits for approval, and may not move to {} without an approval record", .to.as_str())]
    Unapproved { id: String, to: State },
}

/// An error and every cause under it, on one line: the PostgreSQL driver's own message
/// ("db error") leaves out what the server said.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
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
pub use approvals::{Approval, Awaiting, AwaitingPlan, Decided, Decision, Via};
pub use audit_scan::Page as AuditPage;
pub use history::{BreakerChange, Recent, StormGroup};
pub use key::NotificationKey;
pub use manual::{BadNote, GroupLinkAck, NoteText, Rerun, MAX_NOTE};
pub use retention::{HeldBack, Prune, Pruned};
pub use runbook_runs::RunbookRecord;
pub use sessions::StoredSession;

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
    /// The route that matched it.
    pub route: Option<String>,
    pub reason: Option<Reason>,
    /// Started (its alert's `startsAt`) at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Started before this time.
    pub until: Option<DateTime<Utc>>,
    /// How many of the matching incidents (newest first) to skip.
    pub offset: usize,
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
    /// Its route asked for approval: the deadline, the plan, and who approved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
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
    /// The approved plan the run is bound to, when its route asked for approval.
    pub plan: Option<crate::plan::Plan>,
}

/// What a checked claim did.
#[derive(Debug, Default)]
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// Incidents a shared guard refused (and escalated), with the limit that refused.
    pub refused: Vec<(String, Limit)>,
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
    pub limit: Limit,
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

/// What the store takes from the configuration in force, as one value: the escalation
/// plans and the storm window. A reload replaces it whole (see [`Store::follow_rules`]).
#[derive(Debug, Clone)]
pub struct Rules {
    pub plans: Arc<Plans>,
    /// Escalations of one route and reason within this window share a storm group.
    pub storm_window: Duration,
    /// An alert firing again this soon after an automated fix is a relapse.
    pub relapse_window: Duration,
}

impl Rules {
    pub fn from_config(config: &Config) -> Rules {
        Rules {
            plans: Arc::new(Plans::from_config(config)),
            storm_window: config.limits.storm_window,
            relapse_window: config.limits.relapse_window,
        }
    }
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            plans: Arc::default(),
            storm_window: Duration::from_secs(60),
            relapse_window: crate::config::DEFAULT_RELAPSE_WINDOW,
        }
    }
}

/// Where a store following the configuration reads its [`Rules`] from.
pub type RulesSource = Arc<dyn Fn() -> Arc<Rules> + Send + Sync>;

/// One route's part of [`Plans`].
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub verify_for: Duration,
    pub policy: Policy,
    /// Its incidents wait for approval (`routes[].approval`).
    pub approval: Option<ApprovalConfig>,
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
                    approval: r.approval.clone(),
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

    /// The approval of incidents of `route`, if it asks for one.
    pub fn approval(&self, route: Option<&str>) -> Option<&ApprovalConfig> {
        route
            .and_then(|r| self.routes.get(r))
            .and_then(|r| r.approval.as_ref())
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
    /// A run waits for a person's approval of its plan.
    ApprovalRequested,
    /// The alert resolved while the run waited for approval: the request is withdrawn.
    ApprovalWithdrawn,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 4] = [
        NotificationKind::Escalated,
        NotificationKind::Resolved,
        NotificationKind::ApprovalRequested,
        NotificationKind::ApprovalWithdrawn,
    ];

    /// Its name, as stored in the outbox's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Escalated => "escalated",
            NotificationKind::Resolved => "resolved",
            NotificationKind::ApprovalRequested => "approval_requested",
            NotificationKind::ApprovalWithdrawn => "approval_withdrawn",
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

/// What using a signed one-click link to acknowledge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAck {
    /// The link was used before: nothing changed.
    AlreadyUsed,
    /// The acknowledgement's result; the link is spent only when it acknowledged.
    Ack(Ack),
}

/// Counts of the outbox, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub failed: u64,
    /// How long the oldest notification due and not delivered yet has waited (zero: none).
    pub oldest_due_waiting: Duration,
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
    /// Opened by a command beside a running `medic serve` (see [`Store::connect_beside`]).
    pub beside: bool,
}

impl Default for Options {
    fn default() -> Options {
        let d = StoreConfig::default();
        Options {
            lease: d.lease,
            statement_timeout: d.statement_timeout,
            pool_size: d.pool_size,
            beside: false,
        }
    }
}

/// The handle every other module uses. Cheap to clone.
///
/// Its methods are written beside what they keep: incidents (`incidents.rs`), runs
/// (`runs.rs`), the outbox (`outbox.rs`), storm groups (`storm.rs`), shared guards
/// (`guards.rs`), the audit log (`audit_log.rs`), reads (`reads.rs`), and the handle
/// itself (`engine.rs`).
#[derive(Clone)]
pub struct Store {
    inner: engine::Engine,
}

impl Store {
    /// Opens (creating and migrating as needed) the store at `url`, with default options,
    /// on the system clock.
    pub fn open(url: &str, metrics: StoreMetrics) -> Result<Store, StoreError> {
        Store::open_with_clock(url, metrics, Clock::system())
    }

    /// [`Store::open`], reading time from `clock`.
    pub fn open_with_clock(
        url: &str,
        metrics: StoreMetrics,
        clock: Clock,
    ) -> Result<Store, StoreError> {
        Store::open_with(url, &Options::default(), metrics, clock)
    }

    /// Opens the store of a configuration, on the system clock.
    pub fn connect(config: &StoreConfig, metrics: StoreMetrics) -> Result<Store, StoreError> {
        Store::connect_with_clock(config, metrics, Clock::system())
    }

    /// [`Store::connect`], reading time from `clock`.
    pub fn connect_with_clock(
        config: &StoreConfig,
        metrics: StoreMetrics,
        clock: Clock,
    ) -> Result<Store, StoreError> {
        let options = Options {
            lease: config.lease,
            statement_timeout: config.statement_timeout,
            pool_size: config.pool_size,
            beside: false,
        };
        Store::open_with(&config.url, &options, metrics, clock)
    }

    /// Opens the store of a configuration for a command that may run beside `medic serve`
    /// (`audit verify`, `audit export`): with SQLite, it takes over nothing the server
    /// holds (a store opened to serve frees every run lease and notification claim, as one
    /// process owns the file) and leaves the WAL to the server at close.
    pub fn connect_beside(config: &StoreConfig) -> Result<Store, StoreError> {
        let options = Options {
            lease: config.lease,
            statement_timeout: config.statement_timeout,
            pool_size: config.pool_size,
            beside: true,
        };
        Store::open_with(
            &config.url,
            &options,
            StoreMetrics::default(),
            Clock::system(),
        )
    }

    fn open_with(
        url: &str,
        options: &Options,
        metrics: StoreMetrics,
        clock: Clock,
    ) -> Result<Store, StoreError> {
        // Who holds this process's leases: unique per start, readable in the audit log.
        let owner = format!("{}/{}", std::process::id(), ulid::Ulid::new());
        let inner = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Url {
                    url: url.into(),
                    message: "no database path after sqlite://".into(),
                });
            }
            sqlite::open(path.as_ref(), options, owner, metrics)?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::open(url, options, owner, metrics)?
        } else {
            return Err(StoreError::Url {
                url: crate::config::redact_url_password(url),
                message: "unsupported scheme; expected sqlite://, postgres:// or postgresql://"
                    .into(),
            });
        };
        // Before any job: the writer reads the clock only while it runs one.
        inner.settings.set_clock(clock);
        Ok(Store { inner })
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

/// A stored timestamp, read back (`None` when it is not one).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A value as stored JSON text.
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod escalation_tests;

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod automation_tests;

#[cfg(test)]
mod approval_tests;
