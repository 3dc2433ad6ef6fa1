//! Remediation benchmarks: what the engine itself costs per remediation, steps excluded.
//!
//!     cargo bench --bench remediation
//!
//! 1. Compiling a runbook versus reusing its AST (why medic compiles once, at load).
//! 2. 1,000 distinct alerts already stored, remediated by a trivial runbook: the runner's
//!    claim, the sandboxed run, and the audit writes around it.
//! 3. The same 1,000 alerts end to end: posted over HTTP, routed, stored, remediated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use medic::app::Engine;
use medic::config::Config;
use medic::incident::State;
use medic::ingest::payload::{Alert, Status};
use medic::loaded::Loaded;
use medic::metrics::Metrics;
use medic::runbook::sandbox::{Cancel, Host, RunEnd, Sandbox, Stop};
use medic::store::{Delivery, Routed, Store};
use rhai::{Array, Dynamic, Map};

const N: usize = 1000;

/// A realistic runbook's size and shape (the shipped systemd one), for compile timing.
const RUNBOOK: &str = include_str!("../runbooks/systemd_unit_failed.rhai");
/// The trivial runbook: reads the alert, takes no step.
const TRIVIAL: &str =
    "let unit = alert.labels[\"instance\"];\nif unit == () { throw \"no instance\"; }\n";

struct NoHost;
impl Host for NoHost {
    fn exec(&self, _: &str, _: Vec<String>) -> Result<Map, Stop> {
        let mut m = Map::new();
        m.insert("code".into(), Dynamic::from(0_i64));
        m.insert("stdout".into(), Dynamic::from("active".to_string()));
        Ok(m)
    }
    fn http(&self, _: &str, _: &str, _: &str) -> Result<Map, Stop> {
        Ok(Map::new())
    }
    fn log(&self, _: &str) {}
    fn sleep(&self, _: Duration) -> Result<(), Stop> {
        Ok(())
    }
    fn silence(&self, _: &str, _: &str) -> Result<String, Stop> {
        Ok(String::new())
    }
    fn query(&self, _: &str) -> Result<Array, Stop> {
        Ok(Array::new())
    }
}

fn config(dir: &std::path::Path) -> Config {
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::write(dir.join("runbooks/trivial.rhai"), TRIVIAL).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}\"\n[runbooks]\ndir = \"{}\"\n[limits]\nmax_concurrent = 16\n\
         [[routes]]\nname = \"bench\"\nmatchers = ['alertname=\"Bench\"']\nrunbook = \"trivial.rhai\"\n",
        dir.join("medic.db").display(),
        dir.join("runbooks").display()
    );
    Config::parse(
        &dir.join("medic.toml"),
        &format!(
            "{text}\n[escalation]\nnotify = [\"log\"]\n[[escalation.channels]]\nname = \"log\"\ntype = \"file\"\npath = \"{}\"\n",
            dir.join("escalations.jsonl").display()
        ),
        &|_| None,
    ).expect("bench config")
}

fn alert(i: usize) -> Alert {
    let labels = [
        ("alertname", "Bench".to_string()),
        ("instance", format!("node-{i}:9100")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Alert {
        status: Status::Firing,
        fingerprint: medic::ingest::payload::fingerprint(&labels),
        labels,
        annotations: Default::default(),
        starts_at: Utc::now(),
        ends_at: None,
        generator_url: String::new(),
        extra: Default::default(),
    }
}

fn compile_versus_reuse() {
    let cfg = Config::parse(std::path::Path::new("x.toml"), "", &|_| None).unwrap();
    let sandbox = Sandbox::new(&cfg.runbooks);
    let rounds = 2000;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(sandbox.compile(RUNBOOK).unwrap());
    }
    let compile = started.elapsed() / rounds;
    let ast = sandbox.compile(RUNBOOK).unwrap();
    let mut labels = Map::new();
    labels.insert("name".into(), Dynamic::from("nginx.service".to_string()));
    let mut alert = Map::new();
    alert.insert("labels".into(), Dynamic::from_map(labels));
    let started = Instant::now();
    for _ in 0..rounds {
        let end = sandbox.run(
            &ast,
            vec![("alert", Dynamic::from_map(alert.clone()))],
            Box::new(NoHost),
            Cancel::default(),
        );
        assert_eq!(end, RunEnd::Completed);
    }
    let run = started.elapsed() / rounds;
    println!(
        "compile systemd_unit_failed.rhai ({} bytes): {:>8.1} µs",
        RUNBOOK.len(),
        compile.as_secs_f64() * 1e6
    );
    println!(
        "run its compiled AST (steps stubbed):        {:>8.1} µs",
        run.as_secs_f64() * 1e6
    );
}

async fn wait_all_verifying(store: &Store, n: u64) {
    loop {
        let counts = store.count_by_state().await.unwrap();
        let verifying = counts
            .iter()
            .find(|(s, _)| *s == State::Verifying)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        if verifying >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Stores N queued incidents, then starts the server (and its runner) and times the runs.
async fn remediation_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let loaded = Loaded::from_config(cfg).unwrap_or_else(|p| panic!("{p:?}"));
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&loaded.config.store.url, metrics.store.clone()).unwrap();
    for i in 0..N {
        let d = Delivery {
            received_at: Utc::now(),
            source: "bench".into(),
            receiver: "medic".into(),
            status: Status::Firing,
            group_key: String::new(),
            external_url: String::new(),
            truncated_alerts: 0,
            extra: Default::default(),
            alerts: vec![(
                alert(i),
                Routed::Runbook {
                    route: "bench".into(),
                    runbook: "trivial.rhai".into(),
                },
            )],
        };
        store.ingest(d).await.unwrap();
    }
    let app = Engine::new(loaded, store.clone(), metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let m2 = metrics.clone();
    let server = tokio::spawn(medic::app::run(listener, app, async {
        let _ = stopped.await;
    }));
    wait_all_verifying(&store, N as u64).await;
    let took = started.elapsed();
    println!(
        "{N} stored alerts remediated (claim + run + audit, max_concurrent 16): {:>6.0} ms total, {:>6.3} ms per remediation",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3 / N as f64
    );
    if std::env::var("BENCH_DEBUG").is_ok() {
        for l in m2
            .render()
            .lines()
            .filter(|l| l.contains("_sum") || l.contains("_count"))
        {
            println!("  {l}");
        }
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Posts N distinct alerts over HTTP (16 at a time) and times until all are verifying.
async fn end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let loaded = Loaded::from_config(cfg).unwrap_or_else(|p| panic!("{p:?}"));
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&loaded.config.store.url, metrics.store.clone()).unwrap();
    let app = Engine::new(loaded, store.clone(), metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(medic::app::run(listener, app, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (client, next) = (client.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= N {
                    break;
                }
                let body = serde_json::json!({
                    "version": "4", "status": "firing", "receiver": "medic",
                    "alerts": [{"status": "firing", "labels": {"alertname": "Bench", "instance": format!("node-{i}:9100")},
                                "annotations": {}, "startsAt": Utc::now().to_rfc3339()}]
                });
                let r = client.post(format!("http://{addr}/webhook")).json(&body).send().await.unwrap();
                assert!(r.status().is_success());
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let acked = started.elapsed();
    wait_all_verifying(&store, N as u64).await;
    let took = started.elapsed();
    println!(
        "{N} alerts posted, routed, stored and remediated end to end: {:>6.0} ms (all acknowledged after {:.0} ms)",
        took.as_secs_f64() * 1e3,
        acked.as_secs_f64() * 1e3
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep it quick.
    compile_versus_reuse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(remediation_only());
    rt.block_on(end_to_end());
}
