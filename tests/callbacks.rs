//! Acks that come back from PagerDuty (`POST /pagerduty/webhook`) and Slack
//! (`POST /slack/actions`), through the real binary, with a local receiver standing in for
//! both services' incoming ends (and for Slack's `response_url`, where medic answers in the
//! thread).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::receiver::Receiver;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(30);
const PD_SECRET: &str = "pd-webhook-test-secret";
const SLACK_SECRET: &str = "slack-signing-test-secret";

/// A route whose runbook escalates at once; tier one pages `chat` (Slack) and `pager`
/// (PagerDuty), tier two `hook` three seconds later. Each secret is set when given.
fn config(
    dir: &Path,
    rx: &Receiver,
    pd_secret: Option<&str>,
    slack_secret: Option<&str>,
) -> String {
    runbook(dir, "escalate.rhai", r#"escalate("it is broken");"#);
    let line = |key: &str, value: Option<&str>| {
        value
            .map(|v| format!("{key} = \"{v}\""))
            .unwrap_or_default()
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"
external_url = "http://medic.example:9095"

[store]
{store}

[runbooks]
dir = "{runbooks}"

[limits]
storm_window = "1ms"

[escalation]
retry_initial = "100ms"
retry_max = "500ms"
tiers = [{{ after = "0s", notify = ["chat", "pager"] }}, {{ after = "3s", notify = ["hook"] }}]

[[escalation.channels]]
name = "hook"
type = "webhook"
url = "{hook}"

[[escalation.channels]]
name = "chat"
type = "slack"
url = "{slack}"
{slack_secret}

[[escalation.channels]]
name = "pager"
type = "pagerduty"
routing_key = "pd-test-key"
url = "{pd}"
{pd_secret}

[[routes]]
name = "broken"
matchers = ['alertname="Broken"']
runbook = "escalate.rhai"
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        hook = rx.url("/hook"),
        slack = rx.url("/slack"),
        pd = rx.url("/pagerduty/enqueue"),
        slack_secret = line("signing_secret", slack_secret),
        pd_secret = line("webhook_secret", pd_secret),
    )
}

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Fires `Broken` on `instance` and waits until its incident is escalated and told to
/// Slack and PagerDuty; returns the incident id and the Slack message.
async fn escalated(m: &Medic, rx: &Receiver, instance: &str) -> (String, Value) {
    let (status, _) = post_webhook(m, &body(vec![alert("Broken", instance, "firing")])).await;
    assert_eq!(status, 200);
    let id = eventually(WAIT, "Broken escalated", || async {
        incidents(m)
            .await
            .into_iter()
            .find(|i| i["labels"]["instance"] == instance && i["state"] == "escalated")
            .and_then(|i| i["id"].as_str().map(str::to_string))
    })
    .await;
    let slack = eventually(WAIT, "the Slack message", || async {
        rx.delivered("/slack")
            .into_iter()
            .find(|r| r.body.to_string().contains(&id))
            .map(|r| r.body)
    })
    .await;
    eventually(WAIT, "the PagerDuty event", || async {
        rx.delivered("/pagerduty/enqueue")
            .into_iter()
            .find(|r| r.body["dedup_key"] == id.as_str())
    })
    .await;
    (id, slack)
}

async fn incident(m: &Medic, id: &str) -> Value {
    api(m, &format!("/api/v1/incidents/{id}")).await
}

/// Whether the incident's timeline has an entry that names `by`.
fn audited_by(incident: &Value, by: &str) -> bool {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["detail"]["by"] == by)
}

/// The Slack message's buttons (its `actions` blocks).
fn buttons(slack: &Value) -> Vec<Value> {
    slack["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .cloned()
        .collect()
}

async fn post_pagerduty(m: &Medic, body: &[u8], signature: &str) -> (u16, Value) {
    let r = client()
        .post(m.url("/pagerduty/webhook"))
        .header("content-type", "application/json")
        .header("x-pagerduty-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn pagerduty_event(event_type: &str, key: &str, agent: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": {
        "id": "01DEN5FE0TLCF0MGLWC6J5KUVX",
        "event_type": event_type,
        "resource_type": "incident",
        "occurred_at": "2026-11-23T10:01:00.000Z",
        "agent": {"id": "PLH1HKV", "summary": agent, "type": "user_reference"},
        "data": {"id": "PGR0VU2", "type": "incident", "number": 2, "status": "acknowledged",
                 "incident_key": key, "title": "[medic] ESCALATED Broken"},
    }}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pagerduty_ack_acknowledges_the_incident_and_stops_tier_two() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    let m = Medic::start_in(dir, &config(dir, &rx, Some(PD_SECRET), None));
    let (id, slack) = escalated(&m, &rx, "db1:9100").await;
    // Without a signing secret, Slack messages carry no button, and Slack's endpoint
    // does not exist.
    assert!(buttons(&slack).is_empty(), "{slack}");
    let r = client()
        .post(m.url("/slack/actions"))
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // A wrong signature is refused and changes nothing.
    let ack = pagerduty_event("incident.acknowledged", &id, "Jane Oncall");
    let wrong = format!("v1={}", hmac_hex("not-the-secret", &ack));
    assert_eq!(post_pagerduty(&m, &ack, &wrong).await.0, 401);
    assert_eq!(post_pagerduty(&m, &ack, "").await.0, 401);
    assert_eq!(incident(&m, &id).await["state"], "escalated");

    // Signed: the incident is acknowledged in the agent's name.
    let good = format!("v1={}", hmac_hex(PD_SECRET, &ack));
    let (status, answer) = post_pagerduty(&m, &ack, &format!("{wrong},{good}")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["acknowledged"], json!([id]));
    let inc = incident(&m, &id).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "Jane Oncall");
    assert!(audited_by(&inc, "Jane Oncall"), "{inc}");

    // Delivered again, or resolved in PagerDuty later: 200, nothing changes.
    assert_eq!(post_pagerduty(&m, &ack, &good).await.0, 200);
    let resolved = pagerduty_event("incident.resolved", &id, "Someone Else");
    let signed = format!("v1={}", hmac_hex(PD_SECRET, &resolved));
    assert_eq!(post_pagerduty(&m, &resolved, &signed).await.0, 200);
    assert_eq!(incident(&m, &id).await["acknowledged_by"], "Jane Oncall");
    // An incident medic does not know, another event type: 200.
    let unknown = pagerduty_event("incident.acknowledged", "not-an-incident", "Jane Oncall");
    let signed = format!("v1={}", hmac_hex(PD_SECRET, &unknown));
    assert_eq!(post_pagerduty(&m, &unknown, &signed).await.0, 200);
    let other = pagerduty_event("incident.annotated", &id, "Jane Oncall");
    let signed = format!("v1={}", hmac_hex(PD_SECRET, &other));
    assert_eq!(post_pagerduty(&m, &other, &signed).await.0, 200);
    // A signed body that is not JSON: 400.
    let signed = format!("v1={}", hmac_hex(PD_SECRET, b"not json"));
    assert_eq!(post_pagerduty(&m, b"not json", &signed).await.0, 400);

    // Tier two (3s after the escalation) is never sent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        rx.delivered("/hook").is_empty(),
        "tier two was sent after the ack"
    );
}

async fn post_slack(m: &Medic, body: &str, timestamp: i64, signature: &str) -> (u16, Value) {
    let r = client()
        .post(m.url("/slack/actions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn slack_sign(timestamp: i64, body: &str) -> String {
    format!(
        "v0={}",
        hmac_hex(SLACK_SECRET, format!("v0:{timestamp}:{body}").as_bytes())
    )
}

fn slack_click(id: &str) -> String {
    slack_click_answered_at(id, None)
}

/// A click on the ack button of incident `id`, whose answer goes to `response_url`.
fn slack_click_answered_at(id: &str, response_url: Option<&str>) -> String {
    let mut payload = json!({
        "type": "block_actions",
        "user": {"id": "U0123", "username": "jdoe", "name": "jdoe-name", "team_id": "T0"},
        "actions": [{"type": "button", "action_id": "ack", "block_id": "medic", "value": id}],
    });
    if let Some(url) = response_url {
        payload["response_url"] = json!(url);
    }
    format!(
        "payload={}",
        form_urlencoded::byte_serialize(payload.to_string().as_bytes()).collect::<String>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_button_acknowledges_the_incident() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    let m = Medic::start_in(dir, &config(dir, &rx, None, Some(SLACK_SECRET)));
    let (id, slack) = escalated(&m, &rx, "web1:80").await;
    let b = buttons(&slack);
    assert_eq!(b.len(), 1, "{slack}");
    assert_eq!(b[0]["elements"][0]["action_id"], "ack");
    assert_eq!(b[0]["elements"][0]["value"], id.as_str());
    // Without a webhook secret, PagerDuty's endpoint does not exist.
    assert_eq!(post_pagerduty(&m, b"{}", "v1=00").await.0, 404);

    let click = slack_click(&id);
    let now = chrono::Utc::now().timestamp();
    // A wrong signature, a stale timestamp (6 minutes old, correctly signed): refused.
    let wrong = format!(
        "v0={}",
        hmac_hex("not-the-secret", format!("v0:{now}:{click}").as_bytes())
    );
    assert_eq!(post_slack(&m, &click, now, &wrong).await.0, 401);
    let stale = now - 360;
    assert_eq!(
        post_slack(&m, &click, stale, &slack_sign(stale, &click))
            .await
            .0,
        401
    );
    assert_eq!(incident(&m, &id).await["state"], "escalated");

    let (status, answer) = post_slack(&m, &click, now, &slack_sign(now, &click)).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("acknowledged by jdoe"), "{text}");
    let inc = incident(&m, &id).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "jdoe");
    assert!(audited_by(&inc, "jdoe"), "{inc}");

    // A second click, and a click about an unknown incident: 200, saying so.
    let (status, answer) = post_slack(&m, &click, now, &slack_sign(now, &click)).await;
    assert_eq!(status, 200);
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("already acknowledged by jdoe"),
        "{answer}"
    );
    let unknown = slack_click("no-such-incident");
    let (status, answer) = post_slack(&m, &unknown, now, &slack_sign(now, &unknown)).await;
    assert_eq!(status, 200);
    assert!(
        answer["text"].as_str().unwrap().contains("no incident"),
        "{answer}"
    );
}

/// An HTTP server that takes requests and never answers: it says when one has arrived
/// (its head and body read) and when its client hung up, and holds the connection until
/// then.
struct Silent {
    addr: std::net::SocketAddr,
    got: tokio::sync::mpsc::UnboundedReceiver<String>,
    hung_up: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, got) = tokio::sync::mpsc::unbounded_channel();
        let (hang, hung_up) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                use tokio::io::AsyncReadExt;
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Up to the end of the body (its Content-Length).
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&request).to_string());
                let hang = hang.clone();
                tokio::spawn(async move {
                    while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
                    let _ = hang.send(());
                });
            }
        });
        Silent {
            addr,
            got,
            hung_up,
            task,
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_action_is_answered_in_its_thread_without_waiting_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    let m = Medic::start_in(dir, &config(dir, &rx, None, Some(SLACK_SECRET)));
    let now = chrono::Utc::now().timestamp();
    let answers = |path: &str| {
        rx.delivered(path)
            .into_iter()
            .map(|r| r.body)
            .collect::<Vec<_>>()
    };

    // Refused (a wrong signature): nothing is posted anywhere.
    let (id, _) = escalated(&m, &rx, "web1:80").await;
    let click = slack_click_answered_at(&id, Some(&rx.url("/slack/thread")));
    let wrong = format!(
        "v0={}",
        hmac_hex("not-the-secret", format!("v0:{now}:{click}").as_bytes())
    );
    assert_eq!(post_slack(&m, &click, now, &wrong).await.0, 401);

    // Acknowledged: the result, in the channel, beside the original message.
    let (status, _) = post_slack(&m, &click, now, &slack_sign(now, &click)).await;
    assert_eq!(status, 200);
    let got = eventually(WAIT, "the answer in the thread", || async {
        let a = answers("/slack/thread");
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["response_type"], "in_channel");
    assert_eq!(got[0]["replace_original"], false);
    let text = got[0]["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("Incident {id} acknowledged by jdoe")),
        "{text}"
    );
    // A second click: why nothing was done.
    let (status, _) = post_slack(&m, &click, now, &slack_sign(now, &click)).await;
    assert_eq!(status, 200);
    let got = eventually(WAIT, "the second answer", || async {
        let a = answers("/slack/thread");
        (a.len() == 2).then_some(a)
    })
    .await;
    let text = got[1]["text"].as_str().unwrap();
    assert!(text.contains("already acknowledged by jdoe"), "{text}");

    // Slack's end failing: logged, and the ack stands.
    let (id2, _) = escalated(&m, &rx, "web2:80").await;
    rx.always("/slack/broken", 500);
    let click = slack_click_answered_at(&id2, Some(&rx.url("/slack/broken")));
    let (status, _) = post_slack(&m, &click, now, &slack_sign(now, &click)).await;
    assert_eq!(status, 200);
    eventually(WAIT, "the failure logged", || async {
        m.log_text()
            .contains("cannot answer in Slack's thread")
            .then_some(())
    })
    .await;
    assert_eq!(incident(&m, &id2).await["state"], "acknowledged");

    // Slack's end never answering: the HTTP answer to Slack does not wait for it. The
    // post is made (it arrives), Slack's request is answered while medic still waits for
    // an answer to it, and the post is given up after its timeout.
    let mut silent = Silent::start().await;
    let (id3, _) = escalated(&m, &rx, "web3:80").await;
    let url = format!("http://{}/thread", silent.addr);
    let click = slack_click_answered_at(&id3, Some(&url));
    let (status, answer) = post_slack(&m, &click, now, &slack_sign(now, &click)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["text"]
        .as_str()
        .unwrap()
        .contains("acknowledged by jdoe"));
    assert!(
        silent.hung_up.try_recv().is_err(),
        "medic gave up on the thread before answering Slack"
    );
    assert!(!m.log_text().contains("timed out"));
    let request = tokio::time::timeout(WAIT, silent.got.recv())
        .await
        .expect("the post to the thread")
        .unwrap();
    assert!(request.starts_with("POST /thread"), "{request}");
    assert!(request.contains("acknowledged by jdoe"), "{request}");
    assert_eq!(incident(&m, &id3).await["state"], "acknowledged");
    eventually(WAIT, "the post given up", || async {
        m.log_text()
            .contains("cannot answer in Slack's thread: timed out")
            .then_some(())
    })
    .await;
    tokio::time::timeout(WAIT, silent.hung_up.recv())
        .await
        .expect("medic hangs up after the timeout");
}
