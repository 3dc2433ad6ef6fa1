//! The on-call console (`/ui`) in a real browser: headless Chromium driven over WebDriver
//! against the real medic binary. Logging in through the form, the incident list, an
//! escalated incident with its failed step's output, acknowledging, a viewer's page, and a
//! form sent without its CSRF token.
//!
//! Needs Chromium and chromedriver (`scripts/test.sh` installs them). With
//! `MEDIC_SCREENSHOTS=<dir>` set, PNGs of the login page, the list and the incident page
//! are saved there.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::browser::{screenshot, Driver};
use common::console::config;
use common::*;
use fantoccini::{Client, Locator};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Starts medic, sends one alert and waits for its incident to escalate; returns its id.
async fn escalated(dir: &Path) -> (Medic, String) {
    let m = Medic::start_in(dir, &config(dir));
    let a = alert("ServiceDown", "web7:80", "firing");
    assert_eq!(post_webhook(&m, &body(vec![a])).await.0, 200);
    let id = eventually(WAIT, "an escalated incident", || async {
        let list = incidents(&m).await;
        let i = list.first()?;
        (i["state"] == "escalated").then(|| i["id"].as_str().unwrap().to_string())
    })
    .await;
    (m, id)
}

async fn state_of(m: &Medic, id: &str) -> Value {
    api(m, &format!("/api/v1/incidents/{id}")).await["state"].clone()
}

/// The visible text of the page.
async fn text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The HTTP status of the page the browser shows.
async fn status(c: &Client) -> u64 {
    c.execute(
        "return performance.getEntriesByType('navigation')[0].responseStatus;",
        vec![],
    )
    .await
    .unwrap()
    .as_u64()
    .expect("a navigation status")
}

/// Clicks what `at` finds and waits until the browser shows the page it leads to: WebDriver's
/// click can return before the new page has replaced the old one.
async fn click(c: &Client, at: Locator<'_>) {
    c.execute("window.medicOldPage = true;", vec![])
        .await
        .unwrap();
    c.find(at).await.unwrap().click().await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let loaded = c
            .execute(
                "return window.medicOldPage === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if let Ok(Value::Bool(true)) = loaded {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new page after the click"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs in through the form: types into the fields and clicks the button.
async fn log_in(c: &Client, m: &Medic, name: &str, password: &str) {
    c.goto(&m.url("/ui")).await.unwrap();
    // Not logged in: the login form.
    c.find(Locator::Css(r#"input[name="name"]"#))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    c.find(Locator::Css(r#"input[name="password"]"#))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    if name == "rita" {
        screenshot(c, "console-login").await;
    }
    click(c, Locator::Css("form.login button[type=submit]")).await;
    assert_eq!(status(c).await, 200, "{}", text(c).await);
    let page = text(c).await;
    assert!(page.contains(&format!("{name} (")), "not logged in: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_acks_in_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (m, id) = escalated(dir).await;
    let driver = Driver::start();
    let c = driver.session().await;

    // A wrong password: the form again.
    c.goto(&m.url("/ui/login")).await.unwrap();
    c.find(Locator::Css(r#"input[name="name"]"#))
        .await
        .unwrap()
        .send_keys("rita")
        .await
        .unwrap();
    c.find(Locator::Css(r#"input[name="password"]"#))
        .await
        .unwrap()
        .send_keys("guess")
        .await
        .unwrap();
    click(&c, Locator::Css("form.login button[type=submit]")).await;
    assert_eq!(status(&c).await, 401);
    assert!(text(&c).await.contains("wrong name or password"));

    // The list, with the escalated incident.
    log_in(&c, &m, "rita", "rita's password").await;
    c.goto(&m.url("/ui")).await.unwrap();
    let list = text(&c).await;
    assert!(
        list.contains(&id) && list.contains("ServiceDown") && list.contains("escalated"),
        "{list}"
    );
    screenshot(&c, "console-list").await;

    // The incident, opened from the list: the failed step and its output.
    click(
        &c,
        Locator::Css(&format!(r#"a[href="/ui/incidents/{id}"]"#)),
    )
    .await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        format!("/ui/incidents/{id}")
    );
    let page = text(&c).await;
    assert!(page.contains("restarting web7:80"), "{page}");
    assert!(page.contains("error: unit web.service not found"), "{page}");
    assert!(page.contains("exit 3"), "{page}");
    // The failed step and its output are on the first screen, where the screenshot is.
    let output = c
        .find(Locator::Css("section.failed-step pre"))
        .await
        .unwrap();
    assert!(output
        .text()
        .await
        .unwrap()
        .contains("error: unit web.service not found"));
    let on_screen = c
        .execute(
            "const r = document.querySelector('section.failed-step pre').getBoundingClientRect(); \
             return r.top >= 0 && r.bottom <= window.innerHeight;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        on_screen,
        Value::Bool(true),
        "the failed step is below the fold"
    );
    screenshot(&c, "console-incident").await;

    // The Acknowledge form without its CSRF token: refused, nothing changes.
    c.execute(
        r#"document.querySelector('form.ack input[name="csrf"]').remove();"#,
        vec![],
    )
    .await
    .unwrap();
    click(&c, Locator::Css("form.ack button[type=submit]")).await;
    assert_eq!(status(&c).await, 403, "{}", text(&c).await);
    assert!(text(&c).await.contains("Forbidden"));
    assert_eq!(state_of(&m, &id).await, "escalated");

    // With it: acknowledged, in rita's name.
    c.goto(&m.url(&format!("/ui/incidents/{id}")))
        .await
        .unwrap();
    click(&c, Locator::Css("form.ack button[type=submit]")).await;
    assert_eq!(status(&c).await, 200, "{}", text(&c).await);
    let badge = c
        .find(Locator::Css("h1 .state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(badge, "acknowledged");
    let page = text(&c).await;
    assert!(page.contains("Acknowledged by"), "{page}");
    assert!(
        c.find_all(Locator::Css("form.ack"))
            .await
            .unwrap()
            .is_empty(),
        "{page}"
    );
    let inc = api(&m, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "rita");

    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_has_no_acknowledge_button() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (m, id) = escalated(dir).await;
    let driver = Driver::start();
    let c = driver.session().await;

    log_in(&c, &m, "vic", "vic's password").await;
    c.goto(&m.url(&format!("/ui/incidents/{id}")))
        .await
        .unwrap();
    assert_eq!(status(&c).await, 200);
    let page = text(&c).await;
    assert!(page.contains("restarting web7:80"), "{page}");
    assert!(!page.contains("Acknowledge"), "{page}");
    assert!(c
        .find_all(Locator::Css("form.ack"))
        .await
        .unwrap()
        .is_empty());

    // The logout form without its CSRF token is refused too: still logged in.
    c.execute(
        r#"document.querySelector('form[action="/ui/logout"] input[name="csrf"]').remove();"#,
        vec![],
    )
    .await
    .unwrap();
    click(&c, Locator::Css(r#"form[action="/ui/logout"] button"#)).await;
    assert_eq!(status(&c).await, 403, "{}", text(&c).await);
    c.goto(&m.url(&format!("/ui/incidents/{id}")))
        .await
        .unwrap();
    assert!(text(&c).await.contains("vic (viewer)"));
    assert_eq!(state_of(&m, &id).await, "escalated");

    c.close().await.unwrap();
}
