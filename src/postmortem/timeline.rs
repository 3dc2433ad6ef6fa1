//! One audit entry of an incident in words, for the draft's timeline. Every value taken
//! from the entry is put in a code span ([`code`]); the rest is medic's own words.

use serde_json::Value;

use super::case::parse_at;
use super::markdown::code;
use super::zone::Zone;
use crate::audit::Event;
use crate::store::TimelineEntry;

fn text<'a>(d: &'a Value, key: &str) -> Option<&'a str> {
    d.get(key).and_then(Value::as_str)
}

fn num(d: &Value, key: &str) -> Option<u64> {
    d.get(key).and_then(Value::as_u64)
}

/// A stored time in the reader's zone (or as stored, when it is not one).
fn when(zone: &Zone, at: &str) -> String {
    parse_at(at).map_or_else(|| code(at), |t| zone.time(t))
}

/// What the entry says, as one line of Markdown.
pub fn describe(e: &TimelineEntry, zone: &Zone) -> String {
    let d = &e.detail;
    let t = |k: &str| text(d, k).unwrap_or("");
    match Event::parse(&e.event) {
        Some(Event::IncidentOpened) => format!(
            "alert {} received, firing since {}",
            code(t("alertname")),
            when(zone, t("starts_at"))
        ),
        Some(Event::RouteMatched) => format!(
            "route {} chose runbook {}",
            code(t("route")),
            code(t("runbook"))
        ),
        Some(Event::RouteMissed) => format!("no route chose a runbook: {}", code(t("why"))),
        Some(Event::StateChanged) => state_changed(d),
        Some(Event::RunStarted) => {
            let mut s = format!(
                "runbook {} started (attempt {})",
                code(t("runbook")),
                num(d, "attempt").unwrap_or(1)
            );
            if d.get("dry_run").and_then(Value::as_bool) == Some(true) {
                s.push_str(", as a dry run");
            }
            if let Some(err) = text(d, "error") {
                s.push_str(&format!(": {}", code(err)));
            }
            s
        }
        Some(Event::StepStarted | Event::StepWouldRun) => {
            let what = step_call(d);
            if Event::parse(&e.event) == Some(Event::StepWouldRun) {
                format!("would run {} (dry run)", code(&what))
            } else {
                format!("step {} started", code(&what))
            }
        }
        Some(Event::StepFinished) => {
            let step = t("step");
            let target = text(d, "program")
                .map(str::to_string)
                .or_else(|| text(d, "url").map(|u| format!("{} {u}", t("method"))));
            let result = match (d.get("code"), d.get("status")) {
                (Some(c), _) if c.is_i64() => format!("exit {c}"),
                (_, Some(s)) if s.is_i64() => format!("HTTP {s}"),
                _ => "done".to_string(),
            };
            let mut s = match target {
                Some(target) => format!("step {} → {result}", code(&format!("{step} {target}"))),
                None => format!("step {} → {result}", code(step)),
            };
            if let Some(ms) = num(d, "duration_ms") {
                s.push_str(&format!(" in {ms} ms"));
            }
            s
        }
        Some(Event::StepFailed) => format!(
            "step {} failed ({}): {}",
            code(&step_call(d)),
            code(t("reason")),
            code(t("error"))
        ),
        Some(Event::RunbookLog) => format!("runbook log: {}", code(t("message"))),
        Some(Event::RunFinished) => match text(d, "result") {
            Some("completed") => format!(
                "runbook completed in {} ms",
                num(d, "duration_ms").unwrap_or(0)
            ),
            _ => format!(
                "runbook stopped ({}): {}",
                code(t("reason")),
                code(t("message"))
            ),
        },
        Some(Event::VerificationSucceeded) => {
            format!(
                "the alert resolved while medic waited after the run: {}",
                code(t("how"))
            )
        }
        Some(Event::VerificationFailed) => {
            format!(
                "the alert was still firing when the wait ended: {}",
                code(t("how"))
            )
        }
        Some(Event::EscalationGrouped) => {
            if d.get("first").and_then(Value::as_bool) == Some(true) {
                format!("opened storm group {}", code(t("group")))
            } else {
                format!(
                    "joined storm group {} (incident {} of the group)",
                    code(t("group")),
                    num(d, "size").unwrap_or(0)
                )
            }
        }
        Some(Event::EscalationScheduled) => scheduled(d, zone),
        Some(Event::NotificationSent) => format!(
            "told {}{} ({}attempt {}){}",
            code(t("channel")),
            if t("kind") == "resolved" {
                " that the alert resolved"
            } else {
                ""
            },
            tier(d),
            num(d, "attempt").unwrap_or(1),
            if d.get("group").is_some() {
                ", the storm group's summary"
            } else {
                ""
            }
        ),
        Some(Event::NotificationFailed) => {
            let mut s = format!(
                "telling {} failed ({}attempt {}): {}",
                code(t("channel")),
                tier(d),
                num(d, "attempt").unwrap_or(1),
                code(t("error"))
            );
            if let Some(next) = text(d, "next_attempt_at") {
                s.push_str(&format!("; next attempt at {}", when(zone, next)));
            } else if d.get("gave_up").is_some() {
                s.push_str("; gave up");
            }
            s
        }
        Some(Event::NotificationsCancelled) => format!(
            "{} notification(s) not sent yet cancelled: {}",
            num(d, "notifications").unwrap_or(0),
            code(t("why"))
        ),
        Some(Event::EscalationFellThrough) => format!(
            "tier {} made due at once: {} kept failing",
            num(d, "to_tier").unwrap_or(0),
            code(t("failing_channel"))
        ),
        Some(Event::IncidentAcknowledged) => format!("acknowledged by {}", by(d)),
        Some(Event::AlertDeduplicated) => {
            "Alertmanager sent the alert again (counted; nothing changed)".to_string()
        }
        Some(Event::AlertStale) => {
            format!("an out-of-date notification, ignored: {}", code(t("why")))
        }
        Some(Event::ApprovalRequested) => {
            let steps = d
                .get("plan")
                .and_then(|p| p.get("steps"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!(
                "approval requested for runbook {} (a plan of {steps} step(s)), until {}",
                code(t("runbook")),
                when(zone, t("until"))
            )
        }
        Some(Event::Approved) => format!(
            "approved by {} (through {}), the plan of {} step(s)",
            by(d),
            code(t("via")),
            num(d, "steps").unwrap_or(0)
        ),
        Some(Event::Rejected) => {
            let mut s = format!("rejected by {} (through {})", by(d), code(t("via")));
            if let Some(r) = text(d, "reason") {
                s.push_str(&format!(": {}", code(r)));
            }
            s
        }
        Some(Event::ApprovalTimeout) => {
            format!("nobody approved the run before {}", when(zone, t("until")))
        }
        Some(Event::ApprovalWithdrawn) => {
            format!("the approval request was withdrawn: {}", code(t("why")))
        }
        Some(Event::StepOffPlan) => format!(
            "step {} was not in the approved plan (planned: {}): stopped before it acted",
            code(t("attempted")),
            code(text(d, "planned").unwrap_or("nothing"))
        ),
        Some(Event::SilenceCreated) => format!("silence {} created", code(t("silence_id"))),
        Some(Event::SilenceExpired) => format!("silence {} expired", code(t("silence_id"))),
        _ => code(&compact(d)),
    }
}

/// `tier 2, ` (nothing for a resolution's notice, which belongs to no tier).
fn tier(d: &Value) -> String {
    match num(d, "tier") {
        Some(t) if t > 0 => format!("tier {t}, "),
        _ => String::new(),
    }
}

/// Who acted, as the entry says (`someone` when it does not).
fn by(d: &Value) -> String {
    match text(d, "by") {
        Some(b) => code(b),
        None => "someone (no name given)".to_string(),
    }
}

fn compact(d: &Value) -> String {
    serde_json::to_string(d).unwrap_or_default()
}

/// `exec /bin/x a b`, `http GET url`, ... from a step entry's `step` and `args`.
fn step_call(d: &Value) -> String {
    let args = d.get("args").unwrap_or(&Value::Null);
    let step = text(d, "step").unwrap_or("step");
    match step {
        "exec" => {
            let program = text(args, "path")
                .or_else(|| text(args, "program"))
                .unwrap_or("?");
            let argv: Vec<String> = args
                .get("args")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                        .collect()
                })
                .unwrap_or_default();
            format!("exec {program} {}", argv.join(" "))
                .trim_end()
                .to_string()
        }
        "http" => format!(
            "http {} {}",
            text(args, "method").unwrap_or("?"),
            text(args, "url").unwrap_or("?")
        ),
        other => match args {
            Value::Null => other.to_string(),
            a => format!("{other} {}", compact(a)),
        },
    }
}

fn state_changed(d: &Value) -> String {
    let t = |k: &str| text(d, k).unwrap_or("?");
    let mut s = format!("{} → {}", code(t("from")), code(t("to")));
    if let Some(r) = text(d, "reason") {
        s.push_str(&format!(", reason {}", code(r)));
    }
    if let Some(l) = text(d, "refused_by") {
        s.push_str(&format!(", refused by guard {}", code(l)));
    }
    if let Some(o) = text(d, "outcome") {
        s.push_str(&format!(", outcome {}", code(o)));
    }
    if text(d, "to") == Some("acknowledged") {
        s.push_str(&format!(", by {}", by(d)));
    }
    if let Some(m) = text(d, "message") {
        s.push_str(&format!(": {}", code(m)));
    }
    s
}

fn scheduled(d: &Value, zone: &Zone) -> String {
    if let Some(group) = text(d, "group") {
        let due = text(d, "summary_due_at").map(|t| when(zone, t));
        return format!(
            "the summary of storm group {} planned{}",
            code(group),
            due.map(|d| format!(", due {d}")).unwrap_or_default()
        );
    }
    let mut tiers = Vec::new();
    for tier in d
        .get("tiers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let channels: Vec<String> = tier
            .get("notify")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(code)
            .collect();
        tiers.push(format!(
            "tier {} → {} at {}",
            num(tier, "tier").unwrap_or(0),
            channels.join(", "),
            text(tier, "due_at").map_or_else(|| "?".to_string(), |t| when(zone, t))
        ));
    }
    let mut s = format!("escalation round {} planned", num(d, "round").unwrap_or(1));
    if !tiers.is_empty() {
        s.push_str(": ");
        s.push_str(&tiers.join("; "));
    }
    if let Some(note) = text(d, "note") {
        s.push_str(&format!(" ({})", code(note)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(event: &str, detail: Value) -> TimelineEntry {
        TimelineEntry {
            seq: 1,
            at: "2026-11-23T10:00:00Z".into(),
            event: event.into(),
            detail,
        }
    }

    #[test]
    fn entries_in_words() {
        let z = Zone::parse("Europe/Paris").unwrap();
        let cases = [
            (
                entry(
                    "state_changed",
                    json!({"from": "queued", "to": "escalated", "reason": "circuit_open", "refused_by": "breaker", "message": "open"}),
                ),
                "`queued` → `escalated`, reason `circuit_open`, refused by guard `breaker`: `open`",
            ),
            (
                entry(
                    "step_finished",
                    json!({"step": "exec", "program": "restart", "code": 3, "duration_ms": 12}),
                ),
                "step `exec restart` → exit 3 in 12 ms",
            ),
            (
                entry(
                    "step_failed",
                    json!({"step": "exec", "args": {"program": "x", "args": ["a b"]}, "reason": "step_failed", "error": "not allowed"}),
                ),
                "step `exec x a b` failed (`step_failed`): `not allowed`",
            ),
            (
                entry(
                    "escalation_scheduled",
                    json!({"round": 1, "tiers": [{"tier": 1, "notify": ["ops"], "due_at": "2026-11-23T10:00:00Z"}]}),
                ),
                "escalation round 1 planned: tier 1 → `ops` at 2026-11-23 11:00:00 +01:00",
            ),
            (
                entry("incident_acknowledged", json!({"by": null})),
                "acknowledged by someone (no name given)",
            ),
            (
                entry("some_future_event", json!({"k": "v"})),
                "`{\"k\":\"v\"}`",
            ),
            (
                entry(
                    "rejected",
                    json!({"by": "bob", "via": "console", "reason": "not now"}),
                ),
                "rejected by `bob` (through `console`): `not now`",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(describe(&e, &z), want, "{}", e.event);
        }
    }
}
