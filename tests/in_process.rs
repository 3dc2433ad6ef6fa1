//! The engine in-process, on paused time: the same composition root as `medic serve`
//! (`medic::app::run`), SQLite in a temporary directory (or PostgreSQL with
//! `MEDIC_TEST_STORE=postgres`), and a clock that follows tokio's paused clock
//! (`Clock::following_tokio`). Deadlines are checked exactly, by moving time to just
//! before them (nothing happens) and just after (it happens), instead of sleeping.
//!
//! Time moves only when a test says so: a busy task keeps the runtime from idling, so
//! tokio never moves its paused clock on its own while the store's thread works. Every
//! deadline is taken from what the store recorded, so these tests hold whichever clock the
//! store stamps its times with.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use common::receiver::Receiver;
use common::{alert, body, client, store_config, API_TOKEN, WEBHOOK_TOKEN};
use medic::clock::Clock;
use medic::store::{IncidentFilter, Store};

/// How long (real time) a test waits for something the engine does at once.
const WAIT: Duration = Duration::from_secs(20);

/// A config with two `file` channels, `hook` and `chat` (`<dir>/hook.jsonl`,
/// `<dir>/chat.jsonl`), the given `[escalation]` policy, and `extra` (routes).
fn config(dir: &Path, escalation: &str, extra: &str) -> String {
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
{escalation}

[[escalation.channels]]
name = "hook"
type = "file"
path = "{hook}"

[[escalation.channels]]
name = "chat"
type = "file"
path = "{chat}"
{extra}
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        hook = dir.join("hook.jsonl").display(),
        chat = dir.join("chat.jsonl").display(),
    )
}

/// Three channels that deliver to `rx`, for `extra`: `web` (webhook, `/hook`), `slack`
/// (`/slack`) and `pager` (PagerDuty, `/pagerduty/enqueue`).
fn http_channels(rx: &Receiver) -> String {
    format!(
        r#"
[[escalation.channels]]
name = "web"
type = "webhook"
url = "{hook}"

[[escalation.channels]]
name = "slack"
type = "slack"
url = "{slack}"

[[escalation.channels]]
name = "pager"
type = "pagerduty"
routing_key = "pd-test-key"
url = "{pd}"
default_severity = "warning"
"#,
        hook = rx.url("/hook"),
        slack = rx.url("/slack"),
        pd = rx.url("/pagerduty/enqueue"),
    )
}

/// Retries as the black-box tests have them, for the `[escalation]` policy.
const RETRY: &str = "retry_initial = \"100ms\"\nretry_max = \"500ms\"\n";

/// The requests `rx` accepted on `path`, once there are `n` (without moving the clock).
async fn delivered(rx: &Receiver, path: &str, n: usize) -> Vec<common::receiver::Received> {
    until(&format!("{n} deliveries to {path}"), || async {
        let got = rx.delivered(path);
        (got.len() >= n).then_some(got)
    })
    .await
}

/// Every request `rx` got on `path`, accepted or not.
fn attempts(rx: &Receiver, path: &str) -> Vec<common::receiver::Received> {
    rx.all().into_iter().filter(|r| r.path == path).collect()
}

/// The engine running in this test's runtime.
struct Engine {
    store: Store,
    clock: Clock,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    busy: JoinHandle<()>,
}

impl Engine {
    /// Builds and starts the engine with `config(dir)` and the runbooks given.
    async fn start(config_of: impl Fn(&Path) -> String, runbooks: &[(&str, &str)]) -> Engine {
        // Keeps the runtime busy, so the paused clock moves only by `advance`. It sleeps a
        // little (real time, blocking its thread) each round, so that "busy" does not mean
        // a core spinning: the store's threads and other tests need the CPU.
        let busy = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_micros(500));
                tokio::task::yield_now().await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runbooks")).unwrap();
        for (name, source) in runbooks {
            std::fs::write(dir.path().join("runbooks").join(name), source).unwrap();
        }
        let path = dir.path().join("medic.toml");
        let config =
            medic::config::Config::parse(&path, &config_of(dir.path()), &|_| None).unwrap();
        let loaded = medic::loaded::Loaded::from_config(config).unwrap();
        let metrics = Arc::new(medic::metrics::Metrics::default());
        let store = Store::connect(&loaded.config.store, metrics.store.clone()).unwrap();
        let clock = Clock::following_tokio(chrono::Utc::now());
        let engine = medic::app::Engine {
            loaded,
            store: store.clone(),
            metrics,
            clock: clock.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(medic::app::run(listener, engine, async {
            let _ = stopped.await;
        }));
        Engine {
            store,
            clock,
            addr,
            dir,
            stop: Some(stop),
            server: Some(server),
            busy,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post_webhook(&self, alerts: Vec<Value>) {
        let r = client()
            .post(self.url("/webhook"))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&body(alerts))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }

    async fn api(&self, path: &str) -> Value {
        client()
            .get(self.url(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post_ack(&self, id: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut r = client()
            .post(self.url(&format!("/api/v1/incidents/{id}/ack")))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The incident of `alertname` once it is in `state` (by the API, with its timeline).
    async fn in_state(&self, alertname: &str, state: &str) -> Value {
        until(&format!("{alertname} {state}"), || async {
            let list = self
                .store
                .incidents(IncidentFilter {
                    state: None,
                    alertname: Some(alertname.into()),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .ok()?;
            let id = list.first()?.id.clone();
            let one = self.api(&format!("/api/v1/incidents/{id}")).await;
            (one["state"] == state).then_some(one)
        })
        .await
    }

    async fn text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The incident `id`, with its timeline.
    async fn incident(&self, id: &str) -> Value {
        self.api(&format!("/api/v1/incidents/{id}")).await
    }

    /// The detail of incident `id`'s `event` entries, once there are `n`.
    async fn events_when(&self, id: &str, event: &str, n: usize) -> Vec<Value> {
        until(&format!("{n} {event} of {id}"), || async {
            let got = events(&self.incident(id).await, event);
            (got.len() >= n).then_some(got)
        })
        .await
    }

    /// Waits (without moving the clock) until nothing is pending in the outbox, no deadline
    /// to come (a delivery is recorded just after the receiver has it), then lets an hour
    /// pass.
    async fn nothing_pending_then_an_hour(&self) {
        until("nothing pending in the outbox", || async {
            matches!(self.store.outbox_next_due().await, Ok(None)).then_some(())
        })
        .await;
        tokio::time::advance(Duration::from_secs(60 * 60)).await;
        settle().await;
    }

    /// The notifications channel `name` (a `file` channel) wrote.
    fn sent(&self, name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.jsonl")))
            .unwrap_or_default();
        // Complete lines only: the channel may be writing the next one.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Moves the paused clock so that it reads `at` minus `before` (it never goes back).
    async fn advance_to(&self, at: chrono::DateTime<chrono::Utc>, before: Duration) {
        let target = at - chrono::Duration::from_std(before).unwrap();
        if let Ok(d) = (target - self.clock.now()).to_std() {
            tokio::time::advance(d).await;
        }
        settle().await;
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        // Stopping waits on grace periods: let time run for it.
        self.busy.abort();
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

/// Lets the engine's tasks run (real time; the paused clock does not move): every worker
/// whose timer is due gets through a few rounds with the store.
async fn settle() {
    let end = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < end {
        tokio::task::yield_now().await;
    }
}

/// Polls `f` (without moving the paused clock) until it answers, for at most [`WAIT`] of
/// real time.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
    }
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

/// A verification window that runs out escalates `still_firing` when it is due, not a
/// moment before.
#[tokio::test(start_paused = true)]
async fn a_verification_window_escalates_still_firing_exactly_when_it_ends() {
    let route = "\n[[routes]]\nname = \"fix\"\nmatchers = ['alertname=\"Stays\"']\nrunbook = \"fix.rhai\"\nverify_for = \"60s\"\n";
    let e = Engine::start(
        |dir| config(dir, r#"notify = ["hook"]"#, route),
        &[("fix.rhai", "log(\"fixed\");")],
    )
    .await;
    e.post_webhook(vec![alert("Stays", "web1:80", "firing")])
        .await;
    e.in_state("Stays", "verifying").await;
    let waiting = e.store.verifying(10).await.unwrap();
    let deadline = waiting[0].verify_until;

    e.advance_to(deadline, Duration::from_secs(1)).await;
    e.in_state("Stays", "verifying").await;
    assert!(e.sent("hook").is_empty());

    e.advance_to(deadline + chrono::Duration::seconds(1), Duration::ZERO)
        .await;
    let inc = e.in_state("Stays", "escalated").await;
    assert_eq!(inc["reason"], "still_firing");
    assert_eq!(
        inc["message"],
        "the alert was still firing 1m after the runbook ended"
    );
    assert_eq!(events(&inc, "verification_failed")[0]["route"], "fix");
    until("the page", || async {
        (e.sent("hook").len() == 1).then_some(())
    })
    .await;
    e.stop().await;
}

/// An escalation tier's notification is not sent before its delay, and is sent after.
#[tokio::test(start_paused = true)]
async fn a_tier_is_sent_after_its_delay_and_not_before() {
    let tiers =
        r#"tiers = [{ after = "0s", notify = ["hook"] }, { after = "5m", notify = ["chat"] }]"#;
    let e = Engine::start(|dir| config(dir, tiers, ""), &[]).await;
    // No route takes it: escalated `no_runbook` at once.
    e.post_webhook(vec![alert("Paged", "p1", "firing")]).await;
    e.in_state("Paged", "escalated").await;
    until("tier one", || async {
        (e.sent("hook").len() == 1).then_some(())
    })
    .await;
    // Tier two's due time, once tier one is recorded as sent.
    let due = until("tier two's due time", || async {
        let due = e.store.outbox_next_due().await.ok()??;
        (due > e.clock.now() + chrono::Duration::minutes(1)).then_some(due)
    })
    .await;

    e.advance_to(due, Duration::from_secs(1)).await;
    assert!(e.sent("chat").is_empty(), "tier two before its delay");

    e.advance_to(due + chrono::Duration::seconds(1), Duration::ZERO)
        .await;
    let chat = until("tier two", || async {
        let sent = e.sent("chat");
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0]["tier"], 2);
    e.stop().await;
}

/// Moved from tests/escalation.rs, where it slept 3 s: an acknowledgement cancels the
/// tiers not sent yet; the ack endpoint's answers.
#[tokio::test(start_paused = true)]
async fn an_ack_stops_tier_two() {
    let tiers =
        r#"tiers = [{ after = "0s", notify = ["hook"] }, { after = "2s", notify = ["chat"] }]"#;
    let e = Engine::start(|dir| config(dir, tiers, ""), &[]).await;
    e.post_webhook(vec![alert("Paged", "p1", "firing")]).await;
    let inc = e.in_state("Paged", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();
    until("tier one", || async {
        (e.sent("hook").len() == 1).then_some(())
    })
    .await;
    // Recorded as sent (just after the file has it), so the ack cancels tier two only.
    e.events_when(&id, "notification_sent", 1).await;

    assert_eq!(e.post_ack(&id, None, "{}").await.0, 401);
    assert_eq!(e.post_ack("01NOPE", Some(API_TOKEN), "").await.0, 404);
    assert_eq!(
        e.post_ack(&id, Some(API_TOKEN), "{\"who\": 1}").await.0,
        400
    );
    let (status, acked) = e.post_ack(&id, Some(API_TOKEN), r#"{"by": "alice"}"#).await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], "alice");
    let (status, again) = e.post_ack(&id, Some(API_TOKEN), "").await;
    assert_eq!(
        (status, again["acknowledged_by"].as_str()),
        (200, Some("alice"))
    );

    // Well past tier two's delay: nothing.
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    assert!(e.sent("chat").is_empty(), "tier two was not paged");
    let inc = e.api(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(events(&inc, "incident_acknowledged")[0]["by"], "alice");
    let cancelled = events(&inc, "notifications_cancelled");
    assert_eq!(
        (
            cancelled[0]["notifications"].as_u64(),
            cancelled[0]["why"].as_str()
        ),
        (Some(1), Some("acknowledged"))
    );
    let changed = events(&inc, "state_changed");
    assert_eq!(changed.last().unwrap()["to"], "acknowledged");
    e.stop().await;
}

/// Renotify rounds until an ack, then none. The store decides when a round is due, by its
/// own clock: this runs once the store takes the engine's clock.
#[tokio::test(start_paused = true)]
async fn renotify_repeats_the_policy_until_acked() {
    let policy = "notify = [\"hook\"]\nrenotify = \"10m\"";
    let e = Engine::start(|dir| config(dir, policy, ""), &[]).await;
    e.post_webhook(vec![alert("Nagging", "n1", "firing")]).await;
    let inc = e.in_state("Nagging", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();
    until("round one", || async {
        (e.sent("hook").len() == 1).then_some(())
    })
    .await;
    // Recorded as sent (just after the file has it) before time moves past its claim.
    e.events_when(&id, "notification_sent", 1).await;

    tokio::time::advance(Duration::from_secs(9 * 60 + 58)).await;
    settle().await;
    assert_eq!(e.sent("hook").len(), 1, "no round two before renotify");
    tokio::time::advance(Duration::from_secs(4)).await;
    let got = until("round two", || async {
        let sent = e.sent("hook");
        (sent.len() == 2).then_some(sent)
    })
    .await;
    assert_eq!(got[0]["key"], format!("{id}/1/1/hook"));
    assert_eq!(got[1]["key"], format!("{id}/2/1/hook"));

    assert_eq!(e.post_ack(&id, Some(API_TOKEN), "").await.0, 200);
    tokio::time::advance(Duration::from_secs(60 * 60)).await;
    settle().await;
    assert_eq!(e.sent("hook").len(), 2, "no round after the ack");
    e.stop().await;
}

/// Moved from tests/escalation.rs, where it slept 500 ms to see PagerDuty told of the
/// resolution once: the bodies webhook, Slack and PagerDuty get, resends that page nobody,
/// the resolution told once to each, and nothing more after it.
#[tokio::test(start_paused = true)]
async fn webhook_slack_and_pagerduty_bodies_then_their_resolution() {
    let rx = Receiver::start().await;
    let policy = format!("{RETRY}notify = [\"web\", \"slack\", \"pager\"]");
    let e = Engine::start(|dir| config(dir, &policy, &http_channels(&rx)), &[]).await;
    let mut firing = alert("DiskFull", "db1:9100", "firing");
    firing["annotations"]["runbook_url"] = json!("https://wiki.example/disk");
    e.post_webhook(vec![firing.clone()]).await;
    let inc = e.in_state("DiskFull", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();
    assert_eq!(inc["reason"], "no_runbook");

    let hook = delivered(&rx, "/hook", 1).await;
    let chat = delivered(&rx, "/slack", 1).await;
    let pd = delivered(&rx, "/pagerduty/enqueue", 1).await;
    let incident_url = format!("http://medic.example:9095/api/v1/incidents/{id}");

    let doc = &hook[0].body;
    assert_eq!(doc["version"], "1");
    assert_eq!(doc["kind"], "escalated");
    assert_eq!(doc["key"], format!("{id}/1/1/web"));
    assert_eq!(hook[0].headers["idempotency-key"], format!("{id}/1/1/web"));
    assert_eq!(
        (doc["tier"].as_u64(), doc["round"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(doc["reason"], "no_runbook");
    assert_eq!(
        doc["title"],
        "[medic] ESCALATED DiskFull on db1:9100: no_runbook"
    );
    assert_eq!(doc["incident"]["id"], id.as_str());
    assert_eq!(doc["incident"]["labels"]["instance"], "db1:9100");
    assert_eq!(
        doc["incident"]["annotations"]["summary"],
        "DiskFull on db1:9100"
    );
    assert_eq!(
        doc["incident"]["external_url"],
        "http://alertmanager.example:9093"
    );
    let timeline: Vec<&str> = doc["incident"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        timeline.starts_with(&[
            "incident_opened",
            "route_missed",
            "state_changed",
            "escalation_grouped",
            "escalation_scheduled"
        ]),
        "{timeline:?}"
    );
    assert_eq!(doc["links"]["incident"], incident_url);
    assert_eq!(doc["links"]["ack"], format!("{incident_url}/ack"));
    assert_eq!(
        doc["links"]["source"],
        "http://prometheus.example:9090/graph?g0.expr=up%3D%3D0"
    );
    assert_eq!(doc["links"]["runbook"], "https://wiki.example/disk");
    assert!(doc["links"]["silence"].as_str().unwrap().starts_with(
        "http://alertmanager.example:9093/#/silences/new?filter=%7Balertname%3D%22DiskFull%22"
    ));
    assert!(doc["what_to_do"][0]
        .as_str()
        .unwrap()
        .contains("No runbook handles this alert"));

    let slack = &chat[0].body;
    assert_eq!(
        slack["text"],
        ":rotating_light: [medic] ESCALATED DiskFull on db1:9100: no_runbook"
    );
    let facts = slack["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(
        facts.contains("*What is broken:* DiskFull: DiskFull on db1:9100"),
        "{facts}"
    );
    assert!(facts.contains("*Severity:* critical"), "{facts}");
    assert!(
        facts.contains("*What was tried:* Nothing: no runbook handles this alert."),
        "{facts}"
    );
    assert!(slack["blocks"][2]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .contains(&format!("<{incident_url}|incident>")));

    let event = &pd[0].body;
    assert_eq!(event["routing_key"], "pd-test-key");
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["dedup_key"], id.as_str());
    assert_eq!(
        event["payload"]["summary"],
        "[medic] ESCALATED DiskFull on db1:9100: no_runbook"
    );
    assert_eq!(event["payload"]["severity"], "critical");
    assert_eq!(event["payload"]["source"], "db1:9100");
    assert_eq!(event["payload"]["class"], "DiskFull");
    assert_eq!(event["payload"]["component"], "node");
    assert_eq!(event["payload"]["timestamp"], inc["started_at"]);
    assert_eq!(event["payload"]["custom_details"]["reason"], "no_runbook");
    assert_eq!(
        event["payload"]["custom_details"]["labels"]["instance"],
        "db1:9100"
    );
    assert_eq!(
        event["links"][0],
        json!({"href": incident_url, "text": "medic incident"})
    );
    assert_eq!(event["client"], "medic");

    // Resends of the firing alert page nobody again.
    for _ in 0..3 {
        e.post_webhook(vec![firing.clone()]).await;
    }
    // A severity PagerDuty does not know takes the channel's default. (Past the 1 ms
    // storm window first: on a clock that stands still, it would join DiskFull's group.)
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut odd = alert("QueueSlow", "q1", "firing");
    odd["labels"]["severity"] = json!("page");
    e.post_webhook(vec![odd]).await;
    let pd = delivered(&rx, "/pagerduty/enqueue", 2).await;
    assert_eq!(pd[1].body["payload"]["severity"], "warning");
    assert_eq!(
        rx.delivered("/hook")
            .iter()
            .filter(|r| r.body["incident"]["id"] == id.as_str())
            .count(),
        1
    );

    // The resolution: each channel told once, PagerDuty with the same dedup_key.
    let resolved = alert("DiskFull", "db1:9100", "resolved");
    e.post_webhook(vec![resolved.clone()]).await;
    e.post_webhook(vec![resolved]).await;
    let inc = e.in_state("DiskFull", "resolved").await;
    assert_eq!(inc["outcome"], "resolved_after_escalation");
    let pd = delivered(&rx, "/pagerduty/enqueue", 3).await;
    assert_eq!(
        pd[2].body,
        json!({"routing_key": "pd-test-key", "event_action": "resolve", "dedup_key": id})
    );
    let hook = delivered(&rx, "/hook", 3).await;
    let follow_up = hook.iter().find(|r| r.body["kind"] == "resolved").unwrap();
    assert_eq!(follow_up.body["key"], format!("{id}/resolved/web"));
    assert_eq!(
        follow_up.body["incident"]["outcome"],
        "resolved_after_escalation"
    );
    let chat = delivered(&rx, "/slack", 3).await;
    let text = chat
        .iter()
        .map(|r| r.body["text"].as_str().unwrap_or("").to_string())
        .find(|t| t.contains("RESOLVED"))
        .unwrap();
    assert!(
        text.contains("RESOLVED DiskFull on db1:9100 (was no_runbook)"),
        "{text}"
    );

    // Nothing is left to send, and an hour later nothing more was.
    e.nothing_pending_then_an_hour().await;
    let resolves = rx
        .delivered("/pagerduty/enqueue")
        .into_iter()
        .filter(|r| r.body["event_action"] == "resolve")
        .count();
    assert_eq!(resolves, 1, "told once");
    assert_eq!(rx.all().len(), 9, "three to each channel: {:#?}", rx.all());

    let metrics = e.text("/metrics").await;
    assert!(metrics.contains(r#"medic_escalation_notifications_total{channel="pager",kind="resolved",result="sent"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"medic_escalation_notifications_total{channel="web",kind="escalated",result="sent"} 2"#), "{metrics}");
    assert!(
        metrics.contains("medic_escalation_outbox_pending 0"),
        "{metrics}"
    );
    e.stop().await;
}

/// The time a stored stamp says.
fn at(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Moved from tests/escalation.rs, where it slept 500 ms to see one delivery only: a
/// receiver that answers 503, then 429, then 200 is retried with a growing backoff, each
/// retry exactly when it is due and not before, every attempt audited, and nothing after
/// the delivery.
#[tokio::test(start_paused = true)]
async fn a_receiver_that_fails_first_gets_one_delivery_and_every_attempt_is_audited() {
    let rx = Receiver::start().await;
    rx.fail_first("/hook", &[503, 429]);
    let policy = format!("{RETRY}notify = [\"web\"]");
    let e = Engine::start(|dir| config(dir, &policy, &http_channels(&rx)), &[]).await;
    e.post_webhook(vec![alert("Flaky", "h1", "firing")]).await;
    let inc = e.in_state("Flaky", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();

    // Attempt 1 at once; attempt 2 after 100 ms, at most halved by jitter.
    let first_at = e.clock.now();
    let failed = e.events_when(&id, "notification_failed", 1).await;
    assert_eq!(attempts(&rx, "/hook").len(), 1);
    assert_eq!(failed[0]["attempt"], 1);
    assert_eq!(failed[0]["error"], "answered HTTP 503");
    assert_eq!(failed[0]["permanent"], false);
    let second = at(&failed[0]["next_attempt_at"]);
    let wait = (second - first_at).to_std().unwrap();
    assert!(
        (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&wait),
        "{wait:?}"
    );
    e.advance_to(second, Duration::from_millis(1)).await;
    assert_eq!(attempts(&rx, "/hook").len(), 1, "attempt 2 before its time");
    e.advance_to(second + chrono::Duration::milliseconds(1), Duration::ZERO)
        .await;

    // Attempt 2; attempt 3 after 200 ms, at most halved by jitter.
    let second_at = e.clock.now();
    let failed = e.events_when(&id, "notification_failed", 2).await;
    assert_eq!(attempts(&rx, "/hook").len(), 2);
    assert_eq!(failed[1]["attempt"], 2);
    assert_eq!(failed[1]["error"], "answered HTTP 429");
    let third = at(&failed[1]["next_attempt_at"]);
    let wait = (third - second_at).to_std().unwrap();
    assert!(
        (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&wait),
        "{wait:?}"
    );
    e.advance_to(third, Duration::from_millis(1)).await;
    assert_eq!(attempts(&rx, "/hook").len(), 2, "attempt 3 before its time");
    e.advance_to(third + chrono::Duration::milliseconds(1), Duration::ZERO)
        .await;

    let got = delivered(&rx, "/hook", 1).await;
    let sent = e.events_when(&id, "notification_sent", 1).await;
    assert_eq!(sent[0]["attempt"], 3);

    // Delivered: nothing is left to send, and an hour later nothing more was.
    e.nothing_pending_then_an_hour().await;
    assert_eq!(rx.delivered("/hook").len(), 1, "one delivery");
    let all = attempts(&rx, "/hook");
    assert_eq!(
        all.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 429, 200]
    );
    let key = format!("{id}/1/1/web");
    assert!(all.iter().all(|r| r.headers["idempotency-key"] == key));
    assert_eq!(got[0].body["key"], key);
    let inc = e.incident(&id).await;
    assert_eq!(events(&inc, "notification_failed").len(), 2);
    assert_eq!(events(&inc, "notification_sent").len(), 1);
    let metrics = e.text("/metrics").await;
    assert!(metrics.contains(r#"medic_escalation_notifications_total{channel="web",kind="escalated",result="transient_failure"} 2"#), "{metrics}");
    e.stop().await;
}

/// The part of tests/escalation.rs's `permanent_failures_are_not_retried_and_fall_through_
/// to_the_next_tier` that needs no SMTP server, where it slept 700 ms to see no retry: a
/// 400 from PagerDuty is not retried, tier two (an hour away) is paged at once instead,
/// and nothing more is sent, before tier two's own time or after.
#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_not_retried_and_falls_through_to_the_next_tier() {
    let rx = Receiver::start().await;
    rx.always("/pagerduty/enqueue", 400);
    let policy = format!(
        "{RETRY}fall_through_after = 1\ntiers = [{{ after = \"0s\", notify = [\"pager\"] }}, {{ after = \"1h\", notify = [\"web\"] }}]"
    );
    let e = Engine::start(|dir| config(dir, &policy, &http_channels(&rx)), &[]).await;
    e.post_webhook(vec![alert("Broken", "b1", "firing")]).await;
    let inc = e.in_state("Broken", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();
    let hook = delivered(&rx, "/hook", 1).await;
    assert_eq!(hook[0].body["tier"], 2);
    let fell = e.events_when(&id, "escalation_fell_through", 1).await;
    assert_eq!(
        (fell[0]["from_tier"].as_u64(), fell[0]["to_tier"].as_u64()),
        (Some(1), Some(2))
    );
    let failed = e.events_when(&id, "notification_failed", 1).await;
    assert_eq!(failed[0]["channel"], "pager");
    assert_eq!(failed[0]["permanent"], true);
    assert_eq!(failed[0]["gave_up"], true);

    // Nothing is left to send: no retry of the 400, no second page at tier two's time.
    e.nothing_pending_then_an_hour().await;
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(
        attempts(&rx, "/pagerduty/enqueue").len(),
        1,
        "a 400 is not retried"
    );
    assert_eq!(rx.all().len(), 2, "{:#?}", rx.all());
    let inc = e.incident(&id).await;
    assert_eq!(events(&inc, "notification_failed").len(), 1);
    assert_eq!(events(&inc, "notification_sent").len(), 1);

    let ready: Value = serde_json::from_str(&e.text("/readyz").await).unwrap();
    let failing: Vec<&str> = ready["failing_channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(failing, ["pager"], "{ready}");
    let metrics = e.text("/metrics").await;
    assert!(
        metrics.contains(r#"medic_escalation_channel_failing{channel="pager"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"medic_escalation_channel_failing{channel="web"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("medic_escalation_outbox_failed 1"),
        "{metrics}"
    );
    e.stop().await;
}

/// Moved from tests/escalation.rs, where it slept 1.5 s to see two messages only: a storm
/// of 30 escalations is told as its first incident at once and one summary when the
/// group's window ends, not a moment before, and nothing more after.
#[tokio::test(start_paused = true)]
async fn a_storm_is_told_once_with_the_list_of_its_incidents() {
    let e = Engine::start(
        |dir| {
            config(dir, r#"notify = ["hook"]"#, "")
                .replace("storm_window = \"1ms\"", "storm_window = \"2m\"")
        },
        &[],
    )
    .await;
    let alerts: Vec<Value> = (0..30)
        .map(|i| alert("NodeDown", &format!("n{i}:9100"), "firing"))
        .collect();
    e.post_webhook(alerts).await;
    until("the first incident told", || async {
        (e.sent("hook").len() == 1).then_some(())
    })
    .await;
    // The summary's due time: the only notification pending, two minutes away.
    let due = until("the summary's due time", || async {
        let due = e.store.outbox_next_due().await.ok()??;
        (due > e.clock.now() + chrono::Duration::seconds(60)).then_some(due)
    })
    .await;
    assert!(due <= e.clock.now() + chrono::Duration::minutes(2), "{due}");

    e.advance_to(due, Duration::from_millis(1)).await;
    assert_eq!(
        e.sent("hook").len(),
        1,
        "the summary before the window ends"
    );
    e.advance_to(due + chrono::Duration::milliseconds(1), Duration::ZERO)
        .await;
    let got = until("the summary", || async {
        let sent = e.sent("hook");
        (sent.len() == 2).then_some(sent)
    })
    .await;

    e.nothing_pending_then_an_hour().await;
    let now = e.sent("hook");
    assert_eq!(
        now.len(),
        2,
        "30 escalations, two messages: {:#?}",
        now.iter().map(|d| &d["title"]).collect::<Vec<_>>()
    );
    let first = &got[0];
    assert!(first["group"].is_null());
    let summary = &got[1];
    assert_eq!(summary["group"]["size"], 30);
    assert_eq!(summary["group"]["incidents"].as_array().unwrap().len(), 30);
    assert!(
        summary["title"]
            .as_str()
            .unwrap()
            .ends_with("(+29 more incidents)"),
        "{}",
        summary["title"]
    );
    assert_eq!(
        summary["incident"]["id"], first["incident"]["id"],
        "the summary is the group's first incident's"
    );
    e.stop().await;
}

/// The tail of tests/escalation.rs's verification test, where it slept 1 s to see nothing
/// sent about an incident that healed: an alert resolved a second before its verification
/// window ends is `auto_remediated`, and nothing is ever sent about it, at the window's end
/// or after.
#[tokio::test(start_paused = true)]
async fn an_incident_that_heals_while_verifying_is_never_paged() {
    let route = "\n[[routes]]\nname = \"fix\"\nmatchers = ['alertname=\"Heals\"']\nrunbook = \"fix.rhai\"\nverify_for = \"60s\"\n";
    let e = Engine::start(
        |dir| config(dir, r#"notify = ["hook", "chat"]"#, route),
        &[("fix.rhai", "log(\"fixed\");")],
    )
    .await;
    e.post_webhook(vec![alert("Heals", "web1:80", "firing")])
        .await;
    let inc = e.in_state("Heals", "verifying").await;
    assert!(inc["verify_until"].is_string(), "{inc:#}");
    let deadline = e.store.verifying(10).await.unwrap()[0].verify_until;

    e.advance_to(deadline, Duration::from_secs(1)).await;
    e.post_webhook(vec![alert("Heals", "web1:80", "resolved")])
        .await;
    let inc = e.in_state("Heals", "resolved").await;
    assert_eq!(inc["outcome"], "auto_remediated");
    assert_eq!(
        events(&inc, "verification_succeeded")[0]["how"],
        "Alertmanager sent the resolved notification"
    );

    e.advance_to(deadline + chrono::Duration::seconds(1), Duration::ZERO)
        .await;
    e.nothing_pending_then_an_hour().await;
    let inc = e.in_state("Heals", "resolved").await;
    assert_eq!(inc["outcome"], "auto_remediated");
    assert!(events(&inc, "escalation_scheduled").is_empty());
    assert!(events(&inc, "verification_failed").is_empty());
    assert!(e.sent("hook").is_empty() && e.sent("chat").is_empty());
    e.stop().await;
}

/// Moved from tests/guards.rs, where it slept 1.5 s to see the queued incident wait: a
/// route whose maintenance window covers the whole day keeps its incident queued (no run,
/// a day later still), and a route whose window says `escalate` escalates `paused` at once.
#[tokio::test(start_paused = true)]
async fn a_maintenance_window_suppresses_runs() {
    let routes = r#"
[[routes]]
name = "waits"
matchers = ['alertname="Waits"']
runbook = "noop.rhai"
maintenance = [{ start = "00:00", end = "24:00", timezone = "UTC" }]

[[routes]]
name = "escalates"
matchers = ['alertname="Escalates"']
runbook = "noop.rhai"
maintenance = [{ start = "00:00", end = "24:00", timezone = "Europe/Berlin" }]
maintenance_action = "escalate"
"#;
    let e = Engine::start(
        |dir| config(dir, r#"notify = ["hook"]"#, routes),
        &[("noop.rhai", "log(\"ran\");\n")],
    )
    .await;
    e.post_webhook(vec![
        alert("Waits", "w", "firing"),
        alert("Escalates", "e", "firing"),
    ])
    .await;
    let esc = e.in_state("Escalates", "escalated").await;
    assert_eq!(esc["reason"], "paused");
    assert!(esc["message"]
        .as_str()
        .unwrap()
        .contains("maintenance window"));
    let waits = e.in_state("Waits", "queued").await;
    let id = waits["id"].as_str().unwrap().to_string();

    // A day and a minute later (past the next midnight, in every window's zone): still
    // waiting, never run.
    for _ in 0..(24 * 60 + 1) {
        tokio::time::advance(Duration::from_secs(60)).await;
        tokio::task::yield_now().await;
    }
    settle().await;
    let waits = e.incident(&id).await;
    assert_eq!(waits["state"], "queued", "it waits for the window to end");
    assert!(events(&waits, "run_started").is_empty());
    e.stop().await;
}
