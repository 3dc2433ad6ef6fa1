//! Console sessions live in the store: a login made on one replica is honored on another
//! behind the same load balancer (two replicas on one PostgreSQL database), a logout on
//! one ends the session on both, and a session outlives a restart.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::console::{csrf, field};
use common::*;
use reqwest::cookie::CookieStore as _;

const WAIT: Duration = Duration::from_secs(30);

/// Rita, a responder; escalations to a file; `store` as the `[store]` keys.
fn config(dir: &Path, store: &str) -> String {
    let rita = medic::config::hash_password("rita's password").unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
{store}

[runbooks]
dir = "{runbooks}"
{escalation}

[[ui.users]]
name = "rita"
password_hash = "{rita}"
role = "responder"
"#,
        runbooks = dir.join("runbooks").display(),
        escalation = escalation_to_file(dir),
    )
}

/// A client that keeps no cookies: each request carries exactly the ones given.
fn bare() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Logs rita in on `m` (a browser with its own cookie jar); the session cookie it got,
/// as a `Cookie` header value.
async fn log_in_on(m: &Medic) -> String {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let b = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let form = b.get(m.url("/ui/login")).send().await.unwrap();
    let token = csrf(&form.text().await.unwrap());
    let r = b
        .post(m.url("/ui/login"))
        .form(&[
            ("name", "rita"),
            ("password", "rita's password"),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("rita (responder)"));
    let cookies = jar
        .cookies(&m.url("/ui").parse().unwrap())
        .expect("the session cookie");
    let cookies = cookies.to_str().unwrap();
    let session = cookies
        .split(';')
        .map(str::trim)
        .find(|c| c.starts_with("medic_session="))
        .expect("medic_session")
        .to_string();
    assert!(session.len() > "medic_session=".len() + 32, "{session}");
    session
}

/// GET `path` on `m` with exactly `cookie`: (status, body).
async fn get_with(m: &Medic, path: &str, cookie: &str) -> (u16, String) {
    let r = bare()
        .get(m.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// POST a form to `path` on `m` with exactly `cookie`: (status, body).
async fn post_with(m: &Medic, path: &str, cookie: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = bare()
        .post(m.url(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Whether `m` takes `cookie` for a logged-in rita.
async fn logged_in(m: &Medic, cookie: &str) -> bool {
    let (status, page) = get_with(m, "/ui", cookie).await;
    match status {
        200 => {
            assert!(page.contains("rita (responder)"), "{page}");
            true
        }
        303 => false,
        other => panic!("GET /ui answered {other}: {page}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_one_replica_is_honored_on_the_other_and_a_logout_ends_it_on_both() {
    let tmp = tempfile::tempdir().unwrap();
    let db = medic::store::postgres::scratch_database().expect("a PostgreSQL test database");
    let start = |name: &str| {
        let dir = tmp.path().join(name);
        let store = format!("url = \"{db}\"\nlease = \"2s\"");
        Medic::start_in(&dir, &config(&dir, &store))
    };
    let (a, b) = (start("a"), start("b"));
    assert_eq!(
        post_webhook(&a, &body(vec![alert("DiskFull", "db1:9100", "firing")]))
            .await
            .0,
        200
    );
    let id = eventually(WAIT, "an escalated incident", || async {
        let list = incidents(&b).await;
        let i = list.first()?;
        (i["state"] == "escalated").then(|| i["id"].as_str().unwrap().to_string())
    })
    .await;

    // Logged in on A: the same cookie is a session on B.
    let cookie = log_in_on(&a).await;
    assert!(logged_in(&a, &cookie).await);
    assert!(logged_in(&b, &cookie).await);
    // Another cookie is nobody, on either.
    let forged = format!("medic_session={}", "0".repeat(64));
    assert!(!logged_in(&a, &forged).await);
    assert!(!logged_in(&b, &forged).await);

    // The form B shows carries the session's CSRF token, the same as A's: acting on B
    // works, in rita's name.
    let page = format!("/ui/incidents/{id}");
    let (_, on_a) = get_with(&a, &page, &cookie).await;
    let (_, on_b) = get_with(&b, &page, &cookie).await;
    let token = csrf(&on_b);
    assert_eq!(token, csrf(&on_a));
    let (status, _) = post_with(&b, &format!("{page}/ack"), &cookie, &[("csrf", &token)]).await;
    assert_eq!(status, 303);
    let inc = api(&a, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "rita");

    // Logged out on B: the session is gone on A too.
    let logout = field(&on_b, "csrf");
    let (status, _) = post_with(&b, "/ui/logout", &cookie, &[("csrf", &logout)]).await;
    assert_eq!(status, 303);
    assert!(!logged_in(&b, &cookie).await);
    assert!(!logged_in(&a, &cookie).await);
    let (status, _) = post_with(
        &a,
        &format!("{page}/note"),
        &cookie,
        &[("csrf", &token), ("text", "x")],
    )
    .await;
    assert_eq!(status, 403);

    // Only the token's hash is stored.
    let tdb = TestDb::at(&db);
    let value = cookie.trim_start_matches("medic_session=");
    assert_eq!(
        tdb.count(&format!(
            "SELECT COUNT(*) FROM console_sessions WHERE token_hash = '{value}'"
        )),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut m = Medic::start_in(dir, &config(dir, &store_config(dir)));
    let cookie = log_in_on(&m).await;
    assert!(logged_in(&m, &cookie).await);
    assert_eq!(m.stop(), Some(0));
    let m = Medic::start_in(dir, &config(dir, &store_config(dir)));
    assert!(logged_in(&m, &cookie).await);
    let db = TestDb::of(dir);
    assert_eq!(db.count("SELECT COUNT(*) FROM console_sessions"), 1);
}
