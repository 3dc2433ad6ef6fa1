//! The engine in-process on paused time, in a directory that outlives it: the same
//! composition root as `medic serve` (`medic::app::run`), SQLite in the directory (or
//! PostgreSQL with `MEDIC_TEST_STORE=postgres`), and a clock that follows tokio's paused
//! clock. [`Engine::restart`] stops it and starts a new one on the same store, its clock
//! going on from where the old one was: what the store keeps across a restart is checked
//! without sleeping. (`tests/in_process.rs` has its own, older copy of this harness.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use super::{body, client, API_TOKEN, WEBHOOK_TOKEN};
use medic::clock::Clock;
use medic::store::Store;

/// How long (real time) a test waits for something the engine does at once.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Engine {
    pub store: Store,
    pub clock: Clock,
    pub addr: std::net::SocketAddr,
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    busy: JoinHandle<()>,
}

impl Engine {
    /// Starts the engine on `dir/medic.toml` (written by the caller), its clock at `start`.
    pub async fn start(dir: &Path, start: chrono::DateTime<chrono::Utc>) -> Engine {
        // Keeps the runtime busy, so the paused clock moves only by `advance`; it sleeps a
        // little (real time) each round, so that "busy" does not mean a core spinning.
        let busy = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_micros(500));
                tokio::task::yield_now().await;
            }
        });
        let path = dir.join("medic.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = medic::config::Config::parse(&path, &text, &|_| None).unwrap();
        let loaded = medic::loaded::Loaded::from_config(config).unwrap();
        let metrics = Arc::new(medic::metrics::Metrics::default());
        let store = Store::connect(&loaded.config.store, metrics.store.clone()).unwrap();
        let clock = Clock::following_tokio(start);
        let engine = medic::app::Engine {
            loaded,
            store: store.clone(),
            metrics,
            clock: clock.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(medic::app::run(listener, engine, async {
            let _ = stopped.await;
        }));
        Engine {
            store,
            clock,
            addr,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            server: Some(server),
            busy,
        }
    }

    /// Stops this engine and starts a new one on the same directory and store, its clock
    /// going on from this one's.
    pub async fn restart(self) -> Engine {
        let (dir, now) = (self.dir.clone(), self.clock.now());
        self.stop().await;
        Engine::start(&dir, now).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_webhook(&self, alerts: Vec<Value>) {
        let r = client()
            .post(self.url("/webhook"))
            .bearer_auth(WEBHOOK_TOKEN)
            .json(&body(alerts))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }

    pub async fn api(&self, path: &str) -> Value {
        client()
            .get(self.url(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs `body` (JSON) to an API path with the token; the status and the answer.
    pub async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(self.url(path))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The documents the `file` channel `name` (at `dir/<name>.jsonl`) wrote.
    pub fn sent(&self, name: &str) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.jsonl"))).unwrap_or_default();
        // Complete lines only: the channel may be writing the next one.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Moves the paused clock so that it reads `at` minus `before` (it never goes back),
    /// then lets the workers run.
    pub async fn advance_to(&self, at: chrono::DateTime<chrono::Utc>, before: Duration) {
        let target = at - chrono::Duration::from_std(before).unwrap();
        if let Ok(d) = (target - self.clock.now()).to_std() {
            tokio::time::advance(d).await;
        }
        settle().await;
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        // Stopping waits on grace periods: let time run for it.
        self.busy.abort();
        self.server.take().unwrap().await.unwrap().unwrap();
    }
}

/// Lets the engine's tasks run (real time; the paused clock does not move).
pub async fn settle() {
    let end = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < end {
        tokio::task::yield_now().await;
    }
}

/// Polls `f` (without moving the paused clock) until it answers, for at most [`WAIT`] of
/// real time.
pub async fn until<T, F, Fut>(what: &str, mut f: F) -> T
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
        tokio::task::yield_now().await;
    }
}
