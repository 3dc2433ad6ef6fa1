//! The shipped configurations work together, as the README's steps use them: the real
//! Alertmanager on `config/alertmanager.yml` delivers to `medic serve` on
//! `config/medic.toml` with the token both read from the same file, an alert medic cannot
//! fix reaches the shipped channel, and the Watchdog is taken on purpose without a page.
//!
//! Only what must differ on a test machine is substituted: ports, the store, the file the
//! channel appends to, and the runbook directory's absolute path.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "a-token-from-the-shared-file";

/// `text` with `from` replaced by `to`, which must occur exactly once (so that a change
/// to the shipped file shows up here rather than being silently tested around).
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in:\n{text}");
    text.replacen(from, to, 1)
}

fn shipped(name: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("config").join(name)).unwrap()
}

/// The shipped `medic.toml`, in `dir`.
fn medic_toml(dir: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = shipped("medic.toml");
    let text = substitute(
        &text,
        "listen = \"127.0.0.1:9095\"",
        "listen = \"127.0.0.1:0\"",
    );
    let text = substitute(
        &text,
        "url = \"sqlite://data/medic.db\"",
        &store_config(dir),
    );
    let text = substitute(
        &text,
        "dir = \"runbooks\"",
        &format!("dir = \"{}\"", root.join("runbooks").display()),
    );
    substitute(
        &text,
        "path = \"data/escalations.jsonl\"",
        &format!("path = \"{}\"", dir.join("escalations.jsonl").display()),
    )
}

fn am_alert(labels: Value) -> Value {
    json!({
        "labels": labels,
        "annotations": {"summary": "from the shipped configs test"},
        "generatorURL": "http://prometheus.example:9090/graph",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_delivers_to_medic_and_what_medic_cannot_fix_reaches_the_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The README's steps: one token file; medic gets its content in MEDIC_WEBHOOK_TOKEN,
    // Alertmanager reads the file (`credentials_file`, relative to its config).
    let m = Medic::start_in_env(
        dir,
        &medic_toml(dir),
        &[
            ("MEDIC_WEBHOOK_TOKEN", TOKEN),
            ("MEDIC_API_TOKEN", API_TOKEN),
        ],
    );
    let am_config = substitute(
        &shipped("alertmanager.yml"),
        "http://127.0.0.1:9095/webhook",
        &m.url("/webhook"),
    );
    let am = Alertmanager::start_with(
        &am_config,
        &[("medic-webhook-token", &format!("{TOKEN}\n"))],
    )
    .await;

    am.post_alerts(&json!([
        am_alert(
            json!({"alertname": "DatabaseDown", "instance": "db1:5432", "severity": "critical"})
        ),
        am_alert(json!({"alertname": "Watchdog", "severity": "none"})),
    ]))
    .await;

    let list = eventually(WAIT, "both alerts delivered and stored", || async {
        let l = incidents(&m).await;
        (l.len() == 2).then_some(l)
    })
    .await;
    let by_name = |name: &str| -> Value {
        list.iter()
            .find(|i| i["alertname"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} incident in {list:#?}\n{}", am.log()))
    };
    let down = by_name("DatabaseDown");
    assert_eq!(down["state"], "escalated", "{down:#}");
    assert_eq!(down["reason"], "no_runbook", "{down:#}");
    let watchdog = by_name("Watchdog");
    assert_eq!(watchdog["state"], "ignored", "{watchdog:#}");

    // The escalation reaches the shipped channel: a line in the file.
    let pages = eventually(WAIT, "the escalation appended to the file", || async {
        let pages = escalations_in_file(dir);
        (!pages.is_empty()).then_some(pages)
    })
    .await;
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert_eq!(pages[0]["incident"]["id"], down["id"], "{:#}", pages[0]);
    assert_eq!(pages[0]["reason"], "no_runbook", "{:#}", pages[0]);
    assert!(pages[0]["key"].is_string(), "{:#}", pages[0]);
    // ... and the Watchdog reaches nobody, on purpose.
    assert!(
        !pages
            .iter()
            .any(|p| p["incident"]["alertname"] == "Watchdog"),
        "{pages:#?}"
    );
    let db = TestDb::of(dir);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM outbox"),
        1,
        "one notification, for the escalation"
    );
}

#[test]
fn the_shipped_alertmanager_config_reads_the_token_file_the_readme_creates() {
    let am = shipped("alertmanager.yml");
    assert!(am.contains("credentials_file: medic-webhook-token"), "{am}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains("openssl rand -hex 32 > config/medic-webhook-token"),
        "README.md creates the token file"
    );
    assert!(
        readme.contains("export MEDIC_WEBHOOK_TOKEN=\"$(cat config/medic-webhook-token)\""),
        "README.md gives medic the same token"
    );
    assert!(shipped("medic.toml").contains("webhook_token = \"${MEDIC_WEBHOOK_TOKEN}\""));
}
