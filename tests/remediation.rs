//! Runbooks end to end through the real binary: real commands, untrusted labels as
//! arguments, every limit, hot reload, dry run, and restarts during a run.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A config with `routes` (TOML), runbooks in `<dir>/runbooks`, and extra `[runbooks]` keys.
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
{runbooks_extra}

{routes}
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
    )
}

/// An alert with the given labels and annotations.
fn custom_alert(labels: Value, annotations: Value) -> Value {
    let mut a = alert("X", "i", "firing");
    a["labels"] = labels;
    a["annotations"] = annotations;
    a.as_object_mut().unwrap().remove("fingerprint");
    a
}

/// Waits until the only incident with `alertname` leaves queued/remediating; returns it
/// with its timeline.
async fn settled(m: &Medic, alertname: &str) -> Value {
    let id = eventually(WAIT, &format!("an incident for {alertname}"), || async {
        let l = api(m, &format!("/api/v1/incidents?alertname={alertname}")).await;
        l["incidents"][0]["id"].as_str().map(String::from)
    })
    .await;
    eventually(WAIT, &format!("the run for {alertname} to end"), || async {
        let one = api(m, &format!("/api/v1/incidents/{id}")).await;
        (!["queued", "remediating"].contains(&one["state"].as_str().unwrap_or(""))).then_some(one)
    })
    .await
}

fn events(incident: &Value, name: &str) -> Vec<Value> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == name)
        .map(|e| e["detail"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_alert_runs_a_real_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let marker = dir.join("restarted");
    let restart = script(
        dir,
        "restart-service",
        &format!("echo \"$@\" >> {}\necho restarted \"$1\"", marker.display()),
    );
    runbook(
        dir,
        "restart.rhai",
        &format!(
            r#"let r = exec("{}", [alert.labels.instance]);
               if r.code != 0 {{ escalate("restart failed"); }}
               log(r.stdout);"#,
            restart.display()
        ),
    );
    let routes = "[[routes]]\nname = \"restart\"\nmatchers = ['alertname=\"ServiceDown\"']\nrunbook = \"restart.rhai\"\n";
    let cfg = config(
        dir,
        &format!("allowed_commands = [\"{}\"]", restart.display()),
        routes,
    );
    let m = Medic::start_in(dir, &cfg);
    let am = Alertmanager::start(&m.url("/webhook"), WEBHOOK_TOKEN, "1h").await;
    am.post_alerts(&json!([{
        "labels": {"alertname": "ServiceDown", "instance": "web7:80"},
        "startsAt": "2026-11-23T10:00:00Z"
    }]))
    .await;
    let inc = settled(&m, "ServiceDown").await;
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "web7:80\n");
    let finished = events(&inc, "step_finished");
    assert_eq!(finished[0]["code"], 0);
    assert_eq!(finished[0]["stdout"], "restarted web7:80\n");
    let started = events(&inc, "run_started");
    assert_eq!(started[0]["runbook"], "restart.rhai");
    assert_eq!(started[0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        events(&inc, "runbook_log")[0]["message"],
        "restarted web7:80\n"
    );
}

#[tokio::test]
async fn untrusted_values_reach_exec_as_single_literal_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("argv");
    // Writes each argument NUL-terminated, so the test sees exactly what arrived.
    let record = script(
        dir,
        "record",
        &format!("printf '%s\\0' \"$@\" > {}", out.display()),
    );
    let pwned = dir.join("pwned");
    runbook(
        dir,
        "record.rhai",
        &format!(
            r#"let args = [];
               for k in ["a", "b", "c", "d", "e", "f"] {{ args.push(alert.labels[k]); }}
               args.push(alert.annotations.multi);
               args.push(alert.annotations.big);
               exec("{}", args);
               let huge = alert.annotations.big + alert.annotations.big;
               exec("{}", [huge]);"#,
            record.display(),
            record.display()
        ),
    );
    let routes = "[[routes]]\nmatchers = ['alertname=\"Inject\"']\nrunbook = \"record.rhai\"\n";
    let cfg = config(
        dir,
        &format!("allowed_commands = [\"{}\"]", record.display()),
        routes,
    );
    let m = Medic::start_in(dir, &cfg);
    let hostile = [
        format!("x; touch {}", pwned.display()),
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        "../../etc/passwd".to_string(),
        "'single' \"double\" \\back".to_string(),
        "-rf".to_string(),
    ];
    let big = "B".repeat(100_000);
    let labels = json!({"alertname": "Inject", "a": hostile[0], "b": hostile[1], "c": hostile[2],
                        "d": hostile[3], "e": hostile[4], "f": hostile[5]});
    let annotations = json!({"multi": "line one\nline two; rm -rf /", "big": big});
    let (status, reply) = post_webhook(&m, &body(vec![custom_alert(labels, annotations)])).await;
    assert_eq!(status, 200, "{reply}");
    let inc = settled(&m, "Inject").await;

    let raw = std::fs::read(&out).unwrap();
    let got: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    let mut want: Vec<String> = hostile.to_vec();
    want.push("line one\nline two; rm -rf /".into());
    want.push(big);
    assert_eq!(got, want, "each value is exactly one argument, unchanged");
    assert!(!pwned.exists(), "nothing but the allowed program ran");

    // 200 KB in one argument is over Linux's per-argument limit: a clear step error.
    assert_eq!(inc["state"], "escalated");
    assert_eq!(inc["reason"], "step_failed");
    let msg = inc["message"].as_str().unwrap();
    assert!(
        msg.contains("arguments too long for the operating system"),
        "{msg}"
    );
}

#[tokio::test]
async fn every_limit_stops_and_escalates_with_a_reason_that_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pidfile = dir.join("child.pid");
    let slow = script(
        dir,
        "slow",
        &format!("sleep 30 &\necho $! > {}\nsleep 30", pidfile.display()),
    );
    let cases = [
        ("Loop", "let i = 0; loop { i += 1; }"),
        ("Recurse", "fn f(n) { f(n + 1) } f(0);"),
        ("BigString", "let s = \"x\"; loop { s += s; }"),
        (
            "NotAllowed",
            "exec(\"/bin/rm\", [\"-rf\", \"/tmp/nothing\"]);",
        ),
        ("Slow", ""),
        ("Sleepy", "sleep(3600);"),
    ];
    let mut routes = String::new();
    for (name, source) in cases {
        let source = if name == "Slow" {
            format!("exec(\"{}\", []);", slow.display())
        } else {
            source.to_string()
        };
        runbook(dir, &format!("{name}.rhai"), &source);
        routes.push_str(&format!(
            "[[routes]]\nmatchers = ['alertname=\"{name}\"']\nrunbook = \"{name}.rhai\"\n\n"
        ));
    }
    let extra = format!(
        "allowed_commands = [\"{}\"]\nstep_timeout = \"500ms\"",
        slow.display()
    );
    let m = Medic::start_in(dir, &config(dir, &extra, &routes));
    let alerts: Vec<Value> = cases
        .iter()
        .map(|(n, _)| alert(n, "host1", "firing"))
        .collect();
    assert_eq!(post_webhook(&m, &body(alerts)).await.0, 200);

    let expect = [
        ("Loop", "runbook_error", "runbooks.max_operations"),
        ("Recurse", "runbook_error", "runbooks.max_call_depth"),
        ("BigString", "runbook_error", "size limit"),
        (
            "NotAllowed",
            "step_failed",
            "\"/bin/rm\" is not in runbooks.allowed_commands",
        ),
        (
            "Slow",
            "timeout",
            "timed out after 500ms; its process group was killed",
        ),
        (
            "Sleepy",
            "timeout",
            "sleep(3600) would outlast the run's time limit",
        ),
    ];
    for (name, reason, words) in expect {
        let inc = settled(&m, name).await;
        assert_eq!(inc["state"], "escalated", "{name}: {inc:#}");
        assert_eq!(inc["reason"], reason, "{name}: {}", inc["message"]);
        let msg = inc["message"].as_str().unwrap();
        assert!(msg.contains(words), "{name}: {msg}");
        let finished = events(&inc, "run_finished");
        assert_eq!(
            finished[0]["reason"], reason,
            "{name}: the run's end is audited"
        );
    }
    // The refused program never started, and its refusal is audited.
    let refused = settled(&m, "NotAllowed").await;
    assert!(events(&refused, "step_started").is_empty());
    assert_eq!(events(&refused, "step_failed")[0]["reason"], "step_failed");
    // The timed-out command's background child died with its process group.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the background child to be killed",
        || async move {
            (!Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn dry_run_records_steps_and_runs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let marker = dir.join("ran");
    let touch = script(dir, "touch-marker", &format!("touch {}", marker.display()));
    runbook(
        dir,
        "dry.rhai",
        &format!(
            r#"let r = exec("{}", ["--now"]);
               if r.code != 0 || !r.dry_run {{ escalate("unexpected synthetic result"); }}
               let h = http("POST", "http://127.0.0.1:1/shed", "{{}}");
               if h.status != 200 {{ escalate("unexpected synthetic status"); }}"#,
            touch.display()
        ),
    );
    let routes =
        "[[routes]]\nmatchers = ['alertname=\"Dry\"']\nrunbook = \"dry.rhai\"\ndry_run = true\n";
    let cfg = config(
        dir,
        &format!("allowed_commands = [\"{}\"]", touch.display()),
        routes,
    );
    let m = Medic::start_in(dir, &cfg);
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Dry", "h", "firing")]))
            .await
            .0,
        200
    );
    let inc = settled(&m, "Dry").await;
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    assert!(!marker.exists(), "a dry run executes nothing");
    let would = events(&inc, "step_would_run");
    assert_eq!(would.len(), 2);
    assert_eq!(would[0]["step"], "exec");
    assert_eq!(would[0]["args"]["args"], json!(["--now"]));
    assert_eq!(would[1]["step"], "http");
    assert!(events(&inc, "step_started").is_empty());
    assert_eq!(events(&inc, "run_started")[0]["dry_run"], true);
}

#[tokio::test]
async fn hot_reload_keeps_the_old_runbook_on_a_broken_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "hot.rhai", "log(\"v1\");");
    let routes = "[[routes]]\nmatchers = ['alertname=~\"Hot.*\"']\nrunbook = \"hot.rhai\"\n";
    let m = Medic::start_in(dir, &config(dir, "", routes));
    let metric = |name: &'static str| {
        let url = m.url("/metrics");
        async move {
            let text = client().get(url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .map(String::from)
        }
    };
    assert_eq!(
        metric("medic_config_reload_success ").await.as_deref(),
        Some("1")
    );

    // A broken edit: refused, the old version keeps serving.
    runbook(dir, "hot.rhai", "log(\"v2\"\n");
    eventually(WAIT, "the broken reload to be refused", || async {
        (metric("medic_config_reload_success ").await.as_deref() == Some("0")).then_some(())
    })
    .await;
    assert_eq!(
        metric("medic_config_reload_failures_total ")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        post_webhook(&m, &body(vec![alert("HotOne", "h", "firing")]))
            .await
            .0,
        200
    );
    let inc = settled(&m, "HotOne").await;
    assert_eq!(events(&inc, "runbook_log")[0]["message"], "v1");

    // The fix takes effect without a restart.
    runbook(dir, "hot.rhai", "log(\"v2\");");
    eventually(WAIT, "the fixed reload", || async {
        (metric("medic_config_reload_success ").await.as_deref() == Some("1")).then_some(())
    })
    .await;
    assert_eq!(
        post_webhook(&m, &body(vec![alert("HotTwo", "h", "firing")]))
            .await
            .0,
        200
    );
    let inc = settled(&m, "HotTwo").await;
    assert_eq!(events(&inc, "runbook_log")[0]["message"], "v2");

    // A config edit is picked up too: a typo is refused, the fix applied.
    let cfg_path = dir.join("medic.toml");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        good.replace("[runbooks]", "[runbooks]\ntimeuot = \"1m\""),
    )
    .unwrap();
    eventually(WAIT, "the broken config to be refused", || async {
        (metric("medic_config_reload_failures_total ")
            .await
            .as_deref()
            == Some("2"))
        .then_some(())
    })
    .await;
    std::fs::write(
        &cfg_path,
        good.replace("alertname=~\"Hot.*\"", "alertname=~\"Hot.*|Warm\""),
    )
    .unwrap();
    eventually(WAIT, "the fixed config", || async {
        (metric("medic_config_reload_success ").await.as_deref() == Some("1")).then_some(())
    })
    .await;
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Warm", "h", "firing")]))
            .await
            .0,
        200
    );
    let inc = settled(&m, "Warm").await;
    assert_eq!(inc["runbook"], "hot.rhai", "the edited route is in force");

    // Both decisions are in the audit log.
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    let failed =
        TestDb::of(dir).count("SELECT COUNT(*) FROM audit WHERE event = 'config_reload_failed'");
    assert!(failed >= 1);
}

/// Starts a run that sleeps, then kills medic -9 while it is remediating.
async fn kill_during_run(idempotent: bool) -> (tempfile::TempDir, String, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    runbook(
        &dir,
        "slow.rhai",
        "log(`attempt ${incident.attempt}`);\nif incident.attempt == 1 { sleep(15); }\n",
    );
    let routes = format!(
        "[[routes]]\nmatchers = ['alertname=\"Slow\"']\nrunbook = \"slow.rhai\"\nidempotent = {idempotent}\n"
    );
    let cfg = config(&dir, "", &routes);
    let mut m = Medic::start_in(&dir, &cfg);
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Slow", "h", "firing")]))
            .await
            .0,
        200
    );
    eventually(WAIT, "the run to start sleeping", || async {
        let l = api(&m, "/api/v1/incidents?state=remediating").await;
        let id = l["incidents"][0]["id"].as_str()?.to_string();
        let one = api(&m, &format!("/api/v1/incidents/{id}")).await;
        (!events(&one, "step_started").is_empty()).then_some(())
    })
    .await;
    m.kill9();
    let m = Medic::start_in(&dir, &cfg);
    let inc = settled(&m, "Slow").await;
    let id = inc["id"].as_str().unwrap().to_string();
    drop(m);
    (tmp, id, inc)
}

#[tokio::test]
async fn a_run_cut_by_a_crash_comes_back_interrupted() {
    let (_tmp, _id, inc) = kill_during_run(false).await;
    assert_eq!(inc["state"], "escalated", "{inc:#}");
    assert_eq!(inc["reason"], "interrupted");
    assert_eq!(inc["attempts"], 1, "never silently re-run");
}

#[tokio::test]
async fn an_idempotent_route_reruns_once_after_a_crash() {
    let (_tmp, _id, inc) = kill_during_run(true).await;
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    assert_eq!(inc["attempts"], 2);
    let logs: Vec<Value> = events(&inc, "runbook_log")
        .iter()
        .map(|d| d["message"].clone())
        .collect();
    assert_eq!(logs, [json!("attempt 1"), json!("attempt 2")]);
}

#[tokio::test]
async fn sigterm_cancels_a_run_at_its_next_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "slow.rhai", "sleep(15);\nlog(\"never\");\n");
    let routes = "[[routes]]\nmatchers = ['alertname=\"Slow\"']\nrunbook = \"slow.rhai\"\n";
    let cfg = config(dir, "", routes);
    let mut m = Medic::start_in(dir, &cfg);
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Slow", "h", "firing")]))
            .await
            .0,
        200
    );
    eventually(WAIT, "the run to start", || async {
        let l = api(&m, "/api/v1/incidents?state=remediating").await;
        l["incidents"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    assert_eq!(m.stop(), Some(0), "{}", m.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the sleep was interrupted, not waited out"
    );
    let m = Medic::start_in(dir, &cfg);
    let inc = settled(&m, "Slow").await;
    assert_eq!(inc["state"], "escalated");
    assert_eq!(inc["reason"], "interrupted");
    assert!(events(&inc, "runbook_log").is_empty());
}

#[tokio::test]
async fn an_http_call_without_an_answer_is_a_result_the_runbook_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Nothing listens on port 1: the connection is refused.
    runbook(
        dir,
        "probe.rhai",
        "let r = http(\"GET\", \"http://127.0.0.1:1/healthz\");\nif r.status == 0 { log(`no answer: ${r.error}`); }\n",
    );
    let routes = "[[routes]]\nmatchers = ['alertname=\"Probe\"']\nrunbook = \"probe.rhai\"\n";
    let m = Medic::start_in(dir, &config(dir, "", routes));
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Probe", "h", "firing")]))
            .await
            .0,
        200
    );
    let inc = settled(&m, "Probe").await;
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    let log = events(&inc, "runbook_log")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        log.starts_with("no answer: ") && log.contains("127.0.0.1:1"),
        "{log}"
    );
    assert_eq!(events(&inc, "step_finished")[0]["status"], 0);
}

/// Live processes whose command line is exactly `sleep <arg>`.
fn sleeps(arg: &str) -> Vec<i32> {
    let want = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        })
        .collect()
}

/// Regression: a program started by `exec` could leave a background child (`cmd &`, or a
/// daemon that double-forks out of its session with `setsid`) that survived the step, its
/// timeout, and medic itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_step_starts_outlives_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let id = std::process::id();
    // `sleep 300.<test pid><n>`: arguments no other process has.
    let (exits, times_out, escapes) = (
        format!("300.{id}1"),
        format!("300.{id}2"),
        format!("300.{id}3"),
    );
    let pidfile = dir.join("escaped.pid");
    runbook(
        dir,
        "exits.rhai",
        &format!("exec(\"sh\", [\"-c\", \"sleep {exits} & echo started\"]);\n"),
    );
    runbook(
        dir,
        "times_out.rhai",
        &format!("exec(\"sh\", [\"-c\", \"sleep {times_out} & echo started; sleep 30\"]);\n"),
    );
    runbook(
        dir,
        "escapes.rhai",
        &format!(
            "exec(\"sh\", [\"-c\", \"setsid -f sh -c 'echo $$ > {}; exec sleep {escapes}'; sleep 0.3; echo started\"]);\n",
            pidfile.display()
        ),
    );
    let mut routes = String::new();
    for name in ["exits", "times_out", "escapes"] {
        routes.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nmatchers = ['alertname=\"{name}\"']\nrunbook = \"{name}.rhai\"\n\n"
        ));
    }
    let extra = "allowed_commands = [\"sh\"]\nstep_timeout = \"1s\"";
    let m = Medic::start_in(dir, &config(dir, extra, &routes));
    let alerts = ["exits", "times_out", "escapes"]
        .iter()
        .map(|n| alert(n, "host1", "firing"))
        .collect();
    assert_eq!(post_webhook(&m, &body(alerts)).await.0, 200);

    let inc = settled(&m, "exits").await;
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    let inc = settled(&m, "times_out").await;
    assert_eq!(inc["reason"], "timeout", "{inc:#}");
    let inc = settled(&m, "escapes").await;
    assert_eq!(inc["state"], "verifying", "{inc:#}");
    let escaped: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for arg in [&exits, &times_out, &escapes] {
        eventually(
            Duration::from_secs(10),
            &format!("sleep {arg} to be ended"),
            || async { sleeps(arg).is_empty().then_some(()) },
        )
        .await;
    }
    // And collected: not left a zombie of medic's.
    eventually(
        Duration::from_secs(10),
        "the escaped process to be collected",
        || async { (!Path::new(&format!("/proc/{escaped}")).exists()).then_some(()) },
    )
    .await;
}
