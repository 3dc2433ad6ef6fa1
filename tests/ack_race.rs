//! One incident acknowledged three ways at the same moment: its signed link's POST, a
//! PagerDuty webhook and the console's form. Exactly one wins; the incident is
//! acknowledged once, in the winner's name, with one `incident_acknowledged` entry; the
//! other two answer that it was already acknowledged, and a link that lost is not spent.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::console::{browser, csrf, get, log_in};
use common::receiver::Receiver;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(30);
const LINK_SECRET: &str = "a-link-secret-of-at-least-32-bytes!!";
const PD_SECRET: &str = "pd-webhook-race-secret";
/// Incidents raced, one after the other.
const RACES: usize = 9;
/// Races in which all three start together; in the others, one of them (in turn) starts
/// this much earlier, so that each way gets its chance to win.
const EVEN_RACES: usize = 3;
const HEAD_START: Duration = Duration::from_millis(10);

fn config(dir: &Path, rx: &Receiver) -> String {
    let rita = medic::config::hash_password("rita's password").unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"
link_secret = "{LINK_SECRET}"

[store]
{store}

[runbooks]
dir = "{runbooks}"

[limits]
storm_window = "1ms"

[escalation]
notify = ["escalations", "pager"]

[[escalation.channels]]
name = "escalations"
type = "file"
path = "{file}"

[[escalation.channels]]
name = "pager"
type = "pagerduty"
routing_key = "pd-test-key"
url = "{pd}"
webhook_secret = "{PD_SECRET}"

[[ui.users]]
name = "rita"
password_hash = "{rita}"
role = "responder"
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        file = dir.join("escalations.jsonl").display(),
        pd = rx.url("/pagerduty/enqueue"),
    )
}

fn pagerduty_ack(id: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({"event": {
        "id": format!("ev-{id}"),
        "event_type": "incident.acknowledged",
        "resource_type": "incident",
        "occurred_at": "2026-11-23T10:01:00.000Z",
        "agent": {"id": "PLH1HKV", "summary": "Pat Pager", "type": "user_reference"},
        "data": {"id": "PGR0VU2", "type": "incident", "incident_key": id},
    }}))
    .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(PD_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}

/// Who won one race, from the three answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Winner {
    Link,
    PagerDuty,
    Console,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_a_pagerduty_webhook_and_the_console_race_to_ack_and_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start().await;
    let m = Medic::start_in(dir, &config(dir, &rx));
    // One delivery each, one after the other: escalations of one delivery share a storm
    // group, whose members (but the first) are told through its summary.
    for i in 0..RACES {
        let a = alert("Contended", &format!("h{i}"), "firing");
        assert_eq!(post_webhook(&m, &body(vec![a])).await.0, 200);
        eventually(WAIT, "escalated", || async {
            let n = incidents(&m)
                .await
                .iter()
                .filter(|i| i["state"] == "escalated")
                .count();
            (n == i + 1).then_some(())
        })
        .await;
    }
    // Each incident's ack link, from the message its file channel got.
    let links: Vec<(String, String)> = eventually(WAIT, "every incident told", || async {
        let docs = escalations_in_file(dir);
        let links: Vec<(String, String)> = docs
            .iter()
            .filter_map(|d| {
                Some((
                    d["incident"]["id"].as_str()?.to_string(),
                    d["links"]["ack_link"].as_str()?.to_string(),
                ))
            })
            .collect();
        (links.len() == RACES).then_some(links)
    })
    .await;

    let rita = browser();
    log_in(&rita, &m, "rita", "rita's password").await;
    let (_, page) = get(&rita, &m, &format!("/ui/incidents/{}", links[0].0)).await;
    let token = csrf(&page);
    let link_client = client();
    let pd_client = client();

    let mut winners = Vec::new();
    for (race, (id, link)) in links.iter().enumerate() {
        // How long each of link, PagerDuty and console waits once released.
        let delays: Vec<Duration> = (0..3)
            .map(|way| match race < EVEN_RACES || race % 3 == way {
                true => Duration::ZERO,
                false => HEAD_START,
            })
            .collect();
        let (pd_body, pd_signature) = pagerduty_ack(id);
        // Three tasks on the runtime's threads, released together.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(3));
        let by_link = tokio::spawn({
            let (c, link, start, delay) =
                (link_client.clone(), link.clone(), start.clone(), delays[0]);
            async move {
                start.wait().await;
                tokio::time::sleep(delay).await;
                let r = c.post(&link).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        });
        let by_pagerduty = tokio::spawn({
            let (c, url, start, delay) = (
                pd_client.clone(),
                m.url("/pagerduty/webhook"),
                start.clone(),
                delays[1],
            );
            async move {
                start.wait().await;
                tokio::time::sleep(delay).await;
                let r = c
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-pagerduty-signature", pd_signature)
                    .body(pd_body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        });
        let in_console = tokio::spawn({
            let (c, url, token, start) = (
                rita.clone(),
                m.url(&format!("/ui/incidents/{id}/ack")),
                token.clone(),
                start.clone(),
            );
            let delay = delays[2];
            async move {
                start.wait().await;
                tokio::time::sleep(delay).await;
                let r = c.post(url).form(&[("csrf", token)]).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        });
        let (link_answer, pd_answer, console_answer) =
            tokio::join!(by_link, by_pagerduty, in_console);
        let ((ls, lt), (ps, pj), (cs, ct)) = (
            link_answer.unwrap(),
            pd_answer.unwrap(),
            console_answer.unwrap(),
        );
        assert_eq!((ls, ps, cs), (200, 200, 200), "{lt}\n{pj}\n{ct}");

        let mut won = Vec::new();
        // The link: acknowledged by it, or a clear "already acknowledged".
        if lt.contains(&format!(
            "Incident {id} is acknowledged by link:escalations"
        )) {
            won.push(Winner::Link);
        } else {
            assert!(lt.contains("Already acknowledged"), "{lt}");
        }
        // PagerDuty: the incident under `acknowledged`, or under `already_acknowledged`.
        if pj["acknowledged"] == json!([id]) {
            assert_eq!(pj["already_acknowledged"], json!([]), "{pj}");
            won.push(Winner::PagerDuty);
        } else {
            assert_eq!(pj["acknowledged"], json!([]), "{pj}");
            assert_eq!(pj["already_acknowledged"], json!([id]), "{pj}");
        }
        // The console: back on the incident, or a page saying it was already acknowledged.
        if ct.contains("Already acknowledged") {
            assert!(ct.contains(&format!("Incident {id} was already acknowledged by")));
        } else {
            assert!(ct.contains("Acknowledged by"), "{ct}");
            won.push(Winner::Console);
        }
        assert_eq!(won.len(), 1, "{id}: winners {won:?}\n{lt}\n{pj}\n{ct}");
        let winner = won[0];
        winners.push(winner);

        let inc = api(&m, &format!("/api/v1/incidents/{id}")).await;
        assert_eq!(inc["state"], "acknowledged");
        let by = match winner {
            Winner::Link => "link:escalations",
            Winner::PagerDuty => "Pat Pager",
            Winner::Console => "rita",
        };
        assert_eq!(inc["acknowledged_by"], by, "{inc:#}");
        let timeline = inc["timeline"].as_array().unwrap();
        let acks: Vec<&Value> = timeline
            .iter()
            .filter(|e| e["event"] == "incident_acknowledged")
            .collect();
        assert_eq!(acks.len(), 1, "{inc:#}");
        assert_eq!(acks[0]["detail"]["by"], by);
        let moves = timeline
            .iter()
            .filter(|e| e["event"] == "state_changed" && e["detail"]["to"] == "acknowledged")
            .count();
        assert_eq!(moves, 1, "{inc:#}");
        // A link that lost was not spent: opening it shows its page, not "already used".
        let again = link_client.get(link).send().await.unwrap();
        let status = again.status().as_u16();
        let expected = if winner == Winner::Link { 410 } else { 200 };
        assert_eq!(status, expected, "{}", again.text().await.unwrap());
    }
    let db = TestDb::of(dir);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'incident_acknowledged'"),
        RACES as i64
    );
    eprintln!("winners: {winners:?}");
}
