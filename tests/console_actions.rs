//! Notes and re-runs, through the JSON API and the console, behind the same roles: a note
//! lands in the incident's timeline in the acting person's name; a re-run puts an
//! escalated or acknowledged incident back through its runbook under the guards, tells
//! people again if it escalates again, and is refused (409) for an incident whose alert
//! no longer fires or that has no runbook.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::console::{browser, csrf, get, log_in, post};
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A route whose runbook fails until `<dir>/fixed-<instance>` exists; an admin, a
/// responder and a viewer.
fn config(dir: &Path) -> String {
    let fix = script(
        dir,
        "fix",
        &format!(
            "if [ -e '{}/fixed-'\"$1\" ]; then echo \"fixed $1\"; exit 0; fi\necho \"cannot fix $1\" >&2\nexit 3",
            dir.display()
        ),
    );
    runbook(
        dir,
        "fix.rhai",
        &format!(
            r#"let r = exec("{}", [alert.labels.instance]);
               if r.code != 0 {{ escalate(`fix failed with exit ${{r.code}}`); }}"#,
            fix.display()
        ),
    );
    let hash = |p: &str| medic::config::hash_password(p).unwrap();
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
allowed_commands = ["{fix}"]

[limits]
storm_window = "1ms"

[[routes]]
name = "fix"
matchers = ['alertname="Broken"']
runbook = "fix.rhai"

[[routes]]
name = "careful"
matchers = ['alertname="Careful"']
runbook = "fix.rhai"
approval = {{ timeout = "15m" }}

[[ui.users]]
name = "ada"
password_hash = "{ada}"
role = "admin"

[[ui.users]]
name = "rita"
password_hash = "{rita}"
role = "responder"

[[ui.users]]
name = "vic"
password_hash = "{vic}"
role = "viewer"
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
        fix = fix.display(),
        ada = hash("ada's password"),
        rita = hash("rita's password"),
        vic = hash("vic's password"),
    )
}

/// Fires `alertname` on `instance`; the incident once it is in `state`.
async fn fire(m: &Medic, alertname: &str, instance: &str, state: &str) -> Value {
    let a = alert(alertname, instance, "firing");
    assert_eq!(post_webhook(m, &body(vec![a])).await.0, 200);
    in_state(m, &fingerprint_of(alertname, instance), state).await
}

/// The incident of `fingerprint`, once it is in `state`.
async fn in_state(m: &Medic, fingerprint: &str, state: &str) -> Value {
    eventually(WAIT, &format!("{fingerprint} {state}"), || async {
        let i = incidents(m)
            .await
            .into_iter()
            .find(|i| i["fingerprint"] == fingerprint)?;
        let id = i["id"].as_str()?.to_string();
        let full = api(m, &format!("/api/v1/incidents/{id}")).await;
        (full["state"] == state).then_some(full)
    })
    .await
}

/// POSTs `body` to an API path with the token: (status, JSON answer).
async fn api_post(m: &Medic, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(m.url(path))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The timeline entries of `incident` for `event`.
fn events(incident: &Value, event: &str) -> Vec<Value> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == event)
        .cloned()
        .collect()
}

/// The rounds of the escalations the file channel got for `id`.
fn rounds_told(dir: &Path, id: &str) -> Vec<u64> {
    escalations_in_file(dir)
        .iter()
        .filter(|d| d["incident"]["id"] == id && d["kind"] == "escalated")
        .map(|d| d["round"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_reruns_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    let inc = fire(&m, "Broken", "db1", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();
    let note = format!("/api/v1/incidents/{id}/note");

    // Refused: no text, too long, a `by` with a control character, an unknown field, an
    // unknown incident. Nothing is written.
    let long = "x".repeat(medic::store::MAX_NOTE + 1);
    for (body, status) in [
        ("", 400),
        (r#"{"text": "  "}"#, 400),
        (&json!({ "text": long }).to_string(), 400),
        (r#"{"by": "a\u0007b", "text": "hi"}"#, 400),
        (r#"{"text": "hi", "who": "x"}"#, 400),
        ("not json", 400),
    ] {
        assert_eq!(api_post(&m, &note, body).await.0, status, "{body}");
    }
    let (status, _) = api_post(&m, "/api/v1/incidents/nope/note", r#"{"text": "hi"}"#).await;
    assert_eq!(status, 404);
    let before = api(&m, &format!("/api/v1/incidents/{id}")).await;
    assert!(events(&before, "note_added").is_empty());
    // Without the token: 401.
    let r = client()
        .post(m.url(&note))
        .body(r#"{"text": "hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Added, in the timeline, with who, how and the text (its lines kept).
    let (status, answer) = api_post(
        &m,
        &note,
        r#"{"by": "oncall-bot", "text": "disk replaced\r\nwatching it"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let notes = events(&answer, "note_added");
    assert_eq!(notes.len(), 1, "{answer:#}");
    assert_eq!(
        notes[0]["detail"],
        json!({"by": "oncall-bot", "via": "api", "text": "disk replaced\nwatching it"})
    );
    assert_eq!(answer["state"], "escalated");

    // A re-run of an incident whose runbook still fails: run again, escalated again, and
    // people are told again (a second round).
    assert_eq!(rounds_told(dir, &id), [1]);
    let (status, answer) = api_post(&m, "/api/v1/incidents/nope/rerun", "").await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = api_post(&m, &format!("/api/v1/incidents/{id}/rerun"), "").await;
    assert_eq!(status, 200, "{answer}");
    let again = eventually(WAIT, "escalated after the re-run", || async {
        let i = api(&m, &format!("/api/v1/incidents/{id}")).await;
        (i["attempts"] == 2 && i["state"] == "escalated").then_some(i)
    })
    .await;
    let reruns = events(&again, "rerun_requested");
    assert_eq!(reruns.len(), 1, "{again:#}");
    assert_eq!(
        reruns[0]["detail"],
        json!({"by": "api", "via": "api", "from": "escalated"})
    );
    assert!(
        events(&again, "state_changed")
            .iter()
            .any(|e| e["detail"]["from"] == "escalated" && e["detail"]["to"] == "queued"),
        "{again:#}"
    );
    eventually(WAIT, "the second round told", || async {
        (rounds_told(dir, &id) == [1, 2]).then_some(())
    })
    .await;

    // Acknowledged, then fixed by hand and re-run: the run works and the alert resolves.
    let (status, _) = api_post(
        &m,
        &format!("/api/v1/incidents/{id}/ack"),
        r#"{"by": "jane"}"#,
    )
    .await;
    assert_eq!(status, 200);
    std::fs::write(dir.join("fixed-db1"), "").unwrap();
    let (status, answer) = api_post(
        &m,
        &format!("/api/v1/incidents/{id}/rerun"),
        r#"{"by": "jane"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["acknowledged_by"], Value::Null, "{answer}");
    let verifying = in_state(&m, &fingerprint_of("Broken", "db1"), "verifying").await;
    assert_eq!(verifying["attempts"], 3);
    let from_ack = events(&verifying, "rerun_requested");
    assert_eq!(from_ack[1]["detail"]["from"], "acknowledged");
    assert_eq!(from_ack[1]["detail"]["by"], "jane");
    let resolved = alert("Broken", "db1", "resolved");
    assert_eq!(post_webhook(&m, &body(vec![resolved])).await.0, 200);
    let done = in_state(&m, &fingerprint_of("Broken", "db1"), "resolved").await;
    assert_eq!(done["outcome"], "auto_remediated");

    // Its alert no longer fires: 409, saying why.
    let (status, answer) = api_post(&m, &format!("/api/v1/incidents/{id}/rerun"), "").await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no longer fires"),
        "{answer}"
    );
    // Notes still go to a closed incident (for the postmortem).
    let (status, _) = api_post(&m, &note, r#"{"text": "root cause: a full disk"}"#).await;
    assert_eq!(status, 200);

    // No runbook handles it: 409.
    let orphan = fire(&m, "Unrouted", "x1", "escalated").await;
    let oid = orphan["id"].as_str().unwrap();
    let (status, answer) = api_post(&m, &format!("/api/v1/incidents/{oid}/rerun"), "").await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("no runbook"),
        "{answer}"
    );

    // A route that asks a person's approval before a run: rejected, then never re-run (a
    // re-run would skip the approval).
    let careful = fire(&m, "Careful", "c1", "awaiting_approval").await;
    let cid = careful["id"].as_str().unwrap().to_string();
    eventually(WAIT, "the run rejected", || async {
        let (status, _) = api_post(
            &m,
            &format!("/api/v1/incidents/{cid}/reject"),
            r#"{"by": "boss"}"#,
        )
        .await;
        (status == 200).then_some(())
    })
    .await;
    let (status, answer) = api_post(&m, &format!("/api/v1/incidents/{cid}/rerun"), "").await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("approval"),
        "{answer}"
    );
    let rejected = api(&m, &format!("/api/v1/incidents/{cid}")).await;
    assert_eq!(rejected["state"], "escalated");
    assert_eq!(rejected["attempts"], 0, "nothing ran");

    // The guards apply to a re-run as to any run: paused, it is refused and escalated.
    let other = fire(&m, "Broken", "db2", "escalated").await;
    let other_id = other["id"].as_str().unwrap();
    let (status, _) = api_post(&m, "/api/v1/pause", r#"{"by": "ops"}"#).await;
    assert_eq!(status, 200);
    let (status, _) = api_post(&m, &format!("/api/v1/incidents/{other_id}/rerun"), "").await;
    assert_eq!(status, 200);
    let refused = eventually(WAIT, "the re-run refused by the pause", || async {
        let i = api(&m, &format!("/api/v1/incidents/{other_id}")).await;
        (i["state"] == "escalated" && i["reason"] == "paused").then_some(i)
    })
    .await;
    assert_eq!(refused["attempts"], 1, "the runbook did not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_console_notes_need_a_responder_and_reruns_an_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    let inc = fire(&m, "Broken", "web1", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();
    let page = format!("/ui/incidents/{id}");
    let (note, rerun) = (format!("{page}/note"), format!("{page}/rerun"));
    let timeline = || async {
        api(&m, &format!("/api/v1/incidents/{id}")).await["timeline"]
            .as_array()
            .unwrap()
            .len()
    };
    // Its page was sent: nothing else is written to its timeline unless a form does.
    eventually(WAIT, "the escalation told", || async {
        let i = api(&m, &format!("/api/v1/incidents/{id}")).await;
        (!events(&i, "notification_sent").is_empty()).then_some(())
    })
    .await;
    let entries = timeline().await;

    // A viewer: neither form, and both POSTs refused.
    let vic = browser();
    log_in(&vic, &m, "vic", "vic's password").await;
    let (_, html) = get(&vic, &m, &page).await;
    assert!(html.contains("Failed step"), "{html}");
    assert!(!html.contains(&note) && !html.contains(&rerun), "{html}");
    let token = csrf(&html);
    let form = [("csrf", token.as_str()), ("text", "hello")];
    assert_eq!(post(&vic, &m, &note, &form).await.0, 403);
    assert_eq!(post(&vic, &m, &rerun, &form[..1]).await.0, 403);

    // A responder: the note form, no re-run.
    let rita = browser();
    log_in(&rita, &m, "rita", "rita's password").await;
    let (_, html) = get(&rita, &m, &page).await;
    assert!(html.contains(&note), "{html}");
    assert!(!html.contains(&rerun), "{html}");
    let token = csrf(&html);
    assert_eq!(post(&rita, &m, &note, &[("text", "no token")]).await.0, 403);
    let wrong = [("csrf", "0000"), ("text", "wrong token")];
    assert_eq!(post(&rita, &m, &note, &wrong).await.0, 403);
    assert_eq!(
        post(&rita, &m, &note, &[("csrf", &token), ("text", " ")])
            .await
            .0,
        400
    );
    assert_eq!(post(&rita, &m, &rerun, &[("csrf", &token)]).await.0, 403);
    assert_eq!(timeline().await, entries, "a refused form changed nothing");
    // A name sent with the form is not who acts.
    let (status, html) = post(
        &rita,
        &m,
        &note,
        &[
            ("csrf", &token),
            ("by", "mallory"),
            ("text", "<b>on it</b>, checking the disk"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("&lt;b&gt;on it&lt;/b&gt;, checking the disk"),
        "{html}"
    );
    let i = api(&m, &format!("/api/v1/incidents/{id}")).await;
    let notes = events(&i, "note_added");
    assert_eq!(
        notes[0]["detail"],
        json!({"by": "rita", "via": "console", "text": "<b>on it</b>, checking the disk"})
    );

    // An admin: the re-run button; without the token, refused; with it, run again.
    let ada = browser();
    log_in(&ada, &m, "ada", "ada's password").await;
    let (_, html) = get(&ada, &m, &page).await;
    assert!(html.contains(&rerun) && html.contains(&note), "{html}");
    let token = csrf(&html);
    assert_eq!(post(&ada, &m, &rerun, &[]).await.0, 403);
    assert_eq!(
        events(&api(&m, &page_api(&id)).await, "rerun_requested").len(),
        0
    );
    let (status, _) = post(&ada, &m, &rerun, &[("csrf", &token)]).await;
    assert_eq!(status, 200);
    let again = eventually(WAIT, "run again and escalated", || async {
        let i = api(&m, &page_api(&id)).await;
        (i["attempts"] == 2 && i["state"] == "escalated").then_some(i)
    })
    .await;
    let reruns = events(&again, "rerun_requested");
    assert_eq!(
        reruns[0]["detail"],
        json!({"by": "ada", "via": "console", "from": "escalated"})
    );
    // Resolved: no re-run button, and a forged POST answers 409.
    let resolved = alert("Broken", "web1", "resolved");
    assert_eq!(post_webhook(&m, &body(vec![resolved])).await.0, 200);
    in_state(&m, &fingerprint_of("Broken", "web1"), "resolved").await;
    let (_, html) = get(&ada, &m, &page).await;
    assert!(!html.contains(&rerun), "{html}");
    // Over: the failed step is history, in the timeline, no longer on top.
    assert!(!html.contains("Failed step"), "{html}");
    assert!(html.contains("cannot fix web1"), "{html}");
    let (status, html) = post(&ada, &m, &rerun, &[("csrf", &token)]).await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("no longer fires"), "{html}");
}

fn page_api(id: &str) -> String {
    format!("/api/v1/incidents/{id}")
}
