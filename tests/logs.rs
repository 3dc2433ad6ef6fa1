//! What an operator tailing the log sees: one line per incident state change, a start-up
//! summary, and configuration errors in the log's format.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, escalation: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
{store}

[runbooks]
dir = "{runbooks}"

[[routes]]
name = "gives-up"
matchers = ['alertname="GivesUp"']
runbook = "gives_up.rhai"

{escalation}
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
    )
}

const HOOK: &str = r#"
[escalation]
notify = ["ops-hook"]

[[escalation.channels]]
name = "ops-hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"
"#;

/// The JSON log lines of `m` with this message.
fn lines(m: &Medic, message: &str) -> Vec<Value> {
    m.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

async fn wait_line(m: &Medic, message: &str, alertname: &str) -> Value {
    eventually(WAIT, &format!("{message:?} for {alertname}"), || async {
        lines(m, message)
            .into_iter()
            .find(|v| v["alertname"] == alertname)
    })
    .await
}

/// Regression: an incident could open, escalate or reach nobody without a line in the log.
#[tokio::test]
async fn every_state_change_is_a_log_line_naming_the_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "gives_up.rhai", "escalate(\"cannot fix\");\n");
    let m = Medic::start_in(dir, &config(dir, HOOK));

    // The summary is logged as the server starts listening, which may come just after the
    // address it listens on is known to the test.
    let s = &eventually(WAIT, "the start-up summary", || async {
        lines(&m, "listening").into_iter().next()
    })
    .await;
    assert_eq!(s["level"], "INFO");
    assert_eq!(s["config"], m.config.display().to_string());
    assert!(s["store"].as_str().is_some_and(|u| !u.is_empty()), "{s}");
    assert_eq!(
        (s["routes"].as_u64(), s["channels"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        s["runbooks"].as_u64(),
        Some(2),
        "gives_up.rhai and restart.rhai: {s}"
    );
    assert_eq!(s["addr"], m.addr);

    let alerts = vec![
        alert("NoRunbook", "web1", "firing"),
        alert("GivesUp", "web2", "firing"),
    ];
    assert_eq!(post_webhook(&m, &body(alerts)).await.0, 200);

    // No route: escalated as it opens, with the channel it tells.
    let e = wait_line(&m, "incident escalated", "NoRunbook").await;
    assert_eq!(e["level"], "INFO");
    assert_eq!(e["fingerprint"], fingerprint_of("NoRunbook", "web1"));
    assert_eq!(e["route"], "");
    assert_eq!(e["reason"], "no_runbook");
    assert_eq!(e["channels"], "ops-hook");
    assert_eq!(e["state"], "escalated");
    assert!(e["incident"].as_str().is_some_and(|i| !i.is_empty()));

    // A runbook: opened (queued), then remediating, then escalated as it asked.
    let o = wait_line(&m, "incident opened", "GivesUp").await;
    assert_eq!(o["fingerprint"], fingerprint_of("GivesUp", "web2"));
    assert_eq!(
        (o["route"].as_str(), o["state"].as_str()),
        (Some("gives-up"), Some("queued"))
    );
    let r = wait_line(&m, "incident state changed", "GivesUp").await;
    assert_eq!(
        (r["from"].as_str(), r["state"].as_str()),
        (Some("queued"), Some("remediating"))
    );
    let e = wait_line(&m, "incident escalated", "GivesUp").await;
    assert_eq!(e["route"], "gives-up");
    assert_eq!(e["from"], "remediating");
    assert_eq!(e["reason"], "requested");
    assert_eq!(e["channels"], "ops-hook");
    assert_eq!(e["incident"], o["incident"]);
}

/// Regression: an escalation that no channel hears was as quiet as any other. Such a
/// configuration is now refused at start-up, and the refusal is in the log's format,
/// naming the key.
#[test]
fn a_config_whose_escalations_would_tell_nobody_is_refused_in_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "gives_up.rhai", "escalate(\"cannot fix\");\n");
    let path = dir.join("medic.toml");
    std::fs::write(&path, config(dir, "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refusal = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["problem"]
                .as_str()
                .is_some_and(|p| p.contains("would reach nobody"))
        })
        .unwrap_or_else(|| panic!("no JSON line says nobody would be told: {stderr}"));
    assert_eq!(refusal["level"], "ERROR");
    let problem = refusal["problem"].as_str().unwrap();
    assert!(problem.contains("escalation"), "{problem}");
    assert!(problem.contains("\"gives-up\""), "{problem}");
}

/// Regression: with `--log-format json`, configuration errors at start-up were printed raw
/// on stderr, before and outside the log.
#[test]
fn a_broken_config_is_reported_as_json_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("medic.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nno_such_key = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let problem = lines
        .iter()
        .find(|v| {
            v["problem"]
                .as_str()
                .is_some_and(|p| p.contains("no_such_key"))
        })
        .unwrap_or_else(|| panic!("no line names the problem: {stderr}"));
    assert_eq!(problem["level"], "ERROR");
    assert_eq!(problem["config"], path.display().to_string());
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["message"].as_str().unwrap().contains("not starting"),
        "{last}"
    );
}
