//! Escalation latency: from the decision to escalate to the message accepted by a real
//! SMTP server (Python's aiosmtpd) and by a webhook receiver, on loopback.
//!
//!     cargo bench --bench escalation          (BENCH_N=1000 escalations by default)
//!
//! Each escalation is an alert that no route takes, stored through the store's intake:
//! the clock starts before that commit (so the figures include the durable commit that
//! decides the escalation and puts its two notifications in the outbox) and stops when the
//! receiver has the webhook body and when the SMTP server has accepted the mail. One
//! escalation at a time, so the figures are latency, not queueing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use chrono::Utc;
use medic::app::Engine;
use medic::config::Config;
use medic::ingest::payload::{Alert, Status};
use medic::loaded::Loaded;
use medic::metrics::Metrics;
use medic::store::{Delivery, Routed, Store};

/// Prints `<incident id> <unix time>` for each mail it accepts.
const SINK: &str = r#"
import email, signal, sys, time
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        now = time.time()
        msg = email.message_from_bytes(envelope.original_content)
        print(msg['X-Medic-Incident'], repr(now), flush=True)
        return '250 OK'
c = Controller(Sink(), hostname='127.0.0.1', port=int(sys.argv[1]))
c.start()
print('ready', flush=True)
signal.pause()
"#;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "{what:<34} n={:<5} p50 {:>6.2} ms   p90 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms   mean {:>6.2} ms",
        ms.len(),
        percentile(&ms, 0.50),
        percentile(&ms, 0.90),
        percentile(&ms, 0.99),
        ms[ms.len() - 1],
        mean
    );
}

type Arrivals = Arc<Mutex<HashMap<String, f64>>>;

async fn run(n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    // The SMTP server, and a thread that reads what it accepted.
    let smtp_port = free_port();
    std::fs::write(tmp.path().join("sink.py"), SINK).unwrap();
    let mut sink = Command::new("python3")
        .arg(tmp.path().join("sink.py"))
        .arg(smtp_port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with aiosmtpd (scripts/test.sh installs it)");
    let mails: Arrivals = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    {
        let mails = mails.clone();
        let out = sink.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some((id, at)) = line.split_once(' ') {
                    mails
                        .lock()
                        .unwrap()
                        .insert(id.to_string(), at.parse().unwrap_or(0.0));
                }
            }
        });
    }
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the SMTP sink did not start");

    // The webhook receiver, in process.
    let hooks: Arrivals = Arc::default();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let receiver = {
        let (hooks, arrived) = (hooks.clone(), arrived.clone());
        axum::Router::new().fallback(move |body: Bytes| {
            let (hooks, arrived) = (hooks.clone(), arrived.clone());
            async move {
                let at = unix_now();
                let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(id) = doc["incident"]["id"].as_str() {
                    hooks.lock().unwrap().insert(id.to_string(), at);
                }
                arrived.notify_waiters();
                "ok"
            }
        })
    };
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = hook_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(hook_listener, receiver).await });

    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{db}"
[runbooks]
dir = "{runbooks}"
[escalation]
notify = ["mail", "hook"]
[[escalation.channels]]
name = "mail"
type = "email"
smtp = "127.0.0.1:{smtp_port}"
tls = "none"
from = "medic@bench.example"
to = ["oncall@bench.example"]
[[escalation.channels]]
name = "hook"
type = "webhook"
url = "http://{hook_addr}/hook"
"#,
        db = dir.join("medic.db").display(),
        runbooks = dir.join("runbooks").display(),
    );
    let config = Config::parse(&dir.join("medic.toml"), &text, &|_| None).expect("bench config");
    let loaded = Loaded::from_config(config).unwrap_or_else(|p| panic!("{p:?}"));
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&loaded.config.store.url, metrics.store.clone()).unwrap();
    let app = Engine::new(loaded, store.clone(), metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic::app::run(listener, app, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut started: Vec<f64> = Vec::with_capacity(n);
    let wall = Instant::now();
    for i in 0..n {
        let labels = [
            ("alertname", "BenchEscalation".to_string()),
            ("instance", format!("node-{i}:9100")),
            ("severity", "critical".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let alert = Alert {
            status: Status::Firing,
            fingerprint: medic::ingest::payload::fingerprint(&labels),
            labels,
            annotations: [("summary".to_string(), format!("bench alert {i}"))]
                .into_iter()
                .collect(),
            starts_at: Utc::now(),
            ends_at: None,
            generator_url: String::new(),
            extra: Default::default(),
        };
        let d = Delivery {
            received_at: Utc::now(),
            source: "bench".into(),
            receiver: "medic".into(),
            status: Status::Firing,
            group_key: String::new(),
            external_url: "http://alertmanager.bench:9093".into(),
            truncated_alerts: 0,
            extra: Default::default(),
            alerts: vec![(
                alert,
                Routed::NoRunbook {
                    why: "bench".into(),
                },
            )],
        };
        let notified = arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let before = hooks.lock().unwrap().len();
        started.push(unix_now());
        store.ingest(d).await.unwrap();
        // Wait for this escalation's webhook and mail before the next one.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hooks.lock().unwrap().len() == before {
            assert!(Instant::now() < deadline, "no webhook for escalation {i}");
            let _ = tokio::time::timeout(Duration::from_millis(50), notified.as_mut()).await;
            notified.set(arrived.notified());
            notified.as_mut().enable();
        }
        while mails.lock().unwrap().len() == before {
            assert!(Instant::now() < deadline, "no mail for escalation {i}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while mails.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "not every mail arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = wall.elapsed();

    // Match arrivals to escalations through the incident ids, in order.
    let incidents = store
        .incidents(medic::store::IncidentFilter {
            state: None,
            alertname: Some("BenchEscalation".into()),
            limit: n,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<String> = incidents.into_iter().map(|i| i.id).collect();
    ids.sort(); // ULIDs: creation order
    let (hooks, mails) = (hooks.lock().unwrap().clone(), mails.lock().unwrap().clone());
    let ms = |arrivals: &HashMap<String, f64>| -> Vec<f64> {
        ids.iter()
            .zip(&started)
            .map(|(id, t0)| (arrivals[id] - t0) * 1e3)
            .collect()
    };
    println!(
        "{n} escalations, one at a time, each to a webhook and an SMTP server ({:.1} s):",
        total.as_secs_f64()
    );
    report("decision -> webhook body received", ms(&hooks));
    report("decision -> mail accepted (SMTP)", ms(&mails));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let _ = sink.kill();
    let _ = sink.wait();
}

fn main() {
    let n = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}
