//! The console's pages, rendered with `maud`: every value is escaped, none is concatenated
//! into HTML. Links taken from an alert are shown as links only when they are http(s).

use maud::{html, Markup, DOCTYPE};

use super::ListQuery;
use crate::audit::Event;
use crate::config::Role;
use crate::escalate::message::Message;
use crate::incident::{Reason, State as IncidentState};
use crate::store::{Incident, NotificationKind, TimelineEntry};

/// Who is looking, and the CSRF token their forms carry.
pub struct User {
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

pub(super) fn layout(user: Option<&User>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · medic" }
                link rel="stylesheet" href="/ui/static/medic.css";
            }
            body {
                header {
                    a.brand href="/ui" { "medic" }
                    @if let Some(u) = user {
                        nav {
                            a href="/ui" { "Incidents" } " "
                            a href="/ui/guards" { "Guards" } " "
                            a href="/ui/audit" { "Audit" } " "
                            a href="/ui/runbooks" { "Runbooks" }
                        }
                        span.who { (u.name) " (" (u.role.as_str()) ")" }
                        form.inline method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(u.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page that only says something.
pub fn message(user: Option<&User>, title: &str, text: &str) -> Markup {
    layout(user, title, html! { h1 { (title) } p { (text) } })
}

/// What a signed link would do, and the button that does it.
pub fn confirm_link(i: &Incident, token: &str, by: &str, expires: &str) -> Markup {
    let may = i.state == IncidentState::Escalated;
    layout(
        None,
        "Acknowledge?",
        html! {
            h1 { "Acknowledge " (i.alertname) "?" }
            p.sub { "Incident " code { (i.id) } " " (state_badge(i.state)) }
            dl.facts {
                dt { "Action" } dd { "acknowledge (stops later escalation tiers)" }
                @if let Some(m) = &i.message { dt { "Why" } dd { (m) } }
                dt { "Firing since" } dd { time { (i.started_at) } }
                dt { "As" } dd { (by) }
                dt { "Link expires" } dd { time { (expires) } }
            }
            @if may {
                form.ack method="post" action={ "/ui/a/" (token) } {
                    button type="submit" { "Acknowledge" }
                }
                p { "Nothing happens until you press the button. The link works once." }
            } @else {
                p { "Only an escalated incident can be acknowledged: this one is " (i.state.as_str()) "." }
            }
        },
    )
}

pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        None,
        "Log in",
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.login method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Name" input type="text" name="name" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
        },
    )
}

fn state_badge(state: IncidentState) -> Markup {
    html! { span class={ "state state-" (state.as_str()) } { (state.as_str()) } }
}

pub fn list(user: &User, q: &ListQuery, incidents: &[Incident], page: usize, more: bool) -> Markup {
    let link = |p: usize| {
        let mut pairs = Vec::new();
        for (k, v) in [
            ("state", &q.state),
            ("reason", &q.reason),
            ("alertname", &q.alertname),
            ("route", &q.route),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if !v.is_empty() {
                pairs.push(format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
        }
        pairs.push(format!("page={p}"));
        format!("/ui?{}", pairs.join("&"))
    };
    layout(
        Some(user),
        "Incidents",
        html! {
            h1 { "Incidents" }
            form.filters method="get" action="/ui" {
                label { "State"
                    select name="state" {
                        option value="" { "any" }
                        @for s in IncidentState::ALL {
                            option value=(s.as_str()) selected[q.state == s.as_str()] { (s.as_str()) }
                        }
                    }
                }
                label { "Reason"
                    select name="reason" {
                        option value="" { "any" }
                        @for r in Reason::ALL {
                            option value=(r.as_str()) selected[q.reason == r.as_str()] { (r.as_str()) }
                        }
                    }
                }
                label { "Alert" input type="text" name="alertname" value=(q.alertname); }
                label { "Route" input type="text" name="route" value=(q.route); }
                label { "Since" input type="text" name="since" value=(q.since) placeholder="24h or 2026-01-01T00:00:00Z"; }
                label { "Until" input type="text" name="until" value=(q.until) placeholder="RFC 3339 or 1h"; }
                button type="submit" { "Filter" }
            }
            p.refresh { a #refresh href=(link(page)) { "refresh" } }
            div #incidents {
            @if incidents.is_empty() {
                p { "No incident." }
            } @else {
                div.scroll {
                    table.incidents {
                        thead { tr { th { "Incident" } th { "Alert" } th { "State" } th { "Reason" } th { "Route" } th { "Started" } th { "Updated" } } }
                        tbody {
                            @for i in incidents {
                                tr {
                                    td { a href={ "/ui/incidents/" (i.id) } { code { (i.id) } } }
                                    td { (i.alertname) }
                                    td { (state_badge(i.state)) }
                                    td { @if let Some(r) = i.reason { (r.as_str()) } }
                                    td { @if let Some(r) = &i.route { (r) } }
                                    td { time { (i.started_at) } }
                                    td { time { (i.updated_at) } }
                                }
                            }
                        }
                    }
                }
            }
            nav.pages {
                @if page > 1 { a href=(link(page - 1)) { "← newer" } }
                span { "page " (page) }
                @if more { a href=(link(page + 1)) { "older →" } }
            }
            }
            script src="/ui/static/refresh.js" defer {}
        },
    )
}

fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

pub fn incident(user: &User, i: &Incident) -> Markup {
    let message = Message::new(i, NotificationKind::Escalated, "");
    let empty = Vec::new();
    let timeline = i.timeline.as_ref().unwrap_or(&empty);
    // `Message` lists one step per step event of the timeline, in order: pair them up.
    let mut steps = message.steps.iter();
    let may_ack = user.role.may(Role::Responder) && i.state == IncidentState::Escalated;
    layout(
        Some(user),
        &format!("Incident {}", i.id),
        html! {
            h1 { (i.alertname) " " (state_badge(i.state)) }
            p.sub { "Incident " code { (i.id) } }
            p.postmortem { a href={ "/ui/incidents/" (i.id) "/postmortem" } { "Postmortem draft" } }
            @if may_ack {
                form.ack method="post" action={ "/ui/incidents/" (i.id) "/ack" } {
                    input type="hidden" name="csrf" value=(user.csrf);
                    button type="submit" { "Acknowledge" }
                }
            }
            (super::actions::buttons(user, i))
            dl.facts {
                dt { "State" } dd { (i.state.as_str()) }
                @if let Some(r) = i.reason { dt { "Reason" } dd { (r.as_str()) } }
                @if let Some(m) = &i.message { dt { "Why" } dd { (m) } }
                dt { "Firing since" } dd { time { (i.started_at) } }
                dt { "Updated" } dd { time { (i.updated_at) } }
                @if let Some(r) = &i.route { dt { "Route" } dd { (r) } }
                @if let Some(r) = &i.runbook { dt { "Runbook" } dd { (r) } }
                @if let Some(by) = &i.acknowledged_by { dt { "Acknowledged by" } dd { (by) } }
                @if let Some(at) = &i.resolved_at { dt { "Resolved" } dd { time { (at) } } }
                dt { "Source" }
                dd {
                    @if is_http(&i.generator_url) { a href=(i.generator_url) rel="noreferrer" { (i.generator_url) } }
                    @else { (i.generator_url) }
                }
            }
            (super::approval::panel(user, i))
            (super::actions::failed_step(i, &message))
            h2 { "Labels" }
            (pairs(&i.labels))
            h2 { "Annotations" }
            (pairs(&i.annotations))
            (rounds(timeline))
            h2 #timeline { "Timeline" }
            ol.timeline {
                @for e in timeline {
                    li {
                        time { (e.at) } " " strong { (e.event) }
                        (super::actions::timeline_detail(e))
                        @let is_step = matches!(Event::parse(&e.event), Some(Event::StepFinished | Event::StepFailed | Event::StepWouldRun | Event::RunbookLog | Event::StepOffPlan));
                        @if is_step {
                            @if let Some(s) = steps.next() {
                                @if matches!(Event::parse(&e.event), Some(Event::StepFinished | Event::StepFailed | Event::StepOffPlan)) {
                                    div class={ "step " (if s.ok { "ok" } else { "failed" }) } {
                                        code { (s.what) }
                                        " → " (s.result)
                                        @if let Some(ms) = s.duration_ms { " in " (ms) " ms" }
                                        @if !s.output.is_empty() { pre { (s.output) } }
                                    }
                                } @else if !s.output.is_empty() {
                                    pre { (s.output) }
                                }
                            }
                        }
                    }
                }
            }
            @if message.more_steps > 0 { p { (message.more_steps) " more steps are not shown." } }
            (super::actions::note_form(user, i))
        },
    )
}

fn pairs(map: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        @if map.is_empty() { p { "none" } } @else {
            dl.pairs { @for (k, v) in map { dt { (k) } dd { (v) } } }
        }
    }
}

/// One notification of an escalation, as its timeline tells it.
#[derive(Debug, Default, PartialEq)]
struct Delivery {
    /// The round, or the storm group whose summary it is.
    round: String,
    kind: String,
    tier: u64,
    channel: String,
    due: Option<String>,
    /// `pending`, `sent`, `retrying`, `failed` or `cancelled`.
    state: &'static str,
    /// When it was sent, or when it failed last.
    at: Option<String>,
    attempts: u64,
    error: Option<String>,
    next: Option<String>,
}

/// The escalation rounds of a timeline: who was told, when each notification was due,
/// sent or failed; and the storm groups that covered the incident.
fn deliveries(timeline: &[TimelineEntry]) -> (Vec<Delivery>, Vec<(String, String)>) {
    let mut out: Vec<Delivery> = Vec::new();
    let mut storms = Vec::new();
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64());
    for e in timeline {
        let d = &e.detail;
        let round = match (text(d, "group"), num(d, "round")) {
            (Some(g), _) => format!("storm {g}"),
            (None, Some(r)) => r.to_string(),
            (None, None) => String::new(),
        };
        match Event::parse(&e.event) {
            Some(Event::EscalationScheduled) => {
                if let Some(g) = text(d, "group") {
                    storms.push((g, text(d, "summary_due_at").unwrap_or_default()));
                }
                for t in d
                    .get("tiers")
                    .and_then(|t| t.as_array())
                    .into_iter()
                    .flatten()
                {
                    for ch in t
                        .get("notify")
                        .and_then(|n| n.as_array())
                        .into_iter()
                        .flatten()
                    {
                        out.push(Delivery {
                            round: round.clone(),
                            kind: NotificationKind::Escalated.as_str().to_string(),
                            tier: num(t, "tier").unwrap_or(0),
                            channel: ch.as_str().unwrap_or_default().to_string(),
                            due: text(t, "due_at"),
                            state: "pending",
                            ..Default::default()
                        });
                    }
                }
            }
            Some(Event::NotificationSent | Event::NotificationFailed) => {
                let (Some(channel), Some(tier)) = (text(d, "channel"), num(d, "tier")) else {
                    continue;
                };
                let kind = text(d, "kind").unwrap_or_default();
                let found = out.iter().position(|x| {
                    x.round == round && x.tier == tier && x.channel == channel && x.kind == kind
                });
                let i = found.unwrap_or_else(|| {
                    out.push(Delivery {
                        round: round.clone(),
                        kind: kind.clone(),
                        tier,
                        channel: channel.clone(),
                        ..Default::default()
                    });
                    out.len() - 1
                });
                let x = &mut out[i];
                x.at = Some(e.at.clone());
                x.attempts = num(d, "attempt").unwrap_or(x.attempts + 1);
                if Event::parse(&e.event) == Some(Event::NotificationSent) {
                    x.state = "sent";
                } else {
                    x.error = text(d, "error");
                    x.next = text(d, "next_attempt_at");
                    x.state = if x.next.is_some() {
                        "retrying"
                    } else {
                        "failed"
                    };
                }
            }
            Some(Event::NotificationsCancelled) => {
                let group = text(d, "group");
                for x in out.iter_mut().filter(|x| x.state == "pending") {
                    let hit = match &group {
                        Some(g) => {
                            x.round == format!("storm {g}")
                                && Some(x.tier) == num(d, "tier")
                                && Some(&x.channel) == text(d, "channel").as_ref()
                        }
                        None => !x.round.starts_with("storm "),
                    };
                    if hit {
                        x.state = "cancelled";
                        x.at = Some(e.at.clone());
                    }
                }
            }
            _ => {}
        }
    }
    (out, storms)
}

fn rounds(timeline: &[TimelineEntry]) -> Markup {
    let (rows, storms) = deliveries(timeline);
    html! {
        @if !rows.is_empty() || !storms.is_empty() {
            h2 { "Escalation" }
            @for (g, due) in &storms {
                p { "Covered by the summary of storm group " code { (g) } @if !due.is_empty() { ", due " time { (due) } } "." }
            }
            @if !rows.is_empty() {
                div.scroll {
                    table.rounds {
                        thead { tr { th { "Round" } th { "Tier" } th { "Channel" } th { "Due" } th { "Delivery" } th { "Attempts" } } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    td { (r.round) @if r.kind != "escalated" { " (" (r.kind) ")" } }
                                    td { (r.tier) }
                                    td { (r.channel) }
                                    td { @if let Some(d) = &r.due { time { (d) } } }
                                    td class={ "delivery " (r.state) } {
                                        (r.state)
                                        @if let Some(at) = &r.at { " " time { (at) } }
                                        @if let Some(e) = &r.error { br; small { (e) } }
                                        @if let Some(n) = &r.next { br; small { "next attempt " time { (n) } } }
                                    }
                                    td { (r.attempts) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(event: &str, at: &str, detail: serde_json::Value) -> TimelineEntry {
        TimelineEntry {
            seq: 0,
            at: at.into(),
            event: event.into(),
            detail,
        }
    }

    #[test]
    fn rounds_follow_the_timeline() {
        let t = vec![
            entry(
                "escalation_scheduled",
                "t0",
                json!({"round": 1, "tiers": [
                {"tier": 1, "notify": ["ops"], "due_at": "t0"},
                {"tier": 2, "notify": ["boss"], "due_at": "t9"}]}),
            ),
            entry(
                "notification_failed",
                "t1",
                json!({"channel": "ops", "kind": "escalated",
                "round": 1, "tier": 1, "attempt": 1, "error": "503", "next_attempt_at": "t2"}),
            ),
            entry(
                "notification_sent",
                "t2",
                json!({"channel": "ops", "kind": "escalated",
                "round": 1, "tier": 1, "attempt": 2}),
            ),
            entry(
                "notifications_cancelled",
                "t3",
                json!({"notifications": 1, "why": "acked"}),
            ),
        ];
        let (rows, storms) = deliveries(&t);
        assert!(storms.is_empty());
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].state, rows[0].attempts, rows[0].at.as_deref()),
            ("sent", 2, Some("t2"))
        );
        assert_eq!(rows[0].error.as_deref(), Some("503"));
        assert_eq!(
            (rows[1].channel.as_str(), rows[1].state),
            ("boss", "cancelled")
        );
    }
}
