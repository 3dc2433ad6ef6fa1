//! What an alert contains never refuses a delivery. Through the real binary (and a real
//! Alertmanager): control characters in labels are data, an alert over medic's limits is
//! stored bounded and escalated `invalid_alert` naming the limit, and the other alerts of
//! its delivery are remediated as usual.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::*;
use serde_json::{json, Map, Value};

const WAIT: Duration = Duration::from_secs(30);

/// One incident, found by its `instance` label, with its timeline, once `done` says so.
async fn incident_of(
    m: &Medic,
    instance: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || async {
        let l = api(m, "/api/v1/incidents?limit=1000").await;
        let id = l["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["labels"]["instance"] == instance)?["id"]
            .as_str()?
            .to_string();
        let one = api(m, &format!("/api/v1/incidents/{id}")).await;
        done(&one).then_some(one)
    })
    .await
}

/// The well-formed alert's incident has been remediated as usual: its runbook ran.
async fn remediated(m: &Medic, instance: &str, case: &str) -> Value {
    let inc = incident_of(
        m,
        instance,
        &format!("{case}: {instance} to be remediated"),
        |i| i["state"] == "verifying",
    )
    .await;
    assert_eq!(inc["runbook"], "restart.rhai", "{case}");
    inc
}

/// What the hostile alert of a case should become.
enum Expect {
    /// Well-formed content: remediated like any alert, its labels kept byte for byte.
    Remediated,
    /// Over a limit: escalated `invalid_alert`, the message containing each of these.
    Invalid(Vec<String>),
}

/// Regression: newlines, NUL, too many labels, a value over its limit or a large body
/// answered 400/413, so Alertmanager resent the group at every group_interval and was
/// refused every time: no alert of the group, well-formed or not, was ever remediated or
/// escalated. Each delivery now answers 200; the hostile alert is remediated (its content
/// is data) or escalated `invalid_alert` naming the limit; the well-formed alert next to it
/// is remediated as usual.
#[tokio::test]
async fn hostile_but_well_formed_content_never_refuses_a_delivery() {
    let m = Medic::start();
    // With the four labels every test alert has: 257. The first 256 by name keep
    // `alertname` and `instance`; `severity` is dropped.
    let many: Map<String, Value> = (0..253).map(|i| (format!("l{i:03}"), json!("v"))).collect();
    let big_annotations: Map<String, Value> = (0..20)
        .map(|i| (format!("part{i:02}"), json!("a".repeat(100 * 1024))))
        .collect();

    // (case, labels to add or replace, annotations to add or replace, expected)
    type Case<'a> = (&'a str, Map<String, Value>, Map<String, Value>, Expect);
    let cases: Vec<Case> = vec![
        (
            "newline in a label value",
            obj(json!({"path": "/var/log\nrm -rf /"})),
            Map::new(),
            Expect::Remediated,
        ),
        (
            "tab and escape in a label value",
            obj(json!({"path": "a\tb\u{1b}[31m\r"})),
            Map::new(),
            Expect::Remediated,
        ),
        (
            "NUL in a label value",
            obj(json!({"path": "a\u{0}b"})),
            Map::new(),
            Expect::Invalid(vec![
                "label \"path\": contains NUL".into(),
                "received: 3 bytes, sha256 ".into(),
            ]),
        ),
        (
            "257 labels",
            many,
            Map::new(),
            Expect::Invalid(vec![
                "labels: 257 labels, over the limit of 256; stored the first 256 by name and dropped 1"
                    .into(),
            ]),
        ),
        (
            "a label value of 16 KiB + 1",
            obj(json!({"big": "b".repeat(16 * 1024 + 1)})),
            Map::new(),
            Expect::Invalid(vec![
                "label \"big\": 16385 bytes, over the limit of 16384 bytes; stored cut to its first 16384 bytes"
                    .into(),
            ]),
        ),
        (
            "an annotation over 128 KiB",
            Map::new(),
            obj(json!({"description": "d".repeat(1 << 20)})),
            Expect::Invalid(vec![
                "annotation \"description\": 1048576 bytes, over the limit of 131072 bytes".into(),
            ]),
        ),
        (
            "a 2 MiB body",
            Map::new(),
            big_annotations,
            Expect::Remediated,
        ),
    ];

    for (n, (case, labels, annotations, expect)) in cases.into_iter().enumerate() {
        let bad_instance = format!("bad{n}:80");
        let good_instance = format!("good{n}:80");
        let mut bad = alert("ServiceDown", &bad_instance, "firing");
        for (k, v) in labels {
            bad["labels"][k] = v;
        }
        for (k, v) in annotations {
            bad["annotations"][k] = v;
        }
        let good = alert("ServiceDown", &good_instance, "firing");
        let delivery = body(vec![bad.clone(), good]);
        let (status, reply) = post_webhook(&m, &delivery).await;
        assert_eq!(status, 200, "{case}: {reply}");
        assert_eq!(reply["alerts"], 2, "{case}");

        remediated(&m, &good_instance, case).await;
        match expect {
            Expect::Remediated => {
                let inc = remediated(&m, &bad_instance, case).await;
                assert_eq!(inc["labels"], bad["labels"], "{case}: labels byte for byte");
            }
            Expect::Invalid(parts) => {
                let inc = incident_of(&m, &bad_instance, case, |i| i["state"] != "queued").await;
                assert_eq!(inc["state"], "escalated", "{case}: {inc:#}");
                assert_eq!(inc["reason"], "invalid_alert", "{case}");
                assert_eq!(
                    inc["route"], "restart",
                    "{case}: the route its labels match"
                );
                assert!(inc["runbook"].is_null(), "{case}: nothing runs");
                let message = inc["message"].as_str().unwrap_or_default();
                for part in &parts {
                    assert!(
                        message.contains(part.as_str()),
                        "{case}: {message:?} lacks {part:?}"
                    );
                }
                let timeline = inc["timeline"].as_array().unwrap();
                assert!(
                    timeline.iter().all(|e| !["run_started", "step_started"]
                        .contains(&e["event"].as_str().unwrap())),
                    "{case}: nothing was run"
                );
                let escalated = timeline
                    .iter()
                    .find(|e| e["detail"]["to"] == "escalated")
                    .expect("the escalation is in the timeline");
                assert_eq!(escalated["detail"]["reason"], "invalid_alert");
                assert_eq!(escalated["detail"]["message"], message);
            }
        }
    }
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

/// Regression: a resend of an alert over the limits must join its incident, not open one
/// per delivery. The fingerprint is Alertmanager's, or medic's of the labels as received
/// (never of what was stored), so both dedupe; a resolution closes the incident.
#[tokio::test]
async fn resends_of_an_invalid_alert_are_deduplicated() {
    let m = Medic::start();
    let mut with_fp = alert("ServiceDown", "fp:80", "firing");
    with_fp["labels"]["big"] = json!("x".repeat(20_000));
    let mut without_fp = alert("ServiceDown", "nofp:80", "firing");
    without_fp["labels"]["big"] = json!("y".repeat(20_000));
    without_fp.as_object_mut().unwrap().remove("fingerprint");
    let delivery = body(vec![with_fp.clone(), without_fp.clone()]);
    for _ in 0..3 {
        let (status, reply) = post_webhook(&m, &delivery).await;
        assert_eq!(status, 200, "{reply}");
    }
    let list = incidents(&m).await;
    assert_eq!(list.len(), 2, "{list:#?}");
    for inc in &list {
        assert_eq!(inc["state"], "escalated");
        assert_eq!(inc["reason"], "invalid_alert");
        assert_eq!(inc["deliveries"], 3, "{inc:#}");
    }
    for mut a in [with_fp, without_fp] {
        a["status"] = json!("resolved");
        a["endsAt"] = json!("2026-11-23T10:05:00Z");
        assert_eq!(post_webhook(&m, &body(vec![a])).await.0, 200);
    }
    for inc in incidents(&m).await {
        assert_eq!(inc["state"], "resolved", "{inc:#}");
        assert_eq!(inc["outcome"], "resolved_after_escalation");
    }
}

/// A config whose `Argv` route runs `record.rhai`, allowed to exec `record`.
fn argv_config(dir: &Path, record: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
{store}
{escalation}

[runbooks]
dir = "{runbooks}"
allowed_commands = ["{record}"]

[[routes]]
name = "argv"
matchers = ['alertname="Argv"']
runbook = "record.rhai"
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
        record = record.display(),
    )
}

/// Regression: a label with a newline was refused at the door. Now it is data, and it
/// reaches a runbook's `exec` as exactly one argument, byte for byte.
#[tokio::test]
async fn a_label_with_a_newline_and_a_tab_reaches_exec_as_one_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("argv");
    // Each argument NUL-terminated, so the test sees exactly what arrived.
    let record = script(
        dir,
        "record",
        &format!("printf '%s\\0' \"$@\" > {}", out.display()),
    );
    runbook(
        dir,
        "record.rhai",
        &format!(r#"exec("{}", [alert.labels.path]);"#, record.display()),
    );
    let m = Medic::start_in(dir, &argv_config(dir, &record));
    let value = "line one\nline\ttwo \\n; $(id)\r";
    let mut a = alert("Argv", "host:80", "firing");
    a["labels"]["path"] = json!(value);
    let (status, reply) = post_webhook(&m, &body(vec![a])).await;
    assert_eq!(status, 200, "{reply}");
    let inc = incident_of(&m, "host:80", "the run to end", |i| {
        !["queued", "remediating"].contains(&i["state"].as_str().unwrap_or(""))
    })
    .await;
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    assert_eq!(inc["labels"]["path"], value, "stored as received");
    let mut want = value.as_bytes().to_vec();
    want.push(0);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        want,
        "one argument, byte for byte"
    );
}

/// The same through a real Alertmanager: a group whose alerts carry a multi-line label
/// and a label over medic's limits is delivered once and taken whole; Alertmanager has
/// nothing to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_group_with_hostile_labels_is_taken_whole() {
    let m = Medic::start();
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([
        {"labels": {"alertname": "ServiceDown", "instance": "am-good:80"},
         "startsAt": "2026-11-23T10:00:00Z"},
        {"labels": {"alertname": "ServiceDown", "instance": "am-multi:80", "path": "a\nb\tc"},
         "startsAt": "2026-11-23T10:00:00Z"},
        {"labels": {"alertname": "ServiceDown", "instance": "am-big:80", "big": "z".repeat(16 * 1024 + 1)},
         "startsAt": "2026-11-23T10:00:00Z"}
    ]))
    .await;
    remediated(&m, "am-good:80", "real Alertmanager").await;
    let multi = remediated(&m, "am-multi:80", "real Alertmanager").await;
    assert_eq!(multi["labels"]["path"], "a\nb\tc");
    let big = incident_of(&m, "am-big:80", "the invalid alert", |i| {
        i["state"] == "escalated"
    })
    .await;
    assert_eq!(big["reason"], "invalid_alert");
    assert!(
        big["message"]
            .as_str()
            .unwrap()
            .contains("label \"big\": 16385 bytes, over the limit of 16384 bytes"),
        "{big:#}"
    );
    // Each fingerprint is Alertmanager's own.
    let alerts: Value = client()
        .get(format!("{}/api/v2/alerts", am.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for a in alerts.as_array().unwrap() {
        let instance = a["labels"]["instance"].as_str().unwrap();
        let inc = incident_of(&m, instance, "its incident", |_| true).await;
        assert_eq!(inc["fingerprint"], a["fingerprint"], "{instance}");
    }
    let text = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .filter(|l| l.contains("outcome=\"rejected\""))
            .all(|l| l.ends_with(" 0")),
        "no delivery refused:\n{}",
        am.log()
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("medic_alerts_invalid_total ") && !l.ends_with(" 0")),
        "invalid alerts are counted:\n{text}"
    );
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}
