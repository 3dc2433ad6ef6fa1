//! Retention (`store.retention`), end to end: the engine in-process on paused time (SQLite,
//! or PostgreSQL with `MEDIC_TEST_STORE=postgres`) prunes a history older than the
//! retention in batches while webhooks keep arriving; `medic audit verify` passes before
//! and after and still catches an edit after the checkpoint; `medic audit export` writes an
//! archive that `medic audit verify --file` checks on its own; open incidents and their
//! audit entries survive. Then two real replicas on PostgreSQL: one prunes.
//!
//! No test here asserts a duration: the webhooks' latency during pruning is measured and
//! printed (`--nocapture`), and the assertions are about order (deliveries committed
//! between two of the pruning's batches) and outcome.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use common::*;
use medic::clock::Clock;
use medic::store::Store;

/// How long (real time) a test waits for something the engine does at once.
const WAIT: Duration = Duration::from_secs(120);
const DAY: Duration = Duration::from_secs(86400);
/// History: this many deliveries of 100 alerts.
const HISTORY_DELIVERIES: usize = 30;

fn config(dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
{store}
retention = "180d"

[runbooks]
dir = "{runbooks}"

[[routes]]
name = "history"
matchers = ['alertname="Hist"']
runbook = "ok.rhai"

[[routes]]
name = "live"
matchers = ['alertname="Live"']
ignore = true
{escalation}
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        escalation = escalation_to_file(dir),
    )
}

/// The engine running in this test's runtime, on a clock that follows tokio's.
struct Engine {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    config: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    busy: JoinHandle<()>,
}

impl Engine {
    async fn start() -> Engine {
        // Keeps the runtime busy, so the paused clock moves only by `advance`.
        let busy = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_micros(500));
                tokio::task::yield_now().await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        runbook(dir.path(), "ok.rhai", "log(\"fixed\");");
        let path = dir.path().join("medic.toml");
        let text = config(dir.path());
        std::fs::write(&path, &text).unwrap();
        let config = medic::config::Config::parse(&path, &text, &|_| None).unwrap();
        let loaded = medic::loaded::Loaded::from_config(config).unwrap();
        let metrics = Arc::new(medic::metrics::Metrics::default());
        let store = Store::connect(&loaded.config.store, metrics.store.clone()).unwrap();
        let engine = medic::app::Engine {
            loaded,
            store: store.clone(),
            metrics,
            clock: Clock::following_tokio(chrono::Utc::now()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(medic::app::run(listener, engine, async {
            let _ = stopped.await;
        }));
        Engine {
            addr,
            dir,
            config: path,
            stop: Some(stop),
            server: Some(server),
            busy,
        }
    }

    async fn post(&self, alerts: Vec<Value>) -> u16 {
        client()
            .post(format!("http://{}/webhook", self.addr))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&body(alerts))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// `medic <args> --config <this config>`, off the runtime's thread.
    async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let (dir, config) = (self.dir.path().to_path_buf(), self.config.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            medic_cli(&dir, &args, &config)
        })
        .await
        .unwrap()
    }

    fn db(&self) -> TestDb {
        TestDb::of(self.dir.path())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.busy.abort();
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

/// Polls `f` (without moving the paused clock) until it answers, for at most [`WAIT`].
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(0)).await;
        tokio::task::yield_now().await;
    }
}

/// The number `sql` selects from the store of `dir`, off the runtime's thread.
async fn count(dir: &Path, sql: &str) -> i64 {
    let (dir, sql) = (dir.to_path_buf(), sql.to_string());
    tokio::task::spawn_blocking(move || TestDb::of(&dir).count(&sql))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_history_is_pruned_in_batches_while_webhooks_keep_arriving() {
    let e = Engine::start().await;
    let db = e.db();
    let dir = e.dir.path().to_path_buf();
    // A history: alerts that fired and resolved.
    for k in 0..HISTORY_DELIVERIES {
        let alerts = (0..100)
            .map(|i| alert("Hist", &format!("h{}", k * 100 + i), "firing"))
            .collect();
        assert_eq!(e.post(alerts).await, 200);
    }
    for k in 0..HISTORY_DELIVERIES {
        let alerts = (0..100)
            .map(|i| alert("Hist", &format!("h{}", k * 100 + i), "resolved"))
            .collect();
        assert_eq!(e.post(alerts).await, 200);
    }
    // Open work from the same time: an alert no route takes (escalated, nobody acked it).
    assert_eq!(e.post(vec![alert("Open", "o1", "firing")]).await, 200);
    let history = (HISTORY_DELIVERIES * 100) as i64;
    until("the history resolved", || async {
        let n = count(
            &dir,
            "SELECT COUNT(*) FROM incidents WHERE alertname = 'Hist' AND state = 'resolved'",
        )
        .await;
        let escalated = count(
            &dir,
            "SELECT COUNT(*) FROM incidents WHERE alertname = 'Open' AND state = 'escalated'",
        )
        .await;
        (n == history && escalated == 1).then_some(())
    })
    .await;
    let open_id = db.rows("SELECT id FROM incidents WHERE alertname = 'Open'")[0][0]
        .clone()
        .unwrap();
    let (code, out, err) = e.cli(&["audit", "verify"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("audit log intact: "), "{out}");
    let entries_before = count(&dir, "SELECT COUNT(*) FROM audit").await;

    // Webhooks keep arriving (4 senders), from before the history is old until after it
    // went; each one's latency, in real time.
    let go = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<(u16, Duration)>::new()));
    let senders: Vec<JoinHandle<()>> = (0..4)
        .map(|s| {
            let (go, stop, latencies) = (go.clone(), stop.clone(), latencies.clone());
            let url = format!("http://{}/webhook", e.addr);
            tokio::spawn(async move {
                go.notified().await;
                let client = client();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let started = std::time::Instant::now();
                    let status = client
                        .post(&url)
                        .bearer_auth(WEBHOOK_TOKEN)
                        .json(&body(vec![alert("Live", &format!("l{s}-{n}"), "firing")]))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    latencies.lock().unwrap().push((status, started.elapsed()));
                }
            })
        })
        .collect();
    // The history becomes older than the retention; the worker's next pass starts now.
    tokio::time::advance(181 * DAY).await;
    go.notify_waiters();
    until("the history pruned", || async {
        let left = count(
            &dir,
            "SELECT COUNT(*) FROM incidents WHERE alertname = 'Hist'",
        )
        .await;
        let front = db.rows("SELECT incident_id FROM audit ORDER BY seq LIMIT 1");
        (left == 0 && front[0][0].as_deref() == Some(open_id.as_str())).then_some(())
    })
    .await;
    // As many again with pruning over, to compare.
    let during = latencies.lock().unwrap().len();
    until("as many deliveries after pruning", || async {
        (latencies.lock().unwrap().len() >= 2 * during).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.unwrap();
    }

    // None refused: every delivery was accepted, and committed.
    let latencies = latencies.lock().unwrap().clone();
    assert!(
        latencies.iter().all(|(status, _)| *status == 200),
        "{:?}",
        latencies.iter().filter(|l| l.0 != 200).collect::<Vec<_>>()
    );
    let live = count(
        &dir,
        "SELECT COUNT(*) FROM incidents WHERE alertname = 'Live'",
    )
    .await;
    assert_eq!(live, latencies.len() as i64);
    // In batches, with deliveries committed between them.
    let checkpoints: Vec<i64> = db
        .rows("SELECT seq FROM audit WHERE event = 'audit_checkpoint' ORDER BY seq")
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(checkpoints.len() >= 10, "{} batches", checkpoints.len());
    let between = count(
        &dir,
        &format!(
            "SELECT COUNT(*) FROM audit WHERE event = 'delivery_received' AND seq > {} AND seq < {}",
            checkpoints[0],
            checkpoints[checkpoints.len() - 1]
        ),
    )
    .await;
    assert!(between > 0, "no delivery was committed while pruning ran");
    let stats = |part: &[(u16, Duration)]| {
        let mut ms: Vec<f64> = part.iter().map(|l| l.1.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
        format!(
            "{} webhooks, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms.len(),
            pct(0.5),
            pct(0.99),
            ms[ms.len() - 1]
        )
    };
    eprintln!(
        "retention: {entries_before} audit entries and {history} incidents pruned in {} batches; during it: {} ({between} committed between its first and last batch); after it: {}",
        checkpoints.len(),
        stats(&latencies[..during]),
        stats(&latencies[during..]),
    );

    // The open incident and its whole timeline survived.
    let timeline = db.rows(&format!(
        "SELECT event FROM audit WHERE incident_id = '{open_id}' ORDER BY seq"
    ));
    assert_eq!(timeline[0][0].as_deref(), Some("incident_opened"));
    assert!(timeline.len() >= 3, "{timeline:?}");

    // `audit verify` checks from the checkpoint, and says so.
    let (code, out, err) = e.cli(&["audit", "verify"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let last_removed = count(&dir, "SELECT MIN(seq) - 1 FROM audit").await;
    assert!(
        out.contains("verified ")
            && out.contains(&format!("from checkpoint at seq {last_removed}")),
        "{out}"
    );

    // An export verifies on its own; an edited line is named.
    let (code, archive, err) = e.cli(&["audit", "export"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported "), "{err}");
    let file = e.dir.path().join("audit.jsonl");
    std::fs::write(&file, &archive).unwrap();
    let file_arg = file.display().to_string();
    let (code, out, err) = e.cli(&["audit", "verify", "--file", &file_arg]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("from checkpoint at seq {last_removed}")),
        "{out}"
    );
    let mut lines: Vec<String> = archive.lines().map(str::to_string).collect();
    let target = lines.len() / 2;
    let mut entry: Value = serde_json::from_str(&lines[target]).unwrap();
    let seq = entry["seq"].as_i64().unwrap();
    entry["detail"] = json!("{\"edited\":true}");
    lines[target] = entry.to_string();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, out, _) = e.cli(&["audit", "verify", "--file", &file_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(":line {}: audit entry {seq} (", target + 1))
            && out.contains("was edited"),
        "{out}"
    );

    // An entry edited after the checkpoint, in the store, is still caught.
    let tamper = if db.is_postgres() {
        "ALTER TABLE audit DISABLE TRIGGER USER; UPDATE audit SET detail = '{\"edited\":true}' WHERE seq = (SELECT MAX(seq) - 5 FROM audit)"
    } else {
        "DROP TRIGGER audit_no_update; UPDATE audit SET detail = '{\"edited\":true}' WHERE seq = (SELECT MAX(seq) - 5 FROM audit)"
    };
    let edited = count(&dir, "SELECT MAX(seq) - 5 FROM audit").await;
    db.execute(tamper);
    let (code, out, _) = e.cli(&["audit", "verify"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(&format!("audit entry {edited} (")), "{out}");
    e.stop().await;
}

/// Two real replicas on one PostgreSQL database, both with a short retention, both sent
/// every delivery (as Alertmanager does with several replicas): the history goes, once,
/// pruned by one replica only (the lease holder), and the one audit chain still checks.
/// Always PostgreSQL (`MEDIC_TEST_POSTGRES`, else the local server). This is the wiring,
/// with real processes; the lease itself (both at once, take-over after the holder's lease
/// ran out) is `store::retention::tests::one_replica_prunes_at_a_time`.
#[tokio::test]
async fn two_replicas_prune_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db_url = medic::store::postgres::scratch_database().expect("a PostgreSQL test database");
    let start = |name: &str| {
        let dir = tmp.path().join(name);
        runbook(&dir, "ok.rhai", "log(\"fixed\");");
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
url = "{db_url}"
lease = "2s"
retention = "1s"

[runbooks]
dir = "{runbooks}"

[[routes]]
name = "history"
matchers = ['alertname="Hist"']
runbook = "ok.rhai"

[[routes]]
name = "watchdog"
matchers = ['alertname="Watchdog"']
ignore = true
{escalation}
"#,
            runbooks = dir.join("runbooks").display(),
            escalation = escalation_to_file(&dir),
        );
        Medic::start_in(&dir, &config)
    };
    let (a, b) = (start("a"), start("b"));
    let db = TestDb::at(&db_url);
    for round in 0..3 {
        let firing: Vec<Value> = (0..100)
            .map(|i| alert("Hist", &format!("h{round}-{i}"), "firing"))
            .collect();
        let resolved: Vec<Value> = (0..100)
            .map(|i| alert("Hist", &format!("h{round}-{i}"), "resolved"))
            .collect();
        for body_ in [
            body(firing),
            body(vec![alert("Watchdog", "w", "firing")]),
            body(resolved),
        ] {
            for m in [&a, &b] {
                assert_eq!(post_webhook(m, &body_).await.0, 200);
            }
        }
    }
    // Both replicas pass every 15 s; the history is older than the retention within 1 s.
    eventually(Duration::from_secs(90), "the history pruned", || async {
        let left = db.count("SELECT COUNT(*) FROM incidents");
        let checkpoints = db.count("SELECT COUNT(*) FROM audit WHERE event = 'audit_checkpoint'");
        (left == 0 && checkpoints > 0).then_some(())
    })
    .await;
    let bys: Vec<String> = db
        .rows("SELECT detail FROM audit WHERE event = 'audit_checkpoint' ORDER BY seq")
        .iter()
        .map(|r| {
            let d: Value = serde_json::from_str(r[0].as_deref().unwrap()).unwrap();
            d["by"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        bys.windows(2).all(|w| w[0] == w[1]),
        "checkpoints by more than one replica: {bys:?}"
    );
    let holder = db.rows("SELECT owner FROM leases WHERE name = 'retention'");
    assert_eq!(holder[0][0].as_deref(), Some(bys[0].as_str()));
    let pids = [a.child.id(), b.child.id()].map(|p| format!("{p}/"));
    assert!(
        pids.iter().any(|p| bys[0].starts_with(p.as_str())),
        "{bys:?} is one of {pids:?}"
    );
    // The chain both replicas wrote checks from the checkpoint.
    let (code, out, err) = b.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from checkpoint at seq"), "{out}");
    drop(a);
}

/// `--until` stops at the first entry written at or after a time; `--after` starts after an
/// entry: the archive of the rest continues the one before it, and says so.
#[tokio::test]
async fn export_until_and_after_cut_the_archive() {
    let m = Medic::start();
    for i in 0..5 {
        let (status, _) = post_webhook(
            &m,
            &body(vec![alert("ServiceDown", &format!("h{i}"), "firing")]),
        )
        .await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (code, all, err) = m.run_cli(&["audit", "export"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The time of an entry later than every one before it (a delivery is stamped when it
    // arrived, so times are not always in the order of the chain).
    let at = |i: usize| entries[i]["at"].as_str().unwrap();
    let k = (1..entries.len())
        .rev()
        .find(|&k| (0..k).all(|i| at(i) < at(k)))
        .unwrap();
    let until = entries[k]["at"].as_str().unwrap();
    let (code, head, _) = m.run_cli(&["audit", "export", "--until", until]);
    assert_eq!(code, 0);
    assert_eq!(head.lines().count(), k, "the entries before {until}");
    assert!(all.starts_with(&head));
    let (code, none, err) = m.run_cli(&["audit", "export", "--until", "2000-01-01"]);
    assert_eq!((code, none.as_str()), (0, ""), "{err}");
    let (code, _, err) = m.run_cli(&["audit", "export", "--until", "last tuesday"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid date \"last tuesday\""), "{err}");
    // The rest, after the last entry of the first archive.
    let after = entries[k - 1]["seq"].to_string();
    let (code, rest, _) = m.run_cli(&["audit", "export", "--after", &after]);
    assert_eq!(code, 0);
    // (The server may have written more since the first export.)
    assert!(format!("{head}{rest}").starts_with(&all), "{rest}");
    let (first, second) = (m.dir.join("first.jsonl"), m.dir.join("second.jsonl"));
    std::fs::write(&first, &head).unwrap();
    std::fs::write(&second, &rest).unwrap();
    let (code, out, _) = m.run_cli(&["audit", "verify", "--file", first.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let head_hash = entries[k - 1]["hash"].as_str().unwrap();
    assert!(out.contains(&format!("head {head_hash}")), "{out}");
    let (code, out, _) = m.run_cli(&["audit", "verify", "--file", second.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "it continues an earlier archive, which must end with entry {after} with hash {head_hash}"
        )),
        "{out}"
    );
}

/// The audit commands run beside a serving medic (an archive is exported while it
/// serves): they take nothing over. A store opened to serve SQLite frees every run's lease
/// (one process owns the file), which would make the server take its own run in flight
/// for a dead one's and escalate it `interrupted`.
#[tokio::test]
async fn the_audit_commands_leave_a_serving_medics_runs_alone() {
    let tmp = tempfile::tempdir().unwrap();
    runbook(tmp.path(), "restart.rhai", "sleep(20);");
    let m = Medic::start_in(tmp.path(), &default_config(tmp.path()));
    let (status, _) = post_webhook(&m, &body(vec![alert("ServiceDown", "web1", "firing")])).await;
    assert_eq!(status, 200);
    let db = TestDb::of(tmp.path());
    let leased =
        "SELECT COUNT(*) FROM incidents WHERE state = 'remediating' AND lease_until IS NOT NULL";
    eventually(Duration::from_secs(20), "the run started", || async {
        (db.count(leased) == 1).then_some(())
    })
    .await;
    for args in [&["audit", "export"][..], &["audit", "verify"]] {
        let (code, _, err) = m.run_cli(args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(db.count(leased), 1, "{args:?} freed the server's run");
    }
}

/// Entries removed from the front by hand are not taken for retention's: no checkpoint
/// accounts for them.
#[tokio::test]
async fn a_front_removed_without_a_checkpoint_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut m = Medic::start_in(dir, &default_config(dir));
    let b = body(vec![alert("ServiceDown", "r1", "firing")]);
    assert_eq!(post_webhook(&m, &b).await.0, 200);
    assert_eq!(m.stop(), Some(0));
    let db = TestDb::of(dir);
    let lift = if db.is_postgres() {
        "ALTER TABLE audit DISABLE TRIGGER USER"
    } else {
        "DROP TRIGGER audit_no_delete"
    };
    db.execute(&format!("{lift}; DELETE FROM audit WHERE seq <= 3"));
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim(),
        "audit entries 1 to 3 are missing and no checkpoint accounts for them: the log starts at entry 4"
    );
}
