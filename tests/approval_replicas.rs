//! Approval with two replicas on one PostgreSQL database, as real processes, fed by the
//! real Alertmanager: both receive the alert and may both make its plan, but it is recorded
//! (and requested) once; the approval arrives at one replica while a second person's
//! approval races it at the other, and the plan runs exactly once.
//!
//! These tests always use PostgreSQL (`MEDIC_TEST_POSTGRES`, else the local server).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// A replica's config: the shared database `db`, a short lease, the runbook (the same text
/// in each replica's directory: a plan is bound to the runbook's hash) and its script in
/// `shared`, which appends to `shared/ran.log`.
fn config(dir: &Path, db: &str, shared: &Path) -> String {
    runbook(
        dir,
        "fix.rhai",
        &format!(
            r#"exec("{}", ["restart", alert.labels.instance]);"#,
            shared.join("bin/fix").display()
        ),
    );
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
url = "{db}"
lease = "2s"
statement_timeout = "2s"

[runbooks]
dir = "{runbooks}"
allowed_commands = ["{fix}"]
{escalation}

[[routes]]
name = "db"
matchers = ['alertname="DbDown"']
runbook = "fix.rhai"
approval = {{ timeout = "10m" }}
"#,
        runbooks = dir.join("runbooks").display(),
        fix = shared.join("bin/fix").display(),
        escalation = escalation_to_file(dir),
    )
}

async fn approve(m: &Medic, id: &str, by: &str) -> u16 {
    client()
        .post(m.url(&format!("/api/v1/incidents/{id}/approve")))
        .bearer_auth(API_TOKEN)
        .json(&json!({ "by": by }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_at_one_replica_the_plan_runs_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    script(
        &shared,
        "fix",
        &format!("echo \"$*\" >> {}", shared.join("ran.log").display()),
    );
    let db = medic::store::postgres::scratch_database().expect("a PostgreSQL test database");
    let start = |name: &str| {
        let dir = tmp.path().join(name);
        Medic::start_in(&dir, &config(&dir, &db, &shared))
    };
    let (a, b) = (start("a"), start("b"));
    let am =
        Alertmanager::start_for(&[a.url("/webhook"), b.url("/webhook")], WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([{"labels": {"alertname": "DbDown", "instance": "db1"}}]))
        .await;

    let id = eventually(WAIT, "the incident waits with its plan", || async {
        let list = api(&a, "/api/v1/incidents?alertname=DbDown").await;
        let i = list["incidents"].as_array()?.first()?.clone();
        (i["state"] == "awaiting_approval" && !i["approval"]["plan"].is_null())
            .then(|| i["id"].as_str().unwrap().to_string())
    })
    .await;
    let db = TestDb::at(&db);
    let entries = |event: &str| {
        db.count(&format!(
            "SELECT COUNT(*) FROM audit WHERE incident_id = '{id}' AND event = '{event}'"
        ))
    };
    assert_eq!(db.count("SELECT COUNT(*) FROM incidents"), 1);
    assert_eq!(
        entries("approval_requested"),
        1,
        "the plan is recorded once"
    );

    // The approval arrives at b; another person's races it at a.
    let (at_b, at_a) = tokio::join!(approve(&b, &id, "alice"), approve(&a, &id, "bob"));
    let mut answers = [at_a, at_b];
    answers.sort();
    assert_eq!(answers, [200, 409], "one decision wins, the other is told");

    eventually(WAIT, "the run and its end", || async {
        let one = api(&b, &format!("/api/v1/incidents/{id}")).await;
        (one["state"] == "verifying").then_some(())
    })
    .await;
    // Both replicas look for work every second: give them time to run it twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ran = std::fs::read_to_string(shared.join("ran.log")).unwrap_or_default();
    assert_eq!(ran.lines().collect::<Vec<_>>(), ["restart db1"]);
    assert_eq!(entries("run_started"), 1);
    assert_eq!(entries("approved"), 1);
    // The request went out once, through one replica's sender.
    let requests: usize = ["a", "b"]
        .iter()
        .map(|r| {
            escalations_in_file(&tmp.path().join(r))
                .iter()
                .filter(|d: &&Value| d["kind"] == "approval_requested")
                .count()
        })
        .sum();
    assert_eq!(requests, 1);
}
