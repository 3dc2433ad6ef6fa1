//! The `pagerduty` channel: PagerDuty Events API v2.
//!
//! An escalation is a `trigger` whose `dedup_key` is the incident id, so every tier and
//! retry of one incident is one PagerDuty alert; its resolution is a `resolve` with the
//! same key. A storm group's summary is an alert of its own (`medic-group-<group>`):
//! PagerDuty folds a trigger into the open alert of its key without paging anyone, so the
//! summary must not share the key of the incident it is told through. Nothing resolves
//! it: on-call resolves it in PagerDuty. PagerDuty answers 202; a 400 (a malformed event, a bad routing key) is
//! permanent, 429 and 5xx are transient.

use serde_json::{json, Value};

use super::{http_post, Outgoing, SendError};
use crate::config::PAGERDUTY_SEVERITIES;
use crate::store::NotificationKind;

/// PagerDuty's limit on `payload.summary`.
const SUMMARY_MAX: usize = 1024;

pub async fn send(
    client: &reqwest::Client,
    url: &str,
    routing_key: &str,
    default_severity: &str,
    out: &Outgoing<'_>,
) -> Result<(), SendError> {
    let event = event(routing_key, default_severity, out);
    http_post(client, url, &event, &[]).await
}

/// The event for `out`.
pub fn event(routing_key: &str, default_severity: &str, out: &Outgoing<'_>) -> Value {
    let incident = out.incident;
    let m = out.message;
    if m.kind == NotificationKind::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": incident.id,
        });
    }
    // An approval request is an alert of its own, resolved when it is withdrawn; an
    // escalation of the incident later must page anew, not fold into the request.
    if m.kind == NotificationKind::ApprovalWithdrawn {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": format!("medic-approval-{}", incident.id),
        });
    }
    let severity = incident
        .labels
        .get("severity")
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| PAGERDUTY_SEVERITIES.contains(&s.as_str()))
        .unwrap_or_else(|| default_severity.to_string());
    let source = incident
        .labels
        .get("instance")
        .or_else(|| incident.labels.get("job"))
        .cloned()
        .unwrap_or_else(|| "medic".to_string());
    let mut summary = m.title.clone();
    if summary.len() > SUMMARY_MAX {
        let mut end = SUMMARY_MAX - 3;
        while !summary.is_char_boundary(end) {
            end -= 1;
        }
        summary = format!("{}...", &summary[..end]);
    }
    let mut links = vec![json!({"href": m.links.incident, "text": "medic incident"})];
    for (text, href) in [
        ("Source", &m.links.source),
        ("Silence in Alertmanager", &m.links.silence),
        ("Runbook", &m.links.runbook),
    ] {
        if let Some(href) = href {
            links.push(json!({"href": href, "text": text}));
        }
    }
    let dedup_key = match (out.group, m.kind) {
        (Some(g), _) => format!("medic-group-{g}"),
        (None, NotificationKind::ApprovalRequested) => format!("medic-approval-{}", incident.id),
        (None, _) => incident.id.clone(),
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": source,
            "severity": severity,
            "timestamp": incident.started_at,
            "component": incident.labels.get("job"),
            "class": incident.alertname,
            "custom_details": {
                "reason": incident.reason,
                "why": m.why,
                "refused": m.refused,
                "runbook": incident.runbook,
                "what_to_do": m.what_to_do,
                "steps": m.steps,
                "approval": m.approval,
                "labels": incident.labels,
                "annotations": incident.annotations,
                "tier": out.tier,
            },
        },
        "links": links,
        "client": "medic",
        "client_url": m.links.incident,
    })
}
