//! Guard benchmarks.
//!
//!     cargo bench --bench guards
//!
//! 1. The cost of one guard decision (route rate limit with a key, breaker, in-flight cap).
//! 2. Webhook acknowledgement latency of a steady trickle of deliveries on a quiet server,
//!    and the same trickle while a storm of 10,000 alerts is posted and processed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use medic::app::Engine;
use medic::config::Config;
use medic::guard::{Candidate, Decision, Guards};
use medic::loaded::Loaded;
use medic::metrics::Metrics;
use medic::store::Store;
use serde_json::json;

const ROUTE: &str = r#"
[[routes]]
name = "disk"
runbook = "noop.rhai"
matchers = ['alertname=~"Disk.*|Storm"']
rate = "3/10m"
rate_key = ["instance"]
max_in_flight = 2
in_flight_key = ["service"]
breaker = { failures = 3, cooldown = "15m", key = ["instance"] }
"#;

fn decisions() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = Config::parse(
            std::path::Path::new("b.toml"),
            &format!("{ROUTE}\n[escalation]\nnotify = [\"log\"]\n[[escalation.channels]]\nname = \"log\"\ntype = \"file\"\npath = \"escalations.jsonl\"\n"),
            &|_| None,
        )
        .unwrap();
        let g = Guards::new(Vec::new(), None);
        let limits = g.limits(Arc::new(cfg));
        let candidates: Vec<Candidate> = (0..10_000)
            .map(|i| Candidate {
                id: format!("i{i}"),
                route: Some("disk".into()),
                labels: [("instance", format!("node-{}", i % 500)), ("service", format!("s{}", i % 50))]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
            .collect();
        let now = Utc::now();
        let rounds = 20;
        let started = Instant::now();
        let mut admitted = 0;
        for _ in 0..rounds {
            for c in &candidates {
                if let Decision::Run(t) = g.admit(&limits, c, now) {
                    admitted += 1;
                    g.release(&t);
                }
            }
        }
        let per = started.elapsed() / (rounds * candidates.len() as u32);
        println!(
            "guard decision (pause, window, in-flight cap, breaker, keyed route rate, global): {:.2} µs each ({} decisions, {admitted} admitted)",
            per.as_secs_f64() * 1e6,
            rounds as usize * candidates.len()
        );
    });
}

async fn start(
    dir: &std::path::Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::write(
        dir.join("runbooks/noop.rhai"),
        "let x = alert.labels.instance;\n",
    )
    .unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nbody_limit = \"4MiB\"\n[store]\nurl = \"sqlite://{}\"\n[runbooks]\ndir = \"{}\"\n[limits]\nmax_concurrent = 4\nmax_queued = 500\n{ROUTE}",
        dir.join("medic.db").display(),
        dir.join("runbooks").display()
    );
    let cfg = Config::parse(
        &dir.join("medic.toml"),
        &format!(
            "{text}\n[escalation]\nnotify = [\"log\"]\n[[escalation.channels]]\nname = \"log\"\ntype = \"file\"\npath = \"{}\"\n",
            dir.join("escalations.jsonl").display()
        ),
        &|_| None,
    ).unwrap();
    let loaded = Loaded::from_config(cfg).unwrap_or_else(|p| panic!("{p:?}"));
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&loaded.config.store.url, metrics.store.clone()).unwrap();
    let app = Engine::new(loaded, store, metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic::app::run(listener, app, async {
        let _ = stopped.await;
    }));
    (format!("http://{addr}/webhook"), stop, server)
}

/// Sends `n` single-alert deliveries at `per_second`, one at a time; returns sorted latencies.
async fn trickle(url: &str, n: usize, per_second: u64, tag: &str) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let body = json!({"version": "4", "status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": "DiskFull", "instance": format!("{tag}-{i}")}, "startsAt": Utc::now().to_rfc3339()}]});
        let t = Instant::now();
        let r = client.post(url).json(&body).send().await.unwrap();
        assert!(r.status().is_success());
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

fn pct(l: &[Duration], p: f64) -> f64 {
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1e3
}

async fn storm_latency() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, stop, server) = start(tmp.path()).await;
    let quiet = trickle(&url, 1000, 200, "quiet").await;

    // The storm: 10,000 distinct alerts in 200 deliveries of 50, 8 senders at once.
    let storm_url = url.clone();
    let storm = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let started = Instant::now();
        let mut senders = Vec::new();
        for w in 0..8 {
            let (client, url) = (client.clone(), storm_url.clone());
            senders.push(tokio::spawn(async move {
                for d in (w..200).step_by(8) {
                    let alerts: Vec<_> = (0..50)
                        .map(|i| json!({"status": "firing", "labels": {"alertname": "Storm", "instance": format!("n{}", d * 50 + i)},
                                        "startsAt": Utc::now().to_rfc3339()}))
                        .collect();
                    let body = json!({"version": "4", "status": "firing", "alerts": alerts});
                    assert!(client.post(&url).json(&body).send().await.unwrap().status().is_success());
                }
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        started.elapsed()
    });
    let during = trickle(&url, 1000, 200, "storm").await;
    let storm_took = storm.await.unwrap();
    println!(
        "ack latency, 200 deliveries/s: quiet p50 {:.2} ms p99 {:.2} ms | during a 10,000-alert storm p50 {:.2} ms p99 {:.2} ms (storm acknowledged in {:.0} ms)",
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        pct(&during, 0.5),
        pct(&during, 0.99),
        storm_took.as_secs_f64() * 1e3
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn main() {
    decisions();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(storm_latency());
}
