//! Store tests against a real SQLite file in a temporary directory.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use serde_json::Map;

use super::*;
use crate::alert::{Alert, Status};
use crate::audit::Verifier;

/// A `DiskFull` alert on instance `fp`, started at 10:`minute` on 2026-11-23
/// (the escalation tests use it too).
pub(super) fn alert(fp: &str, status: Status, minute: u32) -> Alert {
    let labels: BTreeMap<String, String> = [("alertname", "DiskFull"), ("instance", fp)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Alert {
        status,
        labels,
        annotations: BTreeMap::new(),
        starts_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, minute, 0).unwrap(),
        ends_at: None,
        generator_url: String::new(),
        fingerprint: fp.to_string(),
        extra: Map::new(),
    }
}

fn delivery(alerts: Vec<Alert>) -> Delivery {
    Delivery {
        received_at: Utc::now(),
        source: "127.0.0.1:5000".into(),
        receiver: "medic".into(),
        status: Status::Firing,
        group_key: "{}".into(),
        external_url: String::new(),
        truncated_alerts: 0,
        extra: Map::new(),
        alerts: alerts
            .into_iter()
            .map(|a| {
                (
                    a,
                    Routed::Runbook {
                        route: "disk".into(),
                        runbook: "disk_full.rhai".into(),
                    },
                )
            })
            .collect(),
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    let url = crate::store::postgres::test_url(&dir.path().join("data/medic.db"));
    Store::open(&url, StoreMetrics::default()).expect("open")
}

/// Ingests one alert, routed to the disk runbook.
async fn ingest(store: &Store, alert: Alert) -> Vec<AlertEffect> {
    store.ingest(delivery(vec![alert])).await.unwrap()
}

/// The newest `limit` incidents, in any state.
async fn incidents(store: &Store, limit: usize) -> Vec<Incident> {
    store
        .incidents(IncidentFilter {
            limit,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn verify(store: &Store) -> u64 {
    let mut v = Verifier::default();
    for e in store.audit_page(0, 100_000).await.unwrap() {
        v.check(&e).unwrap_or_else(|b| panic!("{b}"));
    }
    v.summary().0
}

#[tokio::test]
async fn firing_resend_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let fx = |s, m| delivery(vec![alert("aaaa", s, m)]);

    assert_eq!(
        store.ingest(fx(Status::Firing, 0)).await.unwrap(),
        [AlertEffect::Opened(State::Queued)]
    );
    assert_eq!(
        store.ingest(fx(Status::Firing, 0)).await.unwrap(),
        [AlertEffect::Deduplicated]
    );
    let first = incidents(&store, 1).await[0].id.clone();
    assert_eq!(
        store.ingest(fx(Status::Resolved, 0)).await.unwrap(),
        [AlertEffect::Resolved {
            id: first,
            outcome: Outcome::ResolvedBeforeAction
        }]
    );
    // A late retry of the firing never reopens it.
    assert_eq!(
        store.ingest(fx(Status::Firing, 0)).await.unwrap(),
        [AlertEffect::Stale]
    );
    // A new firing period opens a new incident.
    assert_eq!(
        store.ingest(fx(Status::Firing, 7)).await.unwrap(),
        [AlertEffect::Opened(State::Queued)]
    );

    let all = incidents(&store, 10).await;
    assert_eq!(all.len(), 2);
    let (newest, first) = (&all[0], &all[1]);
    assert_eq!(newest.state, State::Queued);
    assert_eq!(first.state, State::Resolved);
    assert_eq!(first.outcome, Some(Outcome::ResolvedBeforeAction));
    assert_eq!(first.deliveries, 3);
    assert_eq!(first.runbook.as_deref(), Some("disk_full.rhai"));

    let shown = store.incident(&first.id).await.unwrap().unwrap();
    let events: Vec<&str> = shown
        .timeline
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.event.as_str())
        .collect();
    assert_eq!(
        events,
        [
            "incident_opened",
            "route_matched",
            "alert_deduplicated",
            "state_changed",
            "alert_stale"
        ]
    );
    // 5 deliveries + the entries above + the second incident's two.
    assert_eq!(verify(&store).await, 5 + 5 + 2);
    store.close().await;
}

/// Alertmanager merged the alert from a Prometheus pair and kept the earlier `startsAt`:
/// the same firing period, so its resolution resolves the incident.
#[tokio::test]
async fn ha_prometheus_earlier_starts_at_resolves_instead_of_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(
        ingest(&store, alert("haha", Status::Firing, 5)).await,
        [AlertEffect::Opened(State::Queued)]
    );
    assert_eq!(
        ingest(&store, alert("haha", Status::Firing, 3)).await,
        [AlertEffect::Deduplicated]
    );
    let mut resolved = alert("haha", Status::Resolved, 3);
    resolved.ends_at = Some(Utc.with_ymd_and_hms(2026, 11, 23, 10, 9, 0).unwrap());
    let effect = ingest(&store, resolved).await;
    assert!(
        matches!(effect[..], [AlertEffect::Resolved { .. }]),
        "{effect:?}"
    );
    let all = incidents(&store, 10).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, State::Resolved);
    assert_eq!(all[0].deliveries, 3);
    // The incident keeps the start it opened with.
    assert!(
        all[0].started_at.starts_with("2026-11-23T10:05:00"),
        "{}",
        all[0].started_at
    );
    // A resolution that ended before the incident began is an older period's: stale.
    assert_eq!(
        ingest(&store, alert("haha", Status::Firing, 12)).await,
        [AlertEffect::Opened(State::Queued)]
    );
    let mut old = alert("haha", Status::Resolved, 3);
    old.ends_at = Some(Utc.with_ymd_and_hms(2026, 11, 23, 10, 9, 0).unwrap());
    assert_eq!(ingest(&store, old).await, [AlertEffect::Stale]);
    verify(&store).await;
    store.close().await;
}

/// An ignored incident is closed, but its alert's resends and resolution are its own, not
/// stale; a newer firing period opens a new incident.
#[tokio::test]
async fn ignored_incident_resends_are_duplicates_not_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let fx = |a| {
        let mut d = delivery(vec![a]);
        d.alerts[0].1 = Routed::Ignore {
            route: "quiet".into(),
        };
        d
    };
    assert_eq!(
        store
            .ingest(fx(alert("igno", Status::Firing, 5)))
            .await
            .unwrap(),
        [AlertEffect::Opened(State::Ignored)]
    );
    for a in [
        alert("igno", Status::Firing, 5),
        alert("igno", Status::Firing, 3),
        alert("igno", Status::Resolved, 5),
    ] {
        assert_eq!(
            store.ingest(fx(a)).await.unwrap(),
            [AlertEffect::Deduplicated]
        );
    }
    assert_eq!(
        store
            .ingest(fx(alert("igno", Status::Firing, 9)))
            .await
            .unwrap(),
        [AlertEffect::Opened(State::Ignored)]
    );
    let all = incidents(&store, 10).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].deliveries, 4);
    verify(&store).await;
    store.close().await;
}

#[tokio::test]
async fn no_runbook_is_escalated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut d = delivery(vec![alert("bbbb", Status::Firing, 0)]);
    d.alerts[0].1 = Routed::NoRunbook {
        why: "no route matched the alert".into(),
    };
    assert_eq!(
        store.ingest(d).await.unwrap(),
        [AlertEffect::Opened(State::Escalated)]
    );
    let list = store
        .incidents(IncidentFilter {
            state: Some(State::Escalated),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason, Some(Reason::NoRunbook));
    let json = serde_json::to_value(&list[0]).unwrap();
    assert_eq!(json["state"], "escalated");
    assert_eq!(json["reason"], "no_runbook");
    store.close().await;
}

#[tokio::test]
async fn the_filter_selects_by_route_reason_and_start_and_pages_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // 60 routed to the disk runbook (minutes 0..60), then 3 escalated with no route.
    for m in 0..60 {
        ingest(&store, alert(&format!("r{m:02}"), Status::Firing, m)).await;
    }
    let mut d = delivery(
        (0..3)
            .map(|m| alert(&format!("n{m}"), Status::Firing, m))
            .collect(),
    );
    for a in &mut d.alerts {
        a.1 = Routed::NoRunbook {
            why: "no route matched the alert".into(),
        };
    }
    store.ingest(d).await.unwrap();
    let list = |f: IncidentFilter| {
        let store = store.clone();
        async move { store.incidents(f).await.unwrap() }
    };
    let at = |m: u32| Some(Utc.with_ymd_and_hms(2026, 11, 23, 10, m, 0).unwrap());
    let routed = list(IncidentFilter {
        route: Some("disk".into()),
        limit: 1000,
        ..Default::default()
    })
    .await;
    assert_eq!(routed.len(), 60);
    let unrouted = list(IncidentFilter {
        reason: Some(Reason::NoRunbook),
        limit: 1000,
        ..Default::default()
    })
    .await;
    assert_eq!(unrouted.len(), 3);
    assert!(unrouted.iter().all(|i| i.route.is_none()));
    // Paging past 50, newest first: the second page holds the 10 oldest routed ones.
    let page2 = list(IncidentFilter {
        route: Some("disk".into()),
        offset: 50,
        limit: 51,
        ..Default::default()
    })
    .await;
    let names: Vec<_> = page2.iter().map(|i| i.fingerprint.as_str()).collect();
    assert_eq!(
        names,
        (0..10)
            .rev()
            .map(|m| format!("r{m:02}"))
            .collect::<Vec<_>>()
    );
    // Started in [10:10, 10:20): ten routed ones.
    let window = list(IncidentFilter {
        route: Some("disk".into()),
        since: at(10),
        until: at(20),
        limit: 1000,
        ..Default::default()
    })
    .await;
    assert_eq!(window.len(), 10);
    assert_eq!(window[0].fingerprint, "r19");
    assert_eq!(window[9].fingerprint, "r10");
    let none = list(IncidentFilter {
        since: at(59),
        reason: Some(Reason::NoRunbook),
        limit: 10,
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());
    store.close().await;
}

#[tokio::test]
async fn concurrent_deliveries_share_commits_and_never_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        // 50 distinct alerts, each delivered 4 times concurrently.
        let fp = format!("fp{:02}", i % 50);
        tasks.push(tokio::spawn(async move {
            ingest(&store, alert(&fp, Status::Firing, 0)).await
        }));
    }
    let mut opened = 0;
    for t in tasks {
        if matches!(t.await.unwrap()[0], AlertEffect::Opened(_)) {
            opened += 1;
        }
    }
    assert_eq!(opened, 50);
    let all = incidents(&store, 1000).await;
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(|i| i.deliveries == 4));
    verify(&store).await;
    store.close().await;
}

#[tokio::test]
async fn survives_reopen_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    ingest(&store, alert("cccc", Status::Firing, 0)).await;
    store.close().await;
    assert!(matches!(
        store.ingest(delivery(vec![])).await,
        Err(StoreError::Closed)
    ));

    let store = open(&dir);
    assert_eq!(
        ingest(&store, alert("cccc", Status::Firing, 0)).await,
        [AlertEffect::Deduplicated]
    );
    assert_eq!(verify(&store).await, 5);
    store.close().await;
}

#[tokio::test]
async fn audit_rows_cannot_be_updated_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    ingest(&store, alert("dddd", Status::Firing, 0)).await;
    store.close().await;
    let path = dir.path().join("data/medic.db");
    let url = crate::store::postgres::test_url(&path);
    let errors: Vec<String> = if url.starts_with("postgres") {
        std::thread::spawn(move || {
            let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            vec![
                c.execute("UPDATE audit SET detail = '{}' WHERE seq = 1", &[]),
                c.execute("DELETE FROM audit", &[]),
                c.execute("TRUNCATE audit", &[]),
            ]
            .into_iter()
            .map(|r| format!("{:?}", r.unwrap_err()))
            .collect()
        })
        .join()
        .unwrap()
    } else {
        let conn = rusqlite::Connection::open(path).unwrap();
        vec![
            conn.execute("UPDATE audit SET detail = '{}' WHERE seq = 1", []),
            conn.execute("DELETE FROM audit", []),
        ]
        .into_iter()
        .map(|r| r.unwrap_err().to_string())
        .collect()
    };
    for err in errors {
        assert!(err.contains("append-only"), "{err}");
    }
}

#[test]
fn unsupported_urls_are_named() {
    let err = Store::open("mysql://x", StoreMetrics::default())
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "store url \"mysql://x\": unsupported scheme; expected sqlite://, postgres:// or postgresql://"
    );
}

#[test]
fn outbox_states_and_kinds_read_back_what_they_write() {
    for state in OutboxState::ALL {
        assert_eq!(OutboxState::parse(state.as_str()), Some(state));
    }
    let names: Vec<_> = OutboxState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["pending", "sent", "failed", "cancelled"]);
    assert_eq!(OutboxState::parse("Pending"), None);
    for kind in NotificationKind::ALL {
        assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
    }
    let names: Vec<_> = NotificationKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "escalated",
            "resolved",
            "approval_requested",
            "approval_withdrawn"
        ]
    );
    assert_eq!(NotificationKind::parse("acknowledged"), None);
}

/// A move the transition table does not allow is refused with an error that names the
/// incident and both states, and nothing of it is written: a resolved incident cannot
/// start a run.
#[tokio::test]
async fn an_illegal_move_is_refused_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    ingest(&store, alert("illegal", Status::Firing, 0)).await;
    let effects = ingest(&store, alert("illegal", Status::Resolved, 0)).await;
    let [AlertEffect::Resolved { id, .. }] = effects.as_slice() else {
        panic!("not resolved: {effects:?}");
    };
    let entries = store.audit_page(0, 1000).await.unwrap().len();

    let moved = id.clone();
    let err = store
        .inner
        .write(move |w| {
            let now = stamp(w.cx.now());
            let m = transition::Move::new(State::Resolved, State::Remediating);
            w.transition(&moved, m, &now)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalMove { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("incident {id}: the move from resolved to remediating is not allowed")
    );
    assert!(!err.is_transient());

    let incident = store.incident(id).await.unwrap().unwrap();
    assert_eq!(incident.state, State::Resolved);
    assert_eq!(store.audit_page(0, 1000).await.unwrap().len(), entries);
    store.close().await;
}

/// The SQL names states as text (`state = 'escalated'`): every such name in the store's
/// queries is one `State::as_str` or `OutboxState::as_str` gives, so that renaming a state
/// cannot leave a query matching nothing.
#[test]
fn every_state_named_in_sql_is_a_state() {
    let sources = [
        include_str!("incidents.rs"),
        include_str!("transition.rs"),
        include_str!("runs.rs"),
        include_str!("guards.rs"),
        include_str!("outbox.rs"),
        include_str!("storm.rs"),
        include_str!("reads.rs"),
        include_str!("migrate.rs"),
    ];
    let named = regex::Regex::new(
        r"state\s*(?:=|<>|!=|IN|NOT IN)\s*\(?\s*('[a-z_]+'(?:\s*,\s*'[a-z_]+')*)",
    )
    .unwrap();
    let word = regex::Regex::new(r"'([a-z_]+)'").unwrap();
    let mut seen = 0;
    for source in sources {
        for m in named.captures_iter(source) {
            for w in word.captures_iter(&m[1]) {
                let name = &w[1];
                assert!(
                    State::parse(name).is_some() || OutboxState::parse(name).is_some(),
                    "a query names the state {name:?}, which is not a state"
                );
                seen += 1;
            }
        }
    }
    assert!(
        seen > 10,
        "the pattern found only {seen} state names: is it still right?"
    );
}
