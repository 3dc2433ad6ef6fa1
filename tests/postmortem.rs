//! `medic postmortem` and the console's postmortem page.
//!
//! The histories are made by the engine in-process on paused time that starts at a fixed
//! UTC time (`common::engine`), so every stored time is known exactly; the drafts are
//! written by the real binary (`medic postmortem --tz ...`) on the same store. Drafts are
//! read back with a CommonMark parser (with GitHub's tables) to check their structure and
//! that alert content stays text.
//!
//! The golden file `tests/fixtures/postmortem/escalated-then-acked.md` keeps the draft's
//! form stable. After a deliberate change of form, regenerate it with
//! `MEDIC_BLESS=1 cargo test --test suite postmortem::the_draft_keeps_its_form` and review
//! the diff.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulldown_cmark::HeadingLevel;
use serde_json::{json, Value};

use common::engine::until;
use common::markdown::{read, Read};
use common::scenario::Scenario;
use common::{alert, script, store_config, API_TOKEN, WEBHOOK_TOKEN};

/// When the engine's clock starts: two minutes after the test alerts' `startsAt`.
const START: &str = "2026-11-23T10:02:00Z";

fn start() -> DateTime<Utc> {
    START.parse().unwrap()
}

/// The sections of every draft, in order.
const SECTIONS: [&str; 8] = [
    "Summary",
    "Impact window",
    "Detection and response",
    "Timeline",
    "What went well",
    "What went wrong",
    "Action items (suggested)",
    "Record",
];

/// Two scripts in `<dir>/bin`: `check-service` works (exit 0), `restart-service` fails
/// (exit 3, with output on both streams).
fn scripts(dir: &Path) {
    script(
        dir,
        "check-service",
        "echo \"probe $1: connection refused\"\nexit 0",
    );
    script(
        dir,
        "restart-service",
        "echo \"restarting $1\"\necho 'error: unit web.service not found' >&2\nexit 3",
    );
}

/// A runbook that checks, then restarts, and escalates when the restart fails.
fn restart_runbook(dir: &Path) -> String {
    format!(
        r#"let c = exec("{check}", [alert.labels.instance]);
let r = exec("{restart}", [alert.labels.instance]);
if r.code != 0 {{ escalate(`restart failed with exit ${{r.code}}`); }}
"#,
        check = dir.join("bin/check-service").display(),
        restart = dir.join("bin/restart-service").display(),
    )
}

/// A config paging the `oncall` file channel, with `routes` and `limits` added.
fn config(dir: &Path, limits: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
webhook_token = "{WEBHOOK_TOKEN}"
api_token = "{API_TOKEN}"

[store]
{store}

[runbooks]
dir = "{runbooks}"
allowed_commands = ["{check}", "{restart}"]

[limits]
{limits}

[escalation]
notify = ["oncall"]

[[escalation.channels]]
name = "oncall"
type = "file"
path = "{oncall}"

[[routes]]
name = "restart"
matchers = ['alertname="ServiceDown"']
runbook = "restart.rhai"
{routes}
"#,
        store = store_config(dir),
        runbooks = dir.join("runbooks").display(),
        check = dir.join("bin/check-service").display(),
        restart = dir.join("bin/restart-service").display(),
        oncall = dir.join("oncall.jsonl").display(),
    )
}

async fn engine(limits: &str, routes: &str) -> Scenario {
    let (limits, routes) = (limits.to_string(), routes.to_string());
    // The runbook names script paths inside the engine's directory: written by `prepare`.
    Scenario::start(
        start(),
        |dir| {
            scripts(dir);
            std::fs::write(dir.join("runbooks/restart.rhai"), restart_runbook(dir)).unwrap();
            std::fs::write(dir.join("runbooks/fix.rhai"), "log(\"fixed\");\n").unwrap();
        },
        move |dir| config(dir, &limits, &routes),
    )
    .await
}

/// An alert as `common::alert` makes it, starting at `starts_at`.
fn alert_at(name: &str, instance: &str, status: &str, starts_at: &str, ends_at: &str) -> Value {
    let mut a = alert(name, instance, status);
    a["startsAt"] = json!(starts_at);
    if status == "resolved" {
        a["endsAt"] = json!(ends_at);
    }
    a
}

/// The incident `id`, once `done` holds for it.
async fn when(e: &Scenario, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    until(what, || async {
        let inc = e.api(&format!("/api/v1/incidents/{id}")).await;
        done(&inc).then_some(inc)
    })
    .await
}

fn has_event(inc: &Value, event: &str, kind: Option<&str>) -> bool {
    inc["timeline"].as_array().is_some_and(|t| {
        t.iter()
            .any(|e| e["event"] == event && kind.is_none_or(|k| e["detail"]["kind"] == k))
    })
}

/// The history of the golden draft: a restart that fails and escalates at 10:02:00, on-call
/// told at once, an ack by alice seven minutes later, the alert resolved three minutes
/// after that (10:12:00). Returns the incident.
async fn escalated_then_acked(e: &Scenario) -> Value {
    e.post_webhook(vec![alert("ServiceDown", "web1:80", "firing")])
        .await;
    let id = e.when_in_state("escalated", 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    when(e, &id, "the escalation sent", |i| {
        has_event(i, "notification_sent", Some("escalated"))
    })
    .await;
    e.advance(Duration::from_secs(7 * 60)).await;
    e.ack(&id, "alice").await;
    e.advance(Duration::from_secs(3 * 60)).await;
    e.post_webhook(vec![alert_at(
        "ServiceDown",
        "web1:80",
        "resolved",
        "2026-11-23T10:00:00Z",
        "2026-11-23T10:12:00Z",
    )])
    .await;
    when(e, &id, "the resolution told", |i| {
        i["state"] == "resolved" && has_event(i, "notification_sent", Some("resolved"))
    })
    .await
}

/// The draft's sections are exactly [`SECTIONS`], in order, under one title.
fn assert_sections(draft: &str, r: &Read) {
    let h1: Vec<_> = r
        .headings
        .iter()
        .filter(|(l, _)| *l == HeadingLevel::H1)
        .collect();
    assert_eq!(h1.len(), 1, "one title: {h1:?}\n{draft}");
    assert!(h1[0].1.starts_with("Postmortem draft: "), "{h1:?}");
    let h2: Vec<&str> = r
        .headings
        .iter()
        .filter(|(l, _)| *l == HeadingLevel::H2)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(h2, SECTIONS, "{draft}");
    for (level, text) in &r.headings {
        let ours = match level {
            HeadingLevel::H1 | HeadingLevel::H2 => true,
            HeadingLevel::H3 => text.starts_with("The step that failed"),
            _ => false,
        };
        assert!(ours, "a heading medic did not write: {text:?}\n{draft}");
    }
    for t in &r.tables {
        for row in t {
            assert_eq!(
                row.len(),
                t[0].len(),
                "a row of another width: {row:?}\n{draft}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_escalated_then_acked_incident_has_every_section_its_failing_step_and_its_durations() {
    let e = engine("", "").await;
    let inc = escalated_then_acked(&e).await;
    let id = inc["id"].as_str().unwrap();
    let (code, draft, err) = e.cli(&["postmortem", "--tz", "Europe/Paris", id]);
    assert_eq!(code, 0, "{err}");
    let r = read(&draft);
    assert_sections(&draft, &r);
    assert!(r.html.is_empty() && r.links.is_empty(), "{r:?}");

    // The failing step: its argv, exit code and output (both streams).
    let restart = e.dir.as_path().join("bin/restart-service");
    let argv = format!("exec {} web1:80", restart.display());
    assert!(r.code.contains(&argv), "{:?}", r.code);
    assert!(draft.contains("Exit code: 3"), "{draft}");
    assert_eq!(
        r.blocks,
        vec!["restarting web1:80\n[stderr]\nerror: unit web.service not found\n"]
    );
    // The step that worked, and the guard-free facts of the response.
    let check = format!(
        "exec {} web1:80",
        e.dir.as_path().join("bin/check-service").display()
    );
    assert!(
        draft.contains(&format!("- Step `{check}` worked.")),
        "{draft}"
    );
    assert!(draft.contains("- A person (`alice`) took it over 7m 0s after the escalation."));
    assert!(draft.contains("- On-call was told through `oncall` 0s after the escalation."));

    // Durations, exactly: the alert started at 10:00:00 UTC, medic got it at 10:02:00,
    // ran and escalated at once, alice acked at 10:09:00, it resolved at 10:12:00.
    for line in [
        "From 2026-11-23 11:00:00 +01:00 (the alert started firing) to 2026-11-23 11:12:00 +01:00 (it resolved): **12m 0s**.",
        "- **Time to detect** (the alert started → medic received it): 2m 0s",
        "- **Time to first action** (received → the runbook started): 0s",
        "- **Time to escalate** (received → escalated): 0s",
        "- **Time to acknowledge** (escalated → acknowledged): 7m 0s",
        "- **Time to resolve** (the alert started → resolved): 12m 0s",
        "- **Waiting for a person** (escalated → acknowledged, else resolved, else now): 7m 0s",
        "| Acknowledged by `alice` | 2026-11-23 11:09:00 +01:00 | 9m 0s |",
        "- It waited 7m 0s for a person after the escalation, until a person acknowledged it.",
        "- **Outcome:** resolved `resolved_after_escalation`, 12m 0s after the alert started",
    ] {
        assert!(draft.contains(line), "missing {line:?} in\n{draft}");
    }
    // The timeline holds every audit entry of the incident, in the reader's zone.
    let entries = inc["timeline"].as_array().unwrap().len();
    let timeline = draft
        .split("## Timeline")
        .nth(1)
        .unwrap()
        .split("## ")
        .next()
        .unwrap();
    let rows = timeline
        .lines()
        .filter(|l| l.starts_with("| 2026-"))
        .count();
    assert_eq!(rows, entries, "{timeline}");
    assert!(timeline.contains(
        "| 2026-11-23 11:09:00 +01:00 | `incident_acknowledged` | acknowledged by `alice` |"
    ));

    // The same draft in another zone moves every time, and only that.
    let (_, utc, _) = e.cli(&["postmortem", "--tz", "UTC", id]);
    assert!(utc.contains("| Acknowledged by `alice` | 2026-11-23 10:09:00 +00:00 | 9m 0s |"));
    assert_eq!(utc.lines().count(), draft.lines().count());
    e.stop().await;
}

/// Replaces what differs from run to run (ids, the temporary directory, how long a
/// program ran) with placeholders.
fn normalized(draft: &str, inc: &Value, dir: &Path) -> String {
    let mut text = draft
        .replace(inc["id"].as_str().unwrap(), "<incident>")
        .replace(&dir.display().to_string(), "<dir>");
    if let Some(g) = inc["escalation_group"].as_str() {
        text = text.replace(g, "<group>");
    }
    regex::Regex::new(r"in \d+ ms")
        .unwrap()
        .replace_all(&text, "in <n> ms")
        .into_owned()
}

#[tokio::test(start_paused = true)]
async fn the_draft_keeps_its_form() {
    let e = engine("", "").await;
    let inc = escalated_then_acked(&e).await;
    let (code, draft, err) = e.cli(&[
        "postmortem",
        "--tz",
        "Europe/Paris",
        inc["id"].as_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let got = normalized(&draft, &inc, e.dir.as_path());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/postmortem/escalated-then-acked.md");
    if std::env::var_os("MEDIC_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("the golden file (MEDIC_BLESS=1 writes it)");
    assert!(
        got == want,
        "the draft changed form; if on purpose, regenerate it (see this file's doc).\n--- want\n{want}\n--- got\n{got}"
    );
    e.stop().await;
}

#[tokio::test]
async fn an_unknown_incident_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    scripts(dir.path());
    let cfg = dir.path().join("medic.toml");
    std::fs::write(&cfg, config(dir.path(), "", "")).unwrap();
    let run = |args: &[&str]| common::medic_cli(dir.path(), args, &cfg);
    for id in ["01KZZZZZZZZZZZZZZZZZZZZZZZ", "../../etc/passwd"] {
        let (code, out, err) = run(&["postmortem", id]);
        assert_eq!(code, 1, "{id}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(&format!("{id:?}")), "{err}");
    }
    let (code, _, err) = run(&[
        "postmortem",
        "--tz",
        "Mars/Olympus",
        "01KZZZZZZZZZZZZZZZZZZZZZZZ",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Mars/Olympus"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_storm_gets_one_draft_covering_its_incidents() {
    let e = engine("storm_window = \"2m\"", "").await;
    e.post_webhook(vec![
        alert("ServiceDown", "web1:80", "firing"),
        alert("ServiceDown", "web2:80", "firing"),
        alert("ServiceDown", "web3:80", "firing"),
    ])
    .await;
    let incidents = e.when_in_state("escalated", 3).await;
    let group = incidents[0]["escalation_group"].as_str().unwrap();
    assert!(incidents.iter().all(|i| i["escalation_group"] == group));
    // The first one's own notification goes out at once; a minute later (before the
    // group's summary is due) every alert resolves, nobody having acknowledged: the drafts
    // are read once that is told, so that none depends on when it is written.
    let told = |kind: &'static str| {
        let e = &e;
        let incidents = &incidents;
        async move {
            for i in incidents {
                let one = e
                    .api(&format!("/api/v1/incidents/{}", i["id"].as_str()?))
                    .await;
                if has_event(&one, "notification_sent", Some(kind)) {
                    return Some(());
                }
            }
            None
        }
    };
    until("the first escalation told", || told("escalated")).await;
    e.advance(Duration::from_secs(60)).await;
    let resolved: Vec<Value> = ["web1:80", "web2:80", "web3:80"]
        .iter()
        .map(|i| {
            alert_at(
                "ServiceDown",
                i,
                "resolved",
                "2026-11-23T10:00:00Z",
                "2026-11-23T10:03:00Z",
            )
        })
        .collect();
    e.post_webhook(resolved).await;
    e.when_in_state("resolved", 3).await;
    until("the resolution told", || told("resolved")).await;
    let mut drafts = Vec::new();
    for i in &incidents {
        let (code, draft, err) = e.cli(&["postmortem", "--tz", "UTC", i["id"].as_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        drafts.push(draft);
    }
    assert!(
        drafts.windows(2).all(|w| w[0] == w[1]),
        "one draft, whichever member is asked"
    );
    let draft = &drafts[0];
    let r = read(draft);
    assert_sections(draft, &r);
    assert!(draft.starts_with("# Postmortem draft: storm of 3 incidents on route `restart`\n"));
    for i in &incidents {
        let id = i["id"].as_str().unwrap();
        assert!(
            draft.contains(&format!("| `{id}` |")),
            "member {id} listed\n{draft}"
        );
        let instance = i["labels"]["instance"].as_str().unwrap();
        let argv = format!(
            "exec {} {instance}",
            e.dir.as_path().join("bin/restart-service").display()
        );
        assert!(
            draft.contains(&argv),
            "its steps are in the timeline: {argv}"
        );
    }
    assert!(
        draft.contains("(in 3 of 3 incidents; the first shown)"),
        "{draft}"
    );
    assert!(
        draft.contains("- **Escalated:** 3 of 3; told `oncall`"),
        "{draft}"
    );
    for line in [
        "From 2026-11-23 10:00:00 +00:00 (the first alert started firing) to 2026-11-23 10:03:00 +00:00 (the last one resolved): **3m 0s**.",
        "- **Outcome:** 3 of 3 resolved, 0 still open",
        "- It waited 1m 0s for a person after the escalation (the longest of its incidents), and nobody acknowledged it before it resolved.",
        "- [ ] Nobody acknowledged the escalation (3 of 3 incidents)",
    ] {
        assert!(draft.contains(line), "missing {line:?}\n{draft}");
    }
    e.stop().await;
}

/// Alert content that would be Markdown, HTML, links or new lines if written as is.
fn hostile() -> Value {
    let mut a = alert("ServiceDown", "x", "firing");
    a["labels"] = json!({
        "alertname": "ServiceDown",
        "instance": "web1\n# Injected heading\n<script>alert(1)</script>",
        "severity": "critical | injected cell | another",
        "team": "[click me](https://evil.example/a) ![img](https://evil.example/i.png)",
        "owner": "https://evil.example/bare www.evil.example mallory@evil.example",
        "tick`s": "```\n# not a heading\n````",
        "bidi": "admin\u{202E}txt.exe",
    });
    a["annotations"] = json!({
        "summary": "<img src=x onerror=alert(1)> **bold** _it_ <https://evil.example/auto>",
    });
    a
}

#[tokio::test(start_paused = true)]
async fn hostile_alert_content_stays_text_in_the_draft() {
    let e = Scenario::start(
        start(),
        |dir| {
            script(
                dir,
                "restart-service",
                "printf '%s\\n' \"$1\"\necho '```'\necho '# pwned'\necho '<img src=x onerror=alert(2)> [x](https://evil.example/o)'\nexit 1",
            );
            script(dir, "check-service", "exit 0");
            std::fs::write(dir.join("runbooks/restart.rhai"), restart_runbook(dir)).unwrap();
        },
        |dir| config(dir, "", ""),
    )
    .await;
    e.post_webhook(vec![hostile()]).await;
    let inc = &e.when_in_state("escalated", 1).await[0];
    let id = inc["id"].as_str().unwrap();
    let (code, draft, err) = e.cli(&["postmortem", "--tz", "UTC", id]);
    assert_eq!(code, 0, "{err}");
    let r = read(&draft);
    assert_sections(&draft, &r);
    assert!(r.html.is_empty(), "HTML in the draft: {:?}", r.html);
    assert!(r.links.is_empty(), "links in the draft: {:?}", r.links);
    for bad in [
        "evil.example",
        "<script",
        "onerror",
        "pwned",
        "Injected",
        "injected cell",
        "\u{202E}",
    ] {
        assert!(!r.prose.contains(bad), "{bad:?} outside code:\n{}", r.prose);
    }
    // Each value is whole inside one code span: no table cell, line or span broke it.
    let shown = |s: &str| r.code.iter().any(|c| c.contains(s));
    for whole in [
        "web1\\n# Injected heading\\n<script>alert(1)</script>",
        "critical | injected cell | another",
        "[click me](https://evil.example/a) ![img](https://evil.example/i.png)",
        "https://evil.example/bare www.evil.example mallory@evil.example",
        "```\\n# not a heading\\n````",
        "admin\\u{202e}txt.exe",
        "<img src=x onerror=alert(1)> **bold** _it_ <https://evil.example/auto>",
    ] {
        assert!(
            shown(whole),
            "{whole:?} not whole in a code span: {:#?}",
            r.code
        );
    }
    // Each label is one row of two cells in the record, its value whole.
    let labels = r
        .tables
        .iter()
        .find(|t| t[0] == ["Label", "Value"])
        .expect("the labels' table");
    for (k, v) in [
        ("severity", "critical | injected cell | another"),
        ("tick`s", "```\\n# not a heading\\n````"),
        (
            "instance",
            "web1\\n# Injected heading\\n<script>alert(1)</script>",
        ),
    ] {
        assert!(
            labels.contains(&vec![k.to_string(), v.to_string()]),
            "{k}: {labels:#?}"
        );
    }
    // The step's output is one code block, whole, fence and all.
    assert!(
        r.blocks
            .iter()
            .any(|b| b.contains("```\n# pwned\n<img src=x onerror=alert(2)>")),
        "{:?}",
        r.blocks
    );
    e.stop().await;
}

#[tokio::test(start_paused = true)]
async fn action_items_are_drawn_from_the_history() {
    let routes = r#"
[[routes]]
name = "flaky"
matchers = ['alertname="Flaky"']
runbook = "fix.rhai"
verify_for = "1h"
"#;
    let e = engine("relapse_window = \"5m\"", routes).await;
    let id_of = |v: &Value| v["id"].as_str().unwrap().to_string();
    let on = |list: &[Value], instance: &str| {
        list.iter()
            .find(|i| i["labels"]["instance"] == instance)
            .map(id_of)
    };
    let flaky = |instance: &str, status: &str, starts: &str, ends: &str| {
        alert_at("Flaky", instance, status, starts, ends)
    };
    let t0 = "2026-11-23T10:00:00Z";

    // Two fixes at 10:02:30 that do not stick. db2 fires again two minutes later: within
    // the 5m window, so the store records it as a relapse. db1 fires again at 10:12:00,
    // 9m 30s after its fix: past the window, recorded as nothing.
    e.post_webhook(vec![
        flaky("db1", "firing", t0, ""),
        flaky("db2", "firing", t0, ""),
    ])
    .await;
    let verifying = e.when_in_state("verifying", 2).await;
    let (fixed1, fixed2) = (
        on(&verifying, "db1").unwrap(),
        on(&verifying, "db2").unwrap(),
    );
    e.advance(Duration::from_secs(30)).await;
    let end = "2026-11-23T10:02:30Z";
    e.post_webhook(vec![
        flaky("db1", "resolved", t0, end),
        flaky("db2", "resolved", t0, end),
    ])
    .await;
    for id in [&fixed1, &fixed2] {
        when(&e, id, "the fix", |i| i["outcome"] == "auto_remediated").await;
    }
    e.advance(Duration::from_secs(2 * 60)).await;
    e.post_webhook(vec![flaky("db2", "firing", "2026-11-23T10:04:30Z", "")])
        .await;
    let again2 = on(&e.when_in_state("verifying", 1).await, "db2").unwrap();
    e.advance(Duration::from_secs(7 * 60 + 30)).await;
    e.post_webhook(vec![flaky("db1", "firing", "2026-11-23T10:12:00Z", "")])
        .await;
    let again1 = on(&e.when_in_state("verifying", 2).await, "db1").unwrap();
    assert_ne!(fixed1, again1);

    // The same step failing in two incidents of a route, ten minutes apart (two storms).
    e.post_webhook(vec![alert("ServiceDown", "web1:80", "firing")])
        .await;
    let first_failure = id_of(&e.when_in_state("escalated", 1).await[0]);
    e.advance(Duration::from_secs(10 * 60)).await;
    e.post_webhook(vec![alert("ServiceDown", "web2:80", "firing")])
        .await;
    let second_failure = e
        .when_in_state("escalated", 2)
        .await
        .iter()
        .filter(|i| i["alertname"] == "ServiceDown")
        .map(id_of)
        .find(|id| *id != first_failure)
        .unwrap();

    // An alert no runbook handles, escalated three times, two minutes apart.
    let mut unrouted = Vec::new();
    for n in 1..=3 {
        e.post_webhook(vec![alert("Unhandled", &format!("h{n}"), "firing")])
            .await;
        let list = e.when_in_state("escalated", 2 + n).await;
        unrouted = list
            .iter()
            .filter(|i| i["alertname"] == "Unhandled")
            .map(id_of)
            .collect();
        e.advance(Duration::from_secs(120)).await;
    }
    assert_eq!(unrouted.len(), 3);

    let draft = |id: &str| {
        let (code, text, err) = e.cli(&["postmortem", "--tz", "UTC", id]);
        assert_eq!(code, 0, "{err}");
        text
    };
    let recorded = format!(
        "- [ ] Relapse: the alert fired again 2m 0s after incident `{fixed2}` was fixed automatically (incident `{again2}`; recorded as a relapse when it opened)"
    );
    for id in [&fixed2, &again2] {
        let d = draft(id);
        assert!(d.contains(&recorded), "{id}: missing {recorded:?}\n{d}");
    }
    for id in [&fixed1, &again1] {
        let d = draft(id);
        assert!(!d.contains("Relapse"), "past the window, not recorded: {d}");
    }
    let step = format!(
        "exec {}",
        e.dir.as_path().join("bin/restart-service").display()
    );
    for (id, other) in [
        (&second_failure, &first_failure),
        (&first_failure, &second_failure),
    ] {
        let d = draft(id);
        let item = format!(
            "- [ ] Runbook `restart.rhai` also stopped at `{step}` in 1 other incident of route `restart` since 2026-10-24 (`{other}`)"
        );
        assert!(d.contains(&item), "missing {item:?}\n{d}");
        assert!(!d.contains("Relapse"), "{d}");
    }
    let d = draft(&unrouted[2]);
    for item in [
        "- [ ] `Unhandled` has no runbook and was escalated 3 times since 2026-10-24",
        "- [ ] Nobody acknowledged the escalation: check who was on call, and that the default escalation policy reaches them.",
    ] {
        assert!(d.contains(item), "missing {item:?}\n{d}");
    }
    assert!(d.contains("nobody has acknowledged it yet"), "{d}");

    // The record: the opening of db2's new incident names the fix, db1's names none.
    for (again, fixed) in [(&again2, json!(fixed2)), (&again1, Value::Null)] {
        let inc = e.api(&format!("/api/v1/incidents/{again}")).await;
        assert_eq!(inc["timeline"][0]["detail"]["relapse_of"], fixed, "{inc}");
    }
    // With a longer window in the config the command is given, the draft finds db1's
    // relapse, which the record says nothing of.
    let long = e.dir.as_path().join("long.toml");
    let text = std::fs::read_to_string(e.config())
        .unwrap()
        .replace("relapse_window = \"5m\"", "relapse_window = \"1h\"");
    std::fs::write(&long, text).unwrap();
    let found = format!(
        "- [ ] Relapse: the alert fired again 9m 30s after incident `{fixed1}` was fixed automatically (incident `{again1}`; the relapse window is 1h 0m)"
    );
    for id in [&fixed1, &again1] {
        let args = ["postmortem", "--tz", "UTC", id.as_str()];
        let (code, d, err) = common::medic_cli(e.dir.as_path(), &args, &long);
        assert_eq!(code, 0, "{err}");
        assert!(d.contains(&found), "{id}: missing {found:?}\n{d}");
    }
    e.stop().await;
}

/// Over HTTP, on the real binary: the page for any logged-in role, linked from the
/// incident's page; the download as a Markdown attachment, the same text as the command.
#[tokio::test]
async fn the_console_page_shows_the_draft_and_downloads_it() {
    use common::console::{browser, get, log_in};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = common::Medic::start_in(dir, &common::console::config(dir));
    let firing = alert("ServiceDown", "<b>web1</b>", "firing");
    assert_eq!(
        common::post_webhook(&m, &common::body(vec![firing]))
            .await
            .0,
        200
    );
    let id = common::eventually(Duration::from_secs(30), "the escalation", || async {
        let list = common::incidents(&m).await;
        let i = list.iter().find(|i| i["state"] == "escalated")?;
        Some(i["id"].as_str()?.to_string())
    })
    .await;
    let page_path = format!("/ui/incidents/{id}/postmortem");
    let file_path = format!("{page_path}.md?tz=Europe%2FParis");

    // Nobody logged in: the login page, for the page and the file.
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [&page_path, &file_path] {
        let r = anonymous.get(m.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/ui/login");
    }

    // A viewer reads it, from a link on the incident's page.
    let b = browser();
    log_in(&b, &m, "vic", "vic's password").await;
    let (status, incident_page) = get(&b, &m, &format!("/ui/incidents/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        incident_page.contains(&format!("href=\"{page_path}\"")),
        "{incident_page}"
    );
    let (status, page) = get(&b, &m, &page_path).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(
            "<pre id=\"draft\"># Postmortem draft: `ServiceDown` on `&lt;b&gt;web1&lt;/b&gt;`"
        ),
        "{page}"
    );
    assert!(!page.contains("<b>web1"), "unescaped");
    assert!(
        page.contains(&format!("href=\"{page_path}.md?tz=UTC\"")),
        "{page}"
    );
    assert!(
        page.contains("id=\"copy\" type=\"button\" hidden"),
        "{page}"
    );
    assert!(
        page.contains("<script src=\"/ui/static/postmortem.js\""),
        "{page}"
    );
    let (status, js) = get(&b, &m, "/ui/static/postmortem.js").await;
    assert_eq!(status, 200);
    assert!(js.contains("navigator.clipboard"));

    // Taken over and resolved, the draft no longer depends on when it is written: the file
    // is the command's output, byte for byte.
    let r = common::client()
        .post(m.url(&format!("/api/v1/incidents/{id}/ack")))
        .bearer_auth(API_TOKEN)
        .json(&json!({"by": "rita"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let resolved = alert("ServiceDown", "<b>web1</b>", "resolved");
    assert_eq!(
        common::post_webhook(&m, &common::body(vec![resolved]))
            .await
            .0,
        200
    );
    common::eventually(Duration::from_secs(30), "the resolution told", || async {
        let inc = common::api(&m, &format!("/api/v1/incidents/{id}")).await;
        (inc["state"] == "resolved" && has_event(&inc, "notification_sent", Some("resolved")))
            .then_some(())
    })
    .await;
    let r = b.get(m.url(&file_path)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/markdown; charset=utf-8");
    assert_eq!(
        r.headers()["content-disposition"],
        format!("attachment; filename=\"postmortem-{id}.md\"").as_str()
    );
    let file = r.text().await.unwrap();
    let (code, out, err) = m.run_cli(&["postmortem", "--tz", "Europe/Paris", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(file, out);
    assert!(file.contains("- **Taken over:** by `rita`"), "{file}");

    // A zone that does not exist, an incident that does not.
    let (status, _) = get(&b, &m, &format!("{page_path}?tz=Mars%2FOlympus")).await;
    assert_eq!(status, 400);
    let (status, _) = get(
        &b,
        &m,
        "/ui/incidents/01KZZZZZZZZZZZZZZZZZZZZZZZ/postmortem.md",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_opened_and_then_refused_is_in_both_drafts() {
    let e = engine("", "breaker = { failures = 1, cooldown = \"1h\" }").await;
    e.post_webhook(vec![alert("ServiceDown", "web1:80", "firing")])
        .await;
    let failed = e.when_in_state("escalated", 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    until("the breaker open", || async {
        let b = e.api("/api/v1/breakers").await;
        (b["breakers"][0]["state"] == "open").then_some(())
    })
    .await;
    e.advance(Duration::from_secs(5 * 60)).await;
    e.post_webhook(vec![alert("ServiceDown", "web2:80", "firing")])
        .await;
    let refused = until("the refusal", || async {
        let all = e.when_in_state("escalated", 2).await;
        let r = all.iter().find(|i| i["reason"] == "circuit_open")?;
        Some(r["id"].as_str()?.to_string())
    })
    .await;
    let draft = |id: &str| {
        let (code, text, err) = e.cli(&["postmortem", "--tz", "UTC", id]);
        assert_eq!(code, 0, "{err}");
        text
    };
    let d = draft(&failed);
    assert!(
        d.contains("- Circuit breaker `"),
        "the breaker this failure opened\n{d}"
    );
    assert!(d.contains("` opened after this failure"), "{d}");
    let d = draft(&refused);
    assert!(
        d.contains("- Guard `breaker` held: medic did not run the runbook again and told a person instead."),
        "{d}"
    );
    assert!(
        d.contains("- medic did not run the runbook: guard `breaker` refused it: `"),
        "{d}"
    );
    assert!(
        d.contains("- **What medic did:** nothing: guard `breaker` refused to run the runbook"),
        "{d}"
    );
    assert!(
        !d.contains("opened after this failure"),
        "not this one's: {d}"
    );
    e.stop().await;
}
