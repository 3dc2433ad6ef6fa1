//! A real Prometheus server on a free loopback port, scraping one target every second and
//! evaluating a rule file, and `promtool` beside it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

/// The server: `$MEDIC_PROMETHEUS_BIN`, else Debian's `prometheus`.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MEDIC_PROMETHEUS_BIN") {
        return p.into();
    }
    for candidate in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!(
        "Prometheus is not installed: run scripts/test.sh (it installs Debian's prometheus) \
         or set MEDIC_PROMETHEUS_BIN"
    );
}

/// `promtool`, which Debian's `prometheus` package installs beside the server.
pub fn promtool() -> PathBuf {
    let beside = binary().with_file_name("promtool");
    if beside.exists() {
        return beside;
    }
    for candidate in ["/usr/bin/promtool", "/usr/local/bin/promtool"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("promtool is not installed: run scripts/test.sh (Debian's prometheus package ships it)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) as job `job` every second, with
    /// `rules` loaded and evaluated every second.
    pub async fn start(job: &str, target: &str, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - '{rules}'
scrape_configs:
  - job_name: '{job}'
    static_configs:
      - targets: ['{target}']
"#,
            rules = rules.display(),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let ready = format!("{}/-/ready", p.url);
        super::eventually(Duration::from_secs(60), "Prometheus ready", || {
            let ready = ready.clone();
            async move {
                let r = super::client().get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        p
    }

    /// The JSON answer of an instant query (status and all), whatever it is.
    pub async fn query(&self, expr: &str) -> Value {
        super::client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("GET /api/v1/query")
            .json()
            .await
            .expect("Prometheus answers JSON")
    }

    /// The JSON answer of an API path (`/api/v1/rules`, `/api/v1/alerts`).
    pub async fn api(&self, path: &str) -> Value {
        super::client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET Prometheus API")
            .json()
            .await
            .expect("Prometheus answers JSON")
    }

    /// Prometheus's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
