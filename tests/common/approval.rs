//! The approval tests' setting: a config with two approval routes whose runbooks write
//! what they run to `ran.log` (through an allowed script), and the API calls and waits the
//! approval tests share (`tests/approval.rs`, `tests/approval_people.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::*;

pub const WAIT: Duration = Duration::from_secs(30);

/// The scripts the runbooks run, in `dir/bin`: `fix` appends its arguments to
/// `dir/ran.log`; `probe` prints `primary` (what only a real run sees).
pub fn scripts(dir: &Path) -> (PathBuf, PathBuf) {
    let fix = script(
        dir,
        "fix",
        &format!("echo \"$*\" >> {}", dir.join("ran.log").display()),
    );
    let probe = script(dir, "probe", "echo primary");
    (fix, probe)
}

/// What the runbooks ran, one line a run of `fix`.
pub fn ran(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ran.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Routes `db` (`DbDown`, runbook `fix.rhai`, `approval`) and `branch` (`DbBranch`,
/// `branch.rhai`: restarts, or fails over when the probe says `primary`, which a dry run
/// never sees), the escalation section `escalation`, `server` keys and `extra` (users).
pub fn config(dir: &Path, approval: &str, server: &str, escalation: &str, extra: &str) -> String {
    let (fix, probe) = scripts(dir);
    runbook(
        dir,
        "fix.rhai",
        &format!(
            r#"exec("{}", ["restart", alert.labels.instance]);"#,
            fix.display()
        ),
    );
    runbook(
        dir,
        "branch.rhai",
        &format!(
            r#"let r = exec("{probe}", []);
               if r.stdout.contains("primary") {{
                   exec("{fix}", ["failover", alert.labels.instance]);
               }} else {{
                   exec("{fix}", ["restart", alert.labels.instance]);
               }}"#,
            probe = probe.display(),
            fix = fix.display()
        ),
    );
    let listen = match server.contains("listen =") {
        true => String::new(),
        false => "listen = \"127.0.0.1:0\"".into(),
    };
    format!(
        r#"
[server]
{listen}
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"
{server}

[store]
{store}

[runbooks]
dir = "{runbooks}"
allowed_commands = ["{fix}", "{probe}"]

[limits]
storm_window = "1ms"
{escalation}

[[routes]]
name = "db"
matchers = ['alertname="DbDown"']
runbook = "fix.rhai"
approval = {approval}

[[routes]]
name = "branch"
matchers = ['alertname="DbBranch"']
runbook = "branch.rhai"
approval = {{ timeout = "10m" }}
{extra}
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        fix = fix.display(),
        probe = probe.display(),
    )
}

/// An alert as Prometheus posts it to Alertmanager; resolved when `ended`.
pub fn am_alert(name: &str, instance: &str, ended: bool) -> Value {
    let mut a = json!({
        "labels": {"alertname": name, "instance": instance, "severity": "critical"},
        "annotations": {"summary": format!("{name} on {instance}")},
        "startsAt": "2026-11-23T10:00:00Z",
    });
    if ended {
        let at = Utc::now() - chrono::Duration::seconds(1);
        a["endsAt"] = json!(at.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    a
}

/// The incident of `name`/`instance` once `done` says it is what the test waits for.
pub async fn when(
    m: &Medic,
    name: &str,
    instance: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let fp = fingerprint_of(name, instance);
    eventually(WAIT, &format!("{name}/{instance}: {what}"), || async {
        let list = api(m, &format!("/api/v1/incidents?alertname={name}")).await;
        let found = list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["labels"]["instance"] == instance || i["fingerprint"] == fp.as_str())?;
        let one = api(m, &format!("/api/v1/incidents/{}", found["id"].as_str()?)).await;
        done(&one).then_some(one)
    })
    .await
}

/// The incident once it waits for approval with its plan made.
pub async fn waiting(m: &Medic, name: &str, instance: &str) -> Value {
    when(m, name, instance, "awaiting approval with a plan", |i| {
        i["state"] == "awaiting_approval" && !i["approval"]["plan"].is_null()
    })
    .await
}

pub async fn in_state(m: &Medic, name: &str, instance: &str, state: &str) -> Value {
    when(m, name, instance, state, |i| i["state"] == state).await
}

/// `POST /api/v1/incidents/{id}/{action}` with the API token and `body`.
pub async fn decide(m: &Medic, id: &str, action: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(m.url(&format!("/api/v1/incidents/{id}/{action}")))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub fn events(incident: &Value, name: &str) -> Vec<Value> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == name)
        .map(|e| e["detail"].clone())
        .collect()
}

pub fn id_of(i: &Value) -> String {
    i["id"].as_str().unwrap().to_string()
}

/// The file channel's notifications of `kind` about incident `id`.
pub fn told(dir: &Path, id: &str, kind: &str) -> Vec<Value> {
    escalations_in_file(dir)
        .into_iter()
        .filter(|d| d["kind"] == kind && d["incident"]["id"] == id)
        .collect()
}
