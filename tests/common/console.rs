//! The console (`/ui`) as the tests drive it over HTTP: a config with a responder and a
//! viewer, a cookie-keeping client, and the forms' hidden fields.

use std::path::Path;
use std::time::Duration;

use super::*;

/// A config whose runbook fails (exit 3) and escalates, with a responder and a viewer.
pub fn config(dir: &Path) -> String {
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
    let rita = medic::config::hash_password("rita's password").unwrap();
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
allowed_commands = ["{restart}"]

[[routes]]
name = "restart"
matchers = ['alertname="ServiceDown"']
runbook = "restart.rhai"

[[ui.users]]
name = "rita"
password_hash = "{rita}"
role = "responder"

[[ui.users]]
name = "vic"
password_hash = "{vic}"
role = "viewer"
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
        restart = restart.display(),
    )
}

/// A browser: keeps cookies, follows redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The CSRF token of the first form in `html`.
pub fn csrf(html: &str) -> String {
    field(html, "csrf")
}

/// The value of hidden field `name` in the first form that has one.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let at = html.find(&marker).expect("the field") + marker.len();
    html[at..].split('"').next().unwrap().to_string()
}

pub async fn get(b: &reqwest::Client, m: &Medic, path: &str) -> (u16, String) {
    let r = b.get(m.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub async fn post(
    b: &reqwest::Client,
    m: &Medic,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let r = b.post(m.url(path)).form(form).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Logs `b` in as `name`; returns the page it lands on.
pub async fn log_in(b: &reqwest::Client, m: &Medic, name: &str, password: &str) -> (u16, String) {
    let (_, form) = get(b, m, "/ui/login").await;
    let token = csrf(&form);
    post(
        b,
        m,
        "/ui/login",
        &[("name", name), ("password", password), ("csrf", &token)],
    )
    .await
}
