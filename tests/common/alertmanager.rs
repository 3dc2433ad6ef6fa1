//! A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port,
//! with a generated config whose only receiver is the medic under test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Alertmanager {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// The binary: `$MEDIC_ALERTMANAGER_BIN`, else the Debian package's, else `alertmanager`.
fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MEDIC_ALERTMANAGER_BIN") {
        return p.into();
    }
    for candidate in [
        "/usr/bin/prometheus-alertmanager",
        "/usr/local/bin/alertmanager",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!(
        "Alertmanager is not installed: run scripts/test.sh (it installs Debian's \
         prometheus-alertmanager) or set MEDIC_ALERTMANAGER_BIN"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Alertmanager {
    /// Starts Alertmanager delivering to `webhook_url` with `token` as bearer credentials.
    /// `repeat_interval` controls how often it resends unchanged alerts.
    pub async fn start(webhook_url: &str, token: &str, repeat_interval: &str) -> Alertmanager {
        Alertmanager::start_for(&[webhook_url.to_string()], token, repeat_interval).await
    }

    /// Starts Alertmanager with one receiver that posts every notification to each of
    /// `webhook_urls` (several replicas of medic).
    pub async fn start_for(
        webhook_urls: &[String],
        token: &str,
        repeat_interval: &str,
    ) -> Alertmanager {
        let webhooks: String = webhook_urls
            .iter()
            .map(|url| {
                format!(
                    r#"
      - url: '{url}'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: '{token}'"#
                )
            })
            .collect();
        let config = format!(
            r#"
route:
  receiver: medic
  group_by: ['alertname', 'instance']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: {repeat_interval}
receivers:
  - name: medic
    webhook_configs:{webhooks}
"#
        );
        Alertmanager::start_with(&config, &[]).await
    }

    /// Starts Alertmanager on the config `config`, written as `alertmanager.yml` in a new
    /// directory next to `files` (name, content): relative paths in the config find them.
    pub async fn start_with(config: &str, files: &[(&str, &str)]) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", am.url);
        super::eventually(Duration::from_secs(30), "Alertmanager ready", || {
            let ready = ready.clone();
            async move {
                let r = super::client().get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        am
    }

    /// Posts alerts to Alertmanager's API v2, as Prometheus would.
    pub async fn post_alerts(&self, alerts: &Value) {
        let r = super::client()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .expect("POST /api/v2/alerts");
        assert!(
            r.status().is_success(),
            "Alertmanager refused alerts: {}",
            r.status()
        );
    }

    /// Alertmanager's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
