//! Several replicas of medic on one PostgreSQL database, as real processes: a real
//! Alertmanager delivering every notification to both, shared rate limits and breakers, a
//! replica killed mid-run, the database cut off under load, and the outbox delivering
//! each notification once.
//!
//! These tests always use PostgreSQL (`MEDIC_TEST_POSTGRES`, else the local server).

use crate::common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::receiver::Receiver;
use common::*;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(60);

/// A replica's config: the shared database `db`, a short lease, and `extra` (routes and
/// more).
fn config(dir: &Path, db: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
url = "{db}"
lease = "2s"
statement_timeout = "2s"

[runbooks]
dir = "{runbooks}"
{escalation}
{extra}
"#,
        runbooks = dir.join("runbooks").display(),
        // Every escalation reaches a channel: a file, unless `extra` names its own.
        escalation = if extra.contains("[escalation]") {
            String::new()
        } else {
            escalation_to_file(dir)
        },
    )
}

/// Two replicas on one new database, each in its own directory with the same runbooks.
fn two_replicas(
    runbooks: &[(&str, &str)],
    extra: &str,
) -> (tempfile::TempDir, String, Medic, Medic) {
    let tmp = tempfile::tempdir().unwrap();
    let db = medic::store::postgres::scratch_database().expect("a PostgreSQL test database");
    let start = |name: &str| {
        let dir: PathBuf = tmp.path().join(name);
        for (file, source) in runbooks {
            runbook(&dir, file, source);
        }
        Medic::start_in(&dir, &config(&dir, &db, extra))
    };
    let (a, b) = (start("a"), start("b"));
    (tmp, db, a, b)
}

fn db(url: &str) -> TestDb {
    TestDb::at(url)
}

/// The incident of `alertname`/`instance` as replica `m` sees it, once it is in `state`.
async fn in_state(m: &Medic, alertname: &str, instance: &str, state: &str) -> Value {
    let fp = fingerprint_of(alertname, instance);
    eventually(WAIT, &format!("{alertname}/{instance} {state}"), || async {
        let l = api(m, &format!("/api/v1/incidents?alertname={alertname}")).await;
        let inc = l["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["fingerprint"] == fp.as_str())?
            .clone();
        (inc["state"] == state).then_some(inc)
    })
    .await
}

#[tokio::test]
async fn a_burst_through_alertmanager_to_both_replicas_opens_one_incident_and_one_run_each() {
    let routes =
        "[[routes]]\nname = \"burst\"\nmatchers = ['alertname=\"Burst\"']\nrunbook = \"ok.rhai\"\n";
    let (_tmp, url, a, b) = two_replicas(&[("ok.rhai", "log(\"fixed\");")], routes);
    let am =
        Alertmanager::start_for(&[a.url("/webhook"), b.url("/webhook")], WEBHOOK_TOKEN, "1h").await;
    let alerts: Vec<Value> = (0..500)
        .map(|i| json!({"labels": {"alertname": "Burst", "instance": format!("h{i}")}}))
        .collect();
    am.post_alerts(&Value::Array(alerts)).await;

    let db = db(&url);
    eventually(
        Duration::from_secs(120),
        "500 incidents, all run",
        || async {
            let done = db.count(
                "SELECT COUNT(*) FROM incidents WHERE state NOT IN ('queued', 'remediating')",
            );
            (done == 500).then_some(())
        },
    )
    .await;
    assert_eq!(db.count("SELECT COUNT(*) FROM incidents"), 500);
    // Both replicas received the burst: each alert was delivered at least twice.
    assert!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'alert_deduplicated'") >= 500,
        "the second replica's deliveries are deduplicated"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'run_started'"),
        500,
        "exactly one run per incident"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM (SELECT incident_id FROM audit WHERE event = 'run_started'
             GROUP BY incident_id HAVING COUNT(*) > 1) twice"
        ),
        0
    );
    // Both replicas ran some: the work was shared.
    let owners = db.count("SELECT COUNT(DISTINCT lease_owner) FROM incidents");
    assert_eq!(owners, 2, "runs were claimed by both replicas");
    // One audit chain for both.
    let (code, out, err) = a.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    drop(b);
}

#[tokio::test]
async fn a_route_rate_and_a_breaker_hold_across_both_replicas() {
    let routes = "\
[[routes]]\nname = \"limited\"\nmatchers = ['alertname=\"Limited\"']\nrunbook = \"ok.rhai\"\nrate = \"5/1h\"\n\
[[routes]]\nname = \"flaky\"\nmatchers = ['alertname=\"Flaky\"']\nrunbook = \"fail.rhai\"\nbreaker = { failures = 2, cooldown = \"1h\" }\n";
    let (_tmp, url, a, b) = two_replicas(
        &[
            ("ok.rhai", "log(\"fixed\");"),
            ("fail.rhai", "throw \"cannot fix\";"),
        ],
        routes,
    );
    // Ten alerts to each replica: the fleet allows five runs in all.
    for i in 0..20 {
        let m = if i % 2 == 0 { &a } else { &b };
        let (status, _) =
            post_webhook(m, &body(vec![alert("Limited", &format!("l{i}"), "firing")])).await;
        assert_eq!(status, 200);
    }
    let db = db(&url);
    eventually(WAIT, "every Limited incident decided", || async {
        let open = db.count(
            "SELECT COUNT(*) FROM incidents WHERE alertname = 'Limited' AND state IN ('queued', 'remediating')",
        );
        let all = db.count("SELECT COUNT(*) FROM incidents WHERE alertname = 'Limited'");
        (open == 0 && all == 20).then_some(())
    })
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit WHERE event = 'run_started'"),
        5
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM incidents WHERE reason = 'rate_limited'"),
        15
    );

    // Two failures, one through each replica, open the breaker for both.
    post_webhook(&a, &body(vec![alert("Flaky", "f1", "firing")])).await;
    in_state(&a, "Flaky", "f1", "escalated").await;
    post_webhook(&b, &body(vec![alert("Flaky", "f2", "firing")])).await;
    in_state(&b, "Flaky", "f2", "escalated").await;
    post_webhook(&a, &body(vec![alert("Flaky", "f3", "firing")])).await;
    let third = in_state(&a, "Flaky", "f3", "escalated").await;
    assert_eq!(third["reason"], "circuit_open", "{third:#}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM breakers WHERE state = 'open'"),
        1
    );
    // Each replica shows it open.
    for m in [&a, &b] {
        let list = eventually(WAIT, "the open breaker listed", || async {
            let l = api(m, "/api/v1/breakers").await;
            (l["breakers"][0]["state"] == "open").then_some(l)
        })
        .await;
        assert_eq!(list["breakers"][0]["route"], "flaky");
    }
}

#[tokio::test]
async fn a_replica_killed_mid_run_is_taken_over_within_the_lease() {
    let routes =
        "[[routes]]\nname = \"slow\"\nmatchers = ['alertname=\"Slow\"']\nrunbook = \"slow.rhai\"\n";
    let (_tmp, url, a, b) = two_replicas(&[("slow.rhai", "sleep(60);")], routes);
    assert_eq!(
        post_webhook(&a, &body(vec![alert("Slow", "s1", "firing")]))
            .await
            .0,
        200
    );
    in_state(&a, "Slow", "s1", "remediating").await;
    // Either replica may have claimed it: kill the one running it (its pid leads the lease).
    let owner = db(&url).rows("SELECT lease_owner FROM incidents")[0][0]
        .clone()
        .unwrap();
    let pid: u32 = owner.split('/').next().unwrap().parse().unwrap();
    let (mut runner, b) = if pid == a.child.id() { (a, b) } else { (b, a) };
    assert_eq!(runner.child.id(), pid, "the lease names a replica");
    let started = std::time::Instant::now();
    runner.kill9();
    let inc = in_state(&b, "Slow", "s1", "escalated").await;
    assert_eq!(inc["reason"], "interrupted", "{inc:#}");
    assert_eq!(
        inc["attempts"], 1,
        "not re-run: the route is not idempotent"
    );
    // Lease 2s, checked every 1s: well within the wait; recorded with whose lease it was.
    assert!(started.elapsed() < Duration::from_secs(30));
    let one = api(
        &b,
        &format!("/api/v1/incidents/{}", inc["id"].as_str().unwrap()),
    )
    .await;
    let change = one["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "state_changed" && e["detail"]["reason"] == "interrupted")
        .cloned()
        .expect("the interruption in the timeline");
    assert!(change["detail"]["lease_owner"].is_string(), "{change:#}");
    assert_eq!(db(&url).count("SELECT COUNT(*) FROM incidents"), 1);
}

#[tokio::test]
async fn the_outbox_delivers_each_notification_once_with_two_replicas() {
    let rx = Receiver::start().await;
    let extra = format!(
        r#"
[limits]
storm_window = "1ms"

[escalation]
retry_initial = "100ms"
retry_max = "500ms"
notify = ["hook"]

[[escalation.channels]]
name = "hook"
type = "webhook"
url = "{hook}"
"#,
        hook = rx.url("/hook"),
    );
    let (_tmp, url, a, b) = two_replicas(&[], &extra);
    // The receiver refuses its first answers: retries must not turn into duplicates.
    rx.fail_first("/hook", &[503, 503, 503]);
    for i in 0..30 {
        // Each alert reaches both replicas, as Alertmanager would send it.
        let b_ = body(vec![alert("Unrouted", &format!("u{i}"), "firing")]);
        assert_eq!(post_webhook(&a, &b_).await.0, 200);
        assert_eq!(post_webhook(&b, &b_).await.0, 200);
    }
    rx.wait_delivered("/hook", 30, WAIT).await;
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered = rx.delivered("/hook");
    let incidents: HashSet<String> = delivered
        .iter()
        .map(|r| {
            r.body["incident"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(delivered.len(), 30, "one delivery per escalation");
    assert_eq!(incidents.len(), 30);
    assert_eq!(
        db(&url).count("SELECT COUNT(*) FROM outbox WHERE state = 'sent'"),
        30
    );
}

/// A TCP proxy to PostgreSQL that the test can cut: while cut, every connection through
/// it is dropped and new ones are refused, as when the database is down.
struct Cuttable {
    addr: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cuttable {
    async fn start(upstream: String) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, list) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        Cuttable { addr, cut, conns }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
        if on {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

// The proxy runs on the test's runtime while a replica starts: two worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_cut_off_under_load_means_503_then_recovery_and_nothing_lost() {
    let db_url = medic::store::postgres::scratch_database().unwrap();
    // medic reaches the database through the proxy: same server, another port.
    let (host_port, name) = {
        let rest = db_url.split("://").nth(1).unwrap();
        let (userhost, name) = rest.rsplit_once('/').unwrap();
        let host = userhost.rsplit('@').next().unwrap().to_string();
        (host, name.to_string())
    };
    let proxy = Cuttable::start(host_port.clone()).await;
    let via_proxy = db_url.replace(
        &format!("@{host_port}/{name}"),
        &format!("@{}/{name}", proxy.addr),
    );
    let tmp = tempfile::tempdir().unwrap();
    let start = |n: &str| {
        let dir = tmp.path().join(n);
        Medic::start_in(&dir, &config(&dir, &via_proxy, ""))
    };
    let (a, b) = (start("a"), start("b"));

    // Load: both replicas take a stream of new alerts; remember what each acknowledged.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (k, m) in [&a, &b].into_iter().enumerate() {
        let (url, acked, refused, stop) = (
            m.url("/webhook"),
            acked.clone(),
            refused.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let client = client();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let instance = format!("r{k}-{i}");
                i += 1;
                let r = client
                    .post(&url)
                    .bearer_auth(WEBHOOK_TOKEN)
                    .json(&body(vec![alert("Load", &instance, "firing")]))
                    .send()
                    .await;
                match r.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        acked
                            .lock()
                            .unwrap()
                            .insert(fingerprint_of("Load", &instance));
                    }
                    Ok(503) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "deliveries are acknowledged before the cut");

    proxy.cut(true);
    let ready = |m: &Medic| {
        let url = m.url("/readyz");
        async move {
            client()
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    eventually(
        Duration::from_secs(15),
        "readyz fails while the database is away",
        || async { (ready(&a).await == 503).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(15), "webhooks answer 503", || async {
        (refused.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut(false);

    let after_cut = acked.lock().unwrap().len();
    eventually(
        Duration::from_secs(30),
        "acknowledgements resume on both",
        || async { (acked.lock().unwrap().len() > after_cut + 20).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(15), "readyz recovers", || async {
        (ready(&a).await == 200 && ready(&b).await == 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }

    // Every acknowledged delivery, before, during and after the cut, is stored.
    let stored: HashSet<String> = TestDb::at(&db_url)
        .rows("SELECT fingerprint FROM incidents")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged deliveries lost",
        lost.len()
    );
    let (code, out, err) = a.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
