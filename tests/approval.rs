//! Approval before a run, end to end through the real binary: alerts from the real
//! Alertmanager wait in `awaiting_approval` with their plan (a dry run of the runbook),
//! and then are approved (the plan runs and the alert resolves), rejected, left to time
//! out, or resolve while waiting; medic is killed with `kill -9` while one waits; an
//! approved run whose real steps differ from its dry run is stopped `off_plan` before the
//! differing step acts; approve links come from the mail the real SMTP server received and
//! Slack's button is clicked (signed); the console decides as the logged-in person. The
//! two-replica case is `approval_replicas.rs`.
//!
//! Every runbook here writes what it runs to `ran.log` (through an allowed script), so
//! "nothing ran" is a file that does not exist, not a state that was not reached.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::alertmanager::Alertmanager;
use common::console::{browser, get, log_in, post};
use common::receiver::Receiver;
use common::smtp::SmtpSink;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(30);
const LINK_SECRET: &str = "an-approval-link-secret-of-32-bytes!";
const SLACK_SECRET: &str = "slack-signing-secret-for-approvals";

/// The scripts the runbooks run, in `dir/bin`: `fix` appends its arguments to
/// `dir/ran.log`; `probe` prints `primary` (what only a real run sees).
fn scripts(dir: &Path) -> (PathBuf, PathBuf) {
    let fix = script(
        dir,
        "fix",
        &format!("echo \"$*\" >> {}", dir.join("ran.log").display()),
    );
    let probe = script(dir, "probe", "echo primary");
    (fix, probe)
}

/// What the runbooks ran, one line a run of `fix`.
fn ran(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ran.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Routes `db` (`DbDown`, runbook `fix.rhai`, `approval`) and `branch` (`DbBranch`,
/// `branch.rhai`: restarts, or fails over when the probe says `primary`, which a dry run
/// never sees), the escalation section `escalation`, `server` keys and `extra` (users).
fn config(dir: &Path, approval: &str, server: &str, escalation: &str, extra: &str) -> String {
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
fn am_alert(name: &str, instance: &str, ended: bool) -> Value {
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
async fn when(
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
async fn waiting(m: &Medic, name: &str, instance: &str) -> Value {
    when(m, name, instance, "awaiting approval with a plan", |i| {
        i["state"] == "awaiting_approval" && !i["approval"]["plan"].is_null()
    })
    .await
}

async fn in_state(m: &Medic, name: &str, instance: &str, state: &str) -> Value {
    when(m, name, instance, state, |i| i["state"] == state).await
}

/// `POST /api/v1/incidents/{id}/{action}` with the API token and `body`.
async fn decide(m: &Medic, id: &str, action: &str, body: Value) -> (u16, Value) {
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

fn events(incident: &Value, name: &str) -> Vec<Value> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == name)
        .map(|e| e["detail"].clone())
        .collect()
}

fn id_of(i: &Value) -> String {
    i["id"].as_str().unwrap().to_string()
}

/// The file channel's notifications of `kind` about incident `id`.
fn told(dir: &Path, id: &str, kind: &str) -> Vec<Value> {
    escalations_in_file(dir)
        .into_iter()
        .filter(|d| d["kind"] == kind && d["incident"]["id"] == id)
        .collect()
}

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

fn mail_config(dir: &Path, smtp: &str, approval: &str, extra: &str) -> String {
    let escalation = format!(
        r#"
[escalation]
notify = ["mail"]

[[escalation.channels]]
name = "mail"
type = "email"
smtp = "{smtp}"
tls = "none"
from = "medic@example.com"
to = ["oncall@example.com"]
"#
    );
    config(
        dir,
        approval,
        "link_secret = \"${MEDIC_LINK_SECRET}\"",
        &escalation,
        extra,
    )
}

/// The approval request mail about `instance`, once the SMTP server has it.
async fn request_mail(smtp: &SmtpSink, instance: &str) -> (String, String) {
    eventually(
        WAIT,
        &format!("the approval request mail about {instance}"),
        || async {
            smtp.mails().into_iter().find_map(|mail| {
                let subject = mail["headers"]["Subject"].as_str()?;
                if mail["headers"]["X-Medic-Kind"] != "approval_requested"
                    || !subject.contains(instance)
                {
                    return None;
                }
                Some((
                    mail["headers"]["X-Medic-Incident"].as_str()?.to_string(),
                    mail["parts"]["text/plain"].as_str()?.to_string(),
                ))
            })
        },
    )
    .await
}

fn link(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} link in {text}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_approve_link_from_the_mail_runs_the_plan_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let smtp = SmtpSink::start();
    let m = Medic::start_in_env(
        dir,
        &mail_config(dir, &smtp.addr(), "{ timeout = \"10m\" }", ""),
        &[("MEDIC_LINK_SECRET", LINK_SECRET)],
    );
    for instance in ["db7", "db8"] {
        let (status, _) = post_webhook(&m, &body(vec![alert("DbDown", instance, "firing")])).await;
        assert_eq!(status, 200);
    }
    let (id, text) = request_mail(&smtp, "db7").await;
    let fix = dir.join("bin/fix").display().to_string();
    assert!(
        text.lines()
            .any(|l| l.trim_end() == format!("  1. exec {fix} restart db7")),
        "{text}"
    );
    assert!(text.contains("DECIDE BY "), "{text}");
    let approve = link(&text, "approve:");
    assert!(approve.starts_with(&m.url("/ui/approve/")), "{approve}");
    let c = client();
    // Opening it (a mail scanner would) shows the plan and changes nothing.
    let page = c.get(&approve).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Approve the run for DbDown?"), "{page}");
    assert!(page.contains(&format!("exec {fix} restart db7")), "{page}");
    assert!(page.contains("link:mail"), "{page}");
    assert_eq!(
        in_state(&m, "DbDown", "db7", "awaiting_approval").await["id"],
        id.as_str()
    );
    // An approve token is not a reject link, nor an ack link.
    let token = approve.rsplit('/').next().unwrap();
    for wrong in [format!("/ui/reject/{token}"), format!("/ui/a/{token}")] {
        assert_eq!(
            c.post(m.url(&wrong))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            403,
            "{wrong}"
        );
    }
    let origin = m.url("");
    let r = c
        .post(&approve)
        .header("Origin", origin.trim_end_matches('/'))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("Approved"));
    let inc = in_state(&m, "DbDown", "db7", "verifying").await;
    assert_eq!(inc["approval"]["approved_by"], "link:mail");
    assert_eq!(events(&inc, "approved")[0]["via"], "link");
    assert_eq!(ran(dir), ["restart db7"]);
    // Used once.
    assert_eq!(
        c.post(&approve).send().await.unwrap().status().as_u16(),
        410
    );

    // The other mail's reject link, with a reason.
    let (other, text) = request_mail(&smtp, "db8").await;
    let reject = link(&text, "reject:");
    let r = c
        .post(&reject)
        .form(&[("reason", "not during the migration")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let inc = in_state(&m, "DbDown", "db8", "escalated").await;
    assert_eq!(
        (inc["reason"].as_str(), id_of(&inc)),
        (Some("rejected"), other)
    );
    assert_eq!(
        inc["message"],
        "rejected by link:mail: not during the migration"
    );
    assert_eq!(ran(dir), ["restart db7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_approvers_sends_no_links() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let smtp = SmtpSink::start();
    let m = Medic::start_in_env(
        dir,
        &mail_config(
            dir,
            &smtp.addr(),
            "{ timeout = \"10m\", approvers = [\"alice\"] }",
            "",
        ),
        &[("MEDIC_LINK_SECRET", LINK_SECRET)],
    );
    post_webhook(&m, &body(vec![alert("DbDown", "db9", "firing")])).await;
    let (id, text) = request_mail(&smtp, "db9").await;
    assert!(!text.contains("approve:  "), "{text}");
    assert!(text.contains("console:  "), "{text}");
    // Only a listed approver decides through the API.
    assert_eq!(
        decide(&m, &id, "approve", json!({"by": "mallory"})).await.0,
        403
    );
    assert_eq!(decide(&m, &id, "approve", json!({})).await.0, 403);
    assert_eq!(
        decide(&m, &id, "approve", json!({"by": "alice"})).await.0,
        200
    );
    in_state(&m, "DbDown", "db9", "verifying").await;
    assert_eq!(ran(dir), ["restart db9"]);
}

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// POSTs a click on `action` of incident `id` by Slack user `user` to `/slack/actions`,
/// signed with `secret`.
async fn slack_click(m: &Medic, secret: &str, action: &str, id: &str, user: &str) -> (u16, Value) {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": "U0123", "username": user, "team_id": "T0"},
        "actions": [{"type": "button", "action_id": action, "block_id": "medic-approval", "value": id}],
    });
    let body = format!(
        "payload={}",
        percent_encoding::utf8_percent_encode(
            &payload.to_string(),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let ts = Utc::now().timestamp();
    let signature = format!(
        "v0={}",
        hmac_hex(secret, format!("v0:{ts}:{body}").as_bytes())
    );
    let r = client()
        .post(m.url("/slack/actions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_s_approve_button_runs_the_plan_in_the_slack_user_s_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    let escalation = format!(
        r#"
[escalation]
notify = ["chat"]

[[escalation.channels]]
name = "chat"
type = "slack"
url = "{}"
signing_secret = "{SLACK_SECRET}"
"#,
        rx.url("/slack")
    );
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "{ timeout = \"10m\", approvers = [\"jdoe\"] }",
            "",
            &escalation,
            "",
        ),
    );
    post_webhook(&m, &body(vec![alert("DbDown", "db10", "firing")])).await;
    let id = id_of(&waiting(&m, "DbDown", "db10").await);
    let message = eventually(WAIT, "the Slack request", || async {
        rx.delivered("/slack")
            .into_iter()
            .find(|r| r.body.to_string().contains(&id))
            .map(|r| r.body)
    })
    .await;
    let actions = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .cloned()
        .unwrap();
    let ids: Vec<&str> = actions["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["approve", "reject"]);
    assert!(message.to_string().contains("restart db10"), "{message}");

    // Unsigned, or signed with another secret: refused, nothing changes.
    assert_eq!(
        slack_click(&m, "not-the-secret", "approve", &id, "jdoe")
            .await
            .0,
        401
    );
    // Someone the route's approvers do not list: told so, nothing changes.
    let (status, answer) = slack_click(&m, SLACK_SECRET, "approve", &id, "mallory").await;
    assert_eq!(status, 200);
    assert!(
        answer["text"].as_str().unwrap().contains("may not decide"),
        "{answer}"
    );
    assert_eq!(
        in_state(&m, "DbDown", "db10", "awaiting_approval").await["id"],
        id.as_str()
    );
    assert!(ran(dir).is_empty());

    let (status, answer) = slack_click(&m, SLACK_SECRET, "approve", &id, "jdoe").await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["text"].as_str().unwrap().contains("jdoe approved"),
        "{answer}"
    );
    let inc = in_state(&m, "DbDown", "db10", "verifying").await;
    assert_eq!(inc["approval"]["approved_by"], "jdoe");
    assert_eq!(events(&inc, "approved")[0]["via"], "slack");
    assert_eq!(ran(dir), ["restart db10"]);
    let (_, again) = slack_click(&m, SLACK_SECRET, "reject", &id, "jdoe").await;
    assert!(
        again["text"].as_str().unwrap().contains("no longer waits"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_plan_and_decides_as_the_person() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let users = |name: &str, role: &str| {
        format!(
            "[[ui.users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n",
            medic::config::hash_password(&format!("{name}'s password")).unwrap()
        )
    };
    let extra = format!(
        "{}{}{}",
        users("rita", "responder"),
        users("ada", "responder"),
        users("vic", "viewer")
    );
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "{ timeout = \"10m\", approvers = [\"rita\", \"admin\"] }",
            "",
            &escalation_to_file(dir),
            &extra,
        ),
    );
    post_webhook(&m, &body(vec![alert("DbDown", "db11", "firing")])).await;
    let id = id_of(&waiting(&m, "DbDown", "db11").await);
    let fix = dir.join("bin/fix").display().to_string();
    let path = format!("/ui/incidents/{id}");

    // The list offers the state and shows only what waits.
    let vic = browser();
    log_in(&vic, &m, "vic", "vic's password").await;
    let (_, list) = get(&vic, &m, "/ui?state=awaiting_approval").await;
    assert!(
        list.contains("<option value=\"awaiting_approval\" selected>"),
        "{list}"
    );
    assert!(list.contains(&id), "{list}");
    // A viewer sees the plan, and no form.
    let (_, page) = get(&vic, &m, &path).await;
    assert!(page.contains(&format!("exec {fix} restart db11")), "{page}");
    assert!(!page.contains("/approve\""), "{page}");
    let csrf = common::console::csrf(&page);
    let (status, _) = post(&vic, &m, &format!("{path}/approve"), &[("csrf", &csrf)]).await;
    assert_eq!(status, 403);

    // A responder the route's approvers do not list is refused.
    let ada = browser();
    log_in(&ada, &m, "ada", "ada's password").await;
    let (_, page) = get(&ada, &m, &path).await;
    let csrf = common::console::csrf(&page);
    let (status, text) = post(&ada, &m, &format!("{path}/approve"), &[("csrf", &csrf)]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("approvers do not list you"), "{text}");
    // Without the session's CSRF token, refused.
    let rita = browser();
    log_in(&rita, &m, "rita", "rita's password").await;
    let (status, _) = post(&rita, &m, &format!("{path}/approve"), &[("csrf", "forged")]).await;
    assert_eq!(status, 403);
    assert!(ran(dir).is_empty());

    let (_, page) = get(&rita, &m, &path).await;
    assert!(page.contains("Approve and run this plan"), "{page}");
    let csrf = common::console::csrf(&page);
    let (status, _) = post(&rita, &m, &format!("{path}/approve"), &[("csrf", &csrf)]).await;
    assert_eq!(status, 200, "followed to the incident's page");
    let inc = in_state(&m, "DbDown", "db11", "verifying").await;
    assert_eq!(inc["approval"]["approved_by"], "rita");
    assert_eq!(events(&inc, "approved")[0]["via"], "console");
    assert_eq!(ran(dir), ["restart db11"]);
}
