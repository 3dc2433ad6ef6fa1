//! The runbooks shipped in `runbooks/`, end to end through the real binary.
//!
//! Each test copies a shipped runbook, unchanged, into a temporary runbook directory.
//! The programs it runs are fakes: small shell scripts in `<tmp>/bin` that record their
//! argv and print canned answers. The config lists them by bare name (`"systemctl"`,
//! `"df"`, `"cleanup-disk"`) exactly as a production config does, and sets
//! `runbooks.exec_path` so that those names resolve to the fakes. HTTP calls go to a
//! small server started by the test, which records every request.

use crate::common;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);

/// A config whose `[runbooks]` resolves bare command names in `<dir>/bin` first.
fn config(dir: &Path, runbooks_extra: &str, routes: &str) -> String {
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
timeout = "20s"
step_timeout = "10s"
http_timeout = "5s"
exec_path = "{bin}:/usr/bin:/bin"
{runbooks_extra}

{routes}
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
        bin = dir.join("bin").display(),
    )
}

/// Copies the shipped runbook `name` into `<dir>/runbooks`, byte for byte.
fn ship(dir: &Path, name: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks")
        .join(name);
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    std::fs::copy(&from, dir.join("runbooks").join(name))
        .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// Writes the fake program `<dir>/bin/<name>`. The script first appends one line to
/// `<dir>/<name>.calls` with its arguments, each in brackets (`[restart][--][x.service]`),
/// then runs `body`. Returns the path of the calls file.
fn fake(dir: &Path, name: &str, body: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.join(format!("{name}.calls"));
    let path = bin.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nline=$(printf '[%s]' \"$@\")\nprintf '%s\\n' \"$line\" >> '{}'\n{body}\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    calls
}

/// The recorded calls of a fake program (one line per run), or none.
fn calls(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// The recorded calls that mention `needle`.
fn calls_with(file: &Path, needle: &str) -> Vec<String> {
    calls(file)
        .into_iter()
        .filter(|c| c.contains(needle))
        .collect()
}

/// A firing alert with exactly these labels and annotations; `instance` tells the
/// alerts of one test apart.
fn custom_alert(labels: Value, annotations: Value) -> Value {
    let mut a = alert("X", "i", "firing");
    a["labels"] = labels;
    a["annotations"] = annotations;
    a.as_object_mut().unwrap().remove("fingerprint");
    a
}

/// Waits until the incident of `alertname` on `instance` has left queued/remediating;
/// returns it with its timeline.
async fn settled(m: &Medic, alertname: &str, instance: &str) -> Value {
    let id = eventually(WAIT, &format!("an incident for {instance}"), || async {
        let list = api(m, &format!("/api/v1/incidents?alertname={alertname}")).await;
        list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["labels"]["instance"] == instance)?["id"]
            .as_str()
            .map(String::from)
    })
    .await;
    eventually(WAIT, &format!("the run for {instance} to end"), || async {
        let one = api(m, &format!("/api/v1/incidents/{id}")).await;
        (!["queued", "remediating"].contains(&one["state"].as_str().unwrap_or(""))).then_some(one)
    })
    .await
}

/// The details of the timeline entries named `event`, in order.
fn events(incident: &Value, event: &str) -> Vec<Value> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["detail"].clone())
        .collect()
}

/// The `runbook_log` messages, in order.
fn logs(incident: &Value) -> Vec<String> {
    events(incident, "runbook_log")
        .iter()
        .map(|d| d["message"].as_str().unwrap().to_string())
        .collect()
}

/// `step_finished` details of one kind of step (`exec`, `http`, `sleep`).
fn finished(incident: &Value, step: &str) -> Vec<Value> {
    events(incident, "step_finished")
        .into_iter()
        .filter(|d| d["step"] == step)
        .collect()
}

/// `step_started` details of one kind of step.
fn started(incident: &Value, step: &str) -> Vec<Value> {
    events(incident, "step_started")
        .into_iter()
        .filter(|d| d["step"] == step)
        .collect()
}

fn assert_escalated(inc: &Value, message: &str) {
    assert_eq!(inc["state"], "escalated", "{inc:#}");
    assert_eq!(inc["reason"], "requested", "{inc:#}");
    assert_eq!(inc["message"], message, "{inc:#}");
    let end = events(inc, "run_finished");
    assert_eq!(end[0]["reason"], "requested", "{inc:#}");
    assert_eq!(end[0]["message"], message, "{inc:#}");
}

fn assert_completed(inc: &Value) {
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    assert!(inc["reason"].is_null(), "{inc:#}");
    assert_eq!(events(inc, "run_finished")[0]["result"], "completed");
}

/// One request the test server received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// A tiny HTTP/1.1 server on a free loopback port. Each path has a list of canned
/// answers `(status, body)`, used in order; the last one repeats. Unknown paths get 404.
struct TestServer {
    addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(answers: Vec<(&str, Vec<(u16, &str)>)>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answers: HashMap<String, VecDeque<(u16, String)>> = answers
            .into_iter()
            .map(|(path, list)| {
                let list = list.into_iter().map(|(s, b)| (s, b.to_string())).collect();
                (path.to_string(), list)
            })
            .collect();
        let answers = Arc::new(Mutex::new(answers));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let answers = answers.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut conn).await else {
                        return;
                    };
                    let (status, body) = {
                        let mut all = answers.lock().unwrap();
                        match all.get_mut(&req.path) {
                            Some(list) if list.len() > 1 => list.pop_front().unwrap(),
                            Some(list) => list[0].clone(),
                            None => (404, "no such path".to_string()),
                        }
                    };
                    seen.lock().unwrap().push(req);
                    let reply = format!(
                        "HTTP/1.1 {status} Canned\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        TestServer {
            addr,
            requests,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The requests received for `path`, in order.
    fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut first = head.lines().next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned();
    Some(Request { method, path, body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_failed_restarts_the_unit_and_escalates_when_it_stays_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ship(dir, "systemd_unit_failed.rhai");
    // Units named broken* do not come back; nope.service does not exist.
    let systemctl = fake(
        dir,
        "systemctl",
        r#"case "$1 $3" in
  "restart nope.service") echo "Failed to restart nope.service: Unit nope.service not found." >&2; exit 5 ;;
  "restart "*) exit 0 ;;
  "is-active broken"*) echo failed; exit 3 ;;
  "is-active "*) echo active; exit 0 ;;
esac
exit 1"#,
    );
    let routes = r#"
[[routes]]
name = "systemd-unit-failed"
matchers = ['alertname="SystemdUnitFailed"']
runbook = "systemd_unit_failed.rhai"
"#;
    let cfg = config(dir, r#"allowed_commands = ["systemctl"]"#, routes);
    let m = Medic::start_in(dir, &cfg);

    let unit_alert = |instance: &str, unit: &str| {
        custom_alert(
            json!({"alertname": "SystemdUnitFailed", "instance": instance, "severity": "critical",
                   "name": unit, "state": "failed"}),
            json!({"summary": format!("{unit} failed")}),
        )
    };
    let (status, reply) = post_webhook(
        &m,
        &body(vec![
            unit_alert("web1", "nginx.service"),
            unit_alert("web2", "broken-app.service"),
            unit_alert("web3", "-H.service"),
            unit_alert("web4", "nope.service"),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // Success: restarted, then confirmed active.
    let ok = settled(&m, "SystemdUnitFailed", "web1").await;
    assert_completed(&ok);
    assert_eq!(
        calls_with(&systemctl, "nginx.service"),
        [
            "[restart][--][nginx.service]",
            "[is-active][--][nginx.service]"
        ]
    );
    let execs = started(&ok, "exec");
    assert_eq!(execs.len(), 2, "{ok:#}");
    assert_eq!(execs[0]["args"]["program"], "systemctl");
    assert_eq!(
        execs[0]["args"]["path"],
        dir.join("bin/systemctl").display().to_string()
    );
    assert_eq!(
        execs[0]["args"]["args"],
        json!(["restart", "--", "nginx.service"])
    );
    let done = finished(&ok, "exec");
    assert_eq!(done.len(), 2);
    assert_eq!(done[0]["code"], 0);
    assert_eq!(done[1]["code"], 0);
    assert_eq!(done[1]["stdout"], "active\n");
    assert_eq!(
        logs(&ok),
        ["restarting nginx.service", "nginx.service is active"]
    );

    // Main failure: the unit is still failed after the restart.
    let down = settled(&m, "SystemdUnitFailed", "web2").await;
    assert_escalated(&down, "broken-app.service is \"failed\" after the restart");
    assert_eq!(
        calls_with(&systemctl, "broken-app.service"),
        [
            "[restart][--][broken-app.service]",
            "[is-active][--][broken-app.service]"
        ]
    );
    let done = finished(&down, "exec");
    assert_eq!(done[0]["code"], 0);
    assert_eq!(done[1]["code"], 3);
    assert_eq!(logs(&down), ["restarting broken-app.service"]);

    // A label that is not a unit name (here it would be an option) runs nothing.
    let bad = settled(&m, "SystemdUnitFailed", "web3").await;
    assert_escalated(
        &bad,
        "label name=\"-H.service\" is not a .service, .socket or .timer unit name; nothing was run",
    );
    assert!(events(&bad, "step_started").is_empty(), "{bad:#}");
    assert!(calls_with(&systemctl, "-H.service").is_empty());

    // The restart itself fails: escalated with systemctl's exit code and stderr.
    let missing = settled(&m, "SystemdUnitFailed", "web4").await;
    assert_escalated(
        &missing,
        "systemctl restart nope.service failed with exit code 5: \
         Failed to restart nope.service: Unit nope.service not found.",
    );
    assert_eq!(
        calls_with(&systemctl, "nope.service"),
        ["[restart][--][nope.service]"]
    );
    assert_eq!(finished(&missing, "exec")[0]["code"], 5);

    assert_eq!(calls(&systemctl).len(), 5, "{:?}", calls(&systemctl));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_cleans_up_and_escalates_when_the_disk_stays_full() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ship(dir, "disk_full.rhai");
    let cleanup = fake(
        dir,
        "cleanup-disk",
        r#"if [ "$2" = /data ]; then echo "refusing /data: not a known mountpoint" >&2; exit 3; fi
echo "removed 1.2G from $2""#,
    );
    let df = fake(
        dir,
        "df",
        r#"case "$3" in
  /) printf 'Use%%\n 42%%\n' ;;
  /var) printf 'Use%%\n 97%%\n' ;;
  *) echo "df: $3: No such file or directory" >&2; exit 1 ;;
esac"#,
    );
    let routes = r#"
[[routes]]
name = "disk-full"
matchers = ['alertname="DiskFull"']
runbook = "disk_full.rhai"
"#;
    let cfg = config(dir, r#"allowed_commands = ["cleanup-disk", "df"]"#, routes);
    let m = Medic::start_in(dir, &cfg);

    let disk_alert = |instance: &str, mountpoint: Option<&str>, annotations: Value| {
        let mut labels =
            json!({"alertname": "DiskFull", "instance": instance, "severity": "warning"});
        if let Some(mp) = mountpoint {
            labels["mountpoint"] = json!(mp);
        }
        custom_alert(labels, annotations)
    };
    let (status, reply) = post_webhook(
        &m,
        &body(vec![
            // No mountpoint label: "/"; a stricter limit than the default.
            disk_alert("db1", None, json!({"medic_max_percent": "50"})),
            disk_alert("db2", Some("/var"), json!({"summary": "/var is full"})),
            disk_alert("db3", Some("/data"), json!({})),
            disk_alert("db4", Some("/srv"), json!({"medic_max_percent": "lots"})),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // Success: cleaned, and df shows 42% <= 50%.
    let ok = settled(&m, "DiskFull", "db1").await;
    assert_completed(&ok);
    assert_eq!(
        calls_with(&cleanup, "[--mountpoint][/]"),
        ["[--mountpoint][/]"]
    );
    assert_eq!(calls_with(&df, "[--][/]"), ["[--output=pcent][--][/]"]);
    let done = finished(&ok, "exec");
    assert_eq!(done.len(), 2, "{ok:#}");
    assert_eq!(done[0]["program"], "cleanup-disk");
    assert_eq!(done[0]["code"], 0);
    assert_eq!(done[0]["stdout"], "removed 1.2G from /\n");
    assert_eq!(done[1]["program"], "df");
    assert_eq!(done[1]["code"], 0);
    assert_eq!(
        logs(&ok),
        [
            "cleaning up / (limit 50% used)",
            "/ is 42% full after the cleanup (limit 50%)"
        ]
    );

    // Main failure: still above the default limit after the cleanup.
    let full = settled(&m, "DiskFull", "db2").await;
    assert_escalated(
        &full,
        "/var is still 97% full after the cleanup (limit 90%)",
    );
    assert_eq!(calls_with(&cleanup, "/var"), ["[--mountpoint][/var]"]);
    assert_eq!(calls_with(&df, "/var"), ["[--output=pcent][--][/var]"]);
    assert_eq!(logs(&full), ["cleaning up /var (limit 90% used)"]);

    // The cleanup script refuses: escalated with its stderr, df is not run.
    let refused = settled(&m, "DiskFull", "db3").await;
    assert_escalated(
        &refused,
        "cleanup-disk --mountpoint /data failed with exit code 3: \
         refusing /data: not a known mountpoint",
    );
    assert_eq!(finished(&refused, "exec")[0]["code"], 3);
    assert!(calls_with(&df, "/data").is_empty());

    // A limit that is not a number: nothing is run.
    let bad = settled(&m, "DiskFull", "db4").await;
    assert_escalated(
        &bad,
        "annotation medic_max_percent=\"lots\" is not a whole number from 1 to 100; nothing was run",
    );
    assert!(events(&bad, "step_started").is_empty(), "{bad:#}");
    assert!(calls_with(&cleanup, "/srv").is_empty());

    assert_eq!(calls(&cleanup).len(), 3, "{:?}", calls(&cleanup));
    assert_eq!(calls(&df).len(), 2, "{:?}", calls(&df));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_restart_restarts_until_healthy_and_escalates_when_it_never_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ship(dir, "health_check_restart.rhai");
    let systemctl = fake(dir, "systemctl", "exit 0");
    let server = TestServer::start(vec![
        // Unhealthy at the re-check and the first check after the restart, then healthy.
        (
            "/api/healthz",
            vec![(503, "starting"), (503, "starting"), (200, "ok")],
        ),
        ("/worker/healthz", vec![(500, "database unreachable")]),
        ("/cache/healthz", vec![(200, "ok")]),
    ])
    .await;
    let routes = r#"
[[routes]]
name = "health-check-restart"
matchers = ['alertname="HealthCheckFailing"']
runbook = "health_check_restart.rhai"
"#;
    let cfg = config(dir, r#"allowed_commands = ["systemctl"]"#, routes);
    let m = Medic::start_in(dir, &cfg);

    let fast = |url: String| json!({"health_url": url, "medic_health_checks": "3", "medic_health_interval": "0.1"});
    let (status, reply) = post_webhook(
        &m,
        &body(vec![
            custom_alert(
                json!({"alertname": "HealthCheckFailing", "instance": "app1", "service": "api"}),
                fast(server.url("/api/healthz")),
            ),
            custom_alert(
                json!({"alertname": "HealthCheckFailing", "instance": "app2", "name": "worker.service"}),
                fast(server.url("/worker/healthz")),
            ),
            custom_alert(
                json!({"alertname": "HealthCheckFailing", "instance": "app3", "service": "cache"}),
                fast(server.url("/cache/healthz")),
            ),
            custom_alert(
                json!({"alertname": "HealthCheckFailing", "instance": "app4", "service": "db"}),
                json!({"summary": "no URL"}),
            ),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // Success: restarted, unhealthy at the first check, healthy at the second.
    let api_url = server.url("/api/healthz");
    let ok = settled(&m, "HealthCheckFailing", "app1").await;
    assert_completed(&ok);
    assert_eq!(
        calls_with(&systemctl, "api.service"),
        ["[restart][--][api.service]"]
    );
    let gets: Vec<Value> = finished(&ok, "http")
        .iter()
        .map(|d| json!([d["method"], d["status"]]))
        .collect();
    assert_eq!(
        gets,
        [
            json!(["GET", 503]),
            json!(["GET", 503]),
            json!(["GET", 200])
        ]
    );
    assert_eq!(finished(&ok, "exec")[0]["code"], 0);
    assert_eq!(finished(&ok, "sleep").len(), 2);
    assert_eq!(
        logs(&ok),
        [
            format!("{api_url} answers 503; restarting api.service"),
            format!("{api_url} answers 200 after restarting api.service (check 2 of 3)"),
        ]
    );
    assert_eq!(server.requests_to("/api/healthz").len(), 3);

    // Main failure: never healthy after the restart.
    let worker_url = server.url("/worker/healthz");
    let down = settled(&m, "HealthCheckFailing", "app2").await;
    assert_escalated(
        &down,
        &format!(
            "{worker_url} still answers 500 after restarting worker.service (3 checks, 0.1s apart)"
        ),
    );
    assert_eq!(
        calls_with(&systemctl, "worker.service"),
        ["[restart][--][worker.service]"]
    );
    assert_eq!(finished(&down, "http").len(), 4);
    let worker_requests = server.requests_to("/worker/healthz");
    assert_eq!(worker_requests.len(), 4);
    assert!(worker_requests.iter().all(|r| r.method == "GET"));

    // Healthy again by itself: nothing is restarted.
    let cache_url = server.url("/cache/healthz");
    let fine = settled(&m, "HealthCheckFailing", "app3").await;
    assert_completed(&fine);
    assert_eq!(
        logs(&fine),
        [format!(
            "{cache_url} answers 200 now; cache.service was not restarted"
        )]
    );
    assert!(started(&fine, "exec").is_empty(), "{fine:#}");
    assert!(calls_with(&systemctl, "cache.service").is_empty());

    // No health_url: nothing is run.
    let bad = settled(&m, "HealthCheckFailing", "app4").await;
    assert_escalated(
        &bad,
        "the alert has no `health_url` annotation; nothing was run",
    );
    assert!(events(&bad, "step_started").is_empty(), "{bad:#}");

    assert_eq!(calls(&systemctl).len(), 2, "{:?}", calls(&systemctl));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_load_posts_to_the_admin_api_and_escalates_on_an_error_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ship(dir, "shed_load.rhai");
    let server = TestServer::start(vec![
        ("/checkout/admin/shed", vec![(202, "shedding")]),
        ("/search/admin/shed", vec![(503, "overloaded, try later")]),
    ])
    .await;
    let token = "tok-3f9a1c7e";
    let routes = r#"
[[routes]]
name = "shed-load"
matchers = ['alertname="ServiceOverloaded"']
runbook = "shed_load.rhai"
"#;
    let cfg = config(
        dir,
        &format!("[runbooks.secrets]\nADMIN_TOKEN = \"{token}\""),
        routes,
    );
    let m = Medic::start_in(dir, &cfg);

    let overloaded = |instance: &str, annotations: Value| {
        custom_alert(
            json!({"alertname": "ServiceOverloaded", "instance": instance, "job": instance}),
            annotations,
        )
    };
    let (status, reply) = post_webhook(
        &m,
        &body(vec![
            overloaded(
                "checkout",
                json!({"admin_url": server.url("/checkout/admin/shed"), "shed_percent": "80"}),
            ),
            overloaded(
                "search",
                json!({"admin_url": server.url("/search/admin/shed")}),
            ),
            overloaded("cart", json!({"shed_percent": "10"})),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // Success: 80% is clamped to 50%, the token travels in the body, 202 is accepted.
    let checkout_url = server.url("/checkout/admin/shed");
    let ok = settled(&m, "ServiceOverloaded", "checkout").await;
    assert_completed(&ok);
    let sent = server.requests_to("/checkout/admin/shed");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    let sent_body: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(
        sent_body,
        json!({"action": "shed", "percent": 50, "token": token})
    );
    let posts = started(&ok, "http");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["args"]["method"], "POST");
    assert_eq!(posts[0]["args"]["url"], checkout_url);
    assert_eq!(
        posts[0]["args"]["body"],
        r#"{"action":"shed","percent":50,"token":"<redacted:ADMIN_TOKEN>"}"#
    );
    assert_eq!(finished(&ok, "http")[0]["status"], 202);
    assert_eq!(
        logs(&ok),
        [
            "shed_percent 80 is outside 1-50; using 50".to_string(),
            format!("asking {checkout_url} to shed 50% of its load"),
            format!("{checkout_url} accepted: shedding 50% of the load (status 202)"),
        ]
    );
    assert!(
        !ok.to_string().contains(token),
        "the token is redacted from the timeline"
    );

    // Main failure: the admin API answers 503.
    let search_url = server.url("/search/admin/shed");
    let refused = settled(&m, "ServiceOverloaded", "search").await;
    assert_escalated(
        &refused,
        &format!("the admin API at {search_url} answered 503: overloaded, try later"),
    );
    let sent = server.requests_to("/search/admin/shed");
    assert_eq!(sent.len(), 1);
    let sent_body: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(sent_body["percent"], 20, "the default percentage");
    assert_eq!(finished(&refused, "http")[0]["status"], 503);

    // No admin_url: nothing is sent.
    let bad = settled(&m, "ServiceOverloaded", "cart").await;
    assert_escalated(
        &bad,
        "the alert has no `admin_url` annotation; nothing was sent",
    );
    assert!(events(&bad, "step_started").is_empty(), "{bad:#}");
    assert_eq!(server.requests.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_runbook_runs_nothing_in_a_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for name in [
        "systemd_unit_failed.rhai",
        "disk_full.rhai",
        "health_check_restart.rhai",
        "shed_load.rhai",
    ] {
        ship(dir, name);
    }
    let fakes = [
        fake(dir, "systemctl", "exit 0"),
        fake(dir, "cleanup-disk", "exit 0"),
        fake(dir, "df", "exit 0"),
    ];
    let server = TestServer::start(vec![]).await;
    let routes = r#"
[[routes]]
matchers = ['alertname="SystemdUnitFailed"']
runbook = "systemd_unit_failed.rhai"

[[routes]]
matchers = ['alertname="DiskFull"']
runbook = "disk_full.rhai"

[[routes]]
matchers = ['alertname="HealthCheckFailing"']
runbook = "health_check_restart.rhai"

[[routes]]
matchers = ['alertname="ServiceOverloaded"']
runbook = "shed_load.rhai"
"#;
    let cfg = config(
        dir,
        "dry_run = true\nallowed_commands = [\"systemctl\", \"cleanup-disk\", \"df\"]",
        routes,
    );
    let m = Medic::start_in(dir, &cfg);
    let (status, reply) = post_webhook(
        &m,
        &body(vec![
            custom_alert(
                json!({"alertname": "SystemdUnitFailed", "instance": "n1", "name": "nginx.service"}),
                json!({}),
            ),
            custom_alert(
                json!({"alertname": "DiskFull", "instance": "n1", "mountpoint": "/var"}),
                json!({}),
            ),
            custom_alert(
                json!({"alertname": "HealthCheckFailing", "instance": "n1", "service": "api"}),
                json!({"health_url": server.url("/healthz")}),
            ),
            custom_alert(
                json!({"alertname": "ServiceOverloaded", "instance": "n1"}),
                json!({"admin_url": server.url("/admin/shed")}),
            ),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    let plans = [
        ("SystemdUnitFailed", json!([["exec", "systemctl"]])),
        ("DiskFull", json!([["exec", "cleanup-disk"]])),
        (
            "HealthCheckFailing",
            json!([["http", "GET"], ["exec", "systemctl"]]),
        ),
        ("ServiceOverloaded", json!([["http", "POST"]])),
    ];
    for (alertname, plan) in plans {
        let inc = settled(&m, alertname, "n1").await;
        assert_completed(&inc);
        let would: Vec<Value> = events(&inc, "step_would_run")
            .iter()
            .map(|d| {
                let what = if d["step"] == "exec" {
                    &d["args"]["program"]
                } else {
                    &d["args"]["method"]
                };
                json!([d["step"], what])
            })
            .collect();
        assert_eq!(json!(would), plan, "{alertname}: {inc:#}");
        assert!(events(&inc, "step_started").is_empty(), "{inc:#}");
    }
    for file in fakes {
        assert!(calls(&file).is_empty(), "{}", file.display());
    }
    assert!(server.requests.lock().unwrap().is_empty());
}
