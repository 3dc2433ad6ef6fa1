//! A history made on the in-process engine (`engine.rs`, paused time from a fixed start):
//! a temporary directory of its own with files written before the engine starts, and the
//! waits and actions that make a history (incidents in a state, an ack, time moving) and
//! read it back with the real `medic` binary on the same store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::engine::{settle, until, Engine};
use medic::store::IncidentFilter;

pub struct Scenario {
    pub e: Engine,
    /// The engine's directory: `medic.toml`, `runbooks/`, its store on SQLite.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl std::ops::Deref for Scenario {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.e
    }
}

impl Scenario {
    /// Runs `prepare(dir)` (scripts, runbooks), writes `config(dir)` to `dir/medic.toml`,
    /// and starts the engine with its clock at `start`.
    pub async fn start(
        start: DateTime<Utc>,
        prepare: impl Fn(&Path),
        config: impl Fn(&Path) -> String,
    ) -> Scenario {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("runbooks")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        prepare(&dir);
        std::fs::write(dir.join("medic.toml"), config(&dir)).unwrap();
        let e = Engine::start(&dir, start).await;
        Scenario { e, dir, _tmp: tmp }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("medic.toml")
    }

    /// The incidents in `state` (with their timelines), once there are `n` (without moving
    /// the clock).
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

    /// Acknowledges incident `id` as `by` through the API.
    pub async fn ack(&self, id: &str, by: &str) {
        let path = format!("/api/v1/incidents/{id}/ack");
        let (status, answer) = self.api_post(&path, json!({ "by": by })).await;
        assert_eq!(status, 200, "ack {id}: {answer}");
    }

    /// Moves the paused clock forward by `d`, then lets the engine's tasks run.
    pub async fn advance(&self, d: Duration) {
        tokio::time::advance(d).await;
        settle().await;
    }

    /// Runs `medic <args> --config <its config>`: the real binary, on the same store.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        super::medic_cli(&self.dir, args, &self.config())
    }

    pub async fn stop(self) {
        self.e.stop().await;
    }
}
