//! The console's postmortem page in a real browser (headless Chromium over WebDriver,
//! against the real medic binary): the Copy button that only JavaScript shows, and a page
//! asked for without a zone shown again in the browser's own. With
//! `MEDIC_SCREENSHOTS=<dir>` set, a PNG of the page is saved there.

use crate::common;

use std::time::{Duration, Instant};

use common::browser::{screenshot, Driver};
use common::console::config;
use common::*;
use fantoccini::{Client, Locator};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Polls `script` (JavaScript returning a value) until `done` holds for its answer.
async fn until_js(c: &Client, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(v) = c.execute(script, vec![]).await {
            if done(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postmortem_page_copies_and_takes_the_browsers_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    let a = alert("ServiceDown", "web7:80", "firing");
    assert_eq!(post_webhook(&m, &body(vec![a])).await.0, 200);
    let id = eventually(WAIT, "an escalated incident", || async {
        let list = incidents(&m).await;
        let i = list.first()?;
        (i["state"] == "escalated").then(|| i["id"].as_str().unwrap().to_string())
    })
    .await;
    let driver = Driver::start();
    let c = driver.session().await;

    // A viewer logs in through the form.
    c.goto(&m.url("/ui/login")).await.unwrap();
    for (field, value) in [("name", "vic"), ("password", "vic's password")] {
        c.find(Locator::Css(&format!(r#"input[name="{field}"]"#)))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    c.find(Locator::Css("form.login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_js(
        &c,
        "the list",
        "return !!document.querySelector('span.who');",
        |v| v == &Value::Bool(true),
    )
    .await;

    // Asked for without a zone, the page comes back in the browser's.
    c.goto(&m.url(&format!("/ui/incidents/{id}/postmortem")))
        .await
        .unwrap();
    let zone = c
        .execute(
            "return Intl.DateTimeFormat().resolvedOptions().timeZone;",
            vec![],
        )
        .await
        .unwrap();
    let zone = zone.as_str().unwrap().to_string();
    let said = format!("Times are in {zone}.");
    until_js(
        &c,
        "the draft in the browser's zone",
        "var d = document.getElementById('draft'); return d ? d.textContent : '';",
        |v| v.as_str().is_some_and(|t| t.contains(&said)),
    )
    .await;
    let tz = c.find(Locator::Css("#tz")).await.unwrap();
    assert_eq!(
        tz.prop("value").await.unwrap().as_deref(),
        Some(zone.as_str())
    );

    // The Copy button is there (JavaScript runs), and copying says so.
    let copy = c.find(Locator::Css("#copy")).await.unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "the Copy button is hidden"
    );
    copy.click().await.unwrap();
    let told = until_js(
        &c,
        "the copy's status",
        "return document.getElementById('copied').textContent;",
        |v| v.as_str().is_some_and(|t| !t.is_empty()),
    )
    .await;
    let told = told.as_str().unwrap();
    assert!(told == "Copied." || told.starts_with("Selected"), "{told}");
    if told.starts_with("Selected") {
        // Without a clipboard, the draft is selected for the reader to copy.
        let selected = c
            .execute("return window.getSelection().toString();", vec![])
            .await
            .unwrap();
        assert!(selected.as_str().unwrap().starts_with("# Postmortem draft"));
    }
    // The download link carries the zone shown.
    let href = c
        .find(Locator::Css("a.button"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(
        href.starts_with(&format!("/ui/incidents/{id}/postmortem.md?tz=")),
        "{href}"
    );
    screenshot(&c, "console-postmortem").await;
    c.close().await.unwrap();
}
