//! The engine in-process on paused time, starting at a fixed UTC time, so that what it
//! stores carries times a test knows exactly: the same composition root as `medic serve`
//! (`medic::app::run`), a clock that follows tokio's paused clock from `start`, and SQLite
//! in a temporary directory (or PostgreSQL with `MEDIC_TEST_STORE=postgres`). Time moves
//! only by [`Engine::advance`]. The test's runtime must start paused
//! (`#[tokio::test(start_paused = true)]`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{body, client, API_TOKEN, WEBHOOK_TOKEN};
use medic::clock::Clock;
use medic::store::{IncidentFilter, Store};

/// How long (real time) a wait for something the engine does at once may take.
const WAIT: Duration = Duration::from_secs(30);

pub struct Engine {
    pub store: Store,
    pub clock: Clock,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    busy: JoinHandle<()>,
}

impl Engine {
    /// Starts the engine at `start` with the config `config_of(dir)` and the runbooks given
    /// (`<dir>/runbooks/<name>`). `prepare(dir)` runs first (to write scripts).
    pub async fn start(
        start: DateTime<Utc>,
        prepare: impl Fn(&Path),
        config_of: impl Fn(&Path) -> String,
        runbooks: &[(&str, String)],
    ) -> Engine {
        // Keeps the runtime busy, so the paused clock moves only by `advance`; it sleeps a
        // little (real time) each round, so that busy does not mean a core spinning.
        let busy = tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_micros(500));
                tokio::task::yield_now().await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runbooks")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        prepare(dir.path());
        for (name, source) in runbooks {
            std::fs::write(dir.path().join("runbooks").join(name), source).unwrap();
        }
        let path = dir.path().join("medic.toml");
        let text = config_of(dir.path());
        std::fs::write(&path, &text).unwrap();
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
            dir,
            config: path,
            stop: Some(stop),
            server: Some(server),
            busy,
        }
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

    /// Acknowledges incident `id` as `by` through the API.
    pub async fn ack(&self, id: &str, by: &str) {
        let r = client()
            .post(self.url(&format!("/api/v1/incidents/{id}/ack")))
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({ "by": by }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "ack {id}");
    }

    /// The incidents in `state`, once there are `n` (without moving the clock).
    pub async fn when_in_state(&self, state: &str, n: usize) -> Vec<Value> {
        let st = medic::incident::State::parse(state).unwrap();
        until(&format!("{n} incidents {state}"), || async {
            let list = self
                .store
                .incidents(IncidentFilter {
                    state: Some(st),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .ok()?;
            if list.len() < n {
                return None;
            }
            let mut out = Vec::new();
            for i in list {
                out.push(self.api(&format!("/api/v1/incidents/{}", i.id)).await);
            }
            Some(out)
        })
        .await
    }

    /// The incident `id` with its timeline, once `event` is in it.
    pub async fn when_event(&self, id: &str, event: &str) -> Value {
        until(&format!("{event} of {id}"), || async {
            let inc = self.api(&format!("/api/v1/incidents/{id}")).await;
            let has = inc["timeline"]
                .as_array()
                .is_some_and(|t| t.iter().any(|e| e["event"] == event));
            has.then_some(inc)
        })
        .await
    }

    /// Moves the paused clock forward by `d`, then lets the engine's tasks run.
    pub async fn advance(&self, d: Duration) {
        tokio::time::advance(d).await;
        settle().await;
    }

    /// Runs `medic <args> --config <this config>` (the real binary, on the same store).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        super::medic_cli(self.dir.path(), args, &self.config)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
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
