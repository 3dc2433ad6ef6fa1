//! medic's own monitoring: the metrics of what automation achieved, counted by the real
//! binary for known traffic; the shipped Grafana dashboard and Prometheus alerting rules,
//! checked against a live `/metrics` and evaluated by a real Prometheus; `promtool` on the
//! rules and their unit tests.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::prometheus::{promtool, Prometheus};
use common::{
    alert, api, body, client, escalation_to_file, eventually, post_webhook, runbook, store_config,
    Medic, API_TOKEN, WEBHOOK_TOKEN,
};

const WAIT: Duration = Duration::from_secs(30);
/// `[limits] relapse_window` of the test's config.
const RELAPSE_WINDOW: Duration = Duration::from_secs(5);

fn shipped(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rules_file() -> PathBuf {
    shipped("packaging/prometheus/medic-rules.yml")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(shipped("packaging/grafana/medic.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

#[test]
fn promtool_checks_and_tests_the_shipped_rules() {
    let dir = shipped("packaging/prometheus");
    for args in [
        vec!["check", "rules", "medic-rules.yml"],
        vec!["test", "rules", "medic-rules.test.yml"],
    ] {
        let out = Command::new(promtool())
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alerting rule has its test, firing and not firing.
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    let tests = std::fs::read_to_string(dir.join("medic-rules.test.yml")).unwrap();
    for name in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let evals: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|e| e.contains(&format!("alertname: {name}\n")))
            .collect();
        assert!(
            evals.iter().any(|e| e.contains("exp_alerts: []")),
            "{name} is never tested not firing"
        );
        assert!(
            evals.iter().any(|e| e.contains("exp_labels:")),
            "{name} is never tested firing"
        );
    }
}

/// The dashboard is importable: a Prometheus data source variable that every panel and
/// query uses, unique panel ids, and a query in every panel.
#[test]
fn the_dashboard_is_importable_with_a_data_source_variable() {
    let d = dashboard();
    assert!(
        d["title"].is_string() && d["uid"].is_string(),
        "title and uid"
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(ds["query"], "prometheus");
    let uses = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_u64().expect("a numeric id")),
            "id of {title}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], uses.as_str(), "{title}");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} queries nothing");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], uses.as_str(), "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title} says what it shows"
        );
    }
}

/// Every PromQL expression of the dashboard (panels and variables).
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

/// Every `medic_*` name in `text`.
fn medic_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("medic_") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names
}

/// The samples of a `/metrics` text: `name{labels}` (as rendered) and value.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

fn config(dir: &Path) -> String {
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

[limits]
relapse_window = "{window}s"
storm_window = "1ms"

[[routes]]
name = "fix"
matchers = ['alertname="FixMe"']
runbook = "fix.rhai"
verify_for = "5s"

[[routes]]
name = "broken"
matchers = ['alertname="BreakMe"']
runbook = "broken.rhai"
breaker = {{ failures = 1, cooldown = "1h" }}
"#,
        store = store_config(dir),
        escalation = escalation_to_file(dir),
        runbooks = dir.join("runbooks").display(),
        window = RELAPSE_WINDOW.as_secs(),
    )
}

/// `alert(name, instance, status)` of the firing period that started at `starts_at`.
fn alert_at(name: &str, instance: &str, status: &str, starts_at: &str) -> Value {
    let mut a = alert(name, instance, status);
    a["startsAt"] = starts_at.into();
    if status == "resolved" {
        a["endsAt"] = "2026-11-23T12:00:00Z".into();
    }
    a
}

async fn send(m: &Medic, a: Value) {
    let (status, reply) = post_webhook(m, &body(vec![a])).await;
    assert_eq!(status, 200, "{reply}");
}

/// The newest incident of `alertname` on `instance`, once it is in `state`.
async fn once_in(m: &Medic, alertname: &str, instance: &str, state: &str) -> Value {
    eventually(WAIT, &format!("{alertname}/{instance} {state}"), || async {
        let list = api(
            m,
            &format!("/api/v1/incidents?alertname={alertname}&limit=100"),
        )
        .await;
        let newest = list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["labels"]["instance"] == instance)?
            .clone();
        (newest["state"] == state).then_some(newest)
    })
    .await
}

async fn metrics_text(m: &Medic) -> String {
    let r = client().get(m.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

/// Known traffic through the real binary, and what `/metrics` says of it: one incident of
/// route `fix` fixed and one relapsing right after its fix, one fixed whose alert comes back
/// only after `relapse_window` (not a relapse), one of route `broken` failing a step, acked
/// through the API and resolved by a person, and one refused by the breaker that failure
/// opened. Then every `medic_*` name that the dashboard and the rules use must be a series
/// of that live `/metrics`, and a real Prometheus scraping medic must run every dashboard
/// query and every rule without error.
#[tokio::test]
async fn metrics_count_what_automation_did_and_the_dashboard_and_rules_use_only_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    runbook(dir, "fix.rhai", "log(\"fixed\");\n");
    // A program that is not in allowed_commands: the step fails.
    runbook(
        dir,
        "broken.rhai",
        "exec(\"rm\", [\"-rf\", \"/nonexistent\"]);\n",
    );
    let m = Medic::start_in(dir, &config(dir));
    let (first, second) = ("2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z");

    // "late": fixed now, back only after the relapse window.
    send(&m, alert_at("FixMe", "late", "firing", first)).await;
    once_in(&m, "FixMe", "late", "verifying").await;
    send(&m, alert_at("FixMe", "late", "resolved", first)).await;
    let late_fixed = Instant::now();
    once_in(&m, "FixMe", "late", "resolved").await;

    // "x": the step fails, a person acks through the API and fixes it.
    send(&m, alert("BreakMe", "x", "firing")).await;
    let x = once_in(&m, "BreakMe", "x", "escalated").await;
    assert_eq!(x["reason"], "step_failed");
    let acked = client()
        .post(m.url(&format!(
            "/api/v1/incidents/{}/ack",
            x["id"].as_str().unwrap()
        )))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"by": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status().as_u16(), 200);
    send(
        &m,
        alert_at("BreakMe", "x", "resolved", "2026-11-23T10:00:00Z"),
    )
    .await;
    once_in(&m, "BreakMe", "x", "resolved").await;
    // That failure opened the breaker: the next one is refused.
    eventually(WAIT, "the breaker of broken to open", || async {
        let list = api(&m, "/api/v1/breakers").await;
        list["breakers"]
            .as_array()?
            .iter()
            .any(|b| b["route"] == "broken" && b["state"] == "open")
            .then_some(())
    })
    .await;
    send(&m, alert("BreakMe", "y", "firing")).await;
    assert_eq!(
        once_in(&m, "BreakMe", "y", "escalated").await["reason"],
        "circuit_open"
    );

    // "soon": fixed, and firing again at once: a relapse. That run does not hold: the alert
    // still fires after verify_for.
    send(&m, alert_at("FixMe", "soon", "firing", first)).await;
    once_in(&m, "FixMe", "soon", "verifying").await;
    send(&m, alert_at("FixMe", "soon", "resolved", first)).await;
    once_in(&m, "FixMe", "soon", "resolved").await;
    send(&m, alert_at("FixMe", "soon", "firing", second)).await;
    let relapse = once_in(&m, "FixMe", "soon", "escalated").await;
    assert_eq!(relapse["reason"], "still_firing");

    // "late" fires again once the window has passed since its fix: not a relapse.
    let left = RELAPSE_WINDOW.saturating_sub(late_fixed.elapsed());
    tokio::time::sleep(left + Duration::from_secs(1)).await;
    send(&m, alert_at("FixMe", "late", "firing", second)).await;
    once_in(&m, "FixMe", "late", "escalated").await;

    // A delivery with the wrong token: refused, counted by reason.
    let refused = client()
        .post(m.url("/webhook"))
        .bearer_auth("wrong")
        .json(&body(vec![alert("FixMe", "z", "firing")]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // Each still_firing escalation is notified, and the notification recorded, before the
    // outbox is read.
    eventually(WAIT, "the outbox to drain", || async {
        let text = metrics_text(&m).await;
        let s = samples(&text);
        (value(&s, "medic_escalation_outbox_pending") == Some(0.0)).then_some(())
    })
    .await;

    let text = metrics_text(&m).await;
    let s = samples(&text);
    let expect = |series: &str, want: f64| {
        assert_eq!(value(&s, series), Some(want), "{series} in\n{text}");
    };
    expect(
        r#"medic_incidents_resolved_total{route="fix",outcome="auto_remediated"}"#,
        2.0,
    );
    expect(
        r#"medic_incidents_resolved_total{route="broken",outcome="resolved_after_escalation"}"#,
        1.0,
    );
    expect(r#"medic_relapses_total{route="fix"}"#, 1.0);
    expect(r#"medic_relapses_total{route="broken"}"#, 0.0);
    expect(
        r#"medic_escalations_total{route="broken",reason="step_failed"}"#,
        1.0,
    );
    expect(
        r#"medic_escalations_total{route="broken",reason="circuit_open"}"#,
        1.0,
    );
    expect(
        r#"medic_escalations_total{route="fix",reason="still_firing"}"#,
        2.0,
    );
    expect(r#"medic_escalations_unnotified_total{route="fix"}"#, 0.0);
    expect(r#"medic_escalations_unnotified_total{route="broken"}"#, 0.0);
    expect(r#"medic_acks_total{route="broken",via="api"}"#, 1.0);
    expect(
        r#"medic_time_to_recovery_seconds_count{route="fix",path="automated"}"#,
        2.0,
    );
    expect(
        r#"medic_time_to_recovery_seconds_count{route="broken",path="after_escalation"}"#,
        1.0,
    );
    expect(
        r#"medic_runbook_runs_total{route="fix",result="completed"}"#,
        4.0,
    );
    expect(
        r#"medic_runbook_runs_total{route="broken",result="step_failed"}"#,
        1.0,
    );
    expect(r#"medic_breaker_state{route="broken"}"#, 2.0);
    expect(r#"medic_guard_refusals_total{limit="breaker"}"#, 1.0);
    expect(
        r#"medic_webhook_deliveries_total{outcome="unauthorized"}"#,
        1.0,
    );
    expect(r#"medic_escalation_outbox_oldest_due_seconds"#, 0.0);
    let build = s
        .iter()
        .find(|(series, _)| series.starts_with("medic_build_info{"))
        .expect("medic_build_info");
    assert_eq!(build.1, 1.0);
    assert!(
        build.0.starts_with(&format!(
            "medic_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        build.0
    );
    // Alert content never became a label: no instance, alertname or fingerprint.
    for (series, _) in &s {
        for leak in [
            "instance=",
            "alertname=",
            "fingerprint=",
            "FixMe",
            "BreakMe",
        ] {
            assert!(!series.contains(leak), "{series}");
        }
    }

    // Every name the dashboard and the rules use is a series medic exports now.
    let exported: BTreeSet<String> = s
        .iter()
        .map(|(series, _)| series.split('{').next().unwrap().to_string())
        .collect();
    let d = dashboard();
    let exprs = dashboard_exprs(&d);
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    let used: Vec<(String, &str)> = medic_names(&exprs.join("\n"))
        .into_iter()
        .map(|n| (n, "the dashboard"))
        .chain(medic_names(&rules).into_iter().map(|n| (n, "the rules")))
        .collect();
    assert!(used.len() > 20, "{used:?}");
    for (name, by) in &used {
        assert!(
            exported.contains(name),
            "{by} uses {name}, which medic does not export; it exports:\n{exported:#?}"
        );
    }

    // A real Prometheus scrapes this medic, evaluates the rules, and runs every query of
    // the dashboard (its variables as "All" and ranges short).
    let target = m.addr.clone();
    let prom = Prometheus::start("medic", &target, &rules_file()).await;
    eventually(
        Duration::from_secs(60),
        "three scrapes of medic",
        || async {
            let r = prom
                .query(r#"count_over_time(up{job="medic"}[1m]) >= 3 and up{job="medic"} == 1"#)
                .await;
            (!r["data"]["result"].as_array()?.is_empty()).then_some(())
        },
    )
    .await;
    for expr in &exprs {
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1m")
            .replace("$job", ".*")
            .replace("$route", ".*");
        let q = match q.strip_prefix("label_values(") {
            // A variable's query: the series it reads the values from.
            Some(inner) => inner.rsplit_once(',').unwrap().0.to_string(),
            None => q,
        };
        let r = prom.query(&q).await;
        assert_eq!(r["status"], "success", "{q}: {r}\n{}", prom.log());
        assert!(
            r["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "no data for {q}: {r}"
        );
    }
    // Every rule evaluates without error, and the breaker that is open makes
    // MedicBreakerStuckOpen pending for route broken (it fires after an hour).
    let pending = eventually(WAIT, "MedicBreakerStuckOpen pending", || async {
        let alerts = prom.api("/api/v1/alerts").await;
        alerts["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "MedicBreakerStuckOpen")
            .cloned()
    })
    .await;
    assert_eq!(pending["labels"]["route"], "broken");
    assert_eq!(pending["state"], "pending");
    let rules_state = prom.api("/api/v1/rules").await;
    let evaluated: Vec<&Value> = rules_state["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(
        evaluated.len(),
        rules.matches("- alert: ").count(),
        "{rules_state}"
    );
    for r in evaluated {
        assert_eq!(r["health"], "ok", "{r}");
    }
}
