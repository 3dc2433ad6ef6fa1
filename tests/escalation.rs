//! Verification and escalation end to end through the real binary: a real SMTP server,
//! a local HTTP receiver for webhook, Slack and PagerDuty, and a real Alertmanager.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::receiver::Receiver;
use common::smtp::SmtpSink;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A config with the four channels (`mail`, `hook`, `chat`, `pager`), `[escalation]` keys
/// from `escalation`, `[runbooks]` keys from `runbooks_extra`, and `routes`.
fn config(
    dir: &Path,
    smtp: &str,
    rx: &Receiver,
    escalation: &str,
    runbooks_extra: &str,
    extra: &str,
) -> String {
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
timeout = "20s"
{runbooks_extra}

[limits]
# Escalations are told one by one here; storm grouping has its own test.
storm_window = "1ms"

[escalation]
retry_initial = "100ms"
retry_max = "500ms"
{escalation}

[[escalation.channels]]
name = "mail"
type = "email"
smtp = "{smtp}"
tls = "none"
from = "medic@example.com"
to = ["oncall@example.com"]

[[escalation.channels]]
name = "badmail"
type = "email"
smtp = "{smtp}"
tls = "none"
from = "medic@example.com"
to = ["reject-me@example.com"]

[[escalation.channels]]
name = "hook"
type = "webhook"
url = "{hook}"

[[escalation.channels]]
name = "chat"
type = "slack"
url = "{slack}"

[[escalation.channels]]
name = "pager"
type = "pagerduty"
routing_key = "pd-test-key"
url = "{pd}"
default_severity = "warning"

{extra}
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        hook = rx.url("/hook"),
        slack = rx.url("/slack"),
        pd = rx.url("/pagerduty/enqueue"),
    )
}

/// The only incident of `alertname`, once it is in `state`.
async fn in_state(m: &Medic, alertname: &str, state: &str) -> Value {
    eventually(WAIT, &format!("{alertname} {state}"), || async {
        let l = api(m, &format!("/api/v1/incidents?alertname={alertname}")).await;
        let id = l["incidents"][0]["id"].as_str()?.to_string();
        let one = api(m, &format!("/api/v1/incidents/{id}")).await;
        (one["state"] == state).then_some(one)
    })
    .await
}

async fn incident(m: &Medic, id: &str) -> Value {
    api(m, &format!("/api/v1/incidents/{id}")).await
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

async fn get_text(m: &Medic, path: &str) -> String {
    client()
        .get(m.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

// `webhook_slack_and_pagerduty_bodies_then_their_resolution` runs in-process on paused
// time: tests/in_process.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_runbook_escalates_by_mail_through_alertmanager() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let smtp = SmtpSink::start();
    let rx = Receiver::start().await;
    let restart = script(
        dir,
        "restart-service",
        "echo \"restarting $1\"\necho 'error: unit web.service not found' >&2\nexit 3",
    );
    runbook(
        dir,
        "restart.rhai",
        &format!(
            r#"let r = exec("{}", [alert.labels.instance]);
               if r.code != 0 {{ escalate(`restart failed with exit ${{r.code}}`); }}"#,
            restart.display()
        ),
    );
    let routes = "[[routes]]\nname = \"restart\"\nmatchers = ['alertname=\"ServiceDown\"']\nrunbook = \"restart.rhai\"\n";
    let cfg = config(
        dir,
        &smtp.addr(),
        &rx,
        r#"notify = ["mail"]"#,
        &format!("allowed_commands = [\"{}\"]", restart.display()),
        routes,
    );
    let m = Medic::start_in(dir, &cfg);
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([{
        "labels": {"alertname": "ServiceDown", "instance": "web7:80", "severity": "critical"},
        "annotations": {"summary": "web7 is down", "description": "No answer on :80 for 1m.", "runbook_url": "https://wiki.example/web"},
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up%3D%3D0",
    }]))
    .await;
    let inc = in_state(&m, "ServiceDown", "escalated").await;
    let id = inc["id"].as_str().unwrap();
    assert_eq!(inc["reason"], "requested");

    let mails = smtp.wait_mails(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    let h = &mail["headers"];
    assert_eq!(
        h["Subject"],
        "[medic] ESCALATED ServiceDown on web7:80: requested"
    );
    assert_eq!(h["From"], "medic@example.com");
    assert_eq!(h["To"], "oncall@example.com");
    assert_eq!(h["X-Medic-Incident"], id);
    assert_eq!(h["X-Medic-Kind"], "escalated");
    assert_eq!(h["X-Medic-Reason"], "requested");
    assert_eq!(h["Message-ID"], format!("<{id}.1.1.mail@example.com>"));
    assert!(h["Date"].is_string());
    assert_eq!(mail["mail_from"], "medic@example.com");
    assert_eq!(mail["rcpt_to"], json!(["oncall@example.com"]));
    assert_eq!(
        mail["content_types"],
        json!(["multipart/alternative", "text/plain", "text/html"])
    );

    let text = mail["parts"]["text/plain"].as_str().unwrap();
    let first_screen: String = text.lines().take(14).collect::<Vec<_>>().join("\n");
    for want in [
        "WHAT IS BROKEN",
        "ServiceDown: web7 is down",
        "WHAT WAS TRIED",
        "Runbook restart.rhai: 1 step(s), 1 failed.",
        "Why medic stopped: requested: restart failed with exit 3",
        "WHAT TO DO",
    ] {
        assert!(
            first_screen.contains(want),
            "{want:?} not on the first screen:\n{first_screen}"
        );
    }
    assert!(
        text.contains(&format!("exec {} web7:80 -> exit 3 in", restart.display())),
        "{text}"
    );
    assert!(text.contains("       | restarting web7:80"), "{text}");
    assert!(
        text.contains("       | error: unit web.service not found"),
        "{text}"
    );
    assert!(
        text.contains("Follow the alert's runbook: https://wiki.example/web"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "http://medic.example:9095/api/v1/incidents/{id}/ack"
        )),
        "{text}"
    );
    assert!(text.contains("silence:  http"), "{text}");
    assert!(
        text.contains("source:   http://prometheus.example:9090/graph?g0.expr=up%3D%3D0"),
        "{text}"
    );

    let html = mail["parts"]["text/html"].as_str().unwrap();
    assert!(
        html.contains("<h3>What is broken</h3><p><b>ServiceDown: web7 is down</b></p>"),
        "{html}"
    );
    assert!(html.contains("restarting web7:80"), "{html}");
    assert!(html.contains("error: unit web.service not found"), "{html}");
    assert!(html.contains(">exit 3</td>"), "{html}");
    assert!(
        html.contains(&format!(
            "<a href=\"http://medic.example:9095/api/v1/incidents/{id}\">"
        )),
        "{html}"
    );

    // The attempt is recorded once the SMTP server has answered: it may come just after
    // the mail is in the server's hands.
    let sent = eventually(WAIT, "the mail's notification_sent entry", || async {
        let sent = events(&incident(&m, id).await, "notification_sent");
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(sent[0]["channel"], "mail");
    assert_eq!(sent[0]["attempt"], 1);
    drop(am);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_through_alertmanager_escalates_still_firing_or_ends_auto_remediated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let smtp = SmtpSink::start();
    let rx = Receiver::start().await;
    runbook(dir, "fix.rhai", "log(`fixed ${alert.labels.instance}`);");
    let routes = "[[routes]]\nname = \"fix\"\nmatchers = ['alertname=~\"Stays|Heals\"']\nrunbook = \"fix.rhai\"\nverify_for = \"5s\"\n";
    let cfg = config(
        dir,
        &smtp.addr(),
        &rx,
        r#"notify = ["hook", "mail"]"#,
        "",
        routes,
    );
    let m = Medic::start_in(dir, &cfg);
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    let starts = chrono::Utc::now() - chrono::Duration::seconds(5);
    let alert = |name: &str, ends: Option<chrono::DateTime<chrono::Utc>>| {
        let mut a = json!({
            "labels": {"alertname": name, "instance": "web1:80"},
            "annotations": {"summary": format!("{name} on web1")},
            "startsAt": starts.to_rfc3339(),
        });
        if let Some(e) = ends {
            a["endsAt"] = json!(e.to_rfc3339());
        }
        a
    };
    am.post_alerts(&json!([alert("Stays", None), alert("Heals", None)]))
        .await;
    let heals = in_state(&m, "Heals", "verifying").await;
    assert!(heals["verify_until"].is_string(), "{heals:#}");
    // The fix worked: the alert resolves in Alertmanager, which tells medic.
    am.post_alerts(&json!([alert("Heals", Some(chrono::Utc::now()))]))
        .await;
    let heals = in_state(&m, "Heals", "resolved").await;
    assert_eq!(heals["outcome"], "auto_remediated");
    assert_eq!(
        events(&heals, "verification_succeeded")[0]["how"],
        "Alertmanager sent the resolved notification"
    );

    // The other keeps firing: escalated `still_firing` once `verify_for` is over.
    let stays = in_state(&m, "Stays", "escalated").await;
    assert_eq!(stays["reason"], "still_firing");
    assert_eq!(
        stays["message"],
        "the alert was still firing 5s after the runbook ended"
    );
    let failed = events(&stays, "verification_failed");
    assert_eq!(failed[0]["route"], "fix");
    let hook = rx.wait_delivered("/hook", 1, WAIT).await;
    assert_eq!(hook[0].body["reason"], "still_firing");
    assert_eq!(hook[0].body["incident"]["id"], stays["id"]);
    let mails = smtp.wait_mails(1, WAIT).await;
    assert_eq!(
        mails[0]["headers"]["Subject"],
        "[medic] ESCALATED Stays on web1:80: still_firing"
    );
    assert!(mails[0]["parts"]["text/plain"]
        .as_str()
        .unwrap()
        .contains("the fix did not work"));

    // Nothing was sent about the one that healed (that nothing is sent later either is
    // `an_incident_that_heals_while_verifying_is_never_paged`, in-process).
    assert!(rx
        .all()
        .iter()
        .all(|r| r.body["incident"]["id"] != heals["id"]));
    assert_eq!(smtp.mails().len(), 1);
    assert!(events(&heals, "escalation_scheduled").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_alertmanager_polls_the_api_when_no_resolution_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    // Alertmanager delivers nowhere useful: only polling can tell medic the alert is gone.
    let am = Alertmanager::start(&rx.url("/am-sink"), "unused", "1h").await;
    runbook(dir, "fix.rhai", "log(\"fixed\");");
    let extra = format!(
        "[alertmanager]\nurl = \"{}\"\n\n[[routes]]\nname = \"fix\"\nmatchers = ['alertname=\"Polled\"']\nrunbook = \"fix.rhai\"\nverify = \"alertmanager\"\nverify_for = \"60s\"\n",
        am.url
    );
    let cfg = config(dir, "127.0.0.1:9", &rx, r#"notify = ["hook"]"#, "", &extra);
    let m = Medic::start_in(dir, &cfg);
    let labels = json!({"alertname": "Polled", "instance": "db2:5432"});
    let starts = chrono::Utc::now() - chrono::Duration::seconds(5);
    am.post_alerts(&json!([{"labels": labels, "startsAt": starts.to_rfc3339()}]))
        .await;
    // The fingerprint Alertmanager gave the alert.
    let fingerprint = eventually(WAIT, "the alert in Alertmanager", || async {
        let list: Value = client()
            .get(format!("{}/api/v2/alerts", am.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        list[0]["fingerprint"].as_str().map(String::from)
    })
    .await;
    let mut a = alert("Polled", "db2:5432", "firing");
    a["labels"] = labels.clone();
    a["fingerprint"] = json!(fingerprint);
    a["startsAt"] = json!(starts.to_rfc3339());
    post_webhook(&m, &body(vec![a])).await;
    in_state(&m, "Polled", "verifying").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    in_state(&m, "Polled", "verifying").await;
    am.post_alerts(&json!([{"labels": labels, "startsAt": starts.to_rfc3339(), "endsAt": chrono::Utc::now().to_rfc3339()}])).await;
    let inc = in_state(&m, "Polled", "resolved").await;
    assert_eq!(inc["outcome"], "auto_remediated");
    assert_eq!(inc["deliveries"], 1);
    assert_eq!(
        events(&inc, "verification_succeeded")[0]["how"],
        "Alertmanager no longer lists the alert as active"
    );
    assert!(rx.delivered("/hook").is_empty());
}

// `a_receiver_that_fails_first_gets_one_delivery_and_every_attempt_is_audited` runs
// in-process on paused time: tests/in_process.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_not_retried_and_fall_through_to_the_next_tier() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let smtp = SmtpSink::start();
    let rx = Receiver::start().await;
    rx.always("/pagerduty/enqueue", 400);
    let escalation = r#"fall_through_after = 1
tiers = [{ after = "0s", notify = ["pager", "badmail"] }, { after = "1h", notify = ["hook"] }]"#;
    let cfg = config(dir, &smtp.addr(), &rx, escalation, "", "");
    let m = Medic::start_in(dir, &cfg);
    post_webhook(&m, &body(vec![alert("Broken", "b1", "firing")])).await;
    let inc = in_state(&m, "Broken", "escalated").await;
    let id = inc["id"].as_str().unwrap();
    // Tier 2 is an hour away, but tier 1 cannot deliver: it is paged now.
    let hook = rx.wait_delivered("/hook", 1, WAIT).await;
    assert_eq!(hook[0].body["tier"], 2);
    // Both of tier one's failures are recorded (that none is retried later is
    // `a_permanent_failure_is_not_retried_and_falls_through_to_the_next_tier`, in-process).
    eventually(WAIT, "both failures of tier one", || async {
        let inc = incident(&m, id).await;
        (events(&inc, "notification_failed").len() >= 2).then_some(())
    })
    .await;
    let pd_attempts = rx
        .all()
        .into_iter()
        .filter(|r| r.path == "/pagerduty/enqueue")
        .count();
    assert_eq!(pd_attempts, 1, "a 400 is not retried");
    assert!(smtp.mails().is_empty());

    let inc = incident(&m, id).await;
    let failed = events(&inc, "notification_failed");
    let by = |c: &str| failed.iter().find(|f| f["channel"] == c).cloned().unwrap();
    assert_eq!(by("pager")["permanent"], true);
    assert_eq!(by("pager")["gave_up"], true);
    assert_eq!(by("badmail")["permanent"], true);
    let mail_error = by("badmail")["error"].as_str().unwrap().to_string();
    assert!(
        mail_error.contains("550") && mail_error.contains("no such user"),
        "{mail_error}"
    );
    let fell = events(&inc, "escalation_fell_through");
    assert_eq!(
        (fell[0]["from_tier"].as_u64(), fell[0]["to_tier"].as_u64()),
        (Some(1), Some(2))
    );

    let ready: Value = client()
        .get(m.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failing: Vec<&str> = ready["failing_channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(failing, ["badmail", "pager"], "{ready}");
    let metrics = get_text(&m, "/metrics").await;
    assert!(
        metrics.contains(r#"medic_escalation_channel_failing{channel="pager"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"medic_escalation_channel_failing{channel="hook"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("medic_escalation_outbox_failed 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsent_escalation_is_sent_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    let cfg = config(
        dir,
        "127.0.0.1:9",
        &rx,
        r#"tiers = [{ after = "2s", notify = ["hook"] }]"#,
        "",
        "",
    );
    let mut m = Medic::start_in(dir, &cfg);
    post_webhook(&m, &body(vec![alert("Crashy", "c1", "firing")])).await;
    let inc = in_state(&m, "Crashy", "escalated").await;
    let id = inc["id"].as_str().unwrap().to_string();
    m.kill9();
    assert!(rx.all().is_empty(), "killed before the tier was due");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = Medic::start_in(dir, &cfg);
    let got = rx.wait_delivered("/hook", 1, WAIT).await;
    assert_eq!(got[0].body["incident"]["id"], id.as_str());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.all().len(), 1, "sent once");
    let inc = incident(&m, &id).await;
    assert_eq!(events(&inc, "notification_sent").len(), 1);
}

// `an_ack_stops_tier_two` runs in-process on paused time: tests/in_process.rs.
// `renotify_repeats_the_policy_until_acked` runs in-process on paused time too: it checks
// that no round comes before it is due and none after the ack, without waiting.

// `a_storm_is_told_once_with_the_list_of_its_incidents` runs in-process on paused time:
// tests/in_process.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_summary_pages_pagerduty_as_an_alert_of_its_own() {
    // PagerDuty folds a trigger into the open alert of the same dedup_key and pages nobody:
    // a summary told through the group's first incident, whose own alert is still open,
    // must not carry that incident's key, or the storm's other members are never paged.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    let cfg = config(dir, "127.0.0.1:9", &rx, r#"notify = ["pager"]"#, "", "")
        .replace("storm_window = \"1ms\"", "storm_window = \"2s\"");
    let m = Medic::start_in(dir, &cfg);
    let alerts: Vec<Value> = (0..3)
        .map(|i| alert("NodeDown", &format!("n{i}:9100"), "firing"))
        .collect();
    assert_eq!(post_webhook(&m, &body(alerts)).await.0, 200);
    let got = rx.wait_delivered("/pagerduty/enqueue", 2, WAIT).await;
    let (first, summary) = (&got[0].body, &got[1].body);
    assert_eq!(first["event_action"], "trigger");
    assert_eq!(summary["event_action"], "trigger");
    assert!(
        summary["payload"]["summary"]
            .as_str()
            .unwrap()
            .ends_with("(+2 more incidents)"),
        "{summary}"
    );
    assert_ne!(
        summary["dedup_key"], first["dedup_key"],
        "the summary is deduplicated into the first incident's open PagerDuty alert"
    );
}
