//! Approval on paused time, in-process (`tests/common/engine.rs`): the approval deadline is
//! the store's, so it holds across a restart and escalates `approval_timeout` exactly when
//! it ends, not a moment before; and the guards judge an approved run when it would start.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::engine::{settle, until, Engine};
use common::{alert, store_config, API_TOKEN, WEBHOOK_TOKEN};
use serde_json::{json, Value};

/// Route `db` (`DbDown`) asks for approval within 10 minutes; one `file` channel, `hook`.
fn write_config(dir: &Path) {
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::write(dir.join("runbooks/fix.rhai"), "log(\"fixed\");\n").unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
{store}

[runbooks]
dir = "{runbooks}"

[escalation]
notify = ["hook"]

[[escalation.channels]]
name = "hook"
type = "file"
path = "{hook}"

[[routes]]
name = "db"
matchers = ['alertname="DbDown"']
runbook = "fix.rhai"
approval = {{ timeout = "10m" }}
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        hook = dir.join("hook.jsonl").display(),
    );
    std::fs::write(dir.join("medic.toml"), text).unwrap();
}

/// The `DbDown` incident, with its timeline, once `done` says so.
async fn when(e: &Engine, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    until(what, || async {
        let list = e.api("/api/v1/incidents?alertname=DbDown").await;
        let id = list["incidents"].as_array()?.first()?["id"]
            .as_str()?
            .to_string();
        let one = e.api(&format!("/api/v1/incidents/{id}")).await;
        done(&one).then_some(one)
    })
    .await
}

fn kinds(e: &Engine) -> Vec<String> {
    e.sent("hook")
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_approval_deadline_holds_across_a_restart_and_ends_exactly_on_time() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let e = Engine::start(tmp.path(), Utc::now()).await;
    e.post_webhook(vec![alert("DbDown", "db1", "firing")]).await;
    // The approval worker looks every quarter second (of the paused clock).
    tokio::time::advance(Duration::from_millis(300)).await;
    let inc = when(&e, "a plan", |i| !i["approval"]["plan"].is_null()).await;
    let deadline: DateTime<Utc> = inc["approval"]["until"].as_str().unwrap().parse().unwrap();
    assert!(deadline - e.clock.now() <= chrono::Duration::minutes(10));
    until("the request", || async {
        (kinds(&e) == ["approval_requested"]).then_some(())
    })
    .await;

    e.advance_to(deadline, Duration::from_secs(60)).await;
    assert_eq!(
        when(&e, "waiting", |_| true).await["state"],
        "awaiting_approval"
    );

    // A restart: the deadline is the store's, not a timer of the process that stopped.
    let e = e.restart().await;
    e.advance_to(deadline, Duration::from_secs(1)).await;
    let still = when(&e, "waiting", |_| true).await;
    assert_eq!(
        still["state"], "awaiting_approval",
        "escalated before its deadline"
    );
    assert_eq!(kinds(&e), ["approval_requested"]);

    e.advance_to(deadline + chrono::Duration::seconds(1), Duration::ZERO)
        .await;
    let done = when(&e, "approval_timeout", |i| i["state"] == "escalated").await;
    assert_eq!(done["reason"], "approval_timeout");
    let at = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "approval_timeout")
        .unwrap()["at"]
        .as_str()
        .unwrap()
        .parse::<DateTime<Utc>>()
        .unwrap();
    assert!(at >= deadline, "{at} before {deadline}");
    until("the page", || async {
        (kinds(&e) == ["approval_requested", "escalated"]).then_some(())
    })
    .await;
    assert!(done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["event"] != "run_started"));
    e.stop().await;
}

/// Automation is paused while the run waits; the approval queues it, and the guards refuse
/// it when it would start: escalated `paused`, as any refused run, and nothing ran.
#[tokio::test(start_paused = true)]
async fn guards_judge_an_approved_run_when_it_would_start() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let e = Engine::start(tmp.path(), Utc::now()).await;
    e.post_webhook(vec![alert("DbDown", "db2", "firing")]).await;
    // The approval worker looks every quarter second (of the paused clock).
    tokio::time::advance(Duration::from_millis(300)).await;
    let inc = when(&e, "a plan", |i| !i["approval"]["plan"].is_null()).await;
    let id = inc["id"].as_str().unwrap().to_string();
    let (status, _) = e
        .api_post(
            "/api/v1/pause",
            json!({"by": "ops", "reason": "maintenance"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = e
        .api_post(
            &format!("/api/v1/incidents/{id}/approve"),
            json!({"by": "alice"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    let done = when(&e, "refused", |i| i["state"] == "escalated").await;
    assert_eq!(done["reason"], "paused");
    assert!(
        done["message"].as_str().unwrap().contains("paused"),
        "{done}"
    );
    let events: Vec<&str> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"approved"), "{events:?}");
    assert!(!events.contains(&"run_started"), "{events:?}");
    e.stop().await;
}
