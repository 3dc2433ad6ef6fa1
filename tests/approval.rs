//! Approval before a run, end to end through the real binary: alerts from the real
//! Alertmanager wait in `awaiting_approval` with their plan (a dry run of the runbook),
//! and then are approved (the plan runs and the alert resolves), rejected, left to time
//! out, or resolve while waiting; medic is killed with `kill -9` while one waits; an
//! approved run whose real steps differ from its dry run is stopped `off_plan` before the
//! differing step acts. How people decide (mail links, Slack, the console) is
//! `approval_people.rs`; two replicas, `approval_replicas.rs`.
//!
//! Every runbook here writes what it runs to `ran.log` (through an allowed script), so
//! "nothing ran" is a file that does not exist, not a state that was not reached.

use crate::common;

use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::approval::*;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_the_plan_runs_and_the_alert_resolves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "{ timeout = \"10m\" }",
            "",
            &escalation_to_file(dir),
            "",
        ),
    );
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([am_alert("DbDown", "db1", false)]))
        .await;

    let inc = waiting(&m, "DbDown", "db1").await;
    let id = id_of(&inc);
    let fix = dir.join("bin/fix").display().to_string();
    assert_eq!(
        inc["approval"]["plan"]["steps"],
        json!([{"step": "exec", "program": fix, "args": ["restart", "db1"]}])
    );
    assert_eq!(
        inc["approval"]["plan"]["end"],
        json!({"result": "completed"})
    );
    // The request went through the route's channel, with the plan; nothing ran.
    let request = eventually(WAIT, "the approval request", || async {
        told(dir, &id, "approval_requested").into_iter().next()
    })
    .await;
    assert_eq!(
        request["approval"]["plan"][0],
        format!("1. exec {fix} restart db1")
    );
    assert!(
        ran(dir).is_empty(),
        "ran before the approval: {:?}",
        ran(dir)
    );
    // Still nothing runs while it waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        in_state(&m, "DbDown", "db1", "awaiting_approval").await["attempts"],
        0
    );

    let (status, body) = decide(&m, &id, "approve", json!({"by": "alice"})).await;
    assert_eq!(status, 200, "{body}");
    let after = in_state(&m, "DbDown", "db1", "verifying").await;
    assert_eq!(ran(dir), ["restart db1"]);
    assert_eq!(after["approval"]["approved_by"], "alice");
    assert_eq!(events(&after, "approved")[0]["by"], "alice");
    assert_eq!(
        events(&after, "run_started")[0]["bound_to_plan"],
        events(&after, "approved")[0]["plan_digest"]
    );
    // Deciding again is refused.
    assert_eq!(decide(&m, &id, "reject", json!({"by": "bob"})).await.0, 409);

    am.post_alerts(&json!([am_alert("DbDown", "db1", true)]))
        .await;
    let done = in_state(&m, "DbDown", "db1", "resolved").await;
    assert_eq!(done["outcome"], "auto_remediated");
    assert_eq!(ran(dir), ["restart db1"], "the plan ran once");
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_nothing_runs_and_it_is_escalated_with_who_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "{ timeout = \"10m\" }",
            "",
            &escalation_to_file(dir),
            "",
        ),
    );
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([am_alert("DbDown", "db2", false)]))
        .await;
    let id = id_of(&waiting(&m, "DbDown", "db2").await);

    // A body medic cannot read is refused and decides nothing.
    assert_eq!(
        decide(&m, &id, "reject", json!({"who": "bob"})).await.0,
        400
    );
    assert_eq!(
        decide(&m, "01NOSUCHINCIDENT", "reject", json!({})).await.0,
        404
    );
    let (status, body) = decide(
        &m,
        &id,
        "reject",
        json!({"by": "bob", "reason": "a failover is planned at noon"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "escalated");
    assert_eq!(body["reason"], "rejected");
    assert_eq!(
        body["message"],
        "rejected by bob: a failover is planned at noon"
    );
    let rejected = events(&body, "rejected");
    assert_eq!(rejected[0]["by"], "bob");
    assert_eq!(rejected[0]["via"], "api");
    // Told as an escalation, with who and why.
    let page = eventually(WAIT, "the escalation", || async {
        told(dir, &id, "escalated").into_iter().next()
    })
    .await;
    assert_eq!(page["reason"], "rejected");
    assert!(
        page["why"].as_str().unwrap().contains("rejected by bob"),
        "{page}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ran(dir).is_empty());
    assert_eq!(
        decide(&m, &id, "approve", json!({"by": "alice"})).await.0,
        409
    );
    assert!(ran(dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_it_times_out_and_nothing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "{ timeout = \"2s\" }",
            "",
            &escalation_to_file(dir),
            "",
        ),
    );
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([am_alert("DbDown", "db3", false)]))
        .await;
    let inc = in_state(&m, "DbDown", "db3", "escalated").await;
    assert_eq!(inc["reason"], "approval_timeout");
    assert_eq!(events(&inc, "approval_timeout").len(), 1);
    let at = |name: &str| {
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == name)
            .unwrap()["at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Not before its deadline.
    assert!(at("approval_timeout").as_str() >= inc["approval"]["until"].as_str().unwrap());
    assert!(ran(dir).is_empty());
    assert_eq!(decide(&m, &id_of(&inc), "approve", json!({})).await.0, 409);
    eventually(WAIT, "the escalation page", || async {
        told(dir, &id_of(&inc), "escalated").into_iter().next()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_resolves_while_waiting_nothing_runs_and_the_request_is_withdrawn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "{ timeout = \"10m\" }",
            "",
            &escalation_to_file(dir),
            "",
        ),
    );
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([am_alert("DbDown", "db4", false)]))
        .await;
    let id = id_of(&waiting(&m, "DbDown", "db4").await);
    eventually(WAIT, "the request", || async {
        told(dir, &id, "approval_requested").into_iter().next()
    })
    .await;

    am.post_alerts(&json!([am_alert("DbDown", "db4", true)]))
        .await;
    let done = in_state(&m, "DbDown", "db4", "resolved").await;
    assert_eq!(done["outcome"], "resolved_before_action");
    assert_eq!(
        events(&done, "approval_withdrawn")[0]["told"],
        json!(["escalations"])
    );
    let withdrawn = eventually(WAIT, "the withdrawal", || async {
        told(dir, &id, "approval_withdrawn").into_iter().next()
    })
    .await;
    assert!(
        withdrawn["title"].as_str().unwrap().contains("WITHDRAWN"),
        "{withdrawn}"
    );
    assert_eq!(
        decide(&m, &id, "approve", json!({"by": "alice"})).await.0,
        409
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ran(dir).is_empty());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kill -9` while two incidents wait: one with a long deadline, one whose deadline passes
/// while medic is down. After the restart, the first is still waiting and its approval
/// runs it (and the alert resolves through Alertmanager); the second is escalated
/// `approval_timeout` at once, never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_waiting_the_approval_still_works_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let server = format!("listen = \"127.0.0.1:{port}\"");
    let short = "[[routes]]\nname = \"short\"\nmatchers = ['alertname=\"Brief\"']\nrunbook = \"fix.rhai\"\napproval = { timeout = \"3s\" }\n";
    let text = config(
        dir,
        "{ timeout = \"10m\" }",
        &server,
        &escalation_to_file(dir),
        short,
    );
    let mut m = Medic::start_in(dir, &text);
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([
        am_alert("DbDown", "db5", false),
        am_alert("Brief", "b1", false)
    ]))
    .await;
    let id = id_of(&waiting(&m, "DbDown", "db5").await);
    let brief = id_of(&waiting(&m, "Brief", "b1").await);
    m.kill9();
    // The short deadline passes while medic is down.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let m = Medic::start_in(dir, &text);
    let gone = in_state(&m, "Brief", "b1", "escalated").await;
    assert_eq!(
        (gone["reason"].as_str(), id_of(&gone)),
        (Some("approval_timeout"), brief)
    );
    let still = in_state(&m, "DbDown", "db5", "awaiting_approval").await;
    assert_eq!(
        events(&still, "approval_requested").len(),
        1,
        "the plan is made once"
    );
    assert!(ran(dir).is_empty());
    let (status, body) = decide(&m, &id, "approve", json!({"by": "alice"})).await;
    assert_eq!(status, 200, "{body}");
    in_state(&m, "DbDown", "db5", "verifying").await;
    assert_eq!(ran(dir), ["restart db5"]);
    am.post_alerts(&json!([am_alert("DbDown", "db5", true)]))
        .await;
    assert_eq!(
        in_state(&m, "DbDown", "db5", "resolved").await["outcome"],
        "auto_remediated"
    );
}

/// The runbook branches on what only a real step returns: its dry run (the plan) would
/// restart, the real run wants to fail over. The differing step is stopped before it acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_that_leaves_its_plan_is_stopped_before_the_differing_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "{ timeout = \"10m\" }",
            "",
            &escalation_to_file(dir),
            "",
        ),
    );
    let (status, _) = post_webhook(&m, &body(vec![alert("DbBranch", "db6", "firing")])).await;
    assert_eq!(status, 200);
    let inc = waiting(&m, "DbBranch", "db6").await;
    let (fix, probe) = (
        dir.join("bin/fix").display().to_string(),
        dir.join("bin/probe").display().to_string(),
    );
    assert_eq!(
        inc["approval"]["plan"]["steps"],
        json!([
            {"step": "exec", "program": probe, "args": []},
            {"step": "exec", "program": fix, "args": ["restart", "db6"]},
        ]),
        "the dry run never sees `primary`: its plan restarts"
    );

    let id = id_of(&inc);
    assert_eq!(
        decide(&m, &id, "approve", json!({"by": "alice"})).await.0,
        200
    );
    let stopped = in_state(&m, "DbBranch", "db6", "escalated").await;
    assert_eq!(stopped["reason"], "off_plan");
    let message = stopped["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("step 2 is not the approved plan's: planned `exec {fix} restart db6`, attempted `exec {fix} failover db6`")),
        "{message}"
    );
    let off = events(&stopped, "step_off_plan");
    assert_eq!(off.len(), 1);
    assert_eq!(off[0]["planned"], format!("exec {fix} restart db6"));
    assert_eq!(off[0]["attempted"], format!("exec {fix} failover db6"));
    // The probe (in the plan) ran; the off-plan step never started.
    let started: Vec<String> = events(&stopped, "step_started")
        .iter()
        .map(|s| s["args"]["program"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started, [probe]);
    assert!(
        ran(dir).is_empty(),
        "the differing step acted: {:?}",
        ran(dir)
    );
    // On-call reads both steps side by side.
    let page = eventually(WAIT, "the off_plan escalation", || async {
        told(dir, &id, "escalated").into_iter().next()
    })
    .await;
    let steps = page["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(last["what"], format!("exec {fix} failover db6"));
    assert!(
        last["result"]
            .as_str()
            .unwrap()
            .contains(&format!("`exec {fix} restart db6`")),
        "{last}"
    );
}
