//! Test harness: starts the real `medic` binary on a free port with a generated config,
//! and builds Alertmanager webhook bodies.

#![allow(dead_code)]

pub mod alertmanager;
pub mod approval;
pub mod browser;
pub mod console;
pub mod db;
pub mod engine;
pub mod markdown;
pub mod prometheus;
pub mod receiver;
pub mod scenario;
pub mod smtp;
pub mod upgrade;

#[allow(unused_imports)]
pub use db::{store_config, store_url, TestDb};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const WEBHOOK_TOKEN: &str = "test-webhook-token";
pub const API_TOKEN: &str = "test-api-token";

/// A running `medic serve` and the directory it works in.
pub struct Medic {
    pub child: Child,
    pub addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// An `[escalation]` policy that pages one `file` channel, `<dir>/escalations.jsonl`: a
/// config must reach a person with every escalation, and tests about something else
/// page this file.
pub fn escalation_to_file(dir: &Path) -> String {
    format!(
        r#"
[escalation]
notify = ["escalations"]

[[escalation.channels]]
name = "escalations"
type = "file"
path = "{}"
"#,
        dir.join("escalations.jsonl").display()
    )
}

/// The notifications the `file` channel of [`escalation_to_file`] wrote, one JSON
/// document each.
pub fn escalations_in_file(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("escalations.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect()
}

/// The config used by default: tokens, a route to `restart.rhai`, a no-runbook catch,
/// escalations paged to a file.
pub fn default_config(dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
{store}
{escalation}

[runbooks]
dir = "{runbooks}"

[[routes]]
name = "restart"
matchers = ['alertname=~"ServiceDown|Restart.*"']
runbook = "restart.rhai"
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
    )
}

impl Medic {
    /// Starts medic in a new temporary directory with `default_config`.
    pub fn start() -> Medic {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut m = Medic::start_in(&dir, &default_config(&dir));
        m._tmp = Some(tmp);
        m
    }

    /// Starts medic in `dir` (kept between restarts) with config text `config`.
    pub fn start_in(dir: &Path, config: &str) -> Medic {
        Medic::start_in_env(dir, config, &[])
    }

    /// [`Medic::start_in`] with `env` added to medic's environment.
    pub fn start_in_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Medic {
        std::fs::create_dir_all(dir.join("runbooks")).unwrap();
        let runbook = dir.join("runbooks/restart.rhai");
        if !runbook.exists() {
            std::fs::write(&runbook, "log(\"restart\");\n").unwrap();
        }
        let config_path = dir.join("medic.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn medic");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "listening" {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "medic did not start; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Medic {
            child,
            addr,
            dir: dir.to_path_buf(),
            config: config_path,
            log,
            _tmp: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and waits; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait_exit(&mut self.child, Duration::from_secs(20))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Runs `medic <args> --config <this config>` and returns (exit code, stdout, stderr).
    pub fn run_cli(&self, args: &[&str]) -> (i32, String, String) {
        medic_cli(&self.dir, args, &self.config)
    }
}

impl Drop for Medic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn medic_cli(cwd: &Path, args: &[&str], config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(cwd)
        .output()
        .expect("run medic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("process did not exit within {limit:?}");
}

/// Writes an executable shell script to `<dir>/bin/<name>` and returns its absolute path.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Writes a runbook to `<dir>/runbooks/<name>`.
pub fn runbook(dir: &Path, name: &str, source: &str) {
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::write(dir.join("runbooks").join(name), source).unwrap();
}

/// One alert as Alertmanager sends it.
pub fn alert(name: &str, instance: &str, status: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": name, "instance": instance, "severity": "critical", "job": "node"},
        "annotations": {"summary": format!("{name} on {instance}"), "description": "multi\nline"},
        "startsAt": "2026-11-23T10:00:00Z",
        "endsAt": if status == "resolved" { "2026-11-23T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up%3D%3D0",
        "fingerprint": fingerprint_of(name, instance),
    })
}

pub fn fingerprint_of(name: &str, instance: &str) -> String {
    let mut h: u64 = 14695981039346656037;
    for b in format!("{name}/{instance}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(1099511628211);
    }
    format!("{h:016x}")
}

/// A version-4 webhook body around `alerts`.
pub fn body(alerts: Vec<Value>) -> Value {
    let status = if alerts.iter().any(|a| a["status"] == "firing") {
        "firing"
    } else {
        "resolved"
    };
    json!({
        "receiver": "medic",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": "ServiceDown"},
        "commonLabels": {"alertname": "ServiceDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"ServiceDown\"}",
        "truncatedAlerts": 0
    })
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `body` to /webhook with the test token; returns (status, JSON body).
pub async fn post_webhook(m: &Medic, body: &Value) -> (u16, Value) {
    let r = client()
        .post(m.url("/webhook"))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(body)
        .send()
        .await
        .expect("POST /webhook");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// GET an API path with the API token; returns the JSON body.
pub async fn api(m: &Medic, path: &str) -> Value {
    let r = client()
        .get(m.url(path))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET api");
    assert_eq!(r.status().as_u16(), 200, "GET {path}");
    r.json().await.unwrap()
}

pub async fn incidents(m: &Medic) -> Vec<Value> {
    api(m, "/api/v1/incidents?limit=1000").await["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `f` until it returns Some, or panics after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
