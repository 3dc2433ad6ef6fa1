//! The incident and escalation model, as a property of the real store (SQLite, or
//! PostgreSQL with `MEDIC_TEST_STORE=postgres`): random sequences of deliveries (firing,
//! resolved, resends, `startsAt` moved earlier or later, a high-availability pair's double
//! delivery), runs and their outcomes, acks, restarts, storm windows and the passing of time.
//! After each sequence:
//!
//! - every incident that was escalated and is still escalated has, for every channel of its
//!   first tier, a notification sent or pending (its own, or its storm group's summary, which
//!   counts as sent only if it went out after the incident joined the group); one cancelled
//!   was cancelled because every incident it would tell about was handled;
//! - no fingerprint has two open incidents;
//! - no resolution whose period overlaps the open incident is dropped, and no firing of its
//!   period is taken as stale (checked as each is delivered);
//! - nothing is sent twice for one idempotency key.
//!
//! Time: deliveries carry the test's clock (`received_at`) and the sender is asked what is
//! due at that clock; runs and acks are stamped by the store's own clock, which the test's
//! never falls behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map};

use super::outbox::{OutboxDump, OutboxRow};
use super::*;
use crate::alert::{Alert, Status};
use crate::config::Tier;
use crate::incident::AckVia;

/// How many distinct alerts a sequence is about.
const ALERTS: usize = 5;

/// How each alert is routed: two escalate as they open (no route takes them), two run a
/// runbook, one is ignored on purpose.
fn routed(fp: usize) -> Routed {
    match fp {
        0 | 1 => Routed::NoRunbook {
            why: "no route matched the alert".into(),
        },
        2 | 3 => Routed::Runbook {
            route: "disk".into(),
            runbook: "disk_full.rhai".into(),
        },
        _ => Routed::Ignore {
            route: "quiet".into(),
        },
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A firing notification with `startsAt` at minute `start`; `twice`: delivered twice
    /// at once, as by a high-availability pair of Alertmanagers.
    Fire { fp: usize, start: u32, twice: bool },
    /// A resolved notification of the period that started at `start` and lasted `lasted`
    /// minutes.
    Resolve {
        fp: usize,
        start: u32,
        lasted: u32,
        twice: bool,
    },
    /// The runner claims every queued incident and ends each run with outcome `outcome`.
    Run { outcome: u8 },
    /// The verification timers of every incident verifying run out.
    VerifyTimeout,
    /// A person acks the `nth` escalated incident.
    Ack { nth: usize },
    /// `secs` pass; the sender delivers what is due.
    Advance { secs: u32 },
    /// medic restarts: the store is closed and opened again.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    // Alerts 0 and 1 escalate as they open: most storms are theirs.
    let fp = prop_oneof![3 => 0..2usize, 2 => 2..ALERTS];
    // Mostly short steps, so that escalations meet inside a storm window.
    let secs = prop_oneof![4 => 0..20u32, 1 => 20..150u32];
    prop_oneof![
        5 => (fp.clone(), 0..6u32, any::<bool>()).prop_map(|(fp, start, twice)| Op::Fire { fp, start, twice }),
        3 => (fp, 0..6u32, 0..4u32, any::<bool>())
            .prop_map(|(fp, start, lasted, twice)| Op::Resolve { fp, start, lasted, twice }),
        2 => (0..3u8).prop_map(|outcome| Op::Run { outcome }),
        1 => Just(Op::VerifyTimeout),
        3 => (0..4usize).prop_map(|nth| Op::Ack { nth }),
        3 => secs.prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Restart),
    ]
}

/// The alerts' `startsAt` minutes count from here.
fn minute(m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap() + chrono::Duration::minutes(m.into())
}

fn alert(fp: usize, status: Status, start: u32, ends: Option<u32>) -> Alert {
    let labels: BTreeMap<String, String> = [
        ("alertname".to_string(), "DiskFull".to_string()),
        ("instance".to_string(), format!("host{fp}")),
    ]
    .into_iter()
    .collect();
    Alert {
        status,
        labels,
        annotations: BTreeMap::new(),
        starts_at: minute(start),
        ends_at: ends.map(minute),
        generator_url: String::new(),
        fingerprint: format!("fp{fp}"),
        extra: Map::new(),
    }
}

fn delivery(fp: usize, a: Alert, at: DateTime<Utc>) -> Delivery {
    Delivery {
        received_at: at,
        source: "127.0.0.1:5000".into(),
        receiver: "medic".into(),
        status: a.status,
        group_key: "{}".into(),
        external_url: String::new(),
        truncated_alerts: 0,
        extra: Map::new(),
        alerts: vec![(a, routed(fp))],
    }
}

/// The channels of the first tier, told at once.
const FIRST_TIER: [&str; 2] = ["a", "b"];

fn open_store(dir: &tempfile::TempDir, window: Duration) -> Store {
    let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
    let store = Store::open(&url, StoreMetrics::default()).expect("open");
    let policy = Policy {
        tiers: vec![
            Tier {
                after: Duration::ZERO,
                notify: FIRST_TIER.iter().map(|c| c.to_string()).collect(),
            },
            Tier {
                after: Duration::from_secs(60),
                notify: vec!["c".into()],
            },
        ],
        renotify: None,
    };
    let mut routes = HashMap::new();
    routes.insert(
        "disk".to_string(),
        RoutePlan {
            verify_for: Duration::from_secs(300),
            policy: policy.clone(),
            approval: None,
        },
    );
    store.set_plans(Plans {
        default: policy,
        routes,
    });
    store.set_storm_window(window);
    store
}

/// One sequence, played against a fresh store; `Err` names the broken promise.
struct Model {
    dir: tempfile::TempDir,
    store: Store,
    window: Duration,
    /// The test's clock: deliveries are received, and the sender looks, at this time.
    now: DateTime<Utc>,
    /// Every idempotency key the sender delivered.
    sent: HashSet<String>,
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

impl Model {
    async fn all(&self) -> Vec<Incident> {
        self.store
            .incidents(IncidentFilter {
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// The open incident of `fp`, if any.
    async fn open_of(&self, fp: usize) -> Option<Incident> {
        let fp = format!("fp{fp}");
        self.all()
            .await
            .into_iter()
            .find(|i| i.fingerprint == fp && i.state.is_open())
    }

    async fn deliver(&mut self, fp: usize, a: Alert, twice: bool) -> Vec<AlertEffect> {
        let d = || delivery(fp, a.clone(), self.now);
        if twice {
            let (x, y) = tokio::join!(self.store.ingest(d()), self.store.ingest(d()));
            let mut v = x.unwrap();
            v.extend(y.unwrap());
            v
        } else {
            self.store.ingest(d()).await.unwrap()
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Fire { fp, start, twice } => {
                let open = self.open_of(fp).await;
                let effects = self
                    .deliver(fp, alert(fp, Status::Firing, start, None), twice)
                    .await;
                if let Some(o) = open {
                    let stale = effects.contains(&AlertEffect::Stale);
                    if minute(start) <= at(&o.started_at) && stale {
                        return Err(format!(
                            "a firing of open incident {}'s period (started {}) was taken as stale: {effects:?}",
                            o.id, o.started_at
                        ));
                    }
                }
            }
            Op::Resolve {
                fp,
                start,
                lasted,
                twice,
            } => {
                let open = self.open_of(fp).await;
                let end = start + lasted;
                let effects = self
                    .deliver(fp, alert(fp, Status::Resolved, start, Some(end)), twice)
                    .await;
                if let Some(o) = open {
                    let resolved = effects
                        .iter()
                        .any(|e| matches!(e, AlertEffect::Resolved { id, .. } if *id == o.id));
                    if minute(end) >= at(&o.started_at) && !resolved {
                        return Err(format!(
                            "a resolution (ended :{end}) overlapping open incident {} (started {}) was dropped: {effects:?}",
                            o.id, o.started_at
                        ));
                    }
                }
            }
            Op::Run { outcome } => {
                let ids = self
                    .store
                    .queued(100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|q| q.id)
                    .collect();
                let claims = self.store.claim(ids, |_| json!({})).await.unwrap();
                for c in claims {
                    let result = match outcome {
                        0 => RunResult::Completed,
                        1 => RunResult::Escalated {
                            reason: Reason::StepFailed,
                            message: "boom".into(),
                        },
                        _ => RunResult::Escalated {
                            reason: Reason::Timeout,
                            message: "too slow".into(),
                        },
                    };
                    self.store
                        .finish_run(&c.id, result, json!({}))
                        .await
                        .unwrap();
                }
            }
            Op::VerifyTimeout => {
                for v in self.store.verifying(100).await.unwrap() {
                    self.store
                        .verification_failed(&v.id, "still firing")
                        .await
                        .unwrap();
                }
            }
            Op::Ack { nth } => {
                let escalated: Vec<Incident> = self
                    .all()
                    .await
                    .into_iter()
                    .filter(|i| i.state == State::Escalated)
                    .collect();
                if !escalated.is_empty() {
                    let id = &escalated[nth % escalated.len()].id;
                    let ack = self
                        .store
                        .ack(id, Some("alice".into()), AckVia::Api)
                        .await
                        .unwrap();
                    if ack != Ack::Acknowledged {
                        return Err(format!("ack of escalated {id}: {ack:?}"));
                    }
                }
            }
            Op::Advance { secs } => {
                self.now += chrono::Duration::seconds(secs.into());
                self.send_due().await?;
            }
            Op::Restart => {
                self.store.close().await;
                self.store = open_store(&self.dir, self.window);
            }
        }
        Ok(())
    }

    /// The sender: delivers everything due at the test's clock, once.
    async fn send_due(&mut self) -> Result<(), String> {
        loop {
            let due = self.store.outbox_due(self.now, 100).await.unwrap();
            if due.is_empty() {
                return Ok(());
            }
            for n in due {
                if !self.sent.insert(n.key.to_string()) {
                    return Err(format!("{} was sent twice", n.key));
                }
                self.store
                    .outbox_attempt(n.id, Attempt::Sent)
                    .await
                    .unwrap();
            }
        }
    }

    /// The promises, once everything due was sent.
    async fn check(&mut self) -> Result<(), String> {
        self.now += chrono::Duration::days(1);
        self.send_due().await?;
        let all = self.all().await;
        let mut open: HashMap<&str, &str> = HashMap::new();
        for i in all.iter().filter(|i| i.state.is_open()) {
            if let Some(other) = open.insert(&i.fingerprint, &i.id) {
                return Err(format!(
                    "{} has two open incidents: {other} and {}",
                    i.fingerprint, i.id
                ));
            }
        }
        let OutboxDump { rows, leaders } = self.store.outbox_rows().await.unwrap();
        let state: HashMap<&str, State> = all.iter().map(|i| (i.id.as_str(), i.state)).collect();
        let handled =
            |id: &str| matches!(state.get(id), Some(State::Acknowledged | State::Resolved));
        // When (audit seq) each storm summary's first tier went out on each channel, and
        // when each incident joined its group: a summary only tells about who joined before.
        let mut summary_sent: HashMap<(String, String), i64> = HashMap::new();
        let mut joined: HashMap<String, i64> = HashMap::new();
        for i in &all {
            let full = self.store.incident(&i.id).await.unwrap().unwrap();
            for e in full.timeline.unwrap_or_default() {
                let d = &e.detail;
                match (e.event.as_str(), d["group"].as_str(), d["channel"].as_str()) {
                    ("notification_sent", Some(g), Some(ch)) if d["tier"] == 1 => {
                        summary_sent.insert((g.to_string(), ch.to_string()), e.seq);
                    }
                    ("escalation_grouped", _, _) => {
                        joined.insert(i.id.clone(), e.seq);
                    }
                    _ => {}
                }
            }
        }
        let own_row = |id: &str, channel: &str| {
            let key = format!("{id}/1/1/{channel}");
            rows.iter().find(move |r| r.key == key)
        };
        for i in all.iter().filter(|i| i.escalated_at.is_some()) {
            let group = i.escalation_group.as_deref();
            let leader = group.and_then(|g| leaders.get(g)).map(String::as_str);
            for channel in FIRST_TIER {
                // Its own notification, else (a member that joined) its group's summary.
                let covering = own_row(&i.id, channel).or_else(|| {
                    rows.iter().find(|r| {
                        group.is_some()
                            && r.tier == 1
                            && r.channel == *channel
                            && r.group.as_deref() == group
                    })
                });
                let Some(OutboxRow {
                    key,
                    state: row_state,
                    group: gid,
                    ..
                }) = covering
                else {
                    return Err(format!(
                        "escalated incident {} ({:?}) has no notification for {channel}",
                        i.id, i.state
                    ));
                };
                let fine = match (row_state.as_str(), gid) {
                    ("pending", _) | ("sent", None) => true,
                    // A summary that went out before the incident joined never named it.
                    ("sent", Some(g)) => {
                        let sent = summary_sent.get(&(g.clone(), channel.to_string()));
                        sent.is_some_and(|s| joined.get(&i.id).is_some_and(|j| j < s))
                    }
                    ("cancelled", None) => handled(&i.id),
                    // A summary is cancelled only when everyone it would tell about is handled.
                    ("cancelled", Some(_)) => all
                        .iter()
                        .filter(|m| m.escalation_group.as_deref() == gid.as_deref())
                        .filter(|m| leader != Some(m.id.as_str()))
                        .filter(|m| own_row(&m.id, channel).is_none())
                        .all(|m| handled(&m.id)),
                    _ => false,
                };
                if !fine {
                    return Err(format!(
                        "incident {} is {:?} but its notification {key} is {row_state}",
                        i.id, i.state
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Plays `ops` against a fresh store with storm window `window`.
fn play(window: Duration, ops: &[Op]) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir, window);
        let mut m = Model {
            dir,
            store,
            window,
            now: Utc::now(),
            sent: HashSet::new(),
        };
        let mut result = Ok(());
        for (n, op) in ops.iter().enumerate() {
            if let Err(e) = m.step(op).await {
                result = Err(format!("step {n} {op:?}: {e}"));
                break;
            }
        }
        if result.is_ok() {
            result = m.check().await;
        }
        m.store.close().await;
        result
    })
}

fn window() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_secs(30)),
        Just(Duration::from_secs(120)),
    ]
}

#[test]
fn incidents_and_escalations_keep_their_promises() {
    let cases = if std::env::var("MEDIC_TEST_STORE").as_deref() == Ok("postgres") {
        24
    } else {
        48
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (window(), proptest::collection::vec(op(), 1..40));
    runner
        .run(&strategy, |(window, ops)| {
            play(window, &ops).map_err(TestCaseError::fail)
        })
        .unwrap();
}

// The cases the property found, kept by name.

/// Alert `fp` fires, its period started at minute `start`; delivered once.
fn fire(fp: usize, start: u32) -> Op {
    Op::Fire {
        fp,
        start,
        twice: false,
    }
}

/// Alert `fp` resolves, its period started at minute `start` and lasted `lasted`
/// minutes; delivered once.
fn resolve(fp: usize, start: u32, lasted: u32) -> Op {
    Op::Resolve {
        fp,
        start,
        lasted,
        twice: false,
    }
}

#[test]
fn storm_summary_survives_the_member_it_is_told_through_being_superseded() {
    let ops = [fire(0, 0), fire(0, 1), fire(0, 2)];
    assert_eq!(play(Duration::from_secs(30), &ops), Ok(()));
}

#[test]
fn storm_summary_survives_the_first_incident_being_acked() {
    // The incidents are listed newest first: the second ack is of the group's first.
    let ops = [
        fire(0, 0),
        fire(1, 0),
        Op::Ack { nth: 1 },
        Op::Advance { secs: 149 },
    ];
    assert_eq!(play(Duration::from_secs(120), &ops), Ok(()));
}

#[test]
fn storm_member_escalated_by_a_run_after_its_summary_went_out_is_told() {
    // Two runs of route `disk` escalate together (a group, its summary due when the window
    // ends); the test's clock passes the window and the summary goes out; a third run of the
    // same route escalates, stamped by the store's clock still inside the window.
    let ops = [
        fire(2, 0),
        fire(3, 0),
        Op::Run { outcome: 1 },
        Op::Advance { secs: 149 },
        fire(2, 1),
        Op::Run { outcome: 1 },
    ];
    assert_eq!(play(Duration::from_secs(120), &ops), Ok(()));
}

#[test]
fn resolution_with_an_earlier_starts_at_resolves_the_open_incident() {
    let ops = [fire(1, 5), resolve(1, 4, 1)];
    assert_eq!(play(Duration::ZERO, &ops), Ok(()));
}
