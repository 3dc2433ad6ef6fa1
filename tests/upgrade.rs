//! A database written by an earlier release opens and works under this code. Each
//! release's database is kept in `tests/fixtures/upgrade/v<version>/` (made by
//! `scripts/make-upgrade-fixture.sh`, see docs/upgrading.md): the code under test starts
//! on a copy of each, on the store the suite runs on (SQLite, or PostgreSQL with
//! `MEDIC_TEST_STORE=postgres`), migrates it, lists what the release kept, extends its
//! audit chain, and carries on with the incidents, breakers and notifications it left.

use crate::common;
use common::upgrade;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use upgrade::{Fixture, Store};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_database_opens_and_works() {
    let store = Store::under_test();
    let fixtures = upgrade::fixtures();
    assert!(!fixtures.is_empty(), "no fixture in tests/fixtures/upgrade");
    for fixture in &fixtures {
        upgrade_from(fixture, store).await;
    }
}

async fn upgrade_from(fixture: &Fixture, store: Store) {
    let v = format!("v{} on {}", fixture.version, store.name());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let url = upgrade::install(dir, store, Some(fixture));
    let db = TestDb::at(&url);
    let expected = fixture.incidents(store);

    // What the release left, read before the code under test touches it.
    let old_version = db.count("SELECT MAX(version) FROM schema_migrations");
    let old_chain = audit_hashes(&db);
    let escalated = fixture.incident(store, "FixtureUnrouted");
    let escalated_id = escalated["id"].as_str().unwrap().to_string();
    let tier2 = format!(
        "SELECT state FROM outbox WHERE incident_id = '{escalated_id}' AND tier = 2 \
           AND kind = 'escalated'"
    );
    assert_eq!(
        db.rows(&tier2).len(),
        1,
        "{v}: the fixture has the pending row"
    );
    // The storm group's summary is due when the group's window ends: a fixture made a
    // moment ago may not be due yet.
    let summary_due = db.rows("SELECT due_at FROM outbox WHERE key LIKE 'group/%/1/%'");
    assert_eq!(
        summary_due.len(),
        1,
        "{v}: the fixture has the storm's summary"
    );
    let summary_due = chrono::DateTime::parse_from_rfc3339(summary_due[0][0].as_deref().unwrap())
        .expect("an RFC 3339 due time");
    let summary_wait = WAIT
        + (summary_due.to_utc() - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();

    let env = upgrade::env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut m = Medic::start_in_env(dir, &upgrade::config(), &env);

    // It migrated: every migration of this code is applied, the release's kept.
    let version = db.count("SELECT MAX(version) FROM schema_migrations");
    assert!(
        version >= old_version,
        "{v}: schema {old_version} -> {version}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM schema_migrations"),
        version,
        "{v}: one row per migration, none skipped"
    );
    let ready: Value = client()
        .get(m.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{v}: {ready}");
    assert!(
        ready["paused"].is_null(),
        "{v}: the release paused and resumed; it is not paused: {ready}"
    );

    // Every incident the release listed is listed alike, and nothing else.
    let listed = incidents(&m).await;
    assert_eq!(
        ids(&listed),
        ids(&expected),
        "{v}: the incidents, newest first"
    );
    for (got, want) in listed.iter().zip(&expected) {
        for key in [
            "id",
            "alertname",
            "fingerprint",
            "state",
            "reason",
            "outcome",
        ] {
            assert_eq!(got[key], want[key], "{v}: {key} of {want}");
        }
    }

    // The pending row of the escalated incident is still there.
    let before = db.rows(&tier2)[0][0].clone().unwrap();
    assert!(
        before == "pending" || before == "sent",
        "{v}: its second tier is {before}"
    );

    // The storm group's summary, pending when the release stopped and long due now, is
    // sent by this code, listing the three incidents its breaker refused.
    let storm: Vec<String> = expected
        .iter()
        .filter(|i| i["reason"] == "circuit_open")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(storm.len(), 3, "{v}: the storm");
    let summary = eventually(summary_wait, "the storm group's summary", || async {
        sent(dir)
            .into_iter()
            .find(|d| d["group"].is_object() && d["tier"] == 1)
    })
    .await;
    assert_eq!(summary["group"]["size"], 3, "{v}: {summary}");
    let mut listed_in_summary: Vec<String> = summary["group"]["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect();
    listed_in_summary.sort();
    let mut storm_sorted = storm.clone();
    storm_sorted.sort();
    assert_eq!(listed_in_summary, storm_sorted, "{v}: {summary}");

    // A firing resend of the escalated alert is a duplicate of the release's incident.
    let detail = api(&m, &format!("/api/v1/incidents/{escalated_id}")).await;
    let deduplicated = events(&detail, "alert_deduplicated");
    let resend = resend_of(&detail, "firing");
    assert_eq!(post_webhook(&m, &body(vec![resend])).await.0, 200);
    let detail = eventually(WAIT, "the resend recorded", || async {
        let d = api(&m, &format!("/api/v1/incidents/{escalated_id}")).await;
        (events(&d, "alert_deduplicated") > deduplicated).then_some(d)
    })
    .await;
    assert_eq!(detail["state"], "escalated", "{v}");
    assert_eq!(
        incidents(&m).await.len(),
        expected.len(),
        "{v}: no new incident"
    );

    // The acknowledged incident stays so; acking it again is no error.
    let acked = fixture.incident(store, "FixtureHandover");
    let acked_id = acked["id"].as_str().unwrap();
    let detail = api(&m, &format!("/api/v1/incidents/{acked_id}")).await;
    assert_eq!(detail["state"], "acknowledged", "{v}");
    assert_eq!(events(&detail, "incident_acknowledged"), 1, "{v}");
    let r = client()
        .post(m.url(&format!("/api/v1/incidents/{acked_id}/ack")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"by": "upgrade test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{v}: ack again");

    // The breaker the release opened is still open: a new alert behind it is refused.
    let refused = alert("FixtureFlaky", "db2", "firing");
    assert_eq!(post_webhook(&m, &body(vec![refused.clone()])).await.0, 200);
    let inc = wait_state(&m, &refused, "escalated").await;
    assert_eq!(inc["reason"], "circuit_open", "{v}: {inc}");

    // A new alert opens an incident and is remediated.
    let fresh = alert("FixtureRemediate", "web3", "firing");
    assert_eq!(post_webhook(&m, &body(vec![fresh.clone()])).await.0, 200);
    let inc = wait_state(&m, &fresh, "verifying").await;
    let detail = api(
        &m,
        &format!("/api/v1/incidents/{}", inc["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(events(&detail, "step_finished"), 1, "{v}: exec true ran");
    let resolved = alert("FixtureRemediate", "web3", "resolved");
    assert_eq!(post_webhook(&m, &body(vec![resolved])).await.0, 200);
    let inc = wait_state(&m, &fresh, "resolved").await;
    assert_eq!(inc["outcome"], "auto_remediated", "{v}: {inc}");

    // A resolution of the escalated alert resolves the release's incident, cancels its
    // pending tier (unless it was sent) and tells on-call it resolved.
    let detail = api(&m, &format!("/api/v1/incidents/{escalated_id}")).await;
    let resolution = resend_of(&detail, "resolved");
    assert_eq!(post_webhook(&m, &body(vec![resolution])).await.0, 200);
    let inc = eventually(WAIT, "the escalated incident resolved", || async {
        let d = api(&m, &format!("/api/v1/incidents/{escalated_id}")).await;
        (d["state"] == "resolved").then_some(d)
    })
    .await;
    assert_eq!(inc["outcome"], "resolved_after_escalation", "{v}: {inc}");
    let after = eventually(WAIT, "the pending tier settled", || async {
        let s = db.rows(&tier2)[0][0].clone().unwrap();
        (s != "pending").then_some(s)
    })
    .await;
    let allowed: &[&str] = if before == "pending" {
        &["cancelled", "sent"]
    } else {
        &["sent"]
    };
    assert!(
        allowed.contains(&after.as_str()),
        "{v}: {before} -> {after}"
    );
    eventually(WAIT, "the resolution sent", || async {
        sent(dir)
            .into_iter()
            .find(|d| d["kind"] == "resolved" && d["incident"]["id"] == escalated_id.as_str())
    })
    .await;

    // The release's incidents, and the new ones.
    assert_eq!(incidents(&m).await.len(), expected.len() + 2, "{v}");

    assert_eq!(m.stop(), Some(0), "{v}: clean stop; log:\n{}", m.log_text());

    // The audit chain is the release's, extended, and verifies end to end.
    let chain = audit_hashes(&db);
    assert!(chain.len() > old_chain.len(), "{v}: new entries");
    assert_eq!(
        chain[..old_chain.len()],
        old_chain[..],
        "{v}: the release's entries are kept as they were"
    );
    let (code, out, err) = upgrade::cli(dir, &url, &["audit", "verify"]);
    assert_eq!(code, 0, "{v}: audit verify: {out}{err}");

    // The upgraded database has the schema of a new one: no released migration was
    // edited after its release.
    let new_tmp = tempfile::tempdir().unwrap();
    let new_url = upgrade::install(new_tmp.path(), store, None);
    let new_env = upgrade::env(&new_url);
    let new_env: Vec<(&str, &str)> = new_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut new = Medic::start_in_env(new_tmp.path(), &upgrade::config(), &new_env);
    assert_eq!(new.stop(), Some(0));
    let schema = upgrade::schema(&db);
    assert!(
        schema.iter().any(|l| l.contains("outbox")),
        "{v}: the schema is read: {schema:#?}"
    );
    assert_eq!(
        schema,
        upgrade::schema(&TestDb::at(&new_url)),
        "{v}: the schema of the upgraded database and of a new one"
    );
}

fn ids(incidents: &[Value]) -> Vec<&str> {
    incidents
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default())
        .collect()
}

/// The hashes of the audit log, oldest first.
fn audit_hashes(db: &TestDb) -> Vec<String> {
    db.rows("SELECT hash FROM audit ORDER BY seq")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

/// How many timeline entries of an incident are `event`.
fn events(detail: &Value, event: &str) -> usize {
    detail["timeline"]
        .as_array()
        .map(|t| t.iter().filter(|e| e["event"] == event).count())
        .unwrap_or(0)
}

/// The alert of an incident as Alertmanager sends it again, `status` firing or resolved.
fn resend_of(detail: &Value, status: &str) -> Value {
    let ends = if status == "resolved" {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    } else {
        "0001-01-01T00:00:00Z".to_string()
    };
    json!({
        "status": status,
        "labels": detail["labels"],
        "annotations": detail["annotations"],
        "startsAt": detail["started_at"],
        "endsAt": ends,
        "generatorURL": "http://prometheus.example:9090/graph",
        "fingerprint": detail["fingerprint"],
    })
}

/// Waits until the incident of `alert` is in `state`; returns it.
async fn wait_state(m: &Medic, alert: &Value, state: &str) -> Value {
    let fingerprint = alert["fingerprint"].clone();
    eventually(WAIT, &format!("{} {state}", alert["labels"]), || async {
        incidents(m)
            .await
            .into_iter()
            .find(|i| i["fingerprint"] == fingerprint && i["state"] == state)
    })
    .await
}

/// The notifications the fixture config's first tier (`oncall`) wrote in this run.
fn sent(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("data/oncall.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect()
}
