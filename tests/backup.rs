//! `medic backup PATH`: a copy of the SQLite store taken while medic serves and keeps
//! committing deliveries holds every delivery acknowledged before the copy began, passes
//! `medic audit verify`, and is a store medic serves from. A PostgreSQL store is refused
//! with its own procedure.
//!
//! The copy is SQLite's: the test runs on SQLite whichever store the suite runs on.

use crate::common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// medic on a SQLite store at `db`: alerts named `Load` are taken on purpose (`ignore`),
/// so the load is intake and audit alone; the rest go to the test's runbook.
fn sqlite_config(dir: &Path, db: &Path) -> String {
    config_on(dir, &format!("sqlite://{}", db.display()))
}

/// [`sqlite_config`] on the store at `url`.
fn config_on(dir: &Path, url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
url = "{url}"
{escalation}

[runbooks]
dir = "{runbooks}"

[[routes]]
name = "load"
matchers = ['alertname="Load"']
ignore = true

[[routes]]
name = "restart"
matchers = ['alertname=~"ServiceDown|Restart.*"']
runbook = "restart.rhai"
"#,
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
    )
}

/// Fingerprints of the alerts a delivery carried, for each delivery answered 200, with
/// the moment of the answer counted in deliveries.
#[derive(Default)]
struct Acked {
    fingerprints: Vec<String>,
    refused: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_to_a_store_medic_verifies_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("data/medic.db");
    let mut m = Medic::start_in(dir, &sqlite_config(dir, &db));

    // A history worth copying in several steps: 3,000 incidents.
    let c = client();
    for batch in 0..60 {
        let alerts = (0..50)
            .map(|i| alert("Load", &format!("history-{batch}-{i}"), "firing"))
            .collect();
        assert_eq!(post_webhook(&m, &body(alerts)).await.0, 200);
    }

    // Deliveries keep coming, from four senders, all through the backup.
    let acked = Arc::new(Mutex::new(Acked::default()));
    let delivered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for worker in 0..4 {
        let (url, acked, delivered, stop, c) = (
            m.url("/webhook"),
            acked.clone(),
            delivered.clone(),
            stop.clone(),
            c.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let instances: Vec<String> = (0..5).map(|k| format!("w{worker}-{i}-{k}")).collect();
                i += 1;
                let alerts = instances
                    .iter()
                    .map(|n| alert("Load", n, "firing"))
                    .collect();
                let r = c
                    .post(&url)
                    .bearer_auth(WEBHOOK_TOKEN)
                    .json(&body(alerts))
                    .send()
                    .await;
                let fingerprints = instances.iter().map(|n| fingerprint_of("Load", n));
                let mut a = acked.lock().unwrap();
                match r.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        a.fingerprints.extend(fingerprints);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    other => a.refused.push(format!("{other:?}")),
                }
            }
        }));
    }
    eventually(WAIT, "the senders under way", || {
        let n = delivered.load(Ordering::Relaxed);
        async move { (n >= 50).then_some(()) }
    })
    .await;

    // Everything acknowledged before the backup starts must be in the copy.
    let copy = dir.join("backup/medic-copy.db");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let before: HashSet<String> = acked.lock().unwrap().fingerprints.iter().cloned().collect();
    let delivered_before = delivered.load(Ordering::Relaxed);
    let (code, out, err) = {
        let (dir, config, copy) = (dir.to_path_buf(), m.config.clone(), copy.clone());
        tokio::task::spawn_blocking(move || {
            medic_cli(&dir, &["backup", copy.to_str().unwrap()], &config)
        })
        .await
        .unwrap()
    };
    let during = delivered.load(Ordering::Relaxed) - delivered_before;
    assert_eq!(code, 0, "medic backup: {out}{err}");
    assert!(out.starts_with("backup written: "), "{out}");
    // A few more deliveries after the copy, then the senders stop.
    let after = delivered.load(Ordering::Relaxed);
    eventually(WAIT, "deliveries after the backup", || {
        let n = delivered.load(Ordering::Relaxed);
        async move { (n >= after + 20).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.refused.is_empty(),
        "every delivery was stored while the backup ran: {:?}",
        &acked.refused[..acked.refused.len().min(5)]
    );
    eprintln!(
        "backup under load: {} deliveries before it, {during} while it ran; {}",
        delivered_before,
        out.trim()
    );

    // The copy is a whole SQLite database, a single file, holding every acknowledged
    // delivery from before the backup began and nothing that was never acknowledged.
    assert!(!sidecar(&copy, "-wal").exists(), "a single file");
    let copy_db = TestDb::at(&format!("sqlite://{}", copy.display()));
    assert_eq!(
        copy_db.rows("PRAGMA integrity_check")[0][0].as_deref(),
        Some("ok")
    );
    let in_copy: HashSet<String> = copy_db
        .rows("SELECT fingerprint FROM incidents WHERE alertname = 'Load'")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let history = 3000;
    let lost: Vec<&String> = before.difference(&in_copy).collect();
    assert!(
        lost.is_empty(),
        "{} deliveries acknowledged before the backup are missing from it, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let all_acked: HashSet<String> = acked.fingerprints.iter().cloned().collect();
    assert!(
        in_copy.len() >= before.len() + history,
        "{} incidents",
        in_copy.len()
    );
    assert!(
        in_copy.len() <= all_acked.len() + history,
        "no incident that was never acknowledged"
    );
    assert!(
        out.contains(&format!("{} incidents", in_copy.len())),
        "the report counts the copy: {out}"
    );

    // The original carries on, and stops cleanly.
    assert_eq!(m.stop(), Some(0), "log:\n{}", m.log_text());

    // The copy verifies and is served from, as a restored store would be.
    let restored = dir.join("restored");
    std::fs::create_dir_all(restored.join("data")).unwrap();
    let restored_db = restored.join("data/medic.db");
    std::fs::copy(&copy, &restored_db).unwrap();
    let restored_config = sqlite_config(&restored, &restored_db);
    let config_path = restored.join("medic.toml");
    std::fs::write(&config_path, &restored_config).unwrap();
    let (code, out, err) = medic_cli(&restored, &["audit", "verify"], &config_path);
    assert_eq!(code, 0, "audit verify on the copy: {out}{err}");
    assert!(out.starts_with("audit log intact"), "{out}");

    let r = Medic::start_in(&restored, &restored_config);
    let ready: Value = client()
        .get(r.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    // An incident of the history and the last one acknowledged before the backup.
    let last_before = acked.fingerprints[before.len() - 1].clone();
    for fingerprint in [fingerprint_of("Load", "history-0-0"), last_before] {
        let id = copy_db.rows(&format!(
            "SELECT id FROM incidents WHERE fingerprint = '{fingerprint}'"
        ))[0][0]
            .clone()
            .unwrap();
        let incident = api(&r, &format!("/api/v1/incidents/{id}")).await;
        assert_eq!(incident["fingerprint"], fingerprint.as_str(), "{incident}");
        assert_eq!(incident["state"], "ignored", "{incident}");
    }
    // It takes new deliveries and remediates them.
    let fresh = alert("ServiceDown", "after-restore", "firing");
    assert_eq!(post_webhook(&r, &body(vec![fresh.clone()])).await.0, 200);
    eventually(
        WAIT,
        "the new alert remediated on the restored store",
        || async {
            incidents(&r)
                .await
                .into_iter()
                .find(|i| i["fingerprint"] == fresh["fingerprint"] && i["state"] == "verifying")
        },
    )
    .await;
    let mut r = r;
    assert_eq!(r.stop(), Some(0), "log:\n{}", r.log_text());
    let (code, out, err) = medic_cli(&restored, &["audit", "verify"], &config_path);
    assert_eq!(code, 0, "the restored chain, extended: {out}{err}");
}

#[test]
fn a_postgres_store_is_refused_with_its_own_procedure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("medic.toml");
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::write(
        &config,
        config_on(dir, "postgres://medic:hunter2@db.example:5432/medic"),
    )
    .unwrap();
    let copy = dir.join("copy.db");
    let (code, out, err) = medic_cli(dir, &["backup", copy.to_str().unwrap()], &config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    for want in ["PostgreSQL", "pg_dump", "base backup", "docs/operating.md"] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!err.contains("hunter2"), "the password is hidden: {err}");
    assert!(!copy.exists());
}

#[test]
fn a_backup_never_overwrites_without_force_nor_creates_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("data/medic.db");
    let config = dir.join("medic.toml");
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::write(&config, sqlite_config(dir, &db)).unwrap();
    let copy = dir.join("copy.db");
    let path = copy.to_str().unwrap();

    // No store yet: nothing to copy, and none is created.
    let (code, out, err) = medic_cli(dir, &["backup", path], &config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no database at"), "{err}");
    assert!(!db.exists() && !copy.exists());

    let mut m = Medic::start_in(dir, &sqlite_config(dir, &db));
    assert_eq!(m.stop(), Some(0));
    std::fs::write(&copy, "yesterday's copy").unwrap();
    let (code, _, err) = medic_cli(dir, &["backup", path], &config);
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "yesterday's copy");
    let (code, out, err) = medic_cli(dir, &["backup", "--force", path], &config);
    assert_eq!(code, 0, "{out}{err}");
    let copy_db = TestDb::at(&format!("sqlite://{}", copy.display()));
    assert!(copy_db.count("SELECT COUNT(*) FROM audit") > 0);

    let (code, _, err) = medic_cli(dir, &["backup", "--force", db.to_str().unwrap()], &config);
    assert_eq!(code, 1);
    assert!(err.contains("is the store itself"), "{err}");
}

/// `path` with `suffix` added to its file name.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}
