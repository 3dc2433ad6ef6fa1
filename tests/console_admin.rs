//! The console's admin side over HTTP: login through a trusted proxy (and the header
//! ignored from other addresses), the guards page (pause, resume, breaker reset; admins
//! only, audited with their name), the audit page and the runbook pages.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::console::{browser, csrf, field, get, log_in, post};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// An admin and a viewer, a trusted proxy on 127.0.0.1, and a route whose runbook fails
/// and whose breaker opens after two failures.
fn config(dir: &Path) -> String {
    runbook(
        dir,
        "fail.rhai",
        "// <b>never fixes</b> & escalates\nif alert.labels.instance != \"good\" { throw \"cannot fix\"; }\n",
    );
    let ada = medic::config::hash_password("ada's password").unwrap();
    let vic = medic::config::hash_password("vic's password").unwrap();
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

[[routes]]
name = "flaky"
matchers = ['alertname="Flaky"']
runbook = "fail.rhai"
breaker = {{ failures = 2, cooldown = "1h" }}

[ui]
proxy_header = "X-Forwarded-User"
proxy_addresses = ["127.0.0.1/32"]
proxy_role = "viewer"

[[ui.users]]
name = "ada"
password_hash = "{ada}"
role = "admin"

[[ui.users]]
name = "vic"
password_hash = "{vic}"
role = "viewer"
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
    )
}

/// A browser behind the proxy: every request carries the user header, sent from `from`.
fn proxied(user: &str, from: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-user", user.parse().unwrap());
    reqwest::Client::builder()
        .cookie_store(true)
        .default_headers(headers)
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Logs `b` in as `name`; the page it lands on.
async fn logged_in(b: &reqwest::Client, m: &Medic, name: &str, password: &str) -> String {
    let (code, page) = log_in(b, m, name, password).await;
    assert_eq!(code, 200, "{page}");
    page
}

async fn incident_of(m: &Medic, instance: &str) -> Value {
    eventually(WAIT, &format!("Flaky/{instance} to settle"), || async {
        let l = api(m, "/api/v1/incidents?alertname=Flaky&limit=1000").await;
        let inc = l["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["labels"]["instance"] == instance)?
            .clone();
        (!["queued", "remediating"].contains(&inc["state"].as_str()?)).then_some(inc)
    })
    .await
}

async fn fire(m: &Medic, instance: &str) -> Value {
    let alert = alert("Flaky", instance, "firing");
    assert_eq!(post_webhook(m, &body(vec![alert])).await.0, 200);
    incident_of(m, instance).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_logs_its_users_in_and_no_one_else_can() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));

    // From the proxy's address: logged in, an unlisted user with proxy_role.
    let pat = proxied("pat", "127.0.0.1");
    for _ in 0..3 {
        let (code, page) = get(&pat, &m, "/ui").await;
        assert_eq!(code, 200);
        assert!(page.contains("pat (viewer)"), "{page}");
        assert!(!page.contains(r#"action="/ui/login""#), "{page}");
    }
    // A listed user gets their listed role.
    let (_, page) = get(&proxied("ada", "127.0.0.1"), &m, "/ui/guards").await;
    assert!(page.contains("ada (admin)"), "{page}");
    assert!(page.contains(">Pause<"), "{page}");

    // The same header from another address is ignored: the login form.
    let mallory = proxied("ada", "127.0.0.2");
    let (code, page) = get(&mallory, &m, "/ui/guards").await;
    assert_eq!(code, 200);
    assert!(page.contains(r#"action="/ui/login""#), "{page}");
    assert!(!page.contains("ada (admin)"), "{page}");

    // One audited login per session, saying it came through the proxy.
    let db = TestDb::of(dir);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM audit WHERE event = 'console_login' AND detail LIKE '%\"pat\"%' AND detail LIKE '%proxy%'"
        ),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'console_login' AND detail LIKE '%127.0.0.2%'"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_pauses_resumes_and_resets_a_breaker_and_a_viewer_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    let db = TestDb::of(dir);

    // A viewer reads the guards page, but a forged Pause answers 403.
    let vic = browser();
    logged_in(&vic, &m, "vic", "vic's password").await;
    let (code, page) = get(&vic, &m, "/ui/guards").await;
    assert_eq!(code, 200);
    assert!(page.contains("Running"), "{page}");
    assert!(!page.contains(">Pause<"), "{page}");
    let token = csrf(&page);
    let (code, _) = post(&vic, &m, "/ui/guards/pause", &[("csrf", &token)]).await;
    assert_eq!(code, 403);
    assert!(api(&m, "/api/v1/incidents").await.is_object());

    // An admin without the CSRF token: 403 too.
    let ada = browser();
    logged_in(&ada, &m, "ada", "ada's password").await;
    let (code, _) = post(&ada, &m, "/ui/guards/pause", &[("csrf", "forged")]).await;
    assert_eq!(code, 403);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'paused'"),
        0
    );

    // The admin pauses: a new alert is escalated `paused`.
    let (_, page) = get(&ada, &m, "/ui/guards").await;
    let token = csrf(&page);
    let (code, page) = post(
        &ada,
        &m,
        "/ui/guards/pause",
        &[("csrf", &token), ("reason", "maintenance <now>")],
    )
    .await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Paused by ada"), "{page}");
    assert!(page.contains("maintenance &lt;now&gt;"), "{page}");
    let p = fire(&m, "p").await;
    assert_eq!(p["state"], "escalated");
    assert_eq!(p["reason"], "paused");

    // And resumes.
    let token = csrf(&page);
    let (code, page) = post(&ada, &m, "/ui/guards/resume", &[("csrf", &token)]).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Running"), "{page}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'paused' AND detail LIKE '%\"ada\"%'"),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'resumed' AND detail LIKE '%\"ada\"%'"),
        1
    );

    // Two failures open the breaker; the third alert is refused.
    for i in ["a", "b"] {
        assert_eq!(fire(&m, i).await["reason"], "runbook_error");
    }
    assert_eq!(fire(&m, "c").await["reason"], "circuit_open");
    let (_, page) = get(&ada, &m, "/ui/guards").await;
    assert!(page.contains("breaker-open"), "{page}");
    let id = field(&page, "id");
    let token = csrf(&page);

    // The viewer cannot reset it; the admin can.
    let (code, _) = post(
        &vic,
        &m,
        "/ui/guards/breakers/reset",
        &[
            ("csrf", &csrf(&get(&vic, &m, "/ui/guards").await.1)),
            ("id", &id),
        ],
    )
    .await;
    assert_eq!(code, 403);
    let (code, page) = post(
        &ada,
        &m,
        "/ui/guards/breakers/reset",
        &[("csrf", &token), ("id", &id)],
    )
    .await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("breaker-closed"), "{page}");
    let list = api(&m, "/api/v1/breakers").await;
    assert_eq!(list["breakers"][0]["state"], "closed", "{list}");
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM audit WHERE event = 'breaker_changed' AND detail LIKE '%\"reset_by\":\"ada\"%'"
        ),
        1
    );
    // Closed again: the next failure runs the runbook.
    assert_eq!(fire(&m, "d").await["reason"], "runbook_error");

    // The audit page: intact, with the newest entries.
    let (code, page) = get(&vic, &m, "/ui/audit").await;
    assert_eq!(code, 200);
    assert!(page.contains("intact"), "{page}");
    assert!(page.contains("breaker_changed"), "{page}");
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");

    // The runbooks: listed with their route; the page shows the source escaped and the runs.
    let (code, page) = get(&vic, &m, "/ui/runbooks").await;
    assert_eq!(code, 200);
    assert!(
        page.contains(r#"href="/ui/runbooks/fail%2Erhai""#),
        "{page}"
    );
    assert!(page.contains(">flaky<"), "{page}");
    let (code, page) = get(&vic, &m, "/ui/runbooks/fail.rhai").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("// &lt;b&gt;never fixes&lt;/b&gt; &amp; escalates"),
        "{page}"
    );
    assert!(!page.contains("<b>never"), "{page}");
    assert!(
        page.contains("runbook_error") || page.contains("escalated"),
        "{page}"
    );
    assert!(page.contains("0 auto-remediated of"), "{page}");
    let (code, _) = get(&vic, &m, "/ui/runbooks/nope.rhai").await;
    assert_eq!(code, 404);

    // Every console page has the navigation bar.
    for path in ["/ui", "/ui/guards", "/ui/audit", "/ui/runbooks"] {
        let (_, page) = get(&vic, &m, path).await;
        assert!(page.contains(r#"href="/ui/runbooks""#), "{path}: {page}");
    }
}

/// Inserts `n` incidents of runbook `runbook`, newer than any medic made, resolved and
/// fixed, each run `attempts` times: history, as far as the runbook pages go.
fn insert_history(db: &TestDb, prefix: &str, n: usize, runbook: &str, attempts: u32) {
    db.execute(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO incidents (id, fingerprint, alertname, labels, annotations, generator_url,
             starts_at, state, is_open, runbook, route, deliveries, created_at, updated_at,
             last_seen_at, attempts, outcome, resolved_at)
         SELECT 'ZZZZ{prefix}' || (1000000 + i), '{prefix}-' || i, 'Bulk', '{{}}', '{{}}', '',
             '2026-11-23T10:00:00.000000000Z', 'resolved', 0, '{runbook}', 'flaky', 1,
             '2026-11-23T10:00:00.000000Z', '2026-11-23T10:00:00.000000Z',
             '2026-11-23T10:00:00.000000Z', {attempts}, 'auto_remediated',
             '2026-11-23T10:01:00.000000Z'
         FROM n"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_page_counts_all_its_runs_however_many_incidents_came_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = Medic::start_in(dir, &config(dir));
    // One run fixes its alert, one fails.
    let good = alert("Flaky", "good", "firing");
    assert_eq!(post_webhook(&m, &body(vec![good])).await.0, 200);
    assert_eq!(incident_of(&m, "good").await["state"], "verifying");
    let resolved = alert("Flaky", "good", "resolved");
    assert_eq!(post_webhook(&m, &body(vec![resolved])).await.0, 200);
    eventually(WAIT, "good resolved", || async {
        let i = incident_of(&m, "good").await;
        (i["outcome"] == "auto_remediated").then_some(())
    })
    .await;
    assert_eq!(fire(&m, "bad").await["reason"], "runbook_error");
    let mut ids = Vec::new();
    for instance in ["good", "bad"] {
        ids.push(
            incident_of(&m, instance).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    // 6,000 newer incidents of another runbook, and two of this one it never ran for.
    let db = TestDb::of(dir);
    insert_history(&db, "other", 6000, "other.rhai", 1);
    insert_history(&db, "refused", 2, "fail.rhai", 0);

    let vic = browser();
    logged_in(&vic, &m, "vic", "vic's password").await;
    let (code, page) = get(&vic, &m, "/ui/runbooks/fail.rhai").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("1 auto-remediated of 2 finished runs (50%)"),
        "{page}"
    );
    for id in &ids {
        assert!(page.contains(id.as_str()), "{id} not listed: {page}");
    }
    assert!(!page.contains("ZZZZrefused"), "{page}");
}
