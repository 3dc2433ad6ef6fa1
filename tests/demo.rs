//! The flagship: `scripts/demo.sh` runs the whole self-healing loop with real parts (a
//! real Prometheus scraping a small service, a real Alertmanager, medic, a real SMTP
//! server), and this test checks what it leaves behind.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn demo(args: &[&str], out: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .args(args)
        .env("MEDIC_BIN", env!("CARGO_BIN_EXE_medic"))
        .env("DEMO_OUT", out);
    // On the suite's PostgreSQL pass, the demo runs on a database of its own there too.
    let url = crate::common::store_url(out);
    if url.starts_with("postgres") {
        command.env("DEMO_STORE_URL", url);
    }
    let output = command.output().expect("run scripts/demo.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "scripts/demo.sh {args:?} failed:\n{text}"
    );
    text
}

fn events(incident: &Value) -> Vec<(String, Value)> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["detail"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_killed_service_is_restarted_and_the_incident_ends_auto_remediated() {
    let out = tempfile::tempdir().unwrap();
    let log = demo(&[], out.path());
    assert!(log.contains("healed: the service is back"), "{log}");
    let incident: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("incident.json")).unwrap())
            .unwrap();
    assert_eq!(incident["state"], "resolved", "{incident:#}");
    assert_eq!(incident["outcome"], "auto_remediated");
    assert_eq!(incident["alertname"], "DemoServiceDown");
    assert_eq!(incident["labels"]["job"], "demo");
    assert_eq!(incident["runbook"], "restart_service.rhai");
    let names: Vec<String> = events(&incident).into_iter().map(|(e, _)| e).collect();
    let expected = [
        "incident_opened",
        "route_matched",
        "state_changed",
        "run_started",
        "runbook_log",
        "step_started",
        "step_finished",
        "runbook_log",
        "run_finished",
        "state_changed",
        "verification_succeeded",
        "state_changed",
    ];
    let found: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|e| *e != "alert_deduplicated")
        .collect();
    assert_eq!(found, expected, "{incident:#}");
    let timeline = events(&incident);
    let step = &timeline
        .iter()
        .find(|(e, _)| e == "step_finished")
        .unwrap()
        .1;
    assert_eq!(step["code"], 0);
    assert!(step["stdout"]
        .as_str()
        .unwrap()
        .contains("is listening again"));
    let last = &timeline
        .iter()
        .rev()
        .find(|(e, _)| e == "state_changed")
        .unwrap()
        .1;
    assert_eq!(
        (last["from"].as_str(), last["to"].as_str()),
        (Some("verifying"), Some("resolved"))
    );
    assert!(!names
        .iter()
        .any(|e| e.starts_with("notification") || e == "escalation_scheduled"));
}

#[test]
fn a_service_that_cannot_be_restarted_ends_in_an_escalation_mail() {
    let out = tempfile::tempdir().unwrap();
    demo(&["--broken"], out.path());
    let incident: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("incident.json")).unwrap())
            .unwrap();
    assert_eq!(incident["state"], "escalated");
    assert_eq!(incident["reason"], "requested");
    let mail: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("mail.json")).unwrap())
            .unwrap();
    let subject = mail["headers"]["Subject"].as_str().unwrap();
    assert!(
        subject.starts_with("[medic] ESCALATED DemoServiceDown on 127.0.0.1:"),
        "{subject}"
    );
    assert!(subject.ends_with(": requested"), "{subject}");
    assert_eq!(mail["headers"]["X-Medic-Incident"], incident["id"]);
    let text = mail["text"].as_str().unwrap();
    assert!(
        text.contains("DemoServiceDown: the demo service on 127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains("Why medic stopped: requested: could not restart"),
        "{text}"
    );
    assert!(
        text.contains("error: /opt/demo/service.py: No such file or directory"),
        "{text}"
    );
    assert!(text.contains("Follow the alert's runbook: https://runbooks.example/demo-service-down"));
    let html = mail["html"].as_str().unwrap();
    assert!(html.contains("starting demo service..."), "{html}");
}
