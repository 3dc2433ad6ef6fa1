//! Signed one-click links end to end through the real binary and a real SMTP server: the
//! ack link is taken from the mail, opened (a confirmation page, nothing changes), used
//! (acknowledged, audited with the link's person), used again, tampered with, and let
//! expire: each refusal changes nothing.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::smtp::SmtpSink;
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "a-link-secret-of-at-least-32-bytes!!";

fn config(dir: &Path, smtp: &str, ttl: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"
link_secret = "${{MEDIC_LINK_SECRET}}"
link_ttl = "{ttl}"

[store]
{store}

[runbooks]
dir = "{runbooks}"

[escalation]
notify = ["mail"]

[[escalation.channels]]
name = "mail"
type = "email"
smtp = "{smtp}"
tls = "none"
from = "medic@example.com"
to = ["oncall@example.com"]
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
    )
}

/// Starts medic, escalates one alert (no route: no runbook) and returns medic, the
/// incident's id and the ack link of the mail.
async fn escalated(ttl: &str) -> (Medic, tempfile::TempDir, SmtpSink, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start();
    let m = Medic::start_in_env(
        tmp.path(),
        &config(tmp.path(), &smtp.addr(), ttl),
        &[("MEDIC_LINK_SECRET", SECRET)],
    );
    let (status, _) = post_webhook(&m, &body(vec![alert("DiskFull", "db1:9100", "firing")])).await;
    assert_eq!(status, 200);
    let mails = smtp.wait_mails(1, WAIT).await;
    let mail = &mails[0];
    let id = mail["headers"]["X-Medic-Incident"]
        .as_str()
        .unwrap()
        .to_string();
    let text = mail["parts"]["text/plain"].as_str().unwrap();
    let html = mail["parts"]["text/html"].as_str().unwrap();
    let page = m.url(&format!("/ui/incidents/{id}"));
    assert!(text.contains(&format!("page:     {page}")), "{text}");
    let link = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ack:      "))
        .unwrap_or_else(|| panic!("no ack link in {text}"))
        .to_string();
    assert!(link.starts_with(&m.url("/ui/a/")), "{link}");
    assert!(text.contains("Acknowledge it with one click"), "{text}");
    assert!(html.contains(&link), "{html}");
    assert!(html.contains(&page), "{html}");
    (m, tmp, smtp, id, link)
}

async fn state(m: &Medic, id: &str) -> String {
    api(m, &format!("/api/v1/incidents/{id}")).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ack_link_from_the_mail_confirms_then_acks_once() {
    let (m, _tmp, _smtp, id, link) = escalated("24h").await;
    let c = client();

    // Opening the link (as a mail scanner would) changes nothing.
    for _ in 0..2 {
        let r = c.get(&link).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let page = r.text().await.unwrap();
        assert!(page.contains("Acknowledge DiskFull?"), "{page}");
        assert!(page.contains(&id), "{page}");
        assert!(page.contains("method=\"post\""), "{page}");
        assert!(page.contains("link:mail"), "{page}");
    }
    assert_eq!(state(&m, &id).await, "escalated");

    // A POST from another site is refused.
    let r = c
        .post(&link)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(state(&m, &id).await, "escalated");

    // A tampered link is refused, on GET and POST.
    let (base, token) = link.rsplit_once('/').unwrap();
    let (payload, tag) = token.split_once('.').unwrap();
    let flipped = if tag.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{base}/{payload}.{flipped}{}", &tag[1..]);
    for r in [
        c.get(&tampered).send().await.unwrap(),
        c.post(&tampered).send().await.unwrap(),
    ] {
        assert_eq!(r.status().as_u16(), 403);
        assert!(r.text().await.unwrap().contains("Link refused"));
    }
    assert_eq!(state(&m, &id).await, "escalated");

    // The POST acknowledges, audited with the link's person.
    let origin = m.url("");
    let r = c
        .post(&link)
        .header("Origin", origin.trim_end_matches('/'))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("Acknowledged"));
    let incident = api(&m, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(incident["state"], "acknowledged");
    assert_eq!(incident["acknowledged_by"], "link:mail");
    let acks: Vec<_> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "incident_acknowledged")
        .collect();
    assert_eq!(acks.len(), 1, "{incident:#}");
    assert_eq!(acks[0]["detail"], json!({"by": "link:mail", "via": "link"}));

    // Used once: opening or posting again is refused and changes nothing.
    for r in [
        c.get(&link).send().await.unwrap(),
        c.post(&link).send().await.unwrap(),
    ] {
        assert_eq!(r.status().as_u16(), 410);
        assert!(r.text().await.unwrap().contains("already used"));
    }
    let again = api(&m, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(again["state"], "acknowledged");
    assert_eq!(again["timeline"], incident["timeline"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_ack_link_is_refused() {
    let (m, _tmp, _smtp, id, link) = escalated("1s").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = client();
    for r in [
        c.get(&link).send().await.unwrap(),
        c.post(&link).send().await.unwrap(),
    ] {
        assert_eq!(r.status().as_u16(), 410);
        assert!(r.text().await.unwrap().contains("expired"));
    }
    assert_eq!(state(&m, &id).await, "escalated");
}
