//! Guards: what may run, and when. Rate limits, circuit breakers, concurrency caps,
//! maintenance windows and the pause switch.
//!
//! The runner asks [`Guards::admit`] before it claims a queued incident; the answer is run
//! (with a [`Ticket`] that holds the in-flight slot), wait (stay queued, in the store), or
//! refuse (escalate with `rate_limited`, `circuit_open` or `paused`, naming the limit).
//! Steps ask [`Guards::step`] before they act. Decisions are in memory and cheap; the
//! breakers' state and the pause switch are also persisted by the store, so they survive
//! a restart. Rate limits use `governor`'s keyed limiters on a clock that follows tokio's,
//! so tests drive them with `tokio::time::pause`.
//!
//! With several replicas on one PostgreSQL database the guards are *shared*
//! ([`Guards::set_shared`]): the route and global rates, the in-flight caps and the
//! breakers are not decided here but handed to the store as [`Shared`] checks on the
//! ticket, and the store applies them in the transaction that claims the run, against
//! state every replica sees (see [`gcra`] and [`breaker`]). The step rates stay per process.

pub mod breaker;
pub mod storm;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::Serialize;

use crate::config::{BreakerConfig, Config, Rate, RouteConfig, WindowAction};
use crate::incident::Reason;
use breaker::{Admit, Breaker};

/// The kinds of step a runbook can take (`steps`), as the guards are asked about them
/// and as the audit log and metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Exec,
    Http,
    Sleep,
    Silence,
    Query,
}

impl StepKind {
    pub const ALL: [StepKind; 5] = [
        StepKind::Exec,
        StepKind::Http,
        StepKind::Sleep,
        StepKind::Silence,
        StepKind::Query,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Exec => "exec",
            StepKind::Http => "http",
            StepKind::Sleep => "sleep",
            StepKind::Silence => "silence",
            StepKind::Query => "query",
        }
    }

    /// The kind [`Self::as_str`] names, if any.
    pub fn parse(s: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit the guards name when they hold back or refuse a run or a step, as the audit
/// log (`refused_by`), the metrics, the logs and the messages name it: [`Self::as_str`],
/// also as it displays and serializes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The pause switch.
    Paused,
    /// A maintenance window a run waits out.
    MaintenanceWindow,
    /// A maintenance window that escalates.
    Maintenance,
    MaxInFlight,
    Breaker,
    RouteRate,
    GlobalRate,
    /// The queue's bound (`limits.max_queued`).
    MaxQueued,
    ExecRate,
    HttpRate,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::Paused,
        Limit::MaintenanceWindow,
        Limit::Maintenance,
        Limit::MaxInFlight,
        Limit::Breaker,
        Limit::RouteRate,
        Limit::GlobalRate,
        Limit::MaxQueued,
        Limit::ExecRate,
        Limit::HttpRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Paused => "paused",
            Limit::MaintenanceWindow => "maintenance window",
            Limit::Maintenance => "maintenance",
            Limit::MaxInFlight => "max_in_flight",
            Limit::Breaker => "breaker",
            Limit::RouteRate => "route_rate",
            Limit::GlobalRate => "global_rate",
            Limit::MaxQueued => "max_queued",
            Limit::ExecRate => "exec_rate",
            Limit::HttpRate => "http_rate",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// governor's clock, following tokio's (so `tokio::time::pause` drives it in tests).
#[derive(Debug, Clone, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Limiter = RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    TokioClock,
    NoOpMiddleware<std::time::Instant>,
>;

/// A queued incident, as the guards see it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub route: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The answer for one queued incident.
#[derive(Debug)]
pub enum Decision {
    Run(Ticket),
    /// Stay queued; `why` names the cap or window.
    Wait(Limit),
    /// Escalate now.
    Refuse {
        reason: Reason,
        /// The limit that refused, for metrics and the audit log.
        limit: Limit,
        message: String,
    },
}

/// An admitted run: holds its in-flight slot until released.
#[derive(Debug)]
pub struct Ticket {
    pub incident: String,
    in_flight: Option<String>,
    /// The breaker this run reports to, if its route has one.
    pub breaker: Option<String>,
    /// Shared guards: what the store must still check as it claims the run.
    pub shared: Option<Shared>,
}

/// The checks of a run that shared guards leave to the store's claim transaction.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// The in-flight key and its cap: the claim waits while that many runs hold the key.
    pub in_flight: Option<(String, u32)>,
    pub breaker: Option<SharedBreaker>,
    /// Rate buckets, each consumed once; the first empty one refuses the run.
    pub rates: Vec<SharedRate>,
}

/// A breaker to consult (and take the half-open trial of) as the run is claimed.
#[derive(Debug, Clone)]
pub struct SharedBreaker {
    pub id: String,
    pub route: String,
    pub key: BTreeMap<String, String>,
    pub cooldown: chrono::Duration,
}

/// A rate bucket to take one token from as the run is claimed.
#[derive(Debug, Clone)]
pub struct SharedRate {
    /// The bucket's identity: scope, rate and key values.
    pub bucket: String,
    pub rate: Rate,
    /// The limit named when it refuses (`route_rate`, `global_rate`).
    pub limit: Limit,
    pub message: String,
}

/// GCRA, the algorithm governor uses, for a bucket kept in a database: given the bucket's
/// theoretical arrival time (`tat`, microseconds; `None` for a new bucket) and `now`,
/// returns the new `tat` if one more event is allowed, `None` if the budget is spent.
/// `rate.count` events may come at once; then one per `rate.per / rate.count`.
pub fn gcra(tat: Option<i64>, now: i64, rate: Rate) -> Option<i64> {
    let count = i64::from(rate.count.max(1));
    let interval = (rate.per.as_micros() as i64 / count).max(1);
    let start = tat.unwrap_or(now).max(now);
    let next = start + interval;
    (next - now <= interval * count).then_some(next)
}

/// The message of a refusal by an open breaker.
pub fn breaker_refusal(route: &str, failures: &[String], until: Option<DateTime<Utc>>) -> String {
    format!(
        "the circuit breaker of route {route:?} is open after failed remediations of incidents {}{}",
        failures.join(", "),
        until
            .map(|u| format!("; it lets one trial through after {}", u.to_rfc3339()))
            .unwrap_or_default()
    )
}

/// Who paused medic, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Pause {
    pub by: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// A breaker with what identifies it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerEntry {
    pub id: String,
    pub route: String,
    pub key: BTreeMap<String, String>,
    #[serde(flatten)]
    pub breaker: Breaker,
}

/// The limits of one configuration: its rate limiters (reused across reloads when
/// unchanged, see [`Guards::limits`]) and the routes' caps and breakers. Part of the
/// configuration snapshot in force, so a reader sees one configuration's limits whole.
pub struct Limits {
    global: Option<(Rate, Arc<Limiter>)>,
    routes: HashMap<String, (Rate, Arc<Limiter>)>,
    exec: Option<(Rate, Arc<Limiter>)>,
    http: Option<(Rate, Arc<Limiter>)>,
    config: Arc<Config>,
}

/// The guards' state, which outlives reloads: rate limiters' windows, runs in flight,
/// breakers and the pause switch. What a configuration says is in [`Limits`], passed in.
pub struct Guards {
    /// Every limiter built so far, by scope and rate, so a reload keeps their windows.
    built: Mutex<HashMap<String, Arc<Limiter>>>,
    in_flight: Mutex<HashMap<String, u32>>,
    breakers: Mutex<HashMap<String, BreakerEntry>>,
    paused: RwLock<Option<Pause>>,
    /// Rates, caps and breakers are checked by the store, for every replica at once.
    shared: std::sync::atomic::AtomicBool,
}

fn quota(rate: Rate) -> Quota {
    let count = NonZeroU32::new(rate.count.max(1)).unwrap_or(NonZeroU32::MIN);
    let per_one = rate.per / rate.count.max(1);
    Quota::with_period(per_one.max(std::time::Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(count))
        .allow_burst(count)
}

fn show(rate: Rate) -> String {
    format!("{}/{}", rate.count, humantime::format_duration(rate.per))
}

/// The value of `labels` for `key`, as `a=1,b=2` (missing labels are empty).
fn key_of(labels: &BTreeMap<String, String>, key: &[String]) -> String {
    key.iter()
        .map(|k| format!("{k}={}", labels.get(k).map(String::as_str).unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

/// A route's in-flight key for these labels, with its cap, if the route has one.
fn in_flight_cap(r: &RouteConfig, labels: &BTreeMap<String, String>) -> Option<(String, u32)> {
    let max = r.max_in_flight?;
    Some((
        format!("{}\u{1f}{}", r.name, key_of(labels, &r.in_flight_key)),
        max,
    ))
}

/// The breaker of a route for these labels, if the route has one: its id, its key labels
/// and its settings.
fn breaker_of<'r>(
    r: &'r RouteConfig,
    labels: &BTreeMap<String, String>,
) -> Option<(String, BTreeMap<String, String>, &'r BreakerConfig)> {
    let b = r.breaker.as_ref()?;
    let key = b
        .key
        .iter()
        .map(|k| (k.clone(), labels.get(k).cloned().unwrap_or_default()))
        .collect();
    Some((breaker_id(&r.name, &key_of(labels, &b.key)), key, b))
}

/// Why a route's rate refused a run (`key`: the values of its `rate_key`).
fn route_rate_refusal(r: &RouteConfig, rate: Rate, key: &str) -> String {
    let per = if r.rate_key.is_empty() {
        String::new()
    } else {
        format!(" per {key}")
    };
    format!(
        "route {:?} allows {} runs{per} (routes.rate)",
        r.name,
        show(rate)
    )
}

fn global_rate_refusal(rate: Rate) -> String {
    format!(
        "medic allows {} runbook runs in all (limits.rate)",
        show(rate)
    )
}

/// A breaker's id: stable, URL-safe, derived from its route and key values.
pub fn breaker_id(route: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{route}\u{1f}{key}").as_bytes());
    hex::encode(&h[..8])
}

impl Limits {
    /// Finds the breaker of an incident by its route and labels, if the route has one.
    pub fn breaker_for(&self, route: &str, labels: &BTreeMap<String, String>) -> Option<String> {
        let r = self.config.routes.iter().find(|r| r.name == route)?;
        let b = r.breaker.as_ref()?;
        Some(breaker_id(&r.name, &key_of(labels, &b.key)))
    }

    /// The failure threshold of each route's breaker.
    pub fn breaker_thresholds(&self) -> HashMap<String, u32> {
        self.config
            .routes
            .iter()
            .filter_map(|r| r.breaker.as_ref().map(|b| (r.name.clone(), b.failures)))
            .collect()
    }
}

impl Guards {
    pub fn new(breakers: Vec<BreakerEntry>, paused: Option<Pause>) -> Guards {
        Guards {
            built: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            breakers: Mutex::new(breakers.into_iter().map(|b| (b.id.clone(), b)).collect()),
            paused: RwLock::new(paused),
            shared: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The limits of a (re)loaded configuration. Limiters whose scope and rate are
    /// unchanged are the ones built before, so a reload does not refill anyone's budget.
    pub fn limits(&self, config: Arc<Config>) -> Limits {
        let limiter = |scope: String, rate: Rate| -> (Rate, Arc<Limiter>) {
            let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
            let l = built
                .entry(format!("{scope}|{}|{:?}", rate.count, rate.per))
                .or_insert_with(|| {
                    Arc::new(RateLimiter::new(
                        quota(rate),
                        DefaultKeyedStateStore::default(),
                        TokioClock,
                    ))
                })
                .clone();
            (rate, l)
        };
        Limits {
            global: config.limits.rate.map(|r| limiter("global".into(), r)),
            routes: config
                .routes
                .iter()
                .filter_map(|r| {
                    r.rate
                        .map(|rate| (r.name.clone(), limiter(format!("route:{}", r.name), rate)))
                })
                .collect(),
            exec: config.limits.exec_rate.map(|r| limiter("exec".into(), r)),
            http: config.limits.http_rate.map(|r| limiter("http".into(), r)),
            config,
        }
    }

    /// Puts back what the store kept: the breakers and the pause switch.
    pub fn restore(&self, breakers: Vec<BreakerEntry>, paused: Option<Pause>) {
        *self.breakers.lock().unwrap_or_else(|p| p.into_inner()) =
            breakers.into_iter().map(|b| (b.id.clone(), b)).collect();
        self.set_paused(paused);
    }

    /// Shares rates, in-flight caps and breakers with other replicas through the store.
    pub fn set_shared(&self, shared: bool) {
        self.shared
            .store(shared, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_shared(&self) -> bool {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps one breaker as the store left it (shared guards).
    pub fn put_breaker(&self, entry: BreakerEntry) {
        self.breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.id.clone(), entry);
    }

    pub fn paused(&self) -> Option<Pause> {
        self.paused
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_paused(&self, pause: Option<Pause>) {
        *self.paused.write().unwrap_or_else(|p| p.into_inner()) = pause;
    }

    /// May this queued incident run now?
    pub fn admit(&self, limits: &Limits, c: &Candidate, now: DateTime<Utc>) -> Decision {
        if let Some(p) = self.paused() {
            return Decision::Refuse {
                reason: Reason::Paused,
                limit: Limit::Paused,
                message: format!(
                    "medic is paused (by {} at {}: {})",
                    p.by,
                    p.at.to_rfc3339(),
                    p.reason
                ),
            };
        }
        let route: Option<&RouteConfig> = c
            .route
            .as_deref()
            .and_then(|name| limits.config.routes.iter().find(|r| r.name == name));

        if let Some(r) = route {
            if let Some(w) = r.maintenance.iter().find(|w| window::contains(w, now)) {
                return match r.maintenance_action {
                    WindowAction::Wait => Decision::Wait(Limit::MaintenanceWindow),
                    WindowAction::Escalate => Decision::Refuse {
                        reason: Reason::Paused,
                        limit: Limit::Maintenance,
                        message: format!(
                            "route {:?} is in a maintenance window ({:02}:{:02}-{:02}:{:02} {})",
                            r.name,
                            w.start / 60,
                            w.start % 60,
                            w.end / 60,
                            w.end % 60,
                            w.timezone
                        ),
                    },
                };
            }
        }

        if self.is_shared() {
            return Decision::Run(self.shared_ticket(c, route, limits));
        }

        // Concurrency caps: waiting, not refusing; the incident stays queued in the store.
        let in_flight = route.and_then(|r| in_flight_cap(r, &c.labels));
        if let Some((key, max)) = &in_flight {
            let counts = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if counts.get(key).copied().unwrap_or(0) >= *max {
                return Decision::Wait(Limit::MaxInFlight);
            }
        }

        // The breaker, looked at without changing it yet.
        let breaker_key = route.and_then(|r| {
            breaker_of(r, &c.labels).map(|(id, labels, b)| (id, r.name.clone(), labels, b))
        });
        if let Some((id, _, _, cfg)) = &breaker_key {
            let cooldown =
                chrono::Duration::from_std(cfg.cooldown).unwrap_or(chrono::Duration::MAX);
            let mut b = self.breaker_state(id);
            if let Admit::Refuse { failures, until } = b.admit(&c.id, now, cooldown) {
                return Decision::Refuse {
                    reason: Reason::CircuitOpen,
                    limit: Limit::Breaker,
                    message: breaker_refusal(
                        route.map(|r| r.name.as_str()).unwrap_or(""),
                        &failures,
                        until,
                    ),
                };
            }
        }

        // Rate limits: a refusal escalates, it never drops the alert.
        if let Some(r) = route {
            if let Some((rate, limiter)) = limits.routes.get(&r.name) {
                let key = key_of(&c.labels, &r.rate_key);
                if limiter.check_key(&key).is_err() {
                    return Decision::Refuse {
                        reason: Reason::RateLimited,
                        limit: Limit::RouteRate,
                        message: route_rate_refusal(r, *rate, &key),
                    };
                }
            }
        }
        if let Some((rate, limiter)) = &limits.global {
            if limiter.check_key(&String::new()).is_err() {
                return Decision::Refuse {
                    reason: Reason::RateLimited,
                    limit: Limit::GlobalRate,
                    message: global_rate_refusal(*rate),
                };
            }
        }

        // Admitted: take the breaker's trial slot if it is half-open, and the in-flight slot.
        let mut ticket = Ticket {
            incident: c.id.clone(),
            in_flight: None,
            breaker: None,
            shared: None,
        };
        if let Some((id, route_name, key, cfg)) = breaker_key {
            let cooldown =
                chrono::Duration::from_std(cfg.cooldown).unwrap_or(chrono::Duration::MAX);
            let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
            let entry = breakers.entry(id.clone()).or_insert_with(|| BreakerEntry {
                id: id.clone(),
                route: route_name,
                key,
                breaker: Breaker::default(),
            });
            entry.breaker.admit(&c.id, now, cooldown);
            ticket.breaker = Some(id);
        }
        if let Some((key, _)) = in_flight {
            *self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key.clone())
                .or_insert(0) += 1;
            ticket.in_flight = Some(key);
        }
        Decision::Run(ticket)
    }

    /// A ticket whose rates, cap and breaker the store checks as it claims the run.
    fn shared_ticket(&self, c: &Candidate, route: Option<&RouteConfig>, limits: &Limits) -> Ticket {
        let mut shared = Shared::default();
        let mut breaker = None;
        if let Some(r) = route {
            shared.in_flight = in_flight_cap(r, &c.labels);
            if let Some((id, key, b)) = breaker_of(r, &c.labels) {
                shared.breaker = Some(SharedBreaker {
                    id: id.clone(),
                    route: r.name.clone(),
                    key,
                    cooldown: chrono::Duration::from_std(b.cooldown)
                        .unwrap_or(chrono::Duration::MAX),
                });
                breaker = Some(id);
            }
            if let Some((rate, _)) = limits.routes.get(&r.name) {
                let key = key_of(&c.labels, &r.rate_key);
                shared.rates.push(SharedRate {
                    bucket: format!("route:{}|{}|{:?}|{key}", r.name, rate.count, rate.per),
                    rate: *rate,
                    limit: Limit::RouteRate,
                    message: route_rate_refusal(r, *rate, &key),
                });
            }
        }
        if let Some((rate, _)) = &limits.global {
            shared.rates.push(SharedRate {
                bucket: format!("global|{}|{:?}", rate.count, rate.per),
                rate: *rate,
                limit: Limit::GlobalRate,
                message: global_rate_refusal(*rate),
            });
        }
        Ticket {
            incident: c.id.clone(),
            in_flight: None,
            breaker,
            shared: Some(shared),
        }
    }

    /// Gives back a run's in-flight slot.
    pub fn release(&self, ticket: &Ticket) {
        if let Some(key) = &ticket.in_flight {
            let mut counts = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
    }

    /// Records a remediation's result with breaker `id`; returns the breaker to persist
    /// when it changed state (or when it remembered a new failure).
    pub fn record(
        &self,
        limits: &Limits,
        id: &str,
        incident: &str,
        success: bool,
        now: DateTime<Utc>,
    ) -> Option<(BreakerEntry, bool)> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = breakers.get_mut(id)?;
        let threshold = limits
            .config
            .routes
            .iter()
            .find(|r| r.name == entry.route)
            .and_then(|r| r.breaker.as_ref())
            .map(|b| b.failures)
            .unwrap_or(u32::MAX);
        let before = entry.breaker.clone();
        let changed_state = entry.breaker.record(incident, success, now, threshold);
        (entry.breaker != before).then(|| (entry.clone(), changed_state))
    }

    /// Closes a breaker by hand; returns it to persist.
    pub fn reset(&self, id: &str) -> Option<BreakerEntry> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = breakers.get_mut(id)?;
        entry.breaker.reset();
        Some(entry.clone())
    }

    pub fn breakers(&self) -> Vec<BreakerEntry> {
        let mut v: Vec<BreakerEntry> = self
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.route, &a.id).cmp(&(&b.route, &b.id)));
        v
    }

    fn breaker_state(&self, id: &str) -> Breaker {
        self.breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|e| e.breaker.clone())
            .unwrap_or_default()
    }

    /// May a step run now? The pause switch stops every kind; `exec` (key: the program) and
    /// `http` (key: the host) also have rates.
    pub fn step(
        &self,
        limits: &Limits,
        kind: StepKind,
        key: &str,
    ) -> Result<(), (Reason, Limit, String)> {
        if let Some(p) = self.paused() {
            return Err((
                Reason::Paused,
                Limit::Paused,
                format!(
                    "medic was paused by {} at {}: {}",
                    p.by,
                    p.at.to_rfc3339(),
                    p.reason
                ),
            ));
        }
        let (limit, name, setting, per) = match kind {
            StepKind::Exec => (&limits.exec, Limit::ExecRate, "limits.exec_rate", "program"),
            StepKind::Http => (&limits.http, Limit::HttpRate, "limits.http_rate", "host"),
            StepKind::Sleep | StepKind::Silence | StepKind::Query => return Ok(()),
        };
        if let Some((rate, limiter)) = limit {
            if limiter.check_key(&key.to_string()).is_err() {
                return Err((
                    Reason::RateLimited,
                    name,
                    format!(
                        "{kind} of {key} refused: {setting} allows {} per {}",
                        show(*rate),
                        per
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where breakers are kept: the two calls of the store that [`record_breaker`] needs,
/// named here so that `guard` does not depend on `store` (which depends on `guard` for
/// the breaker's types). The store implements it.
pub trait BreakerStore {
    type Error: std::fmt::Display;

    /// Records a result with a breaker kept in the store (shared guards), in one
    /// transaction; the breaker if it changed.
    fn record_shared(
        &self,
        id: &str,
        incident: &str,
        success: bool,
        thresholds: HashMap<String, u32>,
    ) -> impl std::future::Future<Output = Result<Option<BreakerEntry>, Self::Error>> + Send;

    /// Persists a breaker this replica changed, audited with `detail`.
    fn save(
        &self,
        entry: BreakerEntry,
        detail: serde_json::Value,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// Counts a remediation's result (`success`) of `incident` against breaker `breaker`, at
/// `now`, with the `limits` of the configuration the caller holds.
///
/// Shared guards: the store reads, updates and audits the breaker in one transaction and
/// the guards keep what it returns. Otherwise the guards update it in memory and the store
/// persists it. A store error is logged: the result is lost, the incident is not.
pub async fn record_breaker(
    guards: &Guards,
    limits: &Limits,
    store: &impl BreakerStore,
    breaker: &str,
    incident: &str,
    success: bool,
    now: DateTime<Utc>,
) {
    if guards.is_shared() {
        let thresholds = limits.breaker_thresholds();
        match store
            .record_shared(breaker, incident, success, thresholds)
            .await
        {
            Ok(Some(entry)) => guards.put_breaker(entry),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(breaker, error = %e, "cannot record a shared circuit breaker")
            }
        }
        return;
    }
    if let Some((entry, changed_state)) = guards.record(limits, breaker, incident, success, now) {
        if changed_state {
            tracing::warn!(breaker, route = %entry.route, state = entry.breaker.state.as_str(), "circuit breaker changed state");
        }
        let detail = serde_json::json!({ "incident": incident, "success": success });
        if let Err(e) = store.save(entry, detail).await {
            tracing::error!(breaker, error = %e, "cannot persist a circuit breaker");
        }
    }
}

#[cfg(test)]
mod tests;
