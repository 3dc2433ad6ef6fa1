//! What on-call reads: one incident turned into a message, and its forms for each channel.
//!
//! [`Message::new`] gathers the facts from the incident and its timeline (the alert, what
//! medic tried, why it stopped, what it refused, the links); the channels only choose a
//! form: [`Message::text`] and [`Message::html`] for mail, [`Message::document`] for
//! webhooks, [`Message::slack`] for Slack. The first lines always answer, in this order:
//! what is broken, what was tried, what to do. Pure: no IO.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use crate::audit::Event;
use crate::config::Config;
use crate::guard::StepKind;
use crate::incident::Reason;
use crate::store::{Incident, NotificationKind, TimelineEntry};

/// How much of a step's output a message shows (the incident keeps more).
const OUTPUT_LINES: usize = 12;
const OUTPUT_CHARS: usize = 1200;
/// Steps shown; beyond, a count of the rest.
const MAX_STEPS: usize = 30;

/// Everything a message says, gathered once.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub kind: NotificationKind,
    /// One line: `[medic] ESCALATED DiskFull on db1:9100: still_firing`.
    pub title: String,
    pub incident_id: String,
    pub alertname: String,
    pub severity: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    /// The alert's labels, for the record.
    pub labels: BTreeMap<String, String>,
    /// When the alert started firing.
    pub since: String,
    /// Why medic stopped (`reason`) and its words.
    pub reason: Option<Reason>,
    pub why: String,
    /// What medic would not do (a limit, a breaker, a pause), if that is why.
    pub refused: Option<String>,
    /// The runbook that ran, if any.
    pub runbook: Option<String>,
    /// Each step of the run(s), in order.
    pub steps: Vec<Step>,
    /// Steps left out beyond [`MAX_STEPS`].
    pub more_steps: usize,
    /// What the reader can do now, most useful first.
    pub what_to_do: Vec<String>,
    pub links: Links,
    /// The outcome, for a resolution.
    pub outcome: Option<String>,
    pub resolved_at: Option<String>,
    /// For a storm group's summary: the group's incidents still escalated when it goes out.
    pub group: Option<Group>,
    /// For a run that waits (or waited) for approval: its plan, deadline and decision links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<approval::Request>,
}

/// A storm group: escalations of one route and reason close in time, told in one message.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: String,
    /// How many of the group's incidents are still escalated (listed).
    pub size: u64,
    /// The first of them (at most [`GROUP_LISTED`]).
    pub incidents: Vec<crate::store::GroupMember>,
}

/// Most incidents a group's message lists by name.
pub const GROUP_LISTED: usize = 100;

impl Group {
    fn line(m: &crate::store::GroupMember) -> String {
        let instance = m
            .labels
            .get("instance")
            .or_else(|| m.labels.get("service"))
            .or_else(|| m.labels.get("name"))
            .map(|i| format!(" on {}", one_line(i)))
            .unwrap_or_default();
        format!(
            "{} {}{} ({})",
            m.id,
            one_line(&m.alertname),
            instance,
            m.state
        )
    }
}

/// Where to look and act.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Links {
    /// The incident in medic's API.
    pub incident: String,
    /// `POST` here (with the API token) to acknowledge.
    pub ack: String,
    /// The incident's page in the console (`/ui/incidents/{id}`).
    pub page: String,
    /// A signed one-click link that acknowledges the incident once (a confirmation page,
    /// then a button), when `server.link_secret` is set; never in a resolution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_link: Option<String>,
    /// The alert's source (Prometheus' generatorURL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A new silence for exactly this alert, in Alertmanager's UI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence: Option<String>,
    /// The alert's `runbook_url` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
}

/// One step a runbook took, as a message shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// `exec /usr/bin/systemctl restart nginx`, `http GET http://...`, `log`.
    pub what: String,
    /// `exit 0`, `HTTP 503`, `failed: ...`, `would run (dry run)`.
    pub result: String,
    pub ok: bool,
    pub duration_ms: Option<u64>,
    /// The end of its output, trimmed.
    pub output: String,
}

impl Message {
    /// The message about `incident` (which must carry its timeline) for `kind`.
    /// `medic_url` is medic's external URL (no trailing slash).
    pub fn new(incident: &Incident, kind: NotificationKind, medic_url: &str) -> Message {
        let empty = Vec::new();
        let timeline = incident.timeline.as_ref().unwrap_or(&empty);
        let labels = &incident.labels;
        let annotations = &incident.annotations;
        let severity = labels.get("severity").cloned();
        let target = labels
            .get("instance")
            .or_else(|| labels.get("job"))
            .or_else(|| labels.get("service"));
        // Alert content is data: a newline in a label must not make a second line of a
        // subject or of the text, so what is shown on one line is escaped and bounded.
        let subject = match target {
            Some(t) => format!("{} on {}", one_line(&incident.alertname), one_line(t)),
            None => one_line(&incident.alertname),
        };
        let reason_text = incident
            .reason
            .map(|r| r.as_str().to_string())
            .unwrap_or_else(|| "escalated".into());
        let title = match kind {
            NotificationKind::Escalated => format!("[medic] ESCALATED {subject}: {reason_text}"),
            NotificationKind::Resolved => format!("[medic] RESOLVED {subject} (was {reason_text})"),
            k => approval::title(k, &subject, incident),
        };
        let (steps, more_steps) = steps(timeline);
        let why = why(incident);
        let refused = match incident.reason {
            Some(Reason::RateLimited | Reason::CircuitOpen | Reason::Paused) => Some(format!(
                "medic did not run the runbook ({}): {}",
                reason_text,
                incident.message.as_deref().unwrap_or("no details")
            )),
            _ => None,
        };
        let incident_url = format!("{medic_url}/api/v1/incidents/{}", incident.id);
        let links = Links {
            ack: format!("{incident_url}/ack"),
            page: format!("{medic_url}/ui/incidents/{}", incident.id),
            ack_link: None,
            incident: incident_url,
            source: Some(incident.generator_url.clone()).filter(|u| is_http(u)),
            silence: silence_link(&incident.external_url, labels),
            runbook: annotations
                .get("runbook_url")
                .cloned()
                .filter(|u| is_http(u)),
        };
        let mut what_to_do = Vec::new();
        if kind == NotificationKind::Escalated {
            what_to_do.push(advice(incident));
            if let Some(url) = &links.runbook {
                what_to_do.push(format!("Follow the alert's runbook: {url}"));
            }
            what_to_do.push(format!(
                "Take it over (stops later escalation tiers): curl -X POST -H 'Authorization: Bearer $MEDIC_API_TOKEN' -d '{{\"by\":\"your-name\"}}' {}",
                links.ack
            ));
            if let Some(url) = &links.silence {
                what_to_do.push(format!("Silence it while you work: {url}"));
            }
        }
        Message {
            kind,
            title,
            incident_id: incident.id.clone(),
            alertname: incident.alertname.clone(),
            severity,
            summary: annotations.get("summary").cloned(),
            description: annotations.get("description").cloned(),
            labels: labels.clone(),
            since: incident.started_at.clone(),
            reason: incident.reason,
            why,
            refused,
            runbook: incident.runbook.clone(),
            steps,
            more_steps,
            what_to_do,
            links,
            outcome: incident.outcome.map(|o| o.as_str().to_string()),
            resolved_at: incident.resolved_at.clone(),
            group: None,
            approval: approval::request(incident, medic_url),
        }
    }

    /// Adds the signed one-click ack link `url` (an escalation only: a resolution has
    /// nothing left to acknowledge).
    pub fn add_ack_link(&mut self, url: String) {
        if self.kind != NotificationKind::Escalated {
            return;
        }
        let at = self
            .what_to_do
            .iter()
            .position(|l| l.starts_with("Take it over"))
            .unwrap_or(self.what_to_do.len());
        self.what_to_do.insert(
            at,
            format!(
                "Acknowledge it with one click (confirm on the page; the link works once): {url}"
            ),
        );
        self.links.ack_link = Some(url);
    }

    /// The plain-text form (the mail's text part).
    pub fn text(&self) -> String {
        if let Some(t) = approval::text(self) {
            return t;
        }
        let mut t = String::new();
        let _ = writeln!(t, "{}", self.title);
        let _ = writeln!(t);
        if self.kind == NotificationKind::Resolved {
            let _ = writeln!(
                t,
                "The alert resolved at {} (outcome: {}).",
                self.resolved_at.as_deref().unwrap_or("?"),
                self.outcome.as_deref().unwrap_or("?")
            );
            let _ = writeln!(t, "It had been escalated: {}", self.why);
            let _ = writeln!(t, "\nIncident: {}", self.links.incident);
            let _ = writeln!(t, "Console:  {}", self.links.page);
            return t;
        }
        let _ = writeln!(t, "WHAT IS BROKEN");
        let _ = writeln!(t, "  {}", self.broken_line());
        if let Some(g) = &self.group {
            let _ = writeln!(
                t,
                "  This is a storm: {} incidents of this route, escalated for the same reason within a short window, are not handled yet:",
                g.size
            );
            for m in &g.incidents {
                let _ = writeln!(t, "    - {}", Group::line(m));
            }
            if g.size as usize > g.incidents.len() {
                let _ = writeln!(
                    t,
                    "    ... and {} more (see the API)",
                    g.size as usize - g.incidents.len()
                );
            }
        }
        if let Some(d) = &self.description {
            for line in d.lines() {
                let _ = writeln!(t, "  {line}");
            }
        }
        let _ = writeln!(
            t,
            "  severity: {}   firing since: {}",
            self.severity.as_deref().unwrap_or("none"),
            self.since
        );
        let _ = writeln!(t);
        let _ = writeln!(t, "WHAT WAS TRIED");
        let _ = writeln!(t, "  {}", self.tried_line());
        let _ = writeln!(t, "  Why medic stopped: {}", self.why);
        if let Some(r) = &self.refused {
            let _ = writeln!(t, "  Refused: {r}");
        }
        let _ = writeln!(t);
        let _ = writeln!(t, "WHAT TO DO");
        for (i, line) in self.what_to_do.iter().enumerate() {
            let _ = writeln!(t, "  {}. {line}", i + 1);
        }
        let _ = writeln!(t);
        if !self.steps.is_empty() {
            let _ = writeln!(t, "STEPS");
            for (i, s) in self.steps.iter().enumerate() {
                let duration = s
                    .duration_ms
                    .map(|d| format!(" in {d} ms"))
                    .unwrap_or_default();
                let _ = writeln!(t, "  {}. {} -> {}{duration}", i + 1, s.what, s.result);
                for line in s.output.lines() {
                    let _ = writeln!(t, "       | {line}");
                }
            }
            if self.more_steps > 0 {
                let _ = writeln!(t, "  ... and {} more (see the incident)", self.more_steps);
            }
            let _ = writeln!(t);
        }
        let _ = writeln!(t, "LINKS");
        let _ = writeln!(t, "  incident: {}", self.links.incident);
        let _ = writeln!(t, "  page:     {}", self.links.page);
        if let Some(u) = &self.links.ack_link {
            let _ = writeln!(t, "  ack:      {u}");
        }
        if let Some(u) = &self.links.source {
            let _ = writeln!(t, "  source:   {u}");
        }
        if let Some(u) = &self.links.silence {
            let _ = writeln!(t, "  silence:  {u}");
        }
        if let Some(u) = &self.links.runbook {
            let _ = writeln!(t, "  runbook:  {u}");
        }
        let _ = writeln!(t);
        let _ = writeln!(t, "LABELS");
        for (k, v) in &self.labels {
            let _ = writeln!(t, "  {}={}", one_line(k), one_line(v));
        }
        t
    }

    /// The HTML form (the mail's HTML part). Every value is escaped.
    pub fn html(&self) -> String {
        if let Some(h) = approval::html(self) {
            return h;
        }
        let e = escape;
        let mut h = String::new();
        h.push_str("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">");
        let _ = write!(h, "<h2>{}</h2>", e(&self.title));
        if self.kind == NotificationKind::Resolved {
            let _ = write!(
                h,
                "<p>The alert resolved at {} (outcome: <b>{}</b>).</p><p>It had been escalated: {}</p>",
                e(self.resolved_at.as_deref().unwrap_or("?")),
                e(self.outcome.as_deref().unwrap_or("?")),
                e(&self.why)
            );
            let _ = write!(
                h,
                "<p><a href=\"{0}\">Incident {1}</a> &middot; <a href=\"{2}\">in the console</a></p></body></html>",
                e(&self.links.incident),
                e(&self.incident_id),
                e(&self.links.page)
            );
            return h;
        }
        let _ = write!(
            h,
            "<h3>What is broken</h3><p><b>{}</b></p>",
            e(&self.broken_line())
        );
        if let Some(g) = &self.group {
            let _ = write!(
                h,
                "<p>This is a storm: {} incidents of this route, escalated for the same reason within a short window, are not handled yet:</p><ul>",
                g.size
            );
            for m in &g.incidents {
                let _ = write!(h, "<li>{}</li>", e(&Group::line(m)));
            }
            if g.size as usize > g.incidents.len() {
                let _ = write!(
                    h,
                    "<li>... and {} more</li>",
                    g.size as usize - g.incidents.len()
                );
            }
            h.push_str("</ul>");
        }
        if let Some(d) = &self.description {
            let _ = write!(h, "<p style=\"white-space:pre-wrap\">{}</p>", e(d));
        }
        let _ = write!(
            h,
            "<p>Severity: <b>{}</b> &middot; firing since {}</p>",
            e(self.severity.as_deref().unwrap_or("none")),
            e(&self.since)
        );
        let _ = write!(
            h,
            "<h3>What was tried</h3><p>{}</p><p>Why medic stopped: <b>{}</b></p>",
            e(&self.tried_line()),
            e(&self.why)
        );
        if let Some(r) = &self.refused {
            let _ = write!(h, "<p>Refused: {}</p>", e(r));
        }
        h.push_str("<h3>What to do</h3><ol>");
        for line in &self.what_to_do {
            let _ = write!(h, "<li>{}</li>", e(line));
        }
        h.push_str("</ol>");
        if !self.steps.is_empty() {
            h.push_str("<h3>Steps</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>#</th><th>step</th><th>result</th><th>ms</th><th>output</th></tr>");
            for (i, s) in self.steps.iter().enumerate() {
                let color = if s.ok { "#2e7d32" } else { "#c62828" };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td><code>{}</code></td><td style=\"color:{color}\">{}</td><td>{}</td><td><pre style=\"margin:0\">{}</pre></td></tr>",
                    i + 1,
                    e(&s.what),
                    e(&s.result),
                    s.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                    e(&s.output)
                );
            }
            h.push_str("</table>");
            if self.more_steps > 0 {
                let _ = write!(
                    h,
                    "<p>... and {} more steps (see the incident)</p>",
                    self.more_steps
                );
            }
        }
        h.push_str("<h3>Links</h3><ul>");
        let _ = write!(
            h,
            "<li><a href=\"{0}\">Incident {1}</a></li>",
            e(&self.links.incident),
            e(&self.incident_id)
        );
        let _ = write!(
            h,
            "<li><a href=\"{}\">Open in the console</a></li>",
            e(&self.links.page)
        );
        if let Some(u) = &self.links.ack_link {
            let _ = write!(
                h,
                "<li><a href=\"{}\"><b>Acknowledge</b></a> (one click, then confirm)</li>",
                e(u)
            );
        }
        for (name, url) in [
            ("Source", &self.links.source),
            ("Silence in Alertmanager", &self.links.silence),
            ("Runbook", &self.links.runbook),
        ] {
            if let Some(u) = url {
                let _ = write!(h, "<li><a href=\"{}\">{name}</a></li>", e(u));
            }
        }
        h.push_str("</ul><h3>Labels</h3><ul>");
        for (k, v) in &self.labels {
            let _ = write!(h, "<li><code>{}={}</code></li>", e(k), e(v));
        }
        h.push_str("</ul></body></html>");
        h
    }

    /// The webhook document: the message, the whole incident with its timeline, and the
    /// notification's identity (`key` is stable across retries: receivers deduplicate on it).
    pub fn document(&self, incident: &Incident, key: &str, tier: u32, round: u32) -> Value {
        json!({
            "version": "1",
            "kind": self.kind,
            "key": key,
            "tier": tier,
            "round": round,
            "title": self.title,
            "reason": incident.reason,
            "message": incident.message,
            "why": self.why,
            "refused": self.refused,
            "what_to_do": self.what_to_do,
            "steps": self.steps,
            "links": self.links,
            "group": self.group,
            "approval": self.approval,
            "incident": incident,
        })
    }

    /// A Slack incoming-webhook message: the key facts, short.
    pub fn slack(&self) -> Value {
        if let Some(s) = approval::slack(self, false) {
            return s;
        }
        if self.kind == NotificationKind::Resolved {
            let text = format!(
                ":white_check_mark: {} — outcome {} (<{}|incident> · <{}|console>)",
                self.title,
                self.outcome.as_deref().unwrap_or("?"),
                self.links.incident,
                self.links.page
            );
            return json!({ "text": text });
        }
        let mut facts = format!(
            "*What is broken:* {}\n*Severity:* {} · *since* {}\n*What was tried:* {}\n*Why medic stopped:* {}",
            self.broken_line(),
            self.severity.as_deref().unwrap_or("none"),
            self.since,
            self.tried_line(),
            self.why
        );
        if let Some(r) = &self.refused {
            let _ = write!(facts, "\n*Refused:* {r}");
        }
        if let Some(g) = &self.group {
            let _ = write!(
                facts,
                "\n*Storm:* {} incidents of this route, same reason, grouped in this message",
                g.size
            );
        }
        if let Some(s) = self.steps.iter().rev().find(|s| !s.ok) {
            let _ = write!(facts, "\n*Failed step:* `{}` → {}", s.what, s.result);
        }
        let mut links = vec![
            format!("<{}|incident>", self.links.incident),
            format!("<{}|console>", self.links.page),
        ];
        if let Some(u) = &self.links.ack_link {
            links.push(format!("<{u}|acknowledge>"));
        }
        for (name, url) in [
            ("source", &self.links.source),
            ("silence", &self.links.silence),
            ("runbook", &self.links.runbook),
        ] {
            if let Some(u) = url {
                links.push(format!("<{u}|{name}>"));
            }
        }
        json!({
            "text": format!(":rotating_light: {}", self.title),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!(":rotating_light: *{}*", self.title)}},
                {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": links.join(" · ")}]},
            ],
        })
    }

    /// [`Self::slack`] with an "Acknowledge" button (`action_id` `ack`, `value` the
    /// incident id), for a channel whose Slack app sends its clicks to `POST /slack/actions`.
    /// A resolution has no button.
    pub fn slack_with_ack(&self) -> Value {
        if let Some(s) = approval::slack(self, true) {
            return s;
        }
        let mut body = self.slack();
        if self.kind == NotificationKind::Resolved {
            return body;
        }
        if let Some(blocks) = body.get_mut("blocks").and_then(Value::as_array_mut) {
            blocks.push(json!({
                "type": "actions",
                "block_id": "medic",
                "elements": [{
                    "type": "button",
                    "action_id": "ack",
                    "text": {"type": "plain_text", "text": "Acknowledge"},
                    "style": "primary",
                    "value": self.incident_id,
                }],
            }));
        }
        body
    }

    /// What is broken, in one line.
    fn broken_line(&self) -> String {
        match &self.summary {
            Some(s) => format!("{}: {s}", self.alertname),
            None => self.alertname.clone(),
        }
    }

    /// What medic tried, in one line.
    fn tried_line(&self) -> String {
        match &self.runbook {
            None => "Nothing: no runbook handles this alert.".into(),
            Some(rb) => {
                let actions = self.steps.iter().filter(|s| s.what != "log").count();
                let failed = self.steps.iter().filter(|s| !s.ok).count();
                if actions == 0 && self.more_steps == 0 {
                    format!("Runbook {rb} (no step ran).")
                } else {
                    format!(
                        "Runbook {rb}: {} step(s), {failed} failed.",
                        actions + self.more_steps
                    )
                }
            }
        }
    }
}

/// The reason and its words.
fn why(incident: &Incident) -> String {
    match (
        incident.reason,
        incident.message.as_deref().map(str::trim_end),
    ) {
        (Some(r), Some(m)) if !m.is_empty() => format!("{}: {m}", r.as_str()),
        (Some(r), _) => r.as_str().to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => "no reason recorded".into(),
    }
}

/// The first thing to do, by reason.
fn advice(incident: &Incident) -> String {
    match incident.reason {
        Some(Reason::StillFiring) => "The runbook ran to its end, but the alert kept firing: the fix did not work. Look at the service by hand.".into(),
        Some(Reason::NoRunbook) => "No runbook handles this alert: it needs a person.".into(),
        Some(Reason::StepFailed | Reason::Timeout | Reason::RunbookError) => "The runbook stopped before it finished: check the failed step below, then the service.".into(),
        Some(Reason::Interrupted) => "medic stopped during the run: steps may have partly run. Check the service's state before acting.".into(),
        Some(Reason::Requested) => "The runbook asked for a person (see why medic stopped).".into(),
        Some(Reason::InvalidAlert) => "The alert's content breaks medic's limits (see which label and limit): nothing was run. Handle the alert by hand, and fix what generates it.".into(),
        Some(Reason::RateLimited | Reason::CircuitOpen | Reason::Paused) => "medic did not act (see what it refused): handle the alert by hand.".into(),
        Some(Reason::Rejected | Reason::ApprovalTimeout) => "The run was not approved (see who said no, or that nobody answered): nothing was run. Handle the alert by hand.".into(),
        Some(Reason::OffPlan) => "The approved run tried a step that was not in its plan and was stopped before that step acted (see the planned and the attempted step): check the service, and the runbook's branches.".into(),
        None => "Look at the incident.".into(),
    }
}

/// The steps of the incident's runs, from its timeline.
fn steps(timeline: &[TimelineEntry]) -> (Vec<Step>, usize) {
    let mut out = Vec::new();
    let mut started: Option<&Value> = None;
    for e in timeline {
        let d = &e.detail;
        match Event::parse(&e.event) {
            Some(Event::StepStarted) => started = Some(d),
            Some(Event::StepFinished) => {
                let args = started.take().map(|s| &s["args"]);
                let (result, ok) = if let Some(code) = d["code"].as_i64() {
                    (format!("exit {code}"), code == 0)
                } else if let Some(status) = d["status"].as_i64() {
                    (format!("HTTP {status}"), status < 400)
                } else {
                    ("done".to_string(), true)
                };
                out.push(Step {
                    what: describe(&d["step"], args.unwrap_or(d)),
                    result,
                    ok,
                    duration_ms: d["duration_ms"].as_u64(),
                    output: output(d),
                });
            }
            Some(Event::StepFailed) => {
                started = None;
                out.push(Step {
                    what: describe(&d["step"], &d["args"]),
                    result: format!(
                        "failed ({}): {}",
                        d["reason"].as_str().unwrap_or("error"),
                        d["error"].as_str().unwrap_or("")
                    ),
                    ok: false,
                    duration_ms: None,
                    output: String::new(),
                });
            }
            Some(Event::StepWouldRun) => out.push(Step {
                what: describe(&d["step"], &d["args"]),
                result: "would run (dry run)".into(),
                ok: true,
                duration_ms: None,
                output: String::new(),
            }),
            Some(Event::StepOffPlan) => out.push(approval::off_plan_step(d)),
            Some(Event::RunbookLog) => out.push(Step {
                what: "log".into(),
                result: "logged".into(),
                ok: true,
                duration_ms: None,
                output: trim_output(d["message"].as_str().unwrap_or("")),
            }),
            _ => {}
        }
    }
    let more = out.len().saturating_sub(MAX_STEPS);
    out.truncate(MAX_STEPS);
    (out, more)
}

/// `exec /bin/systemctl restart nginx`, `http GET url`, `sleep 5s`, ... A step of a kind this
/// medic does not know (an older or newer audit entry) is shown by its name.
fn describe(step: &Value, args: &Value) -> String {
    let name = step.as_str().unwrap_or("step");
    let s = |v: &Value| {
        v.as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string())
    };
    match StepKind::parse(name) {
        Some(StepKind::Exec) => {
            let program = args["path"]
                .as_str()
                .or(args["program"].as_str())
                .unwrap_or("?");
            let argv: Vec<String> = args["args"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            format!("exec {program} {}", argv.join(" "))
                .trim_end()
                .to_string()
        }
        Some(StepKind::Http) => format!(
            "http {} {}",
            args["method"].as_str().unwrap_or("?"),
            args["url"].as_str().unwrap_or("?")
        ),
        Some(StepKind::Sleep) => format!("sleep {}s", args["seconds"]),
        Some(StepKind::Silence) => format!("silence {}", args["duration"].as_str().unwrap_or("")),
        Some(StepKind::Query) => format!("query {}", args["query"].as_str().unwrap_or("")),
        None => name.to_string(),
    }
}

/// The end of a step's stdout and stderr.
fn output(d: &Value) -> String {
    let mut text = String::new();
    for (name, field) in [("stdout", "stdout"), ("stderr", "stderr"), ("body", "body")] {
        if let Some(v) = d[field].as_str().filter(|v| !v.trim().is_empty()) {
            if !text.is_empty() {
                text.push('\n');
            }
            if field == "stderr" {
                let _ = writeln!(text, "[{name}]");
            }
            text.push_str(v.trim_end());
        }
    }
    trim_output(&text)
}

/// The last lines of `text`, bounded, marking what was cut.
fn trim_output(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skipped = lines.len().saturating_sub(OUTPUT_LINES);
    let mut out = lines[skipped..].join("\n");
    if out.len() > OUTPUT_CHARS {
        let mut start = out.len() - OUTPUT_CHARS;
        while !out.is_char_boundary(start) {
            start += 1;
        }
        out = format!("...{}", &out[start..]);
    } else if skipped > 0 {
        out = format!("... ({skipped} lines above)\n{out}");
    }
    out
}

/// Alertmanager's "new silence" page, prefilled with this alert's labels.
fn silence_link(external_url: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    if !is_http(external_url) || labels.is_empty() {
        return None;
    }
    let matchers: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{k}=\"{v}\"")
        })
        .collect();
    let filter = format!("{{{}}}", matchers.join(","));
    Some(format!(
        "{}/#/silences/new?filter={}",
        external_url.trim_end_matches('/'),
        percent_encode(&filter)
    ))
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Escapes text for HTML content and attribute values.
/// Most characters of one alert value shown on one line of a message.
const ONE_LINE_MAX: usize = 200;

/// An alert value for one line of a message: control characters escaped (`\n`, `\t`,
/// `\u{0}`) so a label cannot add lines to a subject or a message, and cut at
/// [`ONE_LINE_MAX`] characters with the full size said. The stored value is untouched.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(ONE_LINE_MAX + 32));
    for (n, c) in s.chars().enumerate() {
        if n == ONE_LINE_MAX {
            out.push_str(&format!("... ({} bytes)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// medic's external URL: `server.external_url`, else `http://` and the listen address.
pub fn medic_url(config: &Config, listening: Option<std::net::SocketAddr>) -> String {
    match &config.server.external_url {
        Some(url) => url.clone(),
        None => format!("http://{}", listening.unwrap_or(config.server.listen)),
    }
}

pub mod approval;

#[cfg(test)]
mod tests;
