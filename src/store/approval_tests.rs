//! Approval before a run, against the real store (SQLite, or PostgreSQL with
//! `MEDIC_TEST_STORE=postgres`): an approval route's incident waits with a deadline, its
//! plan is recorded once with its request, and each decision (approve, reject, time out,
//! withdraw) is one conditional transaction. Then, as a property over random sequences of
//! deliveries, decisions, runs, restarts and forced moves of every kind the transition
//! table has: no incident that waited for approval is ever queued or run without an
//! approval record, and every run of one is bound to its plan.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Map};

use super::transition::Move;
use super::*;
use crate::alert::{Alert, Status};
use crate::config::{Role, Tier};
use crate::incident::MOVES;
use crate::plan::{Plan, PlanEnd, PlannedStep};

/// Route `db` asks for approval (15 minutes; approvers `alice` and role `admin`), route
/// `web` (no approvers) too; both tell `mail` at once and `pager` after 10 minutes.
fn open(dir: &tempfile::TempDir) -> Store {
    let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
    let store = Store::open(&url, StoreMetrics::default()).expect("open");
    set_plans(&store);
    store
}

fn set_plans(store: &Store) {
    let policy = Policy {
        tiers: vec![
            Tier {
                after: Duration::ZERO,
                notify: vec!["mail".into()],
            },
            Tier {
                after: Duration::from_secs(600),
                notify: vec!["pager".into()],
            },
        ],
        renotify: None,
    };
    let approval = |approvers: &[&str]| ApprovalConfig {
        timeout: Duration::from_secs(15 * 60),
        approvers: approvers.iter().map(|a| a.to_string()).collect(),
    };
    let mut routes = HashMap::new();
    for (name, approvers) in [("db", vec!["alice", "admin"]), ("web", vec![])] {
        routes.insert(
            name.to_string(),
            RoutePlan {
                verify_for: Duration::from_secs(300),
                policy: policy.clone(),
                approval: Some(approval(&approvers)),
            },
        );
    }
    routes.insert(
        "auto".to_string(),
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
}

fn alert(instance: &str, status: Status) -> Alert {
    let labels: BTreeMap<String, String> = [("alertname", "DbDown"), ("instance", instance)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Alert {
        status,
        labels,
        annotations: BTreeMap::new(),
        starts_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        ends_at: None,
        generator_url: String::new(),
        fingerprint: format!("fp-{instance}"),
        extra: Map::new(),
    }
}

fn delivery(a: Alert, route: &str, at: DateTime<Utc>) -> Delivery {
    Delivery {
        received_at: at,
        source: "127.0.0.1:5000".into(),
        receiver: "medic".into(),
        status: a.status,
        group_key: "{}".into(),
        external_url: String::new(),
        truncated_alerts: 0,
        extra: Map::new(),
        alerts: vec![(
            a,
            Routed::Runbook {
                route: route.into(),
                runbook: "fix.rhai".into(),
            },
        )],
    }
}

/// Opens an incident for `instance` on `route` at `at`; its id.
async fn fire(store: &Store, instance: &str, route: &str, at: DateTime<Utc>) -> String {
    store
        .ingest(delivery(alert(instance, Status::Firing), route, at))
        .await
        .unwrap();
    latest(store, instance).await.id
}

async fn latest(store: &Store, instance: &str) -> Incident {
    let all = store
        .incidents(IncidentFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let found = all
        .into_iter()
        .find(|i| i.labels["instance"] == instance)
        .expect("the incident");
    store.incident(&found.id).await.unwrap().unwrap()
}

fn plan() -> Plan {
    Plan {
        runbook: "fix.rhai".into(),
        sha256: "abc".into(),
        steps: vec![PlannedStep::exec(
            "systemctl",
            &["restart".into(), "db".into()],
        )],
        truncated: false,
        end: PlanEnd::Completed,
    }
}

fn decision(approve: bool, by: &str, role: Option<Role>) -> Decision {
    Decision {
        approve,
        by: by.into(),
        role,
        reason: (!approve).then(|| "the replica is fine".to_string()),
        via: Via::Api,
    }
}

fn events(i: &Incident, name: &str) -> Vec<serde_json::Value> {
    i.timeline
        .iter()
        .flatten()
        .filter(|e| e.event == name)
        .map(|e| e.detail.clone())
        .collect()
}

async fn kinds(store: &Store, id: &str) -> Vec<(String, String, String)> {
    let dump = store.outbox_rows().await.unwrap();
    dump.rows
        .into_iter()
        .filter(|r| r.incident == id)
        .map(|r| (r.key, r.channel, r.state))
        .collect()
}

#[tokio::test]
async fn an_approval_route_waits_with_a_deadline_and_nothing_can_claim_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let at = Utc::now();
    let id = fire(&store, "db1", "db", at).await;
    let auto = fire(&store, "db2", "auto", at).await;
    let i = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(i.state, State::AwaitingApproval);
    let a = i.approval.clone().expect("an approval");
    assert_eq!(a.until, stamp(at + chrono::Duration::minutes(15)));
    assert_eq!((a.plan, a.approved_by), (None, None));
    assert_eq!(events(&i, "state_changed")[0]["to"], "awaiting_approval");
    // Not in the queue, and a claim by id takes nothing.
    let queued: Vec<String> = store
        .queued(10)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(queued, std::slice::from_ref(&auto));
    let claims = store
        .claim(vec![id.clone(), auto.clone()], |_| json!({}))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].id, auto);
    assert!(
        claims[0].plan.is_none(),
        "a route without approval runs unbound"
    );
    assert!(store
        .incident(&auto)
        .await
        .unwrap()
        .unwrap()
        .approval
        .is_none());
}

#[tokio::test]
async fn the_plan_is_recorded_once_with_its_request_through_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = fire(&store, "db1", "db", Utc::now()).await;
    assert!(store.record_plan(&id, plan()).await.unwrap());
    let mut other = plan();
    other.steps.clear();
    assert!(
        !store.record_plan(&id, other).await.unwrap(),
        "a plan never changes"
    );
    let i = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(i.approval.unwrap().plan, Some(plan()));
    let requested = events(
        &store.incident(&id).await.unwrap().unwrap(),
        "approval_requested",
    );
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["plan_digest"], plan().digest());
    assert_eq!(requested[0]["approvers"], json!(["alice", "admin"]));
    let rows = kinds(&store, &id).await;
    assert_eq!(
        rows,
        [
            (
                format!("{id}/approval/1/mail"),
                "mail".into(),
                "pending".into()
            ),
            (
                format!("{id}/approval/2/pager"),
                "pager".into(),
                "pending".into()
            ),
        ]
    );
    let due = store.outbox_peek(Utc::now(), 10).await.unwrap();
    assert_eq!(due.len(), 1, "tier two waits its delay");
    assert_eq!(due[0].kind, NotificationKind::ApprovalRequested);
}

#[tokio::test]
async fn approval_needs_the_plan_and_an_approver_and_binds_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = fire(&store, "db1", "db", Utc::now()).await;
    let yes = |by: &str, role| decision(true, by, role);
    assert_eq!(
        store.decide(&id, yes("alice", None)).await.unwrap(),
        Decided::NoPlanYet
    );
    store.record_plan(&id, plan()).await.unwrap();
    for (by, role) in [
        ("bob", None),
        ("bob", Some(Role::Responder)),
        ("link:mail", None),
    ] {
        assert_eq!(
            store.decide(&id, yes(by, role)).await.unwrap(),
            Decided::NotAnApprover,
            "{by}"
        );
    }
    assert_eq!(
        store.incident(&id).await.unwrap().unwrap().state,
        State::AwaitingApproval
    );
    // A user with the listed role decides.
    assert_eq!(
        store
            .decide(&id, yes("carol", Some(Role::Admin)))
            .await
            .unwrap(),
        Decided::Approved
    );
    let i = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(i.state, State::Queued);
    let a = i.approval.clone().unwrap();
    assert_eq!(a.approved_by.as_deref(), Some("carol"));
    let approved = events(&i, "approved");
    assert_eq!(approved[0]["by"], "carol");
    assert_eq!(approved[0]["via"], "api");
    assert_eq!(approved[0]["plan_digest"], plan().digest());
    // Decided once: a second decision changes nothing.
    assert_eq!(
        store.decide(&id, yes("alice", None)).await.unwrap(),
        Decided::NotAwaiting(State::Queued)
    );
    assert_eq!(
        store
            .decide(&id, decision(false, "alice", None))
            .await
            .unwrap(),
        Decided::NotAwaiting(State::Queued)
    );
    // The request's notifications not sent yet are cancelled.
    assert!(kinds(&store, &id)
        .await
        .iter()
        .all(|(_, _, s)| s == "cancelled"));
    // The claim carries the approved plan.
    let claims = store.claim(vec![id.clone()], |_| json!({})).await.unwrap();
    assert_eq!(claims[0].plan, Some(plan()));
    assert_eq!(
        store.decide("nope", yes("alice", None)).await.unwrap(),
        Decided::NotFound
    );
}

#[tokio::test]
async fn a_rejection_escalates_with_who_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = fire(&store, "web1", "web", Utc::now()).await;
    store.record_plan(&id, plan()).await.unwrap();
    assert_eq!(
        store
            .decide(&id, decision(false, "bob", None))
            .await
            .unwrap(),
        Decided::Rejected
    );
    let i = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(
        (i.state, i.reason),
        (State::Escalated, Some(Reason::Rejected))
    );
    assert_eq!(
        i.message.as_deref(),
        Some("rejected by bob: the replica is fine")
    );
    assert_eq!(events(&i, "rejected")[0]["reason"], "the replica is fine");
    let rows = kinds(&store, &id).await;
    // The request is cancelled; the escalation is told through the policy, as any other.
    assert!(rows
        .iter()
        .any(|(k, _, s)| k == &format!("{id}/approval/1/mail") && s == "cancelled"));
    assert!(rows
        .iter()
        .any(|(k, _, s)| k == &format!("{id}/1/1/mail") && s == "pending"));
    assert!(store
        .claim(vec![id.clone()], |_| json!({}))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_unanswered_request_times_out_at_its_deadline_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Opened 14 minutes ago: a minute left.
    let id = fire(
        &store,
        "db1",
        "db",
        Utc::now() - chrono::Duration::minutes(14),
    )
    .await;
    assert!(!store.approval_timed_out(&id).await.unwrap());
    let left = store.awaiting_approval(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(!left[0].planned);
    // Opened 16 minutes ago: due.
    let late = fire(
        &store,
        "db2",
        "db",
        Utc::now() - chrono::Duration::minutes(16),
    )
    .await;
    assert!(store.approval_timed_out(&late).await.unwrap());
    assert!(!store.approval_timed_out(&late).await.unwrap(), "once");
    let i = store.incident(&late).await.unwrap().unwrap();
    assert_eq!(
        (i.state, i.reason),
        (State::Escalated, Some(Reason::ApprovalTimeout))
    );
    assert!(i.message.as_deref().unwrap().contains("(15m)"));
    assert_eq!(events(&i, "approval_timeout").len(), 1);
    assert_eq!(
        store
            .decide(&late, decision(true, "alice", None))
            .await
            .unwrap(),
        Decided::NotAwaiting(State::Escalated)
    );
    assert_eq!(
        store.incident(&id).await.unwrap().unwrap().state,
        State::AwaitingApproval
    );
}

#[tokio::test]
async fn a_resolution_while_waiting_withdraws_the_request_from_who_was_told() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = fire(&store, "db1", "db", Utc::now()).await;
    store.record_plan(&id, plan()).await.unwrap();
    // Tier one's request goes out.
    let due = store.outbox_due(Utc::now(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    store
        .outbox_attempt(due[0].id, Attempt::Sent)
        .await
        .unwrap();
    store
        .ingest(delivery(alert("db1", Status::Resolved), "db", Utc::now()))
        .await
        .unwrap();
    let i = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(
        (i.state, i.outcome),
        (State::Resolved, Some(Outcome::ResolvedBeforeAction))
    );
    assert_eq!(events(&i, "approval_withdrawn")[0]["told"], json!(["mail"]));
    let rows = kinds(&store, &id).await;
    assert_eq!(
        rows,
        [
            (
                format!("{id}/approval/1/mail"),
                "mail".into(),
                "sent".into()
            ),
            (
                format!("{id}/approval/2/pager"),
                "pager".into(),
                "cancelled".into()
            ),
            (
                format!("{id}/withdrawn/mail"),
                "mail".into(),
                "pending".into()
            ),
        ]
    );
    assert_eq!(
        store
            .decide(&id, decision(true, "alice", None))
            .await
            .unwrap(),
        Decided::NotAwaiting(State::Resolved)
    );
}

#[tokio::test]
async fn a_request_delivered_after_the_withdrawal_is_withdrawn_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = fire(&store, "db1", "db", Utc::now()).await;
    store.record_plan(&id, plan()).await.unwrap();
    // Claimed for sending; the alert resolves while it is on its way.
    let due = store.outbox_due(Utc::now(), 10).await.unwrap();
    store
        .ingest(delivery(alert("db1", Status::Resolved), "db", Utc::now()))
        .await
        .unwrap();
    store
        .outbox_attempt(due[0].id, Attempt::Sent)
        .await
        .unwrap();
    let rows = kinds(&store, &id).await;
    assert!(
        rows.contains(&(
            format!("{id}/withdrawn/mail"),
            "mail".into(),
            "pending".into()
        )),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_signed_link_decides_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let one = fire(&store, "web1", "web", Utc::now()).await;
    let two = fire(&store, "web2", "web", Utc::now()).await;
    for id in [&one, &two] {
        store.record_plan(id, plan()).await.unwrap();
    }
    let by_link = |approve| Decision {
        approve,
        by: "link:mail".into(),
        role: None,
        reason: None,
        via: Via::Link {
            nonce: "n1".into(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        },
    };
    assert_eq!(
        store.decide(&one, by_link(true)).await.unwrap(),
        Decided::Approved
    );
    assert_eq!(
        store.decide(&two, by_link(false)).await.unwrap(),
        Decided::LinkUsed
    );
    assert!(store.link_used("n1").await.unwrap());
    assert_eq!(
        store.incident(&two).await.unwrap().unwrap().state,
        State::AwaitingApproval
    );
}

/// Every move of the table into a state that needs the approval record is refused for
/// an incident that waits without one, whatever code asks for it.
#[tokio::test]
async fn a_move_to_queued_without_the_approval_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = fire(&store, "db1", "db", Utc::now()).await;
    let i = id.clone();
    let forced = store
        .inner
        .write(move |w| {
            let now = stamp(w.cx.now());
            w.transition(&i, Move::new(State::AwaitingApproval, State::Queued), &now)
        })
        .await;
    match forced {
        Err(StoreError::Unapproved { id: got, to }) => {
            assert_eq!((got, to), (id.clone(), State::Queued))
        }
        other => panic!("{other:?}"),
    }
    let i = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(i.state, State::AwaitingApproval);
    assert!(events(&i, "state_changed")
        .iter()
        .all(|e| e["to"] != "queued"));
}

// ----- the property -----

#[derive(Debug, Clone)]
enum Op {
    /// Alert `n` fires (a new period when its last incident closed).
    Fire { n: usize },
    /// Alert `n` resolves.
    Resolve { n: usize },
    /// The worker makes the plan of every waiting incident.
    Plan,
    /// Someone decides on alert `n`'s incident: approve or not, as an approver or not.
    Decide {
        n: usize,
        approve: bool,
        approver: bool,
    },
    /// Deadlines pass: every waiting incident is timed out.
    Timeout,
    /// The runner claims everything queued, and ends each run.
    Run { outcome: u8 },
    /// Any code moves alert `n`'s incident along move `m` of the table, unconditionally
    /// (as a future feature might): the store must refuse what needs the record.
    Force { n: usize, m: usize },
    /// medic restarts.
    Restart,
}

const ALERTS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let n = 0..ALERTS;
    prop_oneof![
        3 => n.clone().prop_map(|n| Op::Fire { n }),
        1 => n.clone().prop_map(|n| Op::Resolve { n }),
        2 => Just(Op::Plan),
        3 => (n.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(n, approve, approver)| Op::Decide { n, approve, approver }),
        1 => Just(Op::Timeout),
        2 => (0..3u8).prop_map(|outcome| Op::Run { outcome }),
        3 => (n, 0..MOVES.len()).prop_map(|(n, m)| Op::Force { n, m }),
        1 => Just(Op::Restart),
    ]
}

/// Runs `ops`; then checks every incident's timeline: a run starts, or it is queued, only
/// after its approval, and each run of an incident that waited is bound to its plan.
async fn check_sequence(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    // Starts long ago, so that a timeout can be forced by moving deliveries' time.
    let mut at = Utc::now() - chrono::Duration::days(1);
    let instance = |n: usize| format!("db{n}");
    for op in ops {
        at += chrono::Duration::seconds(1);
        match op {
            Op::Fire { n } => {
                let mut a = alert(&instance(n), Status::Firing);
                a.starts_at = at;
                store.ingest(delivery(a, "db", at)).await.unwrap();
            }
            Op::Resolve { n } => {
                let mut a = alert(&instance(n), Status::Resolved);
                a.starts_at = at - chrono::Duration::hours(1);
                a.ends_at = Some(at);
                store.ingest(delivery(a, "db", at)).await.unwrap();
            }
            Op::Plan => {
                for w in store.awaiting_approval(100).await.unwrap() {
                    if !w.planned {
                        store.record_plan(&w.id, plan()).await.unwrap();
                    }
                }
            }
            Op::Decide {
                n,
                approve,
                approver,
            } => {
                let Some(i) = find(&store, &instance(n)).await else {
                    continue;
                };
                let by = if approver { "alice" } else { "mallory" };
                store.decide(&i, decision(approve, by, None)).await.unwrap();
            }
            Op::Timeout => {
                for w in store.awaiting_approval(100).await.unwrap() {
                    // Deadlines are 15 minutes after opening, in the past for these.
                    store.approval_timed_out(&w.id).await.unwrap();
                }
            }
            Op::Run { outcome } => {
                let ids = store
                    .queued(100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|q| q.id)
                    .collect();
                for c in store.claim(ids, |_| json!({})).await.unwrap() {
                    prop_assert_eq!(c.plan.clone(), Some(plan()), "run unbound: {:?}", c);
                    let result = match outcome {
                        0 => RunResult::Completed,
                        1 => RunResult::Requeue {
                            message: "again".into(),
                        },
                        _ => RunResult::Escalated {
                            reason: Reason::OffPlan,
                            message: "step 1 is not the approved plan's".into(),
                        },
                    };
                    store.finish_run(&c.id, result, json!({})).await.unwrap();
                }
            }
            Op::Force { n, m } => {
                let Some(id) = find(&store, &instance(n)).await else {
                    continue;
                };
                let (Some(from), to) = MOVES[m] else { continue };
                let forced = store
                    .inner
                    .write(move |w| {
                        let now = stamp(w.cx.now());
                        w.transition(&id, Move::new(from, to), &now)
                    })
                    .await;
                match forced {
                    Ok(_) | Err(StoreError::Unapproved { .. }) => {}
                    Err(e) => prop_assert!(false, "forced {from:?} -> {to:?}: {e}"),
                }
            }
            Op::Restart => {
                store.close().await;
                store = open(&dir);
            }
        }
    }
    let all = store
        .incidents(IncidentFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for i in all {
        let i = store.incident(&i.id).await.unwrap().unwrap();
        let mut approved = false;
        for e in i.timeline.iter().flatten() {
            match e.event.as_str() {
                "approved" => approved = true,
                "run_started" => {
                    prop_assert!(approved, "{} ran without approval: {:#?}", i.id, i.timeline)
                }
                "state_changed"
                    if matches!(e.detail["to"].as_str(), Some("queued" | "remediating")) =>
                {
                    prop_assert!(
                        approved,
                        "{} was {} without approval: {:#?}",
                        i.id,
                        e.detail["to"],
                        i.timeline
                    )
                }
                _ => {}
            }
        }
        if approved {
            prop_assert!(i
                .approval
                .as_ref()
                .is_some_and(|a| a.approved_by.as_deref() == Some("alice")));
        }
    }
    store.close().await;
    Ok(())
}

async fn find(store: &Store, instance: &str) -> Option<String> {
    let all = store
        .incidents(IncidentFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    all.into_iter()
        .find(|i| i.labels.get("instance").map(String::as_str) == Some(instance))
        .map(|i| i.id)
}

#[test]
fn no_incident_that_waited_for_approval_runs_or_is_queued_without_an_approval_record() {
    // Each case opens a database: fewer on PostgreSQL, where that is slower.
    let cases = match std::env::var("MEDIC_TEST_STORE").as_deref() {
        Ok("postgres") => 12,
        _ => 48,
    };
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            rt.block_on(check_sequence(ops))
        })
        .unwrap();
}
