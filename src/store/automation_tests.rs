//! Store tests of what automation achieved, as `/metrics` shows it: outcomes, time to
//! recovery, escalations by reason, escalations that tell nobody, acks and relapses, each
//! counted once per committed change, with labels that alert content cannot choose.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Map};

use super::*;
use crate::alert::{Alert, Status};
use crate::config::Tier;
use crate::incident::AckVia;
use crate::metrics::Metrics;

const MINUTE: Duration = Duration::from_secs(60);

/// Noon on the test day: deliveries are stamped from here.
fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

/// An alert of fingerprint `fp` whose firing period started `minute` minutes after 10:00.
fn alert(fp: &str, status: Status, minute: u32) -> Alert {
    super::tests::alert(fp, status, minute)
}

/// A delivery of `alerts`, received at `at`, each routed as `routed`.
fn delivery(at: DateTime<Utc>, alerts: Vec<Alert>, routed: &Routed) -> Delivery {
    Delivery {
        received_at: at,
        source: "127.0.0.1:5000".into(),
        receiver: "medic".into(),
        status: alerts.first().map_or(Status::Firing, |a| a.status),
        group_key: "{}".into(),
        external_url: String::new(),
        truncated_alerts: 0,
        extra: Map::new(),
        alerts: alerts.into_iter().map(|a| (a, routed.clone())).collect(),
    }
}

fn disk() -> Routed {
    Routed::Runbook {
        route: "disk".into(),
        runbook: "disk_full.rhai".into(),
    }
}

/// A store whose metrics are `Metrics`' own, as `serve` builds them; escalations of every
/// route page channel `a` unless `nobody`, and fixes relapse within an hour.
fn open(dir: &tempfile::TempDir, nobody: bool) -> (Store, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
    let store = Store::open(&url, metrics.store.clone()).expect("open");
    let policy = Policy {
        tiers: match nobody {
            true => Vec::new(),
            false => vec![Tier {
                after: Duration::ZERO,
                notify: vec!["a".into()],
            }],
        },
        renotify: None,
    };
    store.set_plans(Plans {
        default: policy,
        routes: HashMap::new(),
    });
    store.set_relapse_window(60 * MINUTE);
    (store, metrics)
}

async fn ingest(store: &Store, at: DateTime<Utc>, a: Alert) -> AlertEffect {
    let mut effects = store.ingest(delivery(at, vec![a], &disk())).await.unwrap();
    effects.remove(0)
}

/// Claims every queued incident and ends each run with `result`; their ids.
async fn run_all(store: &Store, result: RunResult) -> Vec<String> {
    let ids: Vec<String> = store
        .queued(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.id)
        .collect();
    let claims = store.claim(ids, |_| json!({})).await.unwrap();
    for c in &claims {
        store
            .finish_run(&c.id, result.clone(), json!({}))
            .await
            .unwrap();
    }
    claims.into_iter().map(|c| c.id).collect()
}

fn failed() -> RunResult {
    RunResult::Escalated {
        reason: Reason::StepFailed,
        message: "exit 1".into(),
    }
}

/// The value of one sample (`name{labels}` exactly as rendered); `None` when absent.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The value of `series`, 0 when absent.
fn value(metrics: &Metrics, series: &str) -> f64 {
    sample(&metrics.render(), series).unwrap_or(0.0)
}

#[tokio::test]
async fn outcomes_and_time_to_recovery_are_counted_by_route_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(&dir, false);
    // Fixed: opened at noon, the runbook ran, resolved 40 s after opening.
    ingest(&store, t(0), alert("fixed", Status::Firing, 0)).await;
    run_all(&store, RunResult::Completed).await;
    ingest(&store, t(40), alert("fixed", Status::Resolved, 0)).await;
    // Escalated: the runbook failed; a person fixed it two hours after it opened.
    ingest(&store, t(0), alert("failed", Status::Firing, 0)).await;
    run_all(&store, failed()).await;
    ingest(&store, t(7200), alert("failed", Status::Resolved, 0)).await;
    // Gone by itself before anything ran.
    ingest(&store, t(0), alert("flap", Status::Firing, 0)).await;
    ingest(&store, t(5), alert("flap", Status::Resolved, 0)).await;
    // No route took it: escalated as it opens, and channel `a` is told.
    let no_route = Routed::NoRunbook {
        why: "no route matches".into(),
    };
    let stray = vec![alert("stray", Status::Firing, 0)];
    store
        .ingest(delivery(t(0), stray, &no_route))
        .await
        .unwrap();

    let text = metrics.render();
    let n = |series: &str| sample(&text, series).unwrap_or(0.0);
    for outcome in [
        "auto_remediated",
        "resolved_after_escalation",
        "resolved_before_action",
    ] {
        let series =
            format!(r#"medic_incidents_resolved_total{{route="disk",outcome="{outcome}"}}"#);
        assert_eq!(n(&series), 1.0, "{series} in\n{text}");
    }
    assert_eq!(
        n(r#"medic_escalations_total{route="disk",reason="step_failed"}"#),
        1.0
    );
    let bucket = |path: &str, le: &str| {
        n(&format!(
            r#"medic_time_to_recovery_seconds_bucket{{le="{le}",route="disk",path="{path}"}}"#
        ))
    };
    assert_eq!(bucket("automated", "30.0"), 0.0, "{text}");
    assert_eq!(bucket("automated", "60.0"), 1.0, "{text}");
    assert_eq!(bucket("after_escalation", "3600.0"), 0.0, "{text}");
    assert_eq!(bucket("after_escalation", "7200.0"), 1.0, "{text}");
    assert_eq!(
        n(r#"medic_time_to_recovery_seconds_sum{route="disk",path="automated"}"#),
        40.0
    );
    // Nobody recovered the one that went away by itself.
    assert_eq!(
        text.matches("medic_time_to_recovery_seconds_count").count(),
        2
    );
    assert_eq!(
        n(r#"medic_escalations_total{route="",reason="no_runbook"}"#),
        1.0
    );
    // Everyone was told.
    assert!(
        !text.contains("medic_escalations_unnotified_total{"),
        "{text}"
    );
    store.close().await;
}

#[tokio::test]
async fn a_relapse_is_a_firing_soon_after_an_automated_fix_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(&dir, false);
    let relapses = || value(&metrics, r#"medic_relapses_total{route="disk"}"#);

    // Fixed at 12:01, firing again (a new period) 30 minutes later: a relapse.
    ingest(&store, t(0), alert("a", Status::Firing, 0)).await;
    run_all(&store, RunResult::Completed).await;
    ingest(&store, t(60), alert("a", Status::Resolved, 0)).await;
    let again = ingest(&store, t(60 + 1800), alert("a", Status::Firing, 5)).await;
    assert_eq!(again, AlertEffect::Opened(State::Queued));
    assert_eq!(relapses(), 1.0);
    // The new incident says which fix did not stick.
    let fixed = store
        .incidents(IncidentFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let (newest, first) = (&fixed[0], &fixed[1]);
    let opened = store.incident(&newest.id).await.unwrap().unwrap();
    let detail = &opened.timeline.as_ref().unwrap()[0].detail;
    assert_eq!(detail["relapse_of"], json!(first.id), "{detail}");

    // Fixed again, firing again just after the window: not a relapse.
    run_all(&store, RunResult::Completed).await;
    ingest(&store, t(4000), alert("a", Status::Resolved, 5)).await;
    ingest(&store, t(4000 + 3601), alert("a", Status::Firing, 10)).await;
    assert_eq!(relapses(), 1.0);

    // Escalated and resolved by a person, then firing again at once: not medic's fix.
    run_all(&store, failed()).await;
    ingest(&store, t(9000), alert("a", Status::Resolved, 10)).await;
    ingest(&store, t(9001), alert("a", Status::Firing, 15)).await;
    assert_eq!(relapses(), 1.0);

    // Resolved before anything ran, then firing again: no fix, no relapse.
    ingest(&store, t(0), alert("b", Status::Firing, 0)).await;
    ingest(&store, t(10), alert("b", Status::Resolved, 0)).await;
    ingest(&store, t(20), alert("b", Status::Firing, 5)).await;
    assert_eq!(relapses(), 1.0);

    // Verifying after its run, and a newer firing arrives without the resolution: the fix
    // held for a while and the alert is back. A relapse.
    run_all(&store, RunResult::Completed).await; // "a" (15) and "b" (5): both verifying
    let mut newer = alert("a", Status::Firing, 0);
    newer.starts_at = t(9050); // after medic last heard "a" firing (9001)
    let effect = ingest(&store, t(9100), newer).await;
    assert_eq!(effect, AlertEffect::Superseded(State::Queued));
    assert_eq!(relapses(), 2.0);
    // A resend of an older period joins the open incident and counts nothing.
    ingest(&store, t(9200), alert("a", Status::Firing, 0)).await;
    assert_eq!(relapses(), 2.0);
    store.close().await;
}

#[tokio::test]
async fn an_ack_counts_once_whoever_races_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(&dir, false);
    ingest(&store, t(0), alert("x", Status::Firing, 0)).await;
    let id = run_all(&store, failed()).await.remove(0);
    // Everyone clicks at once, through every way in.
    let acks = AckVia::ALL.into_iter().cycle().take(20).map(|via| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move { store.ack(&id, Some("p".into()), via).await.unwrap() })
    });
    let mut acknowledged = Vec::new();
    for (via, a) in AckVia::ALL.into_iter().cycle().zip(acks) {
        if a.await.unwrap() == Ack::Acknowledged {
            acknowledged.push(via);
        }
    }
    assert_eq!(acknowledged.len(), 1);
    let text = metrics.render();
    let total: f64 = AckVia::ALL
        .into_iter()
        .filter_map(|v| {
            let series = format!(r#"medic_acks_total{{route="disk",via="{}"}}"#, v.as_str());
            sample(&text, &series)
        })
        .sum();
    assert_eq!(total, 1.0, "{text}");
    let winner = format!(
        r#"medic_acks_total{{route="disk",via="{}"}}"#,
        acknowledged[0].as_str()
    );
    assert_eq!(sample(&text, &winner), Some(1.0), "{text}");
    // The ack's audit entry says where it came from.
    let inc = store.incident(&id).await.unwrap().unwrap();
    let acked = inc
        .timeline
        .unwrap()
        .into_iter()
        .find(|e| e.event == "incident_acknowledged")
        .unwrap();
    assert_eq!(acked.detail["via"], acknowledged[0].as_str());
    // Not escalated: refused, and not counted.
    ingest(&store, t(0), alert("y", Status::Firing, 0)).await;
    let queued = store.queued(10).await.unwrap().remove(0).id;
    assert!(matches!(
        store.ack(&queued, None, AckVia::Api).await.unwrap(),
        Ack::NotEscalated(State::Queued)
    ));
    assert_eq!(
        value(&metrics, r#"medic_acks_total{route="disk",via="api"}"#),
        sample(&text, r#"medic_acks_total{route="disk",via="api"}"#).unwrap_or(0.0)
    );
    store.close().await;
}

#[tokio::test]
async fn an_escalation_that_tells_no_channel_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(&dir, true);
    let no_route = Routed::NoRunbook {
        why: "no route matches".into(),
    };
    store
        .ingest(delivery(
            t(0),
            vec![alert("lost", Status::Firing, 0)],
            &no_route,
        ))
        .await
        .unwrap();
    ingest(&store, t(0), alert("failed", Status::Firing, 0)).await;
    run_all(&store, failed()).await;
    let text = metrics.render();
    let n = |series: &str| sample(&text, series);
    assert_eq!(
        n(r#"medic_escalations_total{route="",reason="no_runbook"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        n(r#"medic_escalations_unnotified_total{route=""}"#),
        Some(1.0)
    );
    assert_eq!(
        n(r#"medic_escalations_unnotified_total{route="disk"}"#),
        Some(1.0)
    );
    store.close().await;
}

/// Alerts choose nothing of the labels: a storm of alerts with names, instances and
/// fingerprints never seen before, escalated, acked and resolved, leaves one series per
/// route and enum value.
#[tokio::test]
async fn alert_content_never_becomes_a_label() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = open(&dir, false);
    let hostile = |i: usize| {
        let mut a = alert(&format!("fp-{i}-\"}}{{route=\"x"), Status::Firing, 0);
        a.labels
            .insert("alertname".into(), format!("Evil{i}\",route=\"pwn"));
        a.labels.insert("route".into(), format!("r{i}"));
        a
    };
    let alerts: Vec<Alert> = (0..200).map(hostile).collect();
    store
        .ingest(delivery(t(0), alerts.clone(), &disk()))
        .await
        .unwrap();
    let ids = run_all(&store, failed()).await;
    assert_eq!(ids.len(), 200);
    for id in ids.iter().step_by(2) {
        store
            .ack(id, Some("p".into()), AckVia::Console)
            .await
            .unwrap();
    }
    let resolved = alerts
        .into_iter()
        .map(|mut a| {
            a.status = Status::Resolved;
            a
        })
        .collect();
    store
        .ingest(delivery(t(60), resolved, &disk()))
        .await
        .unwrap();
    let text = metrics.render();
    let ours = [
        "medic_incidents_resolved",
        "medic_escalations",
        "medic_time_to_recovery_seconds",
        "medic_acks",
        "medic_relapses",
    ];
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && ours.iter().any(|o| l.starts_with(o)))
        .collect();
    assert!(
        series.iter().all(|l| l.contains(r#"route="disk""#)
            && !l.contains("Evil")
            && !l.contains("fp-")
            && !l.contains("pwn")),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"medic_escalations_total{route="disk",reason="step_failed"}"#
        ),
        Some(200.0)
    );
    assert_eq!(
        sample(&text, r#"medic_acks_total{route="disk",via="console"}"#),
        Some(100.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"medic_incidents_resolved_total{route="disk",outcome="resolved_after_escalation"}"#
        ),
        Some(200.0)
    );
    // One resolved series, one escalation series, one ack series, one histogram.
    let buckets = crate::metrics::automation::RECOVERY_BUCKETS.len() + 1;
    assert_eq!(series.len(), 1 + 1 + 1 + (buckets + 2), "{series:#?}");
    store.close().await;
}
