//! How people decide on a run that waits for approval, through the real binary: the signed
//! approve and reject links of the mail the real SMTP server received, a route whose
//! `approvers` gets no links, Slack's signed Approve button, and the console's forms as the
//! logged-in person (roles, approvers, CSRF).

use crate::common;

use std::path::Path;

use chrono::Utc;
use common::approval::*;
use common::console::{browser, get, log_in, post};
use common::receiver::Receiver;
use common::smtp::SmtpSink;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const LINK_SECRET: &str = "an-approval-link-secret-of-32-bytes!";
const SLACK_SECRET: &str = "slack-signing-secret-for-approvals";

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
