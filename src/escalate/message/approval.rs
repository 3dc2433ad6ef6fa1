//! What an approval request and its withdrawal tell on-call: the alert, the plan (each
//! step the run would take), the deadline, and how to decide (signed approve and reject
//! links, the console, the API, and Slack's Approve and Reject buttons). An escalation of
//! an approval route (rejected, timed out, off plan) is an ordinary escalation message;
//! an off-plan step shows the planned and the attempted step side by side.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use super::{escape, Message, Step};
use crate::store::{Incident, NotificationKind};

/// The approval facts of a message about a run that waits (or waited) for approval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Request {
    /// Its plan, one line a step, then how the dry run ended.
    pub plan: Vec<String>,
    /// The plan's digest: what an approval is recorded against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// When it is escalated `approval_timeout` unless decided.
    pub until: String,
    /// `POST` here (with the API token and `{"by": ...}`) to approve, or to reject.
    pub approve_api: String,
    pub reject_api: String,
    /// Signed one-click links (a confirmation page, then a button), when
    /// `server.link_secret` is set and the route names no approvers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_link: Option<String>,
}

/// The title of an approval notification about `subject`.
pub(super) fn title(kind: NotificationKind, subject: &str, incident: &Incident) -> String {
    let runbook = incident.runbook.as_deref().unwrap_or("its runbook");
    match kind {
        NotificationKind::ApprovalWithdrawn => {
            format!("[medic] WITHDRAWN approval request: {subject} resolved, nothing was run")
        }
        _ => format!("[medic] APPROVAL NEEDED {subject}: run {runbook}?"),
    }
}

/// The approval facts of `incident` for a message of `kind`, if it waits(ed) for one.
pub(super) fn request(incident: &Incident, medic_url: &str) -> Option<Request> {
    let approval = incident.approval.as_ref()?;
    let api = format!("{medic_url}/api/v1/incidents/{}", incident.id);
    Some(Request {
        plan: match &approval.plan {
            Some(p) => p.lines(),
            None => vec!["(the plan is being made)".into()],
        },
        plan_digest: approval.plan.as_ref().map(|p| p.digest()),
        until: approval.until.clone(),
        approve_api: format!("{api}/approve"),
        reject_api: format!("{api}/reject"),
        approve_link: None,
        reject_link: None,
    })
}

fn is_request(m: &Message) -> bool {
    m.kind == NotificationKind::ApprovalRequested
}

impl Message {
    /// Adds the signed one-click approve and reject links (an approval request only).
    pub fn add_decision_links(&mut self, approve: String, reject: String) {
        if !is_request(self) {
            return;
        }
        if let Some(r) = &mut self.approval {
            r.approve_link = Some(approve);
            r.reject_link = Some(reject);
        }
    }
}

/// The plain-text form of an approval notification; `None` for any other.
pub(super) fn text(m: &Message) -> Option<String> {
    let r = approval_kind(m)?;
    let mut t = String::new();
    let _ = writeln!(t, "{}", m.title);
    let _ = writeln!(t);
    if m.kind == NotificationKind::ApprovalWithdrawn {
        let _ = writeln!(
            t,
            "The alert resolved while the run waited for approval: nothing was run, and there is nothing left to decide."
        );
        let _ = writeln!(t, "\nIncident: {}", m.links.incident);
        let _ = writeln!(t, "Console:  {}", m.links.page);
        return Some(t);
    }
    let _ = writeln!(t, "WHAT IS BROKEN");
    let _ = writeln!(t, "  {}", m.broken_line());
    let _ = writeln!(
        t,
        "  severity: {}   firing since: {}",
        m.severity.as_deref().unwrap_or("none"),
        m.since
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "WHAT MEDIC WOULD RUN (a dry run of {}; nothing runs until a person approves)",
        m.runbook.as_deref().unwrap_or("the runbook")
    );
    for line in &r.plan {
        let _ = writeln!(t, "  {line}");
    }
    let _ = writeln!(
        t,
        "  The approved run is bound to this plan: a step that differs is stopped before it acts."
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "DECIDE BY {} (unanswered, it is escalated approval_timeout)",
        r.until
    );
    if let (Some(a), Some(j)) = (&r.approve_link, &r.reject_link) {
        let _ = writeln!(t, "  approve:  {a}");
        let _ = writeln!(t, "  reject:   {j}");
        let _ = writeln!(
            t,
            "  (each link shows the plan and asks you to confirm; it works once)"
        );
    }
    let _ = writeln!(t, "  console:  {}", m.links.page);
    let _ = writeln!(
        t,
        "  API:      curl -X POST -H 'Authorization: Bearer $MEDIC_API_TOKEN' -d '{{\"by\":\"your-name\"}}' {}",
        r.approve_api
    );
    let _ = writeln!(
        t,
        "            (or {} with {{\"by\":\"your-name\",\"reason\":\"why not\"}})",
        r.reject_api
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "LABELS");
    for (k, v) in &m.labels {
        let _ = writeln!(t, "  {}={}", super::one_line(k), super::one_line(v));
    }
    Some(t)
}

/// The HTML form of an approval notification; `None` for any other. Every value is
/// escaped.
pub(super) fn html(m: &Message) -> Option<String> {
    let r = approval_kind(m)?;
    let e = escape;
    let mut h = String::new();
    h.push_str("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">");
    let _ = write!(h, "<h2>{}</h2>", e(&m.title));
    if m.kind == NotificationKind::ApprovalWithdrawn {
        let _ = write!(
            h,
            "<p>The alert resolved while the run waited for approval: nothing was run, and there is nothing left to decide.</p><p><a href=\"{}\">In the console</a></p></body></html>",
            e(&m.links.page)
        );
        return Some(h);
    }
    let _ = write!(
        h,
        "<h3>What is broken</h3><p><b>{}</b></p><p>Severity: <b>{}</b> &middot; firing since {}</p>",
        e(&m.broken_line()),
        e(m.severity.as_deref().unwrap_or("none")),
        e(&m.since)
    );
    let _ = write!(
        h,
        "<h3>What medic would run</h3><p>A dry run of {}; nothing runs until a person approves. The approved run is bound to this plan: a step that differs is stopped before it acts.</p><ol>",
        e(m.runbook.as_deref().unwrap_or("the runbook"))
    );
    for line in &r.plan {
        let _ = write!(h, "<li><code>{}</code></li>", e(line));
    }
    let _ = write!(h, "</ol><h3>Decide by {}</h3><ul>", e(&r.until));
    if let (Some(a), Some(j)) = (&r.approve_link, &r.reject_link) {
        let _ = write!(
            h,
            "<li><a href=\"{}\"><b>Approve</b></a> &middot; <a href=\"{}\"><b>Reject</b></a> (one click, then confirm; each link works once)</li>",
            e(a),
            e(j)
        );
    }
    let _ = write!(
        h,
        "<li><a href=\"{}\">Decide in the console</a></li></ul></body></html>",
        e(&m.links.page)
    );
    Some(h)
}

/// The Slack form of an approval notification, with Approve and Reject buttons when
/// `buttons` (the channel's app sends clicks to `POST /slack/actions`); `None` for any
/// other kind.
pub(super) fn slack(m: &Message, buttons: bool) -> Option<Value> {
    let r = approval_kind(m)?;
    if m.kind == NotificationKind::ApprovalWithdrawn {
        let text = format!(
            ":heavy_minus_sign: {} (<{}|console>)",
            m.title, m.links.page
        );
        return Some(json!({ "text": text }));
    }
    let plan = r.plan.join("\n");
    let facts = format!(
        "*What is broken:* {}\n*Severity:* {} · *since* {}\n*What medic would run* (a dry run; the approved run is bound to it):\n```{}```\n*Decide by* {} (then it is escalated approval_timeout)",
        m.broken_line(),
        m.severity.as_deref().unwrap_or("none"),
        m.since,
        plan.replace("```", "'''"),
        r.until
    );
    let mut links = vec![format!("<{}|console>", m.links.page)];
    if let (Some(a), Some(j)) = (&r.approve_link, &r.reject_link) {
        links.push(format!("<{a}|approve>"));
        links.push(format!("<{j}|reject>"));
    }
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(":raised_hand: *{}*", m.title)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": facts}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": links.join(" · ")}]}),
    ];
    if buttons {
        blocks.push(json!({
            "type": "actions",
            "block_id": "medic-approval",
            "elements": [
                {"type": "button", "action_id": "approve", "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve"}, "value": m.incident_id},
                {"type": "button", "action_id": "reject", "style": "danger",
                 "text": {"type": "plain_text", "text": "Reject"}, "value": m.incident_id},
            ],
        }));
    }
    Some(json!({
        "text": format!(":raised_hand: {}", m.title),
        "blocks": blocks,
    }))
}

/// The approval facts of an approval notification.
fn approval_kind(m: &Message) -> Option<&Request> {
    match m.kind {
        NotificationKind::ApprovalRequested | NotificationKind::ApprovalWithdrawn => {
            m.approval.as_ref()
        }
        _ => None,
    }
}

/// An approved run's step that was off plan, from its `step_off_plan` entry.
pub(super) fn off_plan_step(d: &Value) -> Step {
    let text = |k: &str| d[k].as_str().unwrap_or("?").to_string();
    Step {
        what: text("attempted"),
        result: match d["planned"].as_str() {
            Some(p) => format!(
                "not run: off plan (the plan's step {} is `{p}`)",
                d["position"]
            ),
            None => "not run: off plan (beyond the end of the plan)".into(),
        },
        ok: false,
        duration_ms: None,
        output: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::incident;
    use super::*;
    use crate::incident::State;
    use crate::plan::{Plan, PlanEnd, PlannedStep};
    use crate::store::Approval;

    fn waiting() -> Incident {
        let mut i = incident();
        i.state = State::AwaitingApproval;
        i.reason = None;
        i.message = None;
        i.approval = Some(Approval {
            until: "2026-11-23T10:15:00Z".into(),
            plan: Some(Plan {
                runbook: "disk_full.rhai".into(),
                sha256: "ab".into(),
                steps: vec![PlannedStep::exec(
                    "cleanup",
                    &["/var".to_string(), "--older-than=7d".to_string()],
                )],
                truncated: false,
                end: PlanEnd::Completed,
            }),
            approved_by: None,
            approved_at: None,
        });
        i
    }

    #[test]
    fn a_request_shows_the_plan_the_deadline_and_how_to_decide() {
        let mut m = Message::new(
            &waiting(),
            NotificationKind::ApprovalRequested,
            "https://medic",
        );
        assert_eq!(
            m.title,
            "[medic] APPROVAL NEEDED DiskFull on db1:9100: run disk_full.rhai?"
        );
        m.add_decision_links(
            "https://medic/ui/approve/T1".into(),
            "https://medic/ui/reject/T2".into(),
        );
        let t = m.text();
        assert!(
            t.contains("  1. exec cleanup /var --older-than=7d\n"),
            "{t}"
        );
        assert!(t.contains("DECIDE BY 2026-11-23T10:15:00Z"), "{t}");
        assert!(
            t.contains("  approve:  https://medic/ui/approve/T1\n"),
            "{t}"
        );
        assert!(
            t.contains("  reject:   https://medic/ui/reject/T2\n"),
            "{t}"
        );
        assert!(
            t.contains("https://medic/api/v1/incidents/01INC/approve"),
            "{t}"
        );
        let h = m.html();
        assert!(
            h.contains("<code>1. exec cleanup /var --older-than=7d</code>"),
            "{h}"
        );
        assert!(h.contains("https://medic/ui/approve/T1"), "{h}");
        let s = m.slack_with_ack();
        let buttons = &s["blocks"][3]["elements"];
        assert_eq!(buttons[0]["action_id"], "approve");
        assert_eq!(buttons[1]["action_id"], "reject");
        assert_eq!(buttons[0]["value"], "01INC");
        assert!(
            m.slack()["blocks"].as_array().unwrap().len() == 3,
            "no buttons without a signing secret"
        );
        let doc = m.document(&waiting(), "k", 1, 0);
        assert_eq!(
            doc["approval"]["approve_link"],
            "https://medic/ui/approve/T1"
        );
        assert_eq!(doc["kind"], "approval_requested");
    }

    #[test]
    fn a_withdrawal_says_nothing_was_run_and_has_no_buttons() {
        let mut i = waiting();
        i.state = State::Resolved;
        let m = Message::new(&i, NotificationKind::ApprovalWithdrawn, "https://medic");
        assert!(
            m.title.starts_with("[medic] WITHDRAWN approval request"),
            "{}",
            m.title
        );
        assert!(m.text().contains("nothing was run"));
        assert!(m.slack_with_ack().get("blocks").is_none());
    }

    #[test]
    fn pagerduty_pages_a_request_under_its_own_key_and_resolves_it_when_withdrawn() {
        let i = waiting();
        let event = |kind| {
            let m = Message::new(&i, kind, "https://medic");
            let out = crate::escalate::Outgoing {
                message: &m,
                incident: &i,
                key: "k",
                channel: "pager",
                tier: 1,
                round: 0,
                group: None,
            };
            crate::escalate::pagerduty::event("rk", "warning", &out)
        };
        let request = event(NotificationKind::ApprovalRequested);
        assert_eq!(request["event_action"], "trigger");
        assert_eq!(request["dedup_key"], "medic-approval-01INC");
        assert_eq!(
            request["payload"]["custom_details"]["approval"]["plan"][0],
            "1. exec cleanup /var --older-than=7d"
        );
        let withdrawn = event(NotificationKind::ApprovalWithdrawn);
        assert_eq!(withdrawn["event_action"], "resolve");
        assert_eq!(withdrawn["dedup_key"], "medic-approval-01INC");
        // A later escalation of the incident pages under the incident's own key.
        assert_eq!(event(NotificationKind::Escalated)["dedup_key"], "01INC");
    }

    #[test]
    fn links_are_only_for_a_request() {
        let mut m = Message::new(&waiting(), NotificationKind::Escalated, "https://medic");
        m.add_decision_links("a".into(), "b".into());
        assert!(m.approval.as_ref().unwrap().approve_link.is_none());
    }
}
