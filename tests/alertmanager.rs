//! End to end with the real Alertmanager: alerts posted to its API v2 reach medic as
//! incidents through its webhook (with the bearer token), its resends are deduplicated,
//! and its resolved notification moves the incident on.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::alertmanager::Alertmanager;
use common::*;
use serde_json::{json, Value};

fn am_alert(instance: &str, ends_at: Option<chrono::DateTime<Utc>>) -> Value {
    let mut a = json!({
        "labels": {"alertname": "ServiceDown", "instance": instance, "job": "web", "severity": "critical"},
        "annotations": {"summary": format!("{instance} is down")},
        "generatorURL": "http://prometheus.example:9090/graph",
        "startsAt": "2026-11-23T10:00:00Z",
    });
    if let Some(t) = ends_at {
        a["endsAt"] = json!(t.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_flow_from_alertmanager_into_incidents() {
    let m = Medic::start();
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "2s").await;

    am.post_alerts(&json!([
        am_alert("web1:80", None),
        am_alert("web2:80", None)
    ]))
    .await;
    let list = eventually(
        Duration::from_secs(30),
        "two incidents from Alertmanager, remediated",
        || async {
            let l = incidents(&m).await;
            (l.len() == 2 && l.iter().all(|i| i["state"] == "verifying")).then_some(l)
        },
    )
    .await;
    for inc in &list {
        assert_eq!(inc["runbook"], "restart.rhai");
        // medic's fallback fingerprint is Alertmanager's own.
        let labels: BTreeMap<String, String> =
            serde_json::from_value(inc["labels"].clone()).unwrap();
        assert_eq!(
            inc["fingerprint"],
            medic::ingest::payload::fingerprint(&labels)
        );
    }

    // Alertmanager keeps resending (repeat_interval 2s, and Prometheus-style re-posts):
    // the incidents count the deliveries but stay two.
    for _ in 0..3 {
        am.post_alerts(&json!([
            am_alert("web1:80", None),
            am_alert("web2:80", None)
        ]))
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eventually(
        Duration::from_secs(30),
        "resends counted on the incidents",
        || async {
            let l = incidents(&m).await;
            assert_eq!(l.len(), 2, "resends must never open new incidents: {l:?}");
            l.iter()
                .all(|i| i["deliveries"].as_u64().unwrap_or(0) >= 2)
                .then_some(())
        },
    )
    .await;

    // Resolve one: Alertmanager sends the resolved notification (send_resolved).
    am.post_alerts(&json!([am_alert(
        "web1:80",
        Some(Utc::now() - chrono::Duration::seconds(1))
    )]))
    .await;
    let resolved = eventually(Duration::from_secs(30), "resolution of web1", || async {
        incidents(&m)
            .await
            .into_iter()
            .find(|i| i["labels"]["instance"] == "web1:80" && i["state"] == "resolved")
    })
    .await;
    assert_eq!(resolved["outcome"], "auto_remediated");
    let others = incidents(&m).await;
    assert_eq!(others.len(), 2);
    let web2 = others
        .iter()
        .find(|i| i["labels"]["instance"] == "web2:80")
        .unwrap();
    assert_eq!(web2["state"], "verifying");

    // Every delivery came from Alertmanager with the bearer token and was audited.
    let id = resolved["id"].as_str().unwrap();
    let one = api(&m, &format!("/api/v1/incidents/{id}")).await;
    let events: Vec<&str> = one["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"incident_opened"));
    assert_eq!(events.last(), Some(&"state_changed"));
    assert!(events.contains(&"alert_deduplicated"), "{events:?}");
    let metrics = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("reason=\"unauthorized\""),
        "Alertmanager's token was refused:\n{}",
        am.log()
    );
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_and_nothing_stored() {
    let m = Medic::start();
    let am = Alertmanager::start(&m.url("/webhook"), "not-the-token", "1h").await;
    am.post_alerts(&json!([am_alert("web9:80", None)])).await;
    eventually(Duration::from_secs(30), "a refused delivery", || async {
        let text = client()
            .get(m.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("medic_webhook_rejected_total{reason=\"unauthorized\"}")
            .then_some(())
    })
    .await;
    assert!(incidents(&m).await.is_empty());
}

/// A high-availability Prometheus pair: the same alert arrives again with an earlier
/// `startsAt`, which Alertmanager keeps. Its resolution is the incident's, not stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_prometheus_earlier_starts_at_still_resolves_the_incident() {
    let m = Medic::start();
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "2s").await;
    let at = |a: &mut Value, starts: &str| a["startsAt"] = json!(starts);

    am.post_alerts(&json!([am_alert("web3:80", None)])).await;
    let inc = eventually(
        Duration::from_secs(30),
        "the incident, remediated",
        || async {
            incidents(&m)
                .await
                .into_iter()
                .find(|i| i["state"] == "verifying")
        },
    )
    .await;
    let id = inc["id"].as_str().unwrap().to_string();

    // The pair's other Prometheus saw it fire two minutes earlier.
    let mut earlier = am_alert("web3:80", None);
    at(&mut earlier, "2026-11-23T09:58:00Z");
    am.post_alerts(&json!([earlier])).await;
    eventually(
        Duration::from_secs(30),
        "Alertmanager's resend with the earlier startsAt",
        || async {
            let one = api(&m, &format!("/api/v1/incidents/{id}")).await;
            one["timeline"].as_array()?.iter().find(|e| {
                e["event"] == "alert_deduplicated"
                    && e["detail"]["starts_at"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("2026-11-23T09:58:00"))
            })?;
            Some(())
        },
    )
    .await;

    // Resolved through Alertmanager's API: it sends the earliest startsAt it kept.
    am.post_alerts(&json!([am_alert(
        "web3:80",
        Some(Utc::now() - chrono::Duration::seconds(1))
    )]))
    .await;
    let resolved = eventually(Duration::from_secs(30), "the incident resolved", || async {
        let one = api(&m, &format!("/api/v1/incidents/{id}")).await;
        (one["state"] == "resolved").then_some(one)
    })
    .await;
    assert_eq!(resolved["outcome"], "auto_remediated");
    assert!(
        resolved["started_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-23T10:00:00"),
        "the incident keeps the start it opened with: {}",
        resolved["started_at"]
    );
    let stale = resolved["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "alert_stale")
        .count();
    assert_eq!(stale, 0, "{}", am.log());
    assert_eq!(incidents(&m).await.len(), 1);
}
