//! Retention against a real store (SQLite, or PostgreSQL with `MEDIC_TEST_STORE=postgres`)
//! on paused time: what goes, what stays, the checkpoint, the trigger, batches and the
//! lease.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Map;

use crate::alert::{Alert, Status};
use crate::audit::checkpoint::{ChainCheck, Source, Start};
use crate::clock::Clock;
use crate::guard::Limit;
use crate::incident::{Reason, State};
use crate::metrics::StoreMetrics;
use crate::store::{
    AlertEffect, Delivery, Incident, IncidentFilter, Prune, Pruned, Refusal, Routed, Store,
};

const DAY: Duration = Duration::from_secs(86400);
const RETENTION: Duration = Duration::from_secs(180 * 86400);

fn open(url: &str, clock: &Clock) -> Store {
    Store::open_with_clock(url, StoreMetrics::default(), clock.clone()).expect("open")
}

fn url_in(dir: &tempfile::TempDir) -> String {
    crate::store::postgres::test_url(&dir.path().join("data/medic.db"))
}

fn alert(fp: &str, status: Status, clock: &Clock) -> Alert {
    let labels: BTreeMap<String, String> = [("alertname", "DiskFull"), ("instance", fp)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Alert {
        status,
        labels,
        annotations: BTreeMap::new(),
        // Every firing of one fingerprint is the same period.
        starts_at: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc(),
        ends_at: None,
        generator_url: String::new(),
        fingerprint: fp.to_string(),
        extra: Map::new(),
    }
    .at(clock)
}

trait At {
    fn at(self, clock: &Clock) -> Self;
}

impl At for Alert {
    fn at(mut self, clock: &Clock) -> Alert {
        if self.status == Status::Resolved {
            self.ends_at = Some(clock.now());
        }
        self
    }
}

async fn send(
    store: &Store,
    clock: &Clock,
    fp: &str,
    status: Status,
    routed: Routed,
) -> AlertEffect {
    let d = Delivery {
        received_at: clock.now(),
        source: "127.0.0.1:5000".into(),
        receiver: "medic".into(),
        status,
        group_key: "{}".into(),
        external_url: String::new(),
        truncated_alerts: 0,
        extra: Map::new(),
        alerts: vec![(alert(fp, status, clock), routed)],
    };
    store.ingest(d).await.unwrap().remove(0)
}

fn runbook() -> Routed {
    Routed::Runbook {
        route: "disk".into(),
        runbook: "disk_full.rhai".into(),
    }
}

fn ignore() -> Routed {
    Routed::Ignore {
        route: "watchdog".into(),
    }
}

async fn all(store: &Store) -> Vec<Incident> {
    store
        .incidents(IncidentFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn id_of(store: &Store, fp: &str) -> String {
    all(store)
        .await
        .into_iter()
        .find(|i| i.fingerprint == fp)
        .unwrap_or_else(|| panic!("no incident of {fp}"))
        .id
}

/// Escalates queued incident `fp` (a refusal: nothing else to set up).
async fn escalate(store: &Store, fp: &str) -> String {
    let id = id_of(store, fp).await;
    store
        .refuse(vec![Refusal {
            id: id.clone(),
            reason: Reason::Paused,
            limit: Limit::Paused,
            message: "paused".into(),
        }])
        .await
        .unwrap();
    id
}

/// The chain as `medic audit verify` checks it.
async fn verify(store: &Store) -> crate::audit::checkpoint::Report {
    let mut check = ChainCheck::new(Source::Store);
    let mut pages = store.audit_scan(0);
    while let Some(page) = pages.recv().await {
        for e in &page.unwrap() {
            check.check(e).unwrap_or_else(|b| panic!("{b}"));
        }
    }
    check.finish().unwrap_or_else(|b| panic!("{b}"))
}

/// Batches until nothing more goes; what they removed in all.
async fn prune_all(store: &Store) -> Pruned {
    let mut total = Pruned::default();
    loop {
        let Prune::Pruned(p) = store.prune(RETENTION).await.unwrap() else {
            panic!("the only replica does not hold the lease");
        };
        total.incidents += p.incidents;
        total.audit_entries += p.audit_entries;
        total.checkpoint = p.checkpoint.or(total.checkpoint);
        total.held_back = p.held_back.clone();
        if p.is_done() {
            return total;
        }
    }
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    store
        .inner
        .read(move |c| c.query_row(sql, (), |r| r.get(0)))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn history_goes_and_open_work_stays_with_its_audit_entries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::following_tokio(chrono::Utc::now());
    let store = open(&url_in(&dir), &clock);
    // History first, so that the audit log's front is theirs.
    send(&store, &clock, "resolved", Status::Firing, runbook()).await;
    send(&store, &clock, "resolved", Status::Resolved, runbook()).await;
    send(&store, &clock, "watchdog", Status::Firing, ignore()).await;
    send(&store, &clock, "acked-gone", Status::Firing, runbook()).await;
    let acked_gone = escalate(&store, "acked-gone").await;
    store
        .ack(
            &acked_gone,
            Some("alice".into()),
            crate::incident::AckVia::Api,
        )
        .await
        .unwrap();
    // Open work.
    send(&store, &clock, "escalated", Status::Firing, runbook()).await;
    let escalated = escalate(&store, "escalated").await;
    send(&store, &clock, "acked-firing", Status::Firing, runbook()).await;
    let acked_firing = escalate(&store, "acked-firing").await;
    store
        .ack(
            &acked_firing,
            Some("bob".into()),
            crate::incident::AckVia::Api,
        )
        .await
        .unwrap();
    send(&store, &clock, "queued", Status::Firing, runbook()).await;
    // Closed, but with a silence still to expire.
    send(&store, &clock, "silenced", Status::Firing, runbook()).await;
    let silenced = id_of(&store, "silenced").await;
    store
        .record_silence(&silenced, "s-1", clock.now() + chrono::Duration::days(1))
        .await
        .unwrap();
    send(&store, &clock, "silenced", Status::Resolved, runbook()).await;

    // Closed recently: kept.
    tokio::time::advance(100 * DAY).await;
    send(&store, &clock, "recent", Status::Firing, runbook()).await;
    send(&store, &clock, "recent", Status::Resolved, runbook()).await;
    // The acknowledged alert still fires: Alertmanager resends it; the watchdog's too.
    tokio::time::advance(79 * DAY).await;
    send(&store, &clock, "acked-firing", Status::Firing, runbook()).await;
    send(&store, &clock, "watchdog", Status::Firing, ignore()).await;
    tokio::time::advance(2 * DAY).await;
    let before = verify(&store).await;
    assert_eq!(before.start, Start::Genesis);

    let pruned = prune_all(&store).await;
    let left: BTreeMap<String, State> = all(&store)
        .await
        .into_iter()
        .map(|i| (i.fingerprint, i.state))
        .collect();
    assert_eq!(
        left,
        [
            ("escalated", State::Escalated),
            ("acked-firing", State::Acknowledged),
            ("queued", State::Queued),
            ("silenced", State::Resolved),
            ("recent", State::Resolved),
        ]
        .into_iter()
        .map(|(f, s)| (f.to_string(), s))
        .collect(),
        "resolved, ignored and acknowledged-but-not-heard-of went"
    );
    assert_eq!(pruned.incidents, 3);
    // The front of the log went, up to the first entry of an incident still kept (the
    // escalated one's), behind a checkpoint; verify checks from it.
    assert!(pruned.audit_entries > 0);
    let after = verify(&store).await;
    let Start::Checkpoint { seq, .. } = after.start else {
        panic!("{:?}", after.start)
    };
    assert_eq!(Some(seq), pruned.checkpoint);
    let first_kept = store.audit_page(0, 1).await.unwrap().remove(0);
    assert_eq!(first_kept.seq, seq + 1);
    assert_eq!(first_kept.event, "incident_opened");
    assert_eq!(first_kept.incident_id.as_ref(), Some(&escalated));
    // Every kept incident keeps its whole timeline.
    for id in [&escalated, &acked_firing, &silenced] {
        let shown = store.incident(id).await.unwrap().unwrap();
        let events: Vec<String> = shown
            .timeline
            .unwrap()
            .into_iter()
            .map(|t| t.event)
            .collect();
        assert_eq!(
            events.first().map(String::as_str),
            Some("incident_opened"),
            "{id}: {events:?}"
        );
    }
    // Nothing more goes now; the escalated incident holds the log back.
    let again = prune_all(&store).await;
    assert_eq!((again.incidents, again.audit_entries), (0, 0));
    let held = again.held_back.expect("held back");
    assert_eq!(held.incident, escalated);
    assert_eq!(held.seq, seq + 1);

    // The silence expired: that incident goes at the next pass.
    store.silence_expired(&silenced, "s-1").await.unwrap();
    assert_eq!(prune_all(&store).await.incidents, 1);
    // The watchdog still fires: its next resend opens a new ignored incident.
    assert_eq!(
        send(&store, &clock, "watchdog", Status::Firing, ignore()).await,
        AlertEffect::Opened(State::Ignored)
    );
    // And the acknowledged one that still fires stays the same incident.
    assert_eq!(
        send(&store, &clock, "acked-firing", Status::Firing, runbook()).await,
        AlertEffect::Deduplicated
    );
    verify(&store).await;
    store.close().await;
}

#[tokio::test(start_paused = true)]
async fn what_referred_to_a_removed_incident_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::following_tokio(chrono::Utc::now());
    let store = open(&url_in(&dir), &clock);
    store.set_storm_window(Duration::from_millis(1));
    send(&store, &clock, "a", Status::Firing, runbook()).await;
    let a = escalate(&store, "a").await;
    tokio::time::advance(Duration::from_secs(1)).await;
    store
        .ack_by_link(
            &a,
            "alice",
            "nonce-1",
            clock.now() + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    send(&store, &clock, "a", Status::Resolved, runbook()).await;
    // A notification still pending keeps an incident; one sent does not.
    send(&store, &clock, "b", Status::Firing, runbook()).await;
    let b = escalate(&store, "b").await;
    send(&store, &clock, "b", Status::Resolved, runbook()).await;
    let (a2, b2) = (a.clone(), b.clone());
    store
        .inner
        .write(move |w| {
            for (id, state) in [(&a2, "sent"), (&b2, "pending")] {
                w.conn.execute(
                    "INSERT INTO outbox (key, incident_id, kind, round, tier, channel, state, due_at, created_at)
                     VALUES (?1, ?2, 'resolved', 1, 0, 'hook', ?3, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
                    crate::store::db::params![format!("{id}/resolved/hook"), id, state],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM escalation_groups").await,
        2
    );
    tokio::time::advance(181 * DAY).await;
    assert_eq!(prune_all(&store).await.incidents, 1);
    let ids: Vec<String> = all(&store).await.into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![b]);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM used_links").await, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM outbox").await, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM escalation_groups").await,
        1,
        "a's storm group went with its only incident"
    );
    verify(&store).await;
    store.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_backlog_goes_in_bounded_batches_and_the_chain_checks_after_each() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::following_tokio(chrono::Utc::now());
    let store = open(&url_in(&dir), &clock);
    let n = 2 * INCIDENTS + 30;
    for i in 0..n {
        let fp = format!("h{i}");
        send(&store, &clock, &fp, Status::Firing, runbook()).await;
        send(&store, &clock, &fp, Status::Resolved, runbook()).await;
    }
    let entries = count(&store, "SELECT COUNT(*) FROM audit").await;
    tokio::time::advance(181 * DAY).await;
    // A delivery now: its entries are new and stay.
    send(&store, &clock, "new", Status::Firing, runbook()).await;
    let mut batches = Vec::new();
    loop {
        let Prune::Pruned(p) = store.prune(RETENTION).await.unwrap() else {
            panic!("lease")
        };
        assert!(p.incidents <= INCIDENTS as u64 && p.audit_entries <= AUDIT as u64);
        verify(&store).await;
        let done = p.is_done();
        batches.push(p);
        if done {
            break;
        }
    }
    let incidents: Vec<u64> = batches.iter().map(|b| b.incidents).collect();
    assert_eq!(incidents[..3], [INCIDENTS as u64, INCIDENTS as u64, 30]);
    let removed: u64 = batches.iter().map(|b| b.audit_entries).sum();
    assert_eq!(removed as i64, entries, "every old entry went");
    let checkpoints = batches.iter().filter(|b| b.checkpoint.is_some()).count() as i64;
    // Left: the new delivery's 3 entries and the checkpoints not yet old themselves.
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM audit").await,
        3 + checkpoints
    );
    assert_eq!(all(&store).await.len(), 1);
    store.close().await;
}

const INCIDENTS: usize = super::INCIDENTS_PER_BATCH;
const AUDIT: usize = super::AUDIT_PER_BATCH;

#[tokio::test(start_paused = true)]
async fn the_database_refuses_removing_entries_no_checkpoint_covers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::following_tokio(chrono::Utc::now());
    let store = open(&url_in(&dir), &clock);
    for fp in ["a", "b"] {
        send(&store, &clock, fp, Status::Firing, runbook()).await;
        send(&store, &clock, fp, Status::Resolved, runbook()).await;
    }
    let try_sql = |sql: &'static str| {
        let store = store.clone();
        async move { store.inner.write(move |w| w.conn.execute(sql, ())).await }
    };
    let refused = try_sql("DELETE FROM audit WHERE seq = 1")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    tokio::time::advance(181 * DAY).await;
    let p = prune_all(&store).await;
    let cp = p.checkpoint.expect("a checkpoint");
    // Behind the checkpoint nothing is left; beyond it, still refused; never an update.
    assert!(try_sql("DELETE FROM audit WHERE seq > 0").await.is_err());
    assert!(try_sql("UPDATE audit SET detail = '{}'").await.is_err());
    assert_eq!(count(&store, "SELECT MIN(seq) FROM audit").await, cp + 1);
    store.close().await;
}

/// Two replicas on one PostgreSQL database (two stores, two writers: SQLite has one
/// process per file): only the lease holder prunes; the other takes over once the holder's
/// lease has run out.
#[tokio::test(start_paused = true)]
async fn one_replica_prunes_at_a_time() {
    let clock = Clock::following_tokio(chrono::Utc::now());
    let url = crate::store::postgres::scratch_database().expect("a PostgreSQL test database");
    let a = open(&url, &clock);
    let b = open(&url, &clock);
    for i in 0..(INCIDENTS + 10) {
        let fp = format!("h{i}");
        send(&a, &clock, &fp, Status::Firing, runbook()).await;
        send(&b, &clock, &fp, Status::Resolved, runbook()).await;
    }
    tokio::time::advance(181 * DAY).await;
    // Both at once: the first batch to commit takes the lease; the other stands aside.
    let (pa, pb) = tokio::join!(a.prune(RETENTION), b.prune(RETENTION));
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    let (holder, other, first) = match (&pa, &pb) {
        (Prune::Pruned(p), Prune::Elsewhere { .. }) => (&a, &b, p.clone()),
        (Prune::Elsewhere { .. }, Prune::Pruned(p)) => (&b, &a, p.clone()),
        _ => panic!("both or neither pruned: {pa:?} {pb:?}"),
    };
    assert_eq!(first.incidents, INCIDENTS as u64);
    assert!(matches!(
        other.prune(RETENTION).await.unwrap(),
        Prune::Elsewhere { .. }
    ));
    let Prune::Pruned(rest) = holder.prune(RETENTION).await.unwrap() else {
        panic!("the holder keeps its lease")
    };
    assert_eq!(rest.incidents, 10);
    // Every checkpoint is the holder's.
    let bys: Vec<String> = holder
        .audit_page(0, 100_000)
        .await
        .unwrap()
        .iter()
        .filter_map(crate::audit::checkpoint::Checkpoint::of)
        .map(|c| c.by)
        .collect();
    assert!(!bys.is_empty());
    assert!(bys.windows(2).all(|w| w[0] == w[1]), "{bys:?}");
    // The holder stops (dies): after its lease, the other prunes.
    tokio::time::advance(super::LEASE - Duration::from_secs(1)).await;
    assert!(matches!(
        other.prune(RETENTION).await.unwrap(),
        Prune::Elsewhere { .. }
    ));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(matches!(
        other.prune(RETENTION).await.unwrap(),
        Prune::Pruned(_)
    ));
    assert!(matches!(
        holder.prune(RETENTION).await.unwrap(),
        Prune::Elsewhere { .. }
    ));
    verify(&a).await;
    a.close().await;
    b.close().await;
}

/// Each closed state is found through its own index, in order: never by scanning and
/// sorting every incident of the state (SQLite's planner, left to choose, took
/// `incidents_state` and sorted, and a batch held the writer for half a second at 700,000
/// incidents).
#[tokio::test]
async fn closed_incidents_are_found_through_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
    let store = open(&url, &Clock::system());
    if store.is_shared() {
        return; // PostgreSQL plans by its statistics; SQLite by the schema alone.
    }
    for sql in super::closed_queries() {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let plan: Vec<String> = store
            .inner
            .read(move |c| {
                c.prepare_cached(&explain)?
                    .query_map(crate::store::db::params!["2026", 100i64], |r| r.get(3))?
                    .collect()
            })
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX incidents_") && !plan.contains("incidents_state"),
            "{sql}\n{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
    }
    store.close().await;
}
