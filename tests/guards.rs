//! Guards through the real binary: a storm of 10,000 alerts, breakers that survive a
//! restart, the pause switch, in-flight caps and maintenance windows.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &Path, limits: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"
body_limit = "4MiB"
# A 10,000-alert storm on PostgreSQL in a loaded test run can take longer than the
# default 5 s per commit; a 503 there is retried by Alertmanager, but this test counts
# every first answer.
request_timeout = "30s"

[store]
{store}
{escalation}
[runbooks]
dir = "{runbooks}"
timeout = "20s"

[limits]
{limits}

{routes}
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
    )
}

fn count(dir: &Path, sql: &str) -> i64 {
    TestDb::of(dir).count(sql)
}

/// Rows of two columns: text and a number.
fn pairs(dir: &Path, sql: &str) -> Vec<(String, i64)> {
    TestDb::of(dir)
        .rows(sql)
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

async fn post_api(m: &Medic, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(m.url(path))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn incident_of(m: &Medic, alertname: &str, instance: &str) -> Value {
    eventually(
        WAIT,
        &format!("{alertname}/{instance} to settle"),
        || async {
            let l = api(
                m,
                &format!("/api/v1/incidents?alertname={alertname}&limit=1000"),
            )
            .await;
            let inc = l["incidents"]
                .as_array()?
                .iter()
                .find(|i| i["labels"]["instance"] == instance)?
                .clone();
            (!["queued", "remediating"].contains(&inc["state"].as_str()?)).then_some(inc)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_acknowledged_bounded_and_grouped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "noop.rhai", "let x = alert.labels.instance;\n");
    let routes = "[[routes]]\nname = \"storm\"\nmatchers = ['alertname=\"Partition\"']\nrunbook = \"noop.rhai\"\nrate = \"20/1h\"\n";
    let m = Medic::start_in(
        dir,
        &config(
            dir,
            "max_concurrent = 4\nmax_queued = 500\nstorm_window = \"10m\"",
            routes,
        ),
    );

    // 10,000 distinct alerts in 200 deliveries of 50, 8 at a time.
    let url = m.url("/webhook");
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut ok = 0;
            for d in (worker..200).step_by(8) {
                let alerts = (0..50)
                    .map(|i| alert("Partition", &format!("node-{}", d * 50 + i), "firing"))
                    .collect();
                let r = c
                    .post(&url)
                    .bearer_auth(WEBHOOK_TOKEN)
                    .json(&body(alerts))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    200,
                    "every delivery of the storm is acknowledged"
                );
                ok += 1;
            }
            ok
        }));
    }
    let mut acked = 0;
    for t in tasks {
        match t.await {
            Ok(n) => acked += n,
            Err(_) => {
                eprintln!(
                    "MEDICLOG:\n{}",
                    m.log_text()
                        .lines()
                        .filter(|l| l.contains("ERROR")
                            || l.contains("WARN")
                            || l.contains("error"))
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                panic!("a storm task failed");
            }
        }
    }
    assert_eq!(acked, 200);

    // Everything settles: nothing left queued or running.
    // Generous: on PostgreSQL every refusal is several round trips to the server.
    eventually(WAIT * 3, "the storm to settle", || async {
        (count(
            dir,
            "SELECT COUNT(*) FROM incidents WHERE state IN ('queued', 'remediating')",
        ) == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(dir, "SELECT COUNT(*) FROM incidents"),
        10_000,
        "no alert dropped"
    );
    let runs = count(
        dir,
        "SELECT COUNT(*) FROM audit WHERE event = 'run_started'",
    );
    assert_eq!(runs, 20, "exactly the route's budget of runs");
    assert_eq!(
        count(
            dir,
            "SELECT COUNT(*) FROM incidents WHERE state = 'verifying'"
        ),
        20
    );
    assert_eq!(
        count(
            dir,
            "SELECT COUNT(*) FROM incidents WHERE state = 'escalated' AND reason = 'rate_limited'"
        ),
        10_000 - 20
    );
    // Escalations are grouped: one group for the route and reason, listing them all.
    let groups = pairs(dir, "SELECT route, size FROM escalation_groups");
    assert_eq!(
        groups,
        [("storm".to_string(), 10_000 - 20)],
        "one notification group, not 9,980 pages"
    );
    assert_eq!(
        count(
            dir,
            "SELECT COUNT(*) FROM audit WHERE event = 'escalation_grouped'"
        ),
        10_000 - 20
    );
    let text = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("medic_guard_refusals_total{limit=\"route_rate\"}"),
        "{text}"
    );
    assert!(
        text.contains("medic_guard_refusals_total{limit=\"max_queued\"}"),
        "{text}"
    );
    let (code, out, _) = m.run_cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

const FAILING: &str = "[[routes]]\nname = \"flaky\"\nmatchers = ['alertname=\"Flaky\"']\nrunbook = \"fail.rhai\"\nbreaker = { failures = 2, cooldown = \"1h\" }\n";

#[tokio::test]
async fn an_open_breaker_survives_a_restart_and_can_be_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(
        dir,
        "fail.rhai",
        "if alert.labels.instance != \"good\" { throw \"cannot fix\"; }\n",
    );
    let cfg = config(dir, "", FAILING);
    let mut m = Medic::start_in(dir, &cfg);
    for i in ["a", "b"] {
        assert_eq!(
            post_webhook(&m, &body(vec![alert("Flaky", i, "firing")]))
                .await
                .0,
            200
        );
        assert_eq!(incident_of(&m, "Flaky", i).await["reason"], "runbook_error");
    }
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Flaky", "c", "firing")]))
            .await
            .0,
        200
    );
    let c = incident_of(&m, "Flaky", "c").await;
    assert_eq!(c["reason"], "circuit_open");
    let msg = c["message"].as_str().unwrap();
    let a_id = incident_of(&m, "Flaky", "a").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(&a_id),
        "the refusal names the failures that opened it: {msg}"
    );

    assert_eq!(m.stop(), Some(0));
    let m = Medic::start_in(dir, &cfg);
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Flaky", "d", "firing")]))
            .await
            .0,
        200
    );
    assert_eq!(
        incident_of(&m, "Flaky", "d").await["reason"],
        "circuit_open",
        "still open after a restart"
    );

    let list = api(&m, "/api/v1/breakers").await;
    let b = &list["breakers"][0];
    assert_eq!(b["route"], "flaky");
    assert_eq!(b["state"], "open");
    assert_eq!(b["consecutive_failures"], 2);
    let text = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("medic_breaker_state{route=\"flaky\"} 2"),
        "{text}"
    );

    let id = b["id"].as_str().unwrap();
    let (status, reset) = post_api(
        &m,
        &format!("/api/v1/breakers/{id}/reset"),
        json!({"by": "carol"}),
    )
    .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["breaker"]["state"], "closed");
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Flaky", "good", "firing")]))
            .await
            .0,
        200
    );
    assert_eq!(incident_of(&m, "Flaky", "good").await["state"], "verifying");
    assert_eq!(
        count(
            dir,
            "SELECT COUNT(*) FROM audit WHERE event = 'breaker_changed' AND detail LIKE '%carol%'"
        ),
        1
    );
}

/// Regression: a runbook that gives up by calling `escalate()` (as every shipped runbook
/// does when its fix fails) never tripped the breaker, so a fix that kept failing was
/// retried until a rate limit held it.
#[tokio::test]
async fn requested_escalations_trip_the_breaker_unless_the_route_opts_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(
        dir,
        "gives_up.rhai",
        "escalate(\"the restart did not help\");\n",
    );
    let routes = r#"
[[routes]]
name = "gives-up"
matchers = ['alertname="GivesUp"']
runbook = "gives_up.rhai"
breaker = { failures = 2, cooldown = "1h" }

[[routes]]
name = "asks"
matchers = ['alertname="Asks"']
runbook = "gives_up.rhai"
breaker = { failures = 2, cooldown = "1h", count_requested = false }
"#;
    let m = Medic::start_in(dir, &config(dir, "", routes));
    for name in ["GivesUp", "Asks"] {
        for i in ["a", "b"] {
            assert_eq!(
                post_webhook(&m, &body(vec![alert(name, i, "firing")]))
                    .await
                    .0,
                200
            );
            assert_eq!(incident_of(&m, name, i).await["reason"], "requested");
        }
    }
    // The breaker is recorded just after the run's end: wait for it to open.
    eventually(WAIT, "the breaker of gives-up to open", || async {
        let list = api(&m, "/api/v1/breakers").await;
        list["breakers"]
            .as_array()?
            .iter()
            .any(|b| b["route"] == "gives-up" && b["state"] == "open")
            .then_some(())
    })
    .await;
    for name in ["GivesUp", "Asks"] {
        assert_eq!(
            post_webhook(&m, &body(vec![alert(name, "c", "firing")]))
                .await
                .0,
            200
        );
    }
    let c = incident_of(&m, "GivesUp", "c").await;
    assert_eq!(c["reason"], "circuit_open", "{c}");
    let c = incident_of(&m, "Asks", "c").await;
    assert_eq!(
        c["reason"], "requested",
        "the opted-out route still runs: {c}"
    );
    let list = api(&m, "/api/v1/breakers").await;
    assert!(
        !list["breakers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["route"] == "asks" && b["state"] != "closed"),
        "{list}"
    );
    assert_eq!(
        count(
            dir,
            "SELECT COUNT(*) FROM audit WHERE event = 'breaker_changed' AND detail LIKE '%\"asks\"%'"
        ),
        0,
        "the opted-out route's breaker never counted"
    );
}

fn marker_script(dir: &Path) -> PathBuf {
    script(
        dir,
        "mark",
        &format!("touch {}", dir.join("marked").display()),
    )
}

#[tokio::test]
async fn pause_stops_a_run_at_its_next_step_and_escalates_new_incidents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mark = marker_script(dir);
    runbook(
        dir,
        "slow.rhai",
        &format!("sleep(1.5);\nexec(\"{}\", []);\n", mark.display()),
    );
    let routes =
        "[[routes]]\nname = \"slow\"\nmatchers = ['alertname=\"Slow\"']\nrunbook = \"slow.rhai\"\n";
    let cfg = config(dir, "", routes).replace(
        "timeout = \"20s\"",
        &format!(
            "timeout = \"20s\"\nallowed_commands = [\"{}\"]",
            mark.display()
        ),
    );
    let m = Medic::start_in(dir, &cfg);
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Slow", "one", "firing")]))
            .await
            .0,
        200
    );
    eventually(WAIT, "the run to be sleeping", || async {
        (count(
            dir,
            "SELECT COUNT(*) FROM audit WHERE event = 'step_started'",
        ) == 1)
            .then_some(())
    })
    .await;
    let (status, _) = post_api(
        &m,
        "/api/v1/pause",
        json!({"by": "dave", "reason": "network maintenance"}),
    )
    .await;
    assert_eq!(status, 200);
    let one = incident_of(&m, "Slow", "one").await;
    assert_eq!(one["state"], "escalated");
    assert_eq!(one["reason"], "paused");
    assert!(
        !dir.join("marked").exists(),
        "the step after the pause never ran"
    );

    assert_eq!(
        post_webhook(&m, &body(vec![alert("Slow", "two", "firing")]))
            .await
            .0,
        200
    );
    assert_eq!(incident_of(&m, "Slow", "two").await["reason"], "paused");
    let ready: Value = client()
        .get(m.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["paused"]["by"], "dave");
    assert_eq!(ready["paused"]["reason"], "network maintenance");
    let text = client()
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("medic_paused 1"), "{text}");

    let (status, _) = post_api(&m, "/api/v1/resume", json!({"by": "dave"})).await;
    assert_eq!(status, 200);
    runbook(
        dir,
        "slow.rhai",
        &format!("exec(\"{}\", []);\n", mark.display()),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // the reload of the edited runbook
    assert_eq!(
        post_webhook(&m, &body(vec![alert("Slow", "three", "firing")]))
            .await
            .0,
        200
    );
    assert_eq!(incident_of(&m, "Slow", "three").await["state"], "verifying");
    assert!(dir.join("marked").exists());
    let audited: i64 = count(
        dir,
        "SELECT COUNT(*) FROM audit WHERE event IN ('paused', 'resumed') AND detail LIKE '%dave%'",
    );
    assert_eq!(audited, 2);
}

#[tokio::test]
async fn disabled_in_config_starts_paused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "noop.rhai", "log(\"x\");\n");
    let routes = "[[routes]]\nmatchers = ['alertname=\"A\"']\nrunbook = \"noop.rhai\"\n";
    let m = Medic::start_in(dir, &config(dir, "enabled = false", routes));
    assert_eq!(
        post_webhook(&m, &body(vec![alert("A", "x", "firing")]))
            .await
            .0,
        200
    );
    let inc = incident_of(&m, "A", "x").await;
    assert_eq!(inc["reason"], "paused");
    assert!(inc["message"]
        .as_str()
        .unwrap()
        .contains("limits.enabled = false"));
}

#[tokio::test]
async fn max_in_flight_makes_the_second_wait_in_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "slow.rhai", "sleep(1);\n");
    let routes = "[[routes]]\nname = \"svc\"\nmatchers = ['alertname=\"Svc\"']\nrunbook = \"slow.rhai\"\nmax_in_flight = 1\nin_flight_key = [\"service\"]\n";
    let m = Medic::start_in(dir, &config(dir, "", routes));
    let mut a = alert("Svc", "one", "firing");
    a["labels"]["service"] = json!("db");
    let mut b = alert("Svc", "two", "firing");
    b["labels"]["service"] = json!("db");
    assert_eq!(post_webhook(&m, &body(vec![a, b])).await.0, 200);
    eventually(WAIT, "one running, one waiting", || async {
        let r = count(
            dir,
            "SELECT COUNT(*) FROM incidents WHERE state = 'remediating'",
        );
        let q = count(dir, "SELECT COUNT(*) FROM incidents WHERE state = 'queued'");
        (r == 1 && q == 1).then_some(())
    })
    .await;
    assert_eq!(incident_of(&m, "Svc", "one").await["state"], "verifying");
    assert_eq!(
        incident_of(&m, "Svc", "two").await["state"],
        "verifying",
        "it ran after the first"
    );
    // Never two at once: the second started after the first finished.
    let seqs = pairs(
        dir,
        "SELECT event, seq FROM audit WHERE event IN ('run_started', 'run_finished') ORDER BY seq",
    );
    let order: Vec<&str> = seqs.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        order,
        ["run_started", "run_finished", "run_started", "run_finished"]
    );
}

// `a_maintenance_window_suppresses_runs` runs in-process on paused time: tests/in_process.rs.
