//! The on-call console (`/ui`) over HTTP, as a browser without JavaScript uses it: login
//! (and its audit), the incident list and page, acknowledging through the form, roles,
//! CSRF, and escaping of what alerts carry.

use crate::common;

use std::time::Duration;

use common::console::*;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

async fn state_of(m: &Medic, id: &str) -> Value {
    api(m, &format!("/api/v1/incidents/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_acks_through_the_console_and_a_viewer_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    let mut a = alert("ServiceDown", "web7:80", "firing");
    a["labels"]["note"] = Value::from("<script>alert(1)</script>");
    assert_eq!(post_webhook(&m, &body(vec![a])).await.0, 200);
    let id = eventually(WAIT, "an escalated incident", || async {
        let list = incidents(&m).await;
        let i = list.first()?;
        (i["state"] == "escalated").then(|| i["id"].as_str().unwrap().to_string())
    })
    .await;

    // Not logged in: sent to the login form.
    let rita = browser();
    let (code, page) = get(&rita, &m, "/ui").await;
    assert_eq!(code, 200);
    assert!(page.contains(r#"action="/ui/login""#), "{page}");

    // A wrong password: the same page, not saying which was wrong, and audited.
    let (code, page) = log_in(&rita, &m, "rita", "guess").await;
    assert_eq!(code, 401);
    assert!(page.contains("wrong name or password"), "{page}");
    let (code, page) = log_in(&rita, &m, "nobody", "guess").await;
    assert_eq!(code, 401);
    assert!(page.contains("wrong name or password"), "{page}");
    let db = TestDb::of(dir);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'console_login_failed' AND detail LIKE '%rita%'"),
        1
    );

    // The login form without its CSRF token changes nothing.
    let (code, _) = post(
        &rita,
        &m,
        "/ui/login",
        &[("name", "rita"), ("password", "rita's password")],
    )
    .await;
    assert_eq!(code, 403);

    // The right one: the list, with the escalated incident.
    let (code, page) = log_in(&rita, &m, "rita", "rita's password").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(&format!(r#"href="/ui/incidents/{id}""#)),
        "{page}"
    );
    assert!(
        page.contains("ServiceDown") && page.contains("escalated"),
        "{page}"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM audit WHERE event = 'console_login' AND detail LIKE '%rita%'"
        ),
        1
    );
    let (_, filtered) = get(&rita, &m, "/ui?state=resolved").await;
    assert!(!filtered.contains(&id), "{filtered}");
    let (_, filtered) = get(&rita, &m, "/ui?route=restart&alertname=ServiceDown").await;
    assert!(filtered.contains(&id), "{filtered}");

    // The incident: the failed step with its output; the label escaped.
    let (code, page) = get(&rita, &m, &format!("/ui/incidents/{id}")).await;
    assert_eq!(code, 200);
    assert!(page.contains("restarting web7:80"), "{page}");
    assert!(page.contains("error: unit web.service not found"), "{page}");
    assert!(page.contains("exit 3"), "{page}");
    assert!(page.contains("step_finished"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains(&format!(r#"action="/ui/incidents/{id}/ack""#)),
        "{page}"
    );
    let token = csrf(&page);

    // An ack without the token, or with a wrong one: 403, nothing changes.
    let ack = format!("/ui/incidents/{id}/ack");
    assert_eq!(post(&rita, &m, &ack, &[]).await.0, 403);
    assert_eq!(post(&rita, &m, &ack, &[("csrf", "0000")]).await.0, 403);
    assert_eq!(state_of(&m, &id).await["state"], "escalated");

    // The viewer sees no ack form, and a forged POST is refused.
    let vic = browser();
    assert_eq!(log_in(&vic, &m, "vic", "vic's password").await.0, 200);
    let (code, page) = get(&vic, &m, &format!("/ui/incidents/{id}")).await;
    assert_eq!(code, 200);
    assert!(!page.contains("/ack"), "{page}");
    let vic_token = csrf(&page);
    assert_eq!(post(&vic, &m, &ack, &[("csrf", &vic_token)]).await.0, 403);
    // Another session's token is not this session's.
    assert_eq!(post(&rita, &m, &ack, &[("csrf", &vic_token)]).await.0, 403);
    assert_eq!(state_of(&m, &id).await["state"], "escalated");

    // The responder acks through the form: back on the incident, acked in their name.
    let (code, page) = post(&rita, &m, &ack, &[("csrf", &token), ("by", "mallory")]).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Acknowledged by"), "{page}");
    let inc = state_of(&m, &id).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "rita");

    // Logging out ends the session, and is audited.
    assert_eq!(
        post(&rita, &m, "/ui/logout", &[("csrf", &token)]).await.0,
        200
    );
    let (_, page) = get(&rita, &m, "/ui").await;
    assert!(page.contains(r#"action="/ui/login""#), "{page}");
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM audit WHERE event = 'console_logout' AND detail LIKE '%rita%'"
        ),
        1
    );
    assert_eq!(m.run_cli(&["audit", "verify"]).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    let b = browser();
    for _ in 0..5 {
        assert_eq!(log_in(&b, &m, "vic", "guess").await.0, 401);
    }
    // Even the right password waits for the minute to pass.
    let (code, page) = log_in(&b, &m, "vic", "vic's password").await;
    assert_eq!(code, 429, "{page}");
    assert!(page.contains("Too many failed logins"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_users_there_is_no_console() {
    let m = Medic::start();
    let r = client().get(m.url("/ui")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = client().get(m.url("/ui/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// The list's filters and paging run in the store: 60 unrouted alerts and one routed one;
/// `reason=no_runbook` lists the 60 on two pages (50, then 10), `reason=requested` the one;
/// a time range that ends before they started lists none. The incident page shows its
/// escalation round: the channel, and that the notification was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_and_pages_and_an_incident_shows_its_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    let unrouted: Vec<Value> = (0..60)
        .map(|i| alert("Unrouted", &format!("host{i}:9100"), "firing"))
        .collect();
    assert_eq!(post_webhook(&m, &body(unrouted)).await.0, 200);
    let routed = alert("ServiceDown", "web7:80", "firing");
    assert_eq!(post_webhook(&m, &body(vec![routed])).await.0, 200);
    let routed_id = eventually(WAIT, "the routed incident escalated", || async {
        let list = incidents(&m).await;
        let i = list.iter().find(|i| i["alertname"] == "ServiceDown")?;
        (i["state"] == "escalated").then(|| i["id"].as_str().unwrap().to_string())
    })
    .await;

    let b = browser();
    assert_eq!(log_in(&b, &m, "vic", "vic's password").await.0, 200);
    let rows = |page: &str| page.matches(r#"href="/ui/incidents/"#).count();

    let (code, first) = get(&b, &m, "/ui?reason=no_runbook").await;
    assert_eq!(code, 200);
    assert_eq!(rows(&first), 50, "{first}");
    assert!(first.contains("older →"), "a link to the next page");
    assert!(!first.contains("ServiceDown"), "filtered by reason");
    let (_, second) = get(&b, &m, "/ui?reason=no_runbook&page=2").await;
    assert_eq!(rows(&second), 10, "{second}");
    assert!(!second.contains("older →"));

    let (_, requested) = get(&b, &m, "/ui?reason=requested").await;
    assert_eq!(rows(&requested), 1, "{requested}");
    assert!(requested.contains(&routed_id));

    let (_, none) = get(&b, &m, "/ui?until=2000-01-01T00:00:00Z").await;
    assert_eq!(rows(&none), 0, "{none}");
    let (code, _) = get(&b, &m, "/ui?reason=no_such_reason").await;
    assert_eq!(code, 400);

    let page = eventually(
        WAIT,
        "the round's delivery on the incident page",
        || async {
            let (_, page) = get(&b, &m, &format!("/ui/incidents/{routed_id}")).await;
            (page.contains("<h2>Escalation</h2>") && page.contains("sent")).then_some(page)
        },
    )
    .await;
    assert!(page.contains("escalations"), "the channel: {page}");
}
