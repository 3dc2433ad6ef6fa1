use super::*;
use crate::incident::State;

fn entry(event: &str, detail: Value) -> TimelineEntry {
    TimelineEntry {
        seq: 0,
        at: "2026-11-23T10:00:01Z".into(),
        event: event.into(),
        detail,
    }
}

pub(super) fn incident() -> Incident {
    let labels: BTreeMap<String, String> = [
        ("alertname", "DiskFull"),
        ("instance", "db1:9100"),
        ("severity", "critical"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    let annotations: BTreeMap<String, String> = [
        ("summary", "Disk /var is 97% full"),
        ("description", "Only 1 GiB left.\n<b>act</b>"),
        ("runbook_url", "https://wiki.example/disk"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    Incident {
        id: "01INC".into(),
        fingerprint: "f1".into(),
        alertname: "DiskFull".into(),
        labels,
        annotations,
        state: State::Escalated,
        reason: Some(Reason::StillFiring),
        outcome: None,
        route: Some("disk".into()),
        runbook: Some("disk_full.rhai".into()),
        generator_url: "http://prometheus:9090/graph?g0.expr=x".into(),
        started_at: "2026-11-23T10:00:00Z".into(),
        updated_at: "2026-11-23T10:05:00Z".into(),
        last_seen_at: "2026-11-23T10:05:00Z".into(),
        resolved_at: None,
        deliveries: 3,
        attempts: 1,
        message: Some("the alert was still firing 5m after the runbook ended".into()),
        external_url: "http://alertmanager:9093".into(),
        verify_until: None,
        escalated_at: Some("2026-11-23T10:05:00Z".into()),
        acknowledged_by: None,
        escalation_group: None,
        approval: None,
        timeline: Some(vec![
            entry("run_started", json!({"runbook": "disk_full.rhai"})),
            entry(
                "step_started",
                json!({"step": "exec", "args": {"program": "cleanup", "path": "/usr/bin/cleanup", "args": ["/var"]}}),
            ),
            entry(
                "step_finished",
                json!({"step": "exec", "code": 0, "duration_ms": 42, "stdout": "freed 3 GiB\n", "stderr": ""}),
            ),
            entry("runbook_log", json!({"message": "cleanup done"})),
            entry(
                "step_failed",
                json!({"step": "http", "args": {"method": "GET", "url": "http://x/health"}, "reason": "timeout", "error": "no answer in 10s"}),
            ),
        ]),
    }
}

#[test]
fn the_first_screen_says_what_is_broken_what_was_tried_what_to_do() {
    let m = Message::new(
        &incident(),
        NotificationKind::Escalated,
        "https://medic.example",
    );
    assert_eq!(
        m.title,
        "[medic] ESCALATED DiskFull on db1:9100: still_firing"
    );
    let text = m.text();
    let broken = text.find("WHAT IS BROKEN").unwrap();
    let tried = text.find("WHAT WAS TRIED").unwrap();
    let todo = text.find("WHAT TO DO").unwrap();
    let steps = text.find("STEPS").unwrap();
    assert!(broken < tried && tried < todo && todo < steps, "{text}");
    assert!(text.contains("DiskFull: Disk /var is 97% full"), "{text}");
    assert!(text.contains("severity: critical   firing since: 2026-11-23T10:00:00Z"));
    assert!(
        text.contains("Runbook disk_full.rhai: 2 step(s), 1 failed."),
        "{text}"
    );
    assert!(text.contains(
        "Why medic stopped: still_firing: the alert was still firing 5m after the runbook ended"
    ));
    assert!(
        text.contains("1. exec /usr/bin/cleanup /var -> exit 0 in 42 ms"),
        "{text}"
    );
    assert!(text.contains("       | freed 3 GiB"), "{text}");
    assert!(text.contains("3. http GET http://x/health -> failed (timeout): no answer in 10s"));
    assert!(text.contains("Follow the alert's runbook: https://wiki.example/disk"));
    assert!(text.contains("https://medic.example/api/v1/incidents/01INC/ack"));
    assert_eq!(
            m.links.silence.as_deref(),
            Some("http://alertmanager:9093/#/silences/new?filter=%7Balertname%3D%22DiskFull%22%2Cinstance%3D%22db1%3A9100%22%2Cseverity%3D%22critical%22%7D")
        );
    assert_eq!(
        m.links.source.as_deref(),
        Some("http://prometheus:9090/graph?g0.expr=x")
    );
}

#[test]
fn a_label_with_a_newline_cannot_add_lines_to_the_message() {
    assert_eq!(
        one_line("web-1\nSubject: forged\t\0"),
        "web-1\\nSubject: forged\\t\\u{0}"
    );
    let long = "x".repeat(5000);
    let shown = one_line(&long);
    assert!(
        shown.starts_with(&"x".repeat(ONE_LINE_MAX)) && shown.ends_with("... (5000 bytes)"),
        "{shown}"
    );

    let mut i = incident();
    i.labels
        .insert("instance".into(), "db1\nforged: line".into());
    let m = Message::new(&i, NotificationKind::Escalated, "http://m");
    assert!(!m.title.contains('\n'), "{}", m.title);
    let text = m.text();
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("forged")),
        "{text}"
    );
    assert!(text.contains("instance=db1\\nforged: line"), "{text}");
}

#[test]
fn html_escapes_alert_content() {
    let m = Message::new(&incident(), NotificationKind::Escalated, "http://m");
    let html = m.html();
    assert!(
        html.contains("Only 1 GiB left.\n&lt;b&gt;act&lt;/b&gt;"),
        "{html}"
    );
    assert!(!html.contains("<b>act</b>"));
    assert!(
        html.contains("<pre style=\"margin:0\">freed 3 GiB</pre>"),
        "{html}"
    );
}

#[test]
fn refusals_and_missing_runbooks_are_said_plainly() {
    let mut i = incident();
    i.reason = Some(Reason::CircuitOpen);
    i.message = Some("the breaker of route disk is open until 10:20".into());
    i.timeline = Some(vec![]);
    let m = Message::new(&i, NotificationKind::Escalated, "http://m");
    assert_eq!(
            m.refused.as_deref(),
            Some("medic did not run the runbook (circuit_open): the breaker of route disk is open until 10:20")
        );
    i.reason = Some(Reason::NoRunbook);
    i.runbook = None;
    let m = Message::new(&i, NotificationKind::Escalated, "http://m");
    assert!(m.text().contains("Nothing: no runbook handles this alert."));
    assert_eq!(m.refused, None);
}

#[test]
fn long_output_keeps_its_end() {
    let long: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    let t = trim_output(&long);
    assert!(t.starts_with("... (28 lines above)\nline 29"), "{t}");
    assert!(t.ends_with("line 40"));
    let wide = "x".repeat(5000);
    assert_eq!(trim_output(&wide).len(), OUTPUT_CHARS + 3);
}

#[test]
fn resolution_is_short() {
    let mut i = incident();
    i.state = State::Resolved;
    i.outcome = Some(crate::incident::Outcome::ResolvedAfterEscalation);
    i.resolved_at = Some("2026-11-23T11:00:00Z".into());
    let m = Message::new(&i, NotificationKind::Resolved, "http://m");
    assert_eq!(
        m.title,
        "[medic] RESOLVED DiskFull on db1:9100 (was still_firing)"
    );
    assert!(m.text().contains("outcome: resolved_after_escalation"));
    assert_eq!(
        m.slack()["text"].as_str().map(|t| t.contains("RESOLVED")),
        Some(true)
    );
}
