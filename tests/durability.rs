//! Durability and tamper evidence: a delivery answered 200 survives `kill -9`, and an
//! edited audit row is found and named.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = default_config(dir);
    let mut m = Medic::start_in(dir, &config);
    let url = m.url("/webhook");

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for worker in 0..16 {
        let (url, acked, count) = (url.clone(), acked.clone(), count.clone());
        senders.push(tokio::spawn(async move {
            let c = client();
            for i in 0.. {
                let instance = format!("w{worker}-{i}");
                let b = body(vec![alert("ServiceDown", &instance, "firing")]);
                match c
                    .post(&url)
                    .bearer_auth(WEBHOOK_TOKEN)
                    .json(&b)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 200 => {
                        acked
                            .lock()
                            .unwrap()
                            .insert(fingerprint_of("ServiceDown", &instance));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    // Refused or cut off by the kill: not acknowledged, so not promised.
                    _ => break,
                }
            }
        }));
    }
    // Kill while deliveries are being acknowledged.
    eventually(
        std::time::Duration::from_secs(60),
        "500 acknowledged deliveries",
        || {
            let n = count.load(Ordering::Relaxed);
            async move { (n >= 500).then_some(()) }
        },
    )
    .await;
    m.kill9();
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 500);

    let m = Medic::start_in(dir, &config);
    let stored: HashSet<String> = incidents(&m)
        .await
        .iter()
        .map(|i| i["fingerprint"].as_str().unwrap().to_string())
        .collect();
    let stored = if stored.len() >= 1000 {
        // The listing is paged at 1000: look each one up by checking the database directly.
        let all: HashSet<String> = TestDb::of(dir)
            .rows("SELECT fingerprint FROM incidents")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        all
    } else {
        stored
    };
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged deliveries lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    let (code, out, err) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn edited_audit_row_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = default_config(dir);
    let mut m = Medic::start_in(dir, &config);
    for i in 0..3 {
        let b = body(vec![alert("ServiceDown", &format!("t{i}"), "firing")]);
        assert_eq!(post_webhook(&m, &b).await.0, 200);
    }
    assert_eq!(m.stop(), Some(0));
    assert_eq!(m.run_cli(&["audit", "verify"]).0, 0);

    // Someone with access to the file edits one entry (the append-only trigger must go first).
    let db = TestDb::of(dir);
    let row =
        db.rows("SELECT seq, event FROM audit WHERE event = 'route_matched' ORDER BY seq LIMIT 1");
    let (seq, event) = (row[0][0].clone().unwrap(), row[0][1].clone().unwrap());
    db.execute(&format!(
        "{}; UPDATE audit SET detail = '{{\"route\":\"forged\"}}' WHERE seq = {seq}",
        lift_append_only(&db)
    ));

    let (code, out, err) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with(&format!("audit entry {seq} ({event} at ")) && out.contains("was edited"),
        "{out}"
    );
}

#[tokio::test]
async fn removed_audit_row_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = default_config(dir);
    let mut m = Medic::start_in(dir, &config);
    let b = body(vec![alert("ServiceDown", "r1", "firing")]);
    assert_eq!(post_webhook(&m, &b).await.0, 200);
    assert_eq!(m.stop(), Some(0));
    let db = TestDb::of(dir);
    db.execute(&format!(
        "{}; DELETE FROM audit WHERE seq = 3",
        lift_append_only(&db)
    ));
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert_eq!(
        out.trim(),
        "audit entry 3 is missing: the entry after 2 is 4"
    );
}

/// What someone with access to the database runs first to edit the audit log.
fn lift_append_only(db: &TestDb) -> &'static str {
    if db.is_postgres() {
        "ALTER TABLE audit DISABLE TRIGGER USER"
    } else {
        "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete"
    }
}
