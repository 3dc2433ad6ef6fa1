//! Store tests of verification timers, escalation rounds, acks and the outbox.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map};

use super::*;
use crate::alert::{Alert, Status};
use crate::clock::Clock;
use crate::config::Tier;
use crate::incident::AckVia;

/// The store tests' alert, started at 10:00.
fn alert(fp: &str, status: Status) -> Alert {
    super::tests::alert(fp, status, 0)
}

fn delivery(a: Alert) -> Delivery {
    Delivery {
        received_at: Utc::now(),
        source: "127.0.0.1:5000".into(),
        receiver: "medic".into(),
        status: a.status,
        group_key: "{}".into(),
        external_url: "http://am.example:9093".into(),
        truncated_alerts: 0,
        extra: Map::new(),
        alerts: vec![(
            a,
            Routed::Runbook {
                route: "disk".into(),
                runbook: "disk_full.rhai".into(),
            },
        )],
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// A store whose route `disk` has two tiers: `a` and `b` at once, `c` after 15m.
fn open(dir: &tempfile::TempDir, renotify: Option<Duration>) -> Store {
    open_on(dir, renotify, Clock::system())
}

/// [`open`], on `clock`.
fn open_on(dir: &tempfile::TempDir, renotify: Option<Duration>, clock: Clock) -> Store {
    let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
    let store = Store::open_with_clock(&url, StoreMetrics::default(), clock).expect("open");
    let policy = Policy {
        tiers: vec![
            Tier {
                after: Duration::ZERO,
                notify: vec!["a".into(), "b".into()],
            },
            Tier {
                after: 15 * MINUTE,
                notify: vec!["c".into()],
            },
        ],
        renotify,
    };
    let mut routes = HashMap::new();
    routes.insert(
        "disk".to_string(),
        RoutePlan {
            verify_for: 60 * MINUTE,
            policy: policy.clone(),
            approval: None,
        },
    );
    store.set_plans(Plans {
        default: policy,
        routes,
    });
    store
}

/// Opens an incident for `fp`, runs it and ends the run with `result`; returns its id.
async fn run(store: &Store, fp: &str, result: RunResult) -> String {
    store
        .ingest(delivery(alert(fp, Status::Firing)))
        .await
        .unwrap();
    let ids = store
        .queued(10)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.id)
        .collect();
    let claims = store.claim(ids, |_| json!({})).await.unwrap();
    let id = claims[0].id.clone();
    store.finish_run(&id, result, json!({})).await.unwrap();
    id
}

fn stopped() -> RunResult {
    RunResult::Escalated {
        reason: Reason::StepFailed,
        message: "boom".into(),
    }
}

async fn due_channels(store: &Store, after: Duration) -> Vec<(String, u32, NotificationKind)> {
    let at = Utc::now() + chrono::Duration::from_std(after).unwrap();
    let mut v: Vec<_> = store
        .outbox_peek(at, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|n| (n.channel, n.tier, n.kind))
        .collect();
    v.sort_by(|x, y| x.0.cmp(&y.0));
    v
}

fn events(incident: &Incident, name: &str) -> Vec<serde_json::Value> {
    incident
        .timeline
        .as_ref()
        .unwrap()
        .iter()
        .filter(|e| e.event == name)
        .map(|e| e.detail.clone())
        .collect()
}

use NotificationKind::{Escalated, Resolved};

#[tokio::test]
async fn an_escalation_commits_its_notifications_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let id = run(&store, "f1", stopped()).await;
    assert_eq!(
        due_channels(&store, Duration::ZERO).await,
        [("a".into(), 1, Escalated), ("b".into(), 1, Escalated)]
    );
    assert_eq!(
        due_channels(&store, 16 * MINUTE).await,
        [
            ("a".into(), 1, Escalated),
            ("b".into(), 1, Escalated),
            ("c".into(), 2, Escalated)
        ]
    );
    let keys: Vec<String> = store
        .outbox_peek(Utc::now() + chrono::Duration::hours(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.key.to_string())
        .collect();
    assert!(keys.contains(&format!("{id}/1/2/c")), "{keys:?}");
    let inc = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(inc.external_url, "http://am.example:9093");
    assert!(inc.escalated_at.is_some());
    let scheduled = events(&inc, "escalation_scheduled");
    assert_eq!(scheduled[0]["round"], 1);
    assert_eq!(scheduled[0]["tiers"][1]["notify"], json!(["c"]));
    assert_eq!(scheduled[0]["tiers"][1]["after"], "15m");
    // Resends of the firing alert schedule nothing more.
    store
        .ingest(delivery(alert("f1", Status::Firing)))
        .await
        .unwrap();
    assert_eq!(due_channels(&store, 16 * MINUTE).await.len(), 3);
}

#[tokio::test]
async fn an_ack_cancels_later_tiers_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let id = run(&store, "f1", stopped()).await;
    assert_eq!(
        store
            .ack(&id, Some("alice".into()), AckVia::Api)
            .await
            .unwrap(),
        Ack::Acknowledged
    );
    assert!(due_channels(&store, 16 * MINUTE).await.is_empty());
    assert_eq!(
        store
            .ack(&id, Some("bob".into()), AckVia::Api)
            .await
            .unwrap(),
        Ack::Already(Some("alice".into()))
    );
    assert_eq!(
        store.ack("nope", None, AckVia::Api).await.unwrap(),
        Ack::NotFound
    );
    store
        .ingest(delivery(alert("f2", Status::Firing)))
        .await
        .unwrap();
    let queued = store
        .incidents(IncidentFilter {
            state: Some(State::Queued),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.ack(&queued[0].id, None, AckVia::Api).await.unwrap(),
        Ack::NotEscalated(State::Queued)
    );
    let inc = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(inc.state, State::Acknowledged);
    assert_eq!(inc.acknowledged_by.as_deref(), Some("alice"));
    assert_eq!(events(&inc, "incident_acknowledged")[0]["by"], "alice");
    assert_eq!(
        events(&inc, "notifications_cancelled")[0]["notifications"],
        3
    );
}

#[tokio::test]
async fn a_resolution_is_announced_once_to_the_channels_that_were_told() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let id = run(&store, "f1", stopped()).await;
    for n in store.outbox_peek(Utc::now(), 10).await.unwrap() {
        let attempt = if n.channel == "a" {
            Attempt::Sent
        } else {
            Attempt::Failed {
                error: "550 no such user".into(),
                permanent: true,
                retry_at: None,
                fall_through: false,
            }
        };
        store.outbox_attempt(n.id, attempt).await.unwrap();
    }
    let mut resolved = alert("f1", Status::Resolved);
    resolved.ends_at = Some(Utc::now());
    store.ingest(delivery(resolved.clone())).await.unwrap();
    store.ingest(delivery(resolved)).await.unwrap();
    assert_eq!(
        due_channels(&store, 16 * MINUTE).await,
        [("a".into(), 0, Resolved)]
    );
    let inc = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(inc.outcome, Some(Outcome::ResolvedAfterEscalation));
    assert_eq!(events(&inc, "notification_sent")[0]["channel"], "a");
    let failed = &events(&inc, "notification_failed")[0];
    assert_eq!(failed["channel"], "b");
    assert_eq!(failed["gave_up"], true);
    // Tier 2 (`c`) was never sent: cancelled, and owed nothing.
    assert_eq!(
        events(&inc, "notifications_cancelled")[0]["why"],
        "the alert resolved"
    );
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed), (1, 1));
}

#[tokio::test]
async fn a_failing_channel_falls_through_to_the_next_tier() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let id = run(&store, "f1", stopped()).await;
    let a = store
        .outbox_peek(Utc::now(), 10)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.channel == "a")
        .unwrap();
    let retry_at = Utc::now() + chrono::Duration::seconds(30);
    let failed = Attempt::Failed {
        error: "HTTP 503".into(),
        permanent: false,
        retry_at: Some(retry_at),
        fall_through: true,
    };
    store.outbox_attempt(a.id, failed).await.unwrap();
    // `c` is due now; `a` waits for its retry.
    assert_eq!(
        due_channels(&store, Duration::ZERO).await,
        [("b".into(), 1, Escalated), ("c".into(), 2, Escalated)]
    );
    assert_eq!(due_channels(&store, Duration::from_secs(31)).await.len(), 3);
    let inc = store.incident(&id).await.unwrap().unwrap();
    let fell = &events(&inc, "escalation_fell_through")[0];
    assert_eq!(fell["from_tier"], 1);
    assert_eq!(fell["to_tier"], 2);
    assert_eq!(fell["failing_channel"], "a");
    assert!(events(&inc, "notification_failed")[0]["next_attempt_at"].is_string());
}

#[tokio::test]
async fn verification_timers_end_in_success_or_still_firing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let ok = run(&store, "f1", RunResult::Completed).await;
    let bad = run(&store, "f2", RunResult::Completed).await;
    let waiting = store.verifying(10).await.unwrap();
    assert_eq!(waiting.len(), 2);
    let left = waiting[0].verify_until - Utc::now();
    assert!(left > chrono::Duration::minutes(59) && left <= chrono::Duration::minutes(60));

    assert!(store.verification_resolved(&ok, "gone").await.unwrap());
    assert!(!store.verification_resolved(&ok, "gone").await.unwrap());
    let inc = store.incident(&ok).await.unwrap().unwrap();
    assert_eq!(inc.outcome, Some(Outcome::AutoRemediated));
    assert_eq!(inc.deliveries, 1, "a poll is not a delivery");
    assert_eq!(events(&inc, "verification_succeeded")[0]["how"], "gone");
    assert!(due_channels(&store, 16 * MINUTE).await.is_empty());

    assert!(store
        .verification_failed(&bad, "still firing after 1h")
        .await
        .unwrap());
    let inc = store.incident(&bad).await.unwrap().unwrap();
    assert_eq!(
        (inc.state, inc.reason),
        (State::Escalated, Some(Reason::StillFiring))
    );
    assert_eq!(inc.verify_until, None);
    assert_eq!(events(&inc, "verification_failed")[0]["route"], "disk");
    assert_eq!(due_channels(&store, Duration::ZERO).await.len(), 2);
    assert!(store.verifying(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_resolved_notification_ends_verification_as_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let id = run(&store, "f1", RunResult::Completed).await;
    store
        .ingest(delivery(alert("f1", Status::Resolved)))
        .await
        .unwrap();
    let inc = store.incident(&id).await.unwrap().unwrap();
    assert_eq!(inc.outcome, Some(Outcome::AutoRemediated));
    assert_eq!(
        events(&inc, "verification_succeeded")[0]["how"],
        "Alertmanager sent the resolved notification"
    );
    assert_eq!(
        store.outbox_counts().await.unwrap(),
        OutboxCounts::default()
    );
}

#[tokio::test]
async fn renotify_starts_a_new_round_until_acked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, Some(Duration::from_millis(1)));
    let id = run(&store, "f1", stopped()).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.renotify_due().await.unwrap(), 1);
    let keys: Vec<String> = store
        .outbox_peek(Utc::now(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.key.to_string())
        .collect();
    assert!(keys.contains(&format!("{id}/2/1/a")), "{keys:?}");
    store.ack(&id, None, AckVia::Api).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.renotify_due().await.unwrap(), 0);
}

#[tokio::test]
async fn a_notification_delivered_after_the_resolution_is_owed_the_end_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    run(&store, "f1", stopped()).await;
    // The sender took `a`; the alert resolves before its attempt is recorded.
    let a = store
        .outbox_peek(Utc::now(), 10)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.channel == "a")
        .unwrap();
    store
        .ingest(delivery(alert("f1", Status::Resolved)))
        .await
        .unwrap();
    assert!(due_channels(&store, 16 * MINUTE).await.is_empty());
    store.outbox_attempt(a.id, Attempt::Sent).await.unwrap();
    assert_eq!(
        due_channels(&store, Duration::ZERO).await,
        [("a".into(), 0, Resolved)]
    );
}

#[tokio::test]
async fn a_due_notification_is_claimed_by_one_sender_until_its_claim_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    run(&store, "f1", stopped()).await;
    let first = store.outbox_due(Utc::now(), 10).await.unwrap();
    assert!(!first.is_empty());
    assert!(
        store.outbox_due(Utc::now(), 10).await.unwrap().is_empty(),
        "claimed: no second sender takes them"
    );
    let later = Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(
        store.outbox_due(later, 10).await.unwrap().len(),
        first.len()
    );
}

/// The notifications due `after` from now, claimed as the sender claims them.
async fn claim_due(store: &Store, after: Duration) -> Vec<Notification> {
    let at = Utc::now() + chrono::Duration::from_std(after).unwrap();
    store.outbox_due(at, 100).await.unwrap()
}

/// Two escalations of one route and reason within the storm window: the first is told
/// at once, the second through the group's summary when the window ends.
async fn storm_of_two(store: &Store) -> (String, String) {
    let first = run(store, "f1", stopped()).await;
    let second = run(store, "f2", stopped()).await;
    let inc = store.incident(&second).await.unwrap().unwrap();
    assert_eq!(events(&inc, "escalation_grouped")[0]["first"], false);
    (first, second)
}

fn summaries(due: &[Notification]) -> Vec<(String, u32, String)> {
    let mut v: Vec<_> = due
        .iter()
        .filter(|n| n.group.is_some())
        .map(|n| (n.channel.clone(), n.tier, n.incident_id.clone()))
        .collect();
    v.sort();
    v
}

/// What [`summaries`] gives for a summary on the first tier (channels `a` and `b`)
/// told through incident `id`.
fn first_tier_summary(id: &str) -> Vec<(String, u32, String)> {
    vec![("a".into(), 1, id.into()), ("b".into(), 1, id.into())]
}

#[tokio::test]
async fn storm_group_member_is_told_when_first_member_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (first, second) = storm_of_two(&store).await;
    store
        .ack(&first, Some("alice".into()), AckVia::Api)
        .await
        .unwrap();
    // The first's own later tier is cancelled; the group's summary is not.
    let due = claim_due(&store, 2 * MINUTE).await;
    assert_eq!(
        summaries(&due),
        first_tier_summary(&second),
        "the summary is told through the member still escalated"
    );
    assert!(due.iter().all(|n| n.group.is_some()), "{due:?}");
    let (size, listed) = store
        .group_members(due[0].group.as_deref().unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(size, 1);
    assert_eq!(listed[0].id, second);
    store
        .outbox_attempt(due[0].id, Attempt::Sent)
        .await
        .unwrap();
    let inc = store.incident(&second).await.unwrap().unwrap();
    assert_eq!(
        events(&inc, "notification_sent")[0]["group"],
        json!(due[0].group)
    );
}

#[tokio::test]
async fn storm_group_member_is_told_when_first_member_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (first, second) = storm_of_two(&store).await;
    let mut resolved = alert("f1", Status::Resolved);
    resolved.ends_at = Some(Utc::now());
    store.ingest(delivery(resolved)).await.unwrap();
    let inc = store.incident(&first).await.unwrap().unwrap();
    assert_eq!(inc.state, State::Resolved);
    let due = claim_due(&store, 2 * MINUTE).await;
    assert_eq!(summaries(&due), first_tier_summary(&second));
    // Later tiers of the summary too, while the member is escalated.
    for n in &due {
        store.outbox_attempt(n.id, Attempt::Sent).await.unwrap();
    }
    assert_eq!(
        summaries(&claim_due(&store, 16 * MINUTE).await),
        [("c".into(), 2, second.clone())]
    );
}

#[tokio::test]
async fn storm_summary_is_not_sent_when_every_member_was_handled_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (first, second) = storm_of_two(&store).await;
    // Only the member that joined is acked: the first has its own notifications, so the
    // summary has nobody left to tell.
    store
        .ack(&second, Some("bob".into()), AckVia::Api)
        .await
        .unwrap();
    let due = claim_due(&store, 2 * MINUTE).await;
    assert!(summaries(&due).is_empty(), "{due:?}");
    let inc = store.incident(&second).await.unwrap().unwrap();
    let skipped = events(&inc, "notifications_cancelled");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0]["why"]
        .as_str()
        .unwrap()
        .contains("before its summary was due"));
    // Its later tier, the same way; the first incident's own tier 2 is still owed.
    let due = claim_due(&store, 16 * MINUTE).await;
    assert!(summaries(&due).is_empty(), "{due:?}");
    assert!(due.iter().any(|n| n.incident_id == first && n.tier == 2));
    let inc = store.incident(&second).await.unwrap().unwrap();
    assert_eq!(events(&inc, "notifications_cancelled").len(), 3);
}

#[tokio::test]
async fn storm_summary_lists_the_first_incident_while_it_is_escalated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (first, second) = storm_of_two(&store).await;
    let due = claim_due(&store, 2 * MINUTE).await;
    assert_eq!(summaries(&due), first_tier_summary(&first));
    let gid = due.iter().find_map(|n| n.group.clone()).unwrap();
    let (size, listed) = store.group_members(&gid, 10).await.unwrap();
    assert_eq!(size, 2);
    assert_eq!(
        listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [first.as_str(), second.as_str()]
    );
}

#[tokio::test]
async fn a_failing_storm_summary_falls_through_to_the_summarys_next_tier() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    let (first, second) = storm_of_two(&store).await;
    let due = claim_due(&store, 2 * MINUTE).await;
    let a = due
        .iter()
        .find(|n| n.group.is_some() && n.channel == "a")
        .unwrap();
    let failed = Attempt::Failed {
        error: "HTTP 400".into(),
        permanent: true,
        retry_at: None,
        fall_through: true,
    };
    store.outbox_attempt(a.id, failed).await.unwrap();
    // The summary's tier 2 is due now, not the first incident's own.
    let due = claim_due(&store, 2 * MINUTE).await;
    assert_eq!(summaries(&due), [("c".into(), 2, first.clone())]);
    assert!(due.iter().all(|n| n.group.is_some()), "{due:?}");
    let inc = store.incident(&first).await.unwrap().unwrap();
    assert_eq!(events(&inc, "escalation_fell_through")[0]["to_tier"], 2);
    assert_ne!(first, second);
}

/// Marks every notification in `due` sent.
async fn send_all(store: &Store, due: &[Notification]) {
    for n in due {
        store.outbox_attempt(n.id, Attempt::Sent).await.unwrap();
    }
}

/// `id` is owed every channel of the first tier: its own notification, or a storm summary
/// still to go out (which lists the members escalated when it does).
fn told_on_first_tier(due: &[Notification], id: &str) -> Vec<&'static str> {
    ["a", "b"]
        .into_iter()
        .filter(|ch| {
            !due.iter().any(|n| {
                n.channel == *ch
                    && n.tier == 1
                    && n.kind == Escalated
                    && (n.incident_id == id || n.group.is_some())
            })
        })
        .collect()
}

#[tokio::test]
async fn storm_member_joining_after_the_window_grew_by_reload_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    store.set_storm_window(Duration::from_millis(2500));
    storm_of_two(&store).await;
    tokio::time::sleep(Duration::from_millis(2700)).await;
    // The window ended: the summary's first tier goes out, listing the two.
    let due = claim_due(&store, Duration::ZERO).await;
    assert_eq!(summaries(&due).len(), 2, "{due:?}");
    send_all(&store, &due).await;
    // A reload makes the window longer: the group takes a third escalation.
    store.set_storm_window(10 * MINUTE);
    // Nothing that went out named it: it is owed the first tier still.
    a_late_member_is_told(&store, 20 * MINUTE).await;
}

#[tokio::test]
async fn storm_member_committed_after_the_summary_went_out_is_told() {
    // An escalation stamped inside the window (a delivery received before the window
    // ended but committed after it, or a replica whose clock is behind) joins the group
    // after its summary's first tier was sent.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    storm_of_two(&store).await;
    let due = claim_due(&store, 2 * MINUTE).await;
    assert_eq!(summaries(&due).len(), 2, "{due:?}");
    send_all(&store, &due).await;
    a_late_member_is_told(&store, 2 * MINUTE).await;
}

#[tokio::test]
async fn storm_member_joining_after_the_summary_was_cancelled_is_told() {
    // Every member was handled when the summary fell due, so it was not sent; a member
    // that joins later (the window grew by reload) has nothing left to tell it.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, None);
    store.set_storm_window(Duration::from_millis(2500));
    let (_, second) = storm_of_two(&store).await;
    store
        .ack(&second, Some("bob".into()), AckVia::Api)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2700)).await;
    let due = claim_due(&store, Duration::ZERO).await;
    assert!(summaries(&due).is_empty(), "{due:?}");
    send_all(&store, &due).await;
    store.set_storm_window(10 * MINUTE);
    a_late_member_is_told(&store, 20 * MINUTE).await;
}

/// A third escalation joins the storm group late (not as its first member): whatever the
/// group's summary did before, the notifications due `after` from now tell it on every
/// channel of its first tier.
async fn a_late_member_is_told(store: &Store, after: Duration) {
    let third = run(store, "f3", stopped()).await;
    let inc = store.incident(&third).await.unwrap().unwrap();
    assert_eq!(events(&inc, "escalation_grouped")[0]["first"], false);
    let due = claim_due(store, after).await;
    let missing = told_on_first_tier(&due, &third);
    assert!(
        missing.is_empty(),
        "{third} is never told on {missing:?}: {due:?}"
    );
}

/// Runs `sql` on the store at `url` directly, as an older medic left it.
fn raw(url: &str, sql: &str) {
    let (url, sql) = (url.to_string(), sql.to_string());
    // The blocking PostgreSQL client runs a runtime of its own: not inside the test's.
    std::thread::spawn(move || raw_now(&url, &sql))
        .join()
        .unwrap();
}

fn raw_now(url: &str, sql: &str) {
    match url.strip_prefix("sqlite://") {
        Some(path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(sql)
            .unwrap(),
        None => ::postgres::Client::connect(url, ::postgres::NoTls)
            .unwrap()
            .batch_execute(sql)
            .unwrap(),
    }
}

#[tokio::test]
async fn a_summary_lost_before_the_upgrade_is_owed_again() {
    // Before migration 6 a storm's summary was the first incident's: acking the first
    // cancelled it, and the member that joined stayed escalated with nobody told. The
    // upgrade must not leave that member without a page.
    let dir = tempfile::tempdir().unwrap();
    let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
    let store = open(&dir, None);
    let (first, second) = storm_of_two(&store).await;
    store.close().await;
    // The database as the older medic (before migrations 6 to 8) left it, the first acked.
    raw(
        &url,
        &format!(
            "UPDATE outbox SET key = '{first}/' || key, incident_id = '{first}', state = 'cancelled'
                WHERE group_id IS NOT NULL;
             UPDATE incidents SET state = 'acknowledged', acked_by = 'alice' WHERE id = '{first}';
             UPDATE outbox SET state = 'cancelled' WHERE incident_id = '{first}' AND group_id IS NULL
                AND state = 'pending';
             DROP INDEX outbox_group;
             ALTER TABLE outbox DROP COLUMN group_id;
             DROP TABLE used_links;
             DROP INDEX incidents_awaiting;
             ALTER TABLE incidents DROP COLUMN approval_until;
             ALTER TABLE incidents DROP COLUMN plan;
             ALTER TABLE incidents DROP COLUMN approved_by;
             ALTER TABLE incidents DROP COLUMN approved_at;
             DELETE FROM schema_migrations WHERE version >= 6;"
        ),
    );
    let store = open(&dir, None);
    let due = claim_due(&store, 2 * MINUTE).await;
    let missing = told_on_first_tier(&due, &second);
    assert!(
        missing.is_empty(),
        "{second} is never told on {missing:?}: {due:?}"
    );
    assert_eq!(summaries(&due)[0].2, second, "{due:?}");
}

/// A store with one escalation whose notification on tier 1, channel `a`, was left with
/// `set` (an SQL assignment to the `outbox` row): peeking at what is due in an hour
/// fails as corrupt, naming `problem`. Gives the store and that hour.
async fn with_corrupt_notification(
    dir: &tempfile::TempDir,
    set: &str,
    problem: &str,
) -> (Store, chrono::DateTime<Utc>) {
    let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
    let store = open(dir, None);
    run(&store, "f1", stopped()).await;
    store.close().await;
    raw(
        &url,
        &format!("UPDATE outbox SET {set} WHERE tier = 1 AND channel = 'a'"),
    );
    let store = open(dir, None);
    let at = Utc::now() + chrono::Duration::hours(1);
    let err = store.outbox_peek(at, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains(problem)),
        "{err}"
    );
    (store, at)
}

#[tokio::test]
async fn an_unknown_notification_kind_is_corrupt_not_an_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let (store, at) =
        with_corrupt_notification(&dir, "kind = 'paged'", "unknown kind \"paged\"").await;
    // The sender is not held up by it: the row is set aside as failed, audited, and the
    // other notifications due go out.
    let due = store.outbox_due(at, 10).await.unwrap();
    assert!(!due.is_empty(), "the other notifications are still due");
    assert!(
        due.iter().all(|n| n.kind == NotificationKind::Escalated),
        "{due:?}"
    );
    let again = store.outbox_peek(at, 10).await.unwrap();
    assert_eq!(
        again.len(),
        due.len(),
        "the unreadable row is no longer pending"
    );
}

#[tokio::test]
async fn a_key_that_is_not_a_key_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    with_corrupt_notification(&dir, "key = 'nonsense'", "bad key \"nonsense\"").await;
}

/// The store reads time only from the clock it is given: on a clock that follows paused
/// tokio time, a verification deadline is counted from the injected time, and a renotify
/// round becomes due when that time moves, not the wall clock's (and nothing sleeps).
#[tokio::test(start_paused = true)]
async fn time_based_decisions_follow_the_injected_clock() {
    let start: chrono::DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
    let clock = Clock::following_tokio(start);
    let dir = tempfile::tempdir().unwrap();
    let store = open_on(&dir, Some(10 * MINUTE), clock.clone());

    // The verification window (60m for route `disk`) starts at the store's now.
    run(&store, "verified", RunResult::Completed).await;
    let waiting = store.verifying(10).await.unwrap();
    assert_eq!(
        waiting[0].verify_until,
        start + chrono::Duration::minutes(60)
    );

    // Escalated at `start`: its renotify round is due 10 minutes of clock time later.
    let id = run(&store, "renotified", stopped()).await;
    assert_eq!(store.renotify_due().await.unwrap(), 0);
    tokio::time::advance(9 * MINUTE).await;
    assert_eq!(store.renotify_due().await.unwrap(), 0);
    tokio::time::advance(MINUTE).await;
    assert_eq!(store.renotify_due().await.unwrap(), 1);
    let keys: Vec<String> = store
        .outbox_peek(clock.now(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.key.to_string())
        .collect();
    assert!(keys.contains(&format!("{id}/2/1/a")), "{keys:?}");
    store.close().await;
}
