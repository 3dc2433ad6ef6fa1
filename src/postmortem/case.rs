//! One incident read from its record: when each milestone happened, the steps its runs
//! took, what stopped it, who was told and who took over. Pure: everything comes from an
//! [`Incident`] and its timeline (its audit entries).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::audit::Event;
use crate::incident::{Outcome, State};
use crate::store::{BreakerChange, Incident, TimelineEntry};

/// A stored time, read back.
pub fn parse_at(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One incident and what its record says.
#[derive(Debug, Clone)]
pub struct Case {
    pub incident: Incident,
    /// The alert's `startsAt`.
    pub alert_start: Option<DateTime<Utc>>,
    /// When medic stored it (its first audit entry).
    pub received: Option<DateTime<Utc>>,
    /// When its first run started.
    pub first_action: Option<DateTime<Utc>>,
    /// When it was first escalated.
    pub escalated: Option<DateTime<Utc>>,
    pub acked: Option<DateTime<Utc>>,
    pub acked_by: Option<String>,
    pub resolved: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
    pub runs: Vec<RunEnd>,
    /// The guard that refused to run it (`breaker`, `route_rate`, `paused`, ...).
    pub refused_by: Option<String>,
    /// The verification that found the alert still firing after a run (its words).
    pub still_firing: Option<String>,
    /// The verification that saw the alert resolve after a run.
    pub verified: Option<DateTime<Utc>>,
    /// Notifications delivered and failed attempts.
    pub told: Vec<Told>,
    /// The audit entries after which the breaker recorded a run's result (run ends and
    /// verification ends), for [`Case::breakers`].
    pub result_seqs: Vec<i64>,
    /// Breaker changes this incident's results caused (gathered from the audit log).
    pub breakers: Vec<BreakerChange>,
}

/// One step a run took.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: Option<DateTime<Utc>>,
    /// The step kind (`exec`, `http`, `log`, ...).
    pub kind: String,
    /// What makes two steps "the same" across incidents: the kind and the program or URL,
    /// without the arguments (`exec /usr/bin/systemctl`).
    pub key: String,
    /// The whole call: `exec /usr/bin/systemctl restart web1`.
    pub what: String,
    pub ok: bool,
    /// `exit 3`, `HTTP 503`, `failed (timeout): ...`, `would run (dry run)`.
    pub result: String,
    pub code: Option<i64>,
    pub duration_ms: Option<u64>,
    /// Its output (stdout, then stderr), as the audit log kept it.
    pub output: String,
    pub dry_run: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    pub at: Option<DateTime<Utc>>,
    pub completed: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub duration_ms: Option<u64>,
}

/// A notification attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Told {
    pub at: Option<DateTime<Utc>>,
    pub channel: String,
    pub tier: u64,
    pub sent: bool,
    pub error: Option<String>,
    /// A storm group's summary rather than the incident's own notification.
    pub summary: bool,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Case {
    /// Reads `incident` (which carries its timeline).
    pub fn read(incident: Incident) -> Case {
        let empty = Vec::new();
        let timeline = incident.timeline.as_ref().unwrap_or(&empty);
        let mut case = Case {
            alert_start: parse_at(&incident.started_at),
            received: timeline.first().and_then(|e| parse_at(&e.at)),
            first_action: None,
            escalated: None,
            acked: None,
            acked_by: None,
            resolved: incident.resolved_at.as_deref().and_then(parse_at),
            steps: Vec::new(),
            runs: Vec::new(),
            refused_by: None,
            still_firing: None,
            verified: None,
            told: Vec::new(),
            result_seqs: Vec::new(),
            breakers: Vec::new(),
            incident: incident.clone(),
        };
        let mut started: Option<&Value> = None;
        let mut dry_run = false;
        for e in timeline {
            let at = parse_at(&e.at);
            let d = &e.detail;
            match Event::parse(&e.event) {
                Some(Event::IncidentOpened) => case.received = at.or(case.received),
                Some(Event::RunStarted) => {
                    case.first_action = case.first_action.or(at);
                    dry_run = d.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
                }
                Some(Event::StateChanged) => {
                    if d.get("to").and_then(Value::as_str) == Some(State::Escalated.as_str()) {
                        case.escalated = case.escalated.or(at);
                        if let Some(by) = text(d, "refused_by") {
                            case.refused_by = Some(by);
                        }
                    }
                    if d.get("to").and_then(Value::as_str) == Some(State::Resolved.as_str()) {
                        case.resolved = case.resolved.or(at);
                    }
                }
                Some(Event::IncidentAcknowledged) => {
                    case.acked = case.acked.or(at);
                    case.acked_by = case.acked_by.take().or_else(|| text(d, "by"));
                }
                Some(Event::StepStarted) => started = Some(d),
                Some(Event::StepFinished) => {
                    let args = started.take().and_then(|s| s.get("args"));
                    case.steps.push(finished(at, d, args, dry_run));
                }
                Some(Event::StepFailed) => {
                    started = None;
                    case.steps.push(failed(at, d, dry_run));
                }
                Some(Event::StepWouldRun) => {
                    let (kind, key, what) = describe(d.get("step"), d.get("args"));
                    case.steps.push(Step {
                        at,
                        kind,
                        key,
                        what,
                        ok: true,
                        result: "would run (dry run)".into(),
                        code: None,
                        duration_ms: None,
                        output: String::new(),
                        dry_run: true,
                    });
                }
                Some(Event::RunFinished) => {
                    case.result_seqs.push(e.seq);
                    case.runs.push(RunEnd {
                        at,
                        completed: text(d, "result").as_deref() == Some("completed"),
                        reason: text(d, "reason"),
                        message: text(d, "message"),
                        duration_ms: d.get("duration_ms").and_then(Value::as_u64),
                    });
                }
                Some(Event::VerificationFailed) => {
                    case.result_seqs.push(e.seq);
                    case.still_firing = text(d, "how").or(Some(String::new()));
                }
                Some(Event::VerificationSucceeded) => {
                    case.result_seqs.push(e.seq);
                    case.verified = case.verified.or(at);
                }
                Some(Event::NotificationSent | Event::NotificationFailed) => {
                    let sent = Event::parse(&e.event) == Some(Event::NotificationSent);
                    case.told.push(Told {
                        at,
                        channel: text(d, "channel").unwrap_or_default(),
                        tier: d.get("tier").and_then(Value::as_u64).unwrap_or(0),
                        sent,
                        error: if sent { None } else { text(d, "error") },
                        summary: d.get("group").is_some(),
                    });
                }
                _ => {}
            }
        }
        case
    }

    /// The step that failed last (not a dry run's).
    pub fn failing_step(&self) -> Option<&Step> {
        self.steps.iter().rev().find(|s| !s.ok && !s.dry_run)
    }

    /// How long it waited for a person after its escalation: until it was acknowledged,
    /// else until it resolved, else until `now`; and whether a person took it over.
    pub fn waiting(&self, now: DateTime<Utc>) -> Option<(chrono::Duration, bool)> {
        let from = self.escalated?;
        match (self.acked, self.resolved) {
            (Some(a), _) => Some((a - from, true)),
            (None, Some(r)) => Some((r - from, false)),
            (None, None) => Some((now - from, false)),
        }
    }

    /// Escalated, and nobody acknowledged it.
    pub fn unacknowledged(&self) -> bool {
        self.escalated.is_some() && self.acked.is_none()
    }

    pub fn auto_remediated(&self) -> bool {
        self.incident.outcome == Some(Outcome::AutoRemediated)
    }

    /// Its timeline.
    pub fn timeline(&self) -> &[TimelineEntry] {
        self.incident.timeline.as_deref().unwrap_or(&[])
    }
}

fn finished(at: Option<DateTime<Utc>>, d: &Value, args: Option<&Value>, dry_run: bool) -> Step {
    let (kind, key, what) = describe(d.get("step"), args.or(Some(d)));
    let code = d.get("code").and_then(Value::as_i64);
    let status = d.get("status").and_then(Value::as_i64);
    let (result, ok) = match (code, status) {
        (Some(c), _) => (format!("exit {c}"), c == 0),
        (None, Some(s)) => (format!("HTTP {s}"), (1..400).contains(&s)),
        (None, None) => ("done".to_string(), true),
    };
    let mut output = String::new();
    for (field, label) in [
        ("stdout", None),
        ("stderr", Some("[stderr]")),
        ("body", None),
    ] {
        if let Some(v) = d.get(field).and_then(Value::as_str) {
            if v.trim().is_empty() {
                continue;
            }
            if !output.is_empty() {
                output.push('\n');
            }
            if let Some(l) = label {
                output.push_str(l);
                output.push('\n');
            }
            output.push_str(v.trim_end());
        }
    }
    Step {
        at,
        kind,
        key,
        what,
        ok,
        result,
        code,
        duration_ms: d.get("duration_ms").and_then(Value::as_u64),
        output,
        dry_run,
    }
}

fn failed(at: Option<DateTime<Utc>>, d: &Value, dry_run: bool) -> Step {
    let (kind, key, what) = describe(d.get("step"), d.get("args"));
    Step {
        at,
        kind,
        key,
        what,
        ok: false,
        result: format!(
            "failed ({}): {}",
            text(d, "reason").unwrap_or_else(|| "error".into()),
            text(d, "error").unwrap_or_default()
        ),
        code: None,
        duration_ms: None,
        output: String::new(),
        dry_run,
    }
}

/// A step's kind, its key and the whole call, from its `step` name and arguments.
fn describe(step: Option<&Value>, args: Option<&Value>) -> (String, String, String) {
    let kind = step.and_then(Value::as_str).unwrap_or("step").to_string();
    let null = Value::Null;
    let args = args.unwrap_or(&null);
    let s = |v: &Value| {
        v.as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string())
    };
    let field = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or("?");
    let (key, what) = match kind.as_str() {
        "exec" => {
            let program = args
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_else(|| field("program"));
            let argv: Vec<String> = args
                .get("args")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            let key = format!("exec {program}");
            let what = if argv.is_empty() {
                key.clone()
            } else {
                format!("{key} {}", argv.join(" "))
            };
            (key, what)
        }
        "http" => {
            let key = format!("http {} {}", field("method"), field("url"));
            (key.clone(), key)
        }
        "sleep" => (
            "sleep".into(),
            format!("sleep {}s", args.get("seconds").map(s).unwrap_or_default()),
        ),
        "silence" => ("silence".into(), format!("silence {}", field("duration"))),
        "query" => ("query".into(), format!("query {}", field("query"))),
        other => (other.to_string(), other.to_string()),
    };
    (kind, key, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn incident(timeline: Vec<(&str, &str, Value)>) -> Incident {
        Incident {
            id: "01K".into(),
            fingerprint: "f".into(),
            alertname: "ServiceDown".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            state: State::Acknowledged,
            reason: None,
            outcome: None,
            route: Some("restart".into()),
            runbook: Some("restart.rhai".into()),
            generator_url: String::new(),
            started_at: "2026-11-23T10:00:00.000000000Z".into(),
            updated_at: String::new(),
            last_seen_at: String::new(),
            resolved_at: None,
            deliveries: 1,
            attempts: 1,
            message: None,
            escalation_group: None,
            external_url: String::new(),
            verify_until: None,
            escalated_at: None,
            acknowledged_by: None,
            approval: None,
            timeline: Some(
                timeline
                    .into_iter()
                    .enumerate()
                    .map(|(i, (at, event, detail))| TimelineEntry {
                        seq: i as i64 + 1,
                        at: at.into(),
                        event: event.into(),
                        detail,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn milestones_steps_and_the_wait_for_a_person() {
        let c = Case::read(incident(vec![
            ("2026-11-23T10:02:00Z", "incident_opened", json!({})),
            (
                "2026-11-23T10:02:01Z",
                "run_started",
                json!({"dry_run": false}),
            ),
            (
                "2026-11-23T10:02:01Z",
                "step_started",
                json!({"step": "exec", "args": {"program": "restart", "path": "/bin/restart", "args": ["web1"]}}),
            ),
            (
                "2026-11-23T10:02:02Z",
                "step_finished",
                json!({"step": "exec", "code": 3, "duration_ms": 12, "stdout": "restarting web1\n", "stderr": "unit not found"}),
            ),
            (
                "2026-11-23T10:02:02Z",
                "state_changed",
                json!({"from": "remediating", "to": "escalated", "reason": "requested"}),
            ),
            (
                "2026-11-23T10:09:02Z",
                "incident_acknowledged",
                json!({"by": "alice"}),
            ),
        ]));
        assert_eq!(c.received, parse_at("2026-11-23T10:02:00Z"));
        assert_eq!(c.first_action, parse_at("2026-11-23T10:02:01Z"));
        let failing = c.failing_step().unwrap();
        assert_eq!(failing.what, "exec /bin/restart web1");
        assert_eq!(failing.key, "exec /bin/restart");
        assert_eq!((failing.code, failing.result.as_str()), (Some(3), "exit 3"));
        assert_eq!(failing.output, "restarting web1\n[stderr]\nunit not found");
        let now = parse_at("2026-11-23T12:00:00Z").unwrap();
        assert_eq!(c.waiting(now), Some((chrono::Duration::minutes(7), true)));
        assert_eq!(c.acked_by.as_deref(), Some("alice"));
        assert!(!c.unacknowledged());
    }

    #[test]
    fn a_refusal_names_its_guard_and_nobody_took_it_over() {
        let c = Case::read(incident(vec![
            ("2026-11-23T10:02:00Z", "incident_opened", json!({})),
            (
                "2026-11-23T10:02:00Z",
                "state_changed",
                json!({"from": "queued", "to": "escalated", "reason": "circuit_open", "refused_by": "breaker"}),
            ),
        ]));
        assert_eq!(c.refused_by.as_deref(), Some("breaker"));
        assert!(c.failing_step().is_none());
        let now = parse_at("2026-11-23T10:32:00Z").unwrap();
        assert_eq!(c.waiting(now), Some((chrono::Duration::minutes(30), false)));
        assert!(c.unacknowledged());
    }
}
