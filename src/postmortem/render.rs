//! The draft in Markdown, from the [`Facts`]: summary, impact window, detection and
//! response, timeline, then what went well, what went wrong and suggested action items
//! (`lessons.rs`), and the record. Pure. Every value that came from the store goes through [`code`] or [`fence`]
//! (see `markdown.rs`); the headings, labels and sentences are medic's own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::case::Case;
use super::facts::Facts;
use super::lessons;
use super::markdown::{cell, code};
use super::timeline;
use super::zone::{duration, Zone};
use crate::incident::{Reason, State};
use crate::store::Incident;

/// Most rows of the timeline table.
const MAX_ROWS: usize = 400;

/// The draft.
pub fn render(f: &Facts, zone: &Zone) -> String {
    let mut out = String::new();
    title(&mut out, f, zone);
    summary(&mut out, f, zone);
    impact(&mut out, f, zone);
    response(&mut out, f, zone);
    timeline_table(&mut out, f, zone);
    lessons::went_well(&mut out, f);
    lessons::went_wrong(&mut out, f);
    lessons::actions(&mut out, f, zone);
    record(&mut out, f, zone);
    out
}

/// The label that says where an alert fired.
fn target(i: &Incident) -> Option<&String> {
    ["instance", "service", "job", "name"]
        .iter()
        .find_map(|k| i.labels.get(*k))
}

/// `` `ServiceDown` on `web1:80` ``.
fn subject(i: &Incident) -> String {
    match target(i) {
        Some(t) => format!("{} on {}", code(&i.alertname), code(t)),
        None => code(&i.alertname),
    }
}

pub(super) fn since(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<String> {
    Some(duration(b? - a?))
}

fn title(out: &mut String, f: &Facts, zone: &Zone) {
    let first = &f.cases[0].incident;
    match &f.storm {
        Some(s) => {
            let _ = writeln!(
                out,
                "# Postmortem draft: storm of {} incidents on route {}\n",
                s.group.size,
                code(&s.group.route)
            );
        }
        None => {
            let _ = writeln!(out, "# Postmortem draft: {}\n", subject(first));
        }
    }
    let of = match &f.storm {
        Some(s) => format!(
            "storm group {} ({} incidents)",
            code(&s.group.id),
            s.group.size
        ),
        None => format!("incident {}", code(&first.id)),
    };
    let _ = writeln!(
        out,
        "_A blameless draft that medic wrote from {of} and the audit log: what happened and \
         when, as the systems recorded it, not who is to blame. Check it, and add what only \
         the people involved know._\n"
    );
    let _ = writeln!(out, "Times are in {}.\n", zone.name());
}

/// What the runs of `cases` did, in one phrase.
fn what_medic_did(cases: &[Case]) -> String {
    let runs: usize = cases.iter().map(|c| c.runs.len()).sum();
    if runs == 0 {
        let c = &cases[0];
        return match (&c.refused_by, c.incident.reason, c.incident.state) {
            (Some(guard), _, _) => {
                format!("nothing: guard {} refused to run the runbook", code(guard))
            }
            (None, Some(Reason::NoRunbook), _) => "nothing: no runbook handles this alert".into(),
            (None, Some(Reason::InvalidAlert), _) => {
                "nothing: the alert breaks medic's limits, so nothing was run".into()
            }
            (None, _, State::Ignored) => "nothing: its route ignores this alert".into(),
            _ => "nothing (no run is recorded)".into(),
        };
    }
    let steps: Vec<_> = cases
        .iter()
        .flat_map(|c| &c.steps)
        .filter(|s| s.kind != "log")
        .collect();
    let failed = steps.iter().filter(|s| !s.ok).count();
    let dry = steps.iter().any(|s| s.dry_run);
    let times = match runs {
        1 => "once".to_string(),
        2 => "twice".to_string(),
        n => format!("{n} times"),
    };
    let mut s = format!(
        "ran the runbook {times}: {}, {failed} failed",
        plural(steps.len(), "step")
    );
    if dry {
        s.push_str(" (a dry run: nothing was changed)");
    }
    if let [only] = cases {
        if let Some(end) = only.runs.last() {
            if end.completed {
                s.push_str("; the runbook ran to its end");
            } else {
                let _ = write!(
                    s,
                    "; it stopped with {}",
                    code(end.reason.as_deref().unwrap_or("?"))
                );
                if let Some(m) = end.message.as_deref().filter(|m| !m.is_empty()) {
                    let _ = write!(s, ": {}", code(m));
                }
            }
        }
    }
    s
}

/// The channels that were told, in words.
fn told(cases: &[Case]) -> String {
    let channels: BTreeSet<&str> = cases
        .iter()
        .flat_map(|c| &c.told)
        .filter(|t| t.sent)
        .map(|t| t.channel.as_str())
        .collect();
    if channels.is_empty() {
        "no notification was delivered".into()
    } else {
        let names: Vec<String> = channels.into_iter().map(code).collect();
        format!("told {}", names.join(", "))
    }
}

fn summary(out: &mut String, f: &Facts, zone: &Zone) {
    let _ = writeln!(out, "## Summary\n");
    let cases = &f.cases;
    if let Some(s) = &f.storm {
        let opened = super::case::parse_at(&s.group.opened_at)
            .map_or_else(|| code(&s.group.opened_at), |t| zone.time(t));
        let _ = writeln!(
            out,
            "- **Storm:** {} incidents of route {} were escalated with reason {} within the storm \
             window that opened at {opened}; this one draft covers them all.",
            s.group.size,
            code(&s.group.route),
            code(&s.group.reason)
        );
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for c in cases {
            *names.entry(c.incident.alertname.as_str()).or_default() += 1;
        }
        let names: Vec<String> = names
            .into_iter()
            .map(|(n, k)| format!("{} ×{k}", code(n)))
            .collect();
        let _ = writeln!(out, "- **Alerts:** {}", names.join(", "));
        let _ = writeln!(out, "- **What medic did:** {}", what_medic_did(cases));
        let escalated = cases.iter().filter(|c| c.escalated.is_some()).count();
        let acked = cases.iter().filter(|c| c.acked.is_some()).count();
        let _ = writeln!(
            out,
            "- **Escalated:** {escalated} of {}; {}",
            cases.len(),
            told(cases)
        );
        let _ = writeln!(out, "- **Taken over:** {acked} of {escalated} acknowledged");
        let resolved = cases.iter().filter(|c| c.resolved.is_some()).count();
        let _ = writeln!(
            out,
            "- **Outcome:** {resolved} of {} resolved, {} still open\n",
            cases.len(),
            cases.iter().filter(|c| c.incident.state.is_open()).count()
        );
        members(out, f, zone);
        return;
    }
    let c = &cases[0];
    let i = &c.incident;
    let mut alert = format!("- **Alert:** {}", subject(i));
    if let Some(sev) = i.labels.get("severity") {
        let _ = write!(alert, ", severity {}", code(sev));
    }
    if let Some(s) = i.annotations.get("summary") {
        let _ = write!(alert, ": {}", code(s));
    }
    let _ = writeln!(out, "{alert}");
    match (&i.route, &i.runbook) {
        (Some(r), Some(rb)) => {
            let _ = writeln!(out, "- **Route:** {}, runbook {}", code(r), code(rb));
        }
        (Some(r), None) => {
            let _ = writeln!(out, "- **Route:** {}", code(r));
        }
        (None, _) => {
            let _ = writeln!(out, "- **Route:** none matched");
        }
    }
    let _ = writeln!(out, "- **What medic did:** {}", what_medic_did(cases));
    if c.escalated.is_some() {
        let mut line = format!(
            "- **Escalated:** reason {}",
            code(i.reason.map_or("?", Reason::as_str))
        );
        if let Some(m) = i.message.as_deref().filter(|m| !m.is_empty()) {
            let _ = write!(line, " ({})", code(m));
        }
        let _ = writeln!(out, "{line}; {}", told(cases));
        match (&c.acked_by, since(c.escalated, c.acked)) {
            (by, Some(after)) => {
                let by = by.as_deref().map_or("someone".to_string(), code);
                let _ = writeln!(
                    out,
                    "- **Taken over:** by {by}, {after} after the escalation"
                );
            }
            (_, None) => {
                let _ = writeln!(out, "- **Taken over:** nobody acknowledged it");
            }
        }
    }
    let outcome = match (i.outcome, c.resolved) {
        (Some(o), Some(r)) => format!(
            "resolved {}{}",
            code(o.as_str()),
            since(c.alert_start, Some(r))
                .map(|d| format!(", {d} after the alert started"))
                .unwrap_or_default()
        ),
        _ => format!("{}, still open", code(i.state.as_str())),
    };
    let _ = writeln!(out, "- **Outcome:** {outcome}\n");
}

/// The storm's incidents, one row each.
fn members(out: &mut String, f: &Facts, zone: &Zone) {
    let t = |x: Option<DateTime<Utc>>| x.map_or_else(|| "—".to_string(), |t| zone.time(t));
    let _ = writeln!(
        out,
        "| # | Incident | Alert | State | Alert started | Escalated | Acknowledged | Resolved |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (n, c) in f.cases.iter().enumerate() {
        let i = &c.incident;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            n + 1,
            cell(&code(&i.id)),
            cell(&subject(i)),
            cell(&code(i.state.as_str())),
            t(c.alert_start),
            t(c.escalated),
            t(c.acked),
            t(c.resolved)
        );
    }
    if let Some(s) = &f.storm {
        if s.group.size as usize > s.listed {
            let _ = writeln!(
                out,
                "\n{} more incidents of the group are not listed here.",
                s.group.size as usize - s.listed
            );
        }
    }
    let _ = writeln!(out);
}

/// The first and last of the milestones of the draft's incidents.
struct Milestones {
    alert_start: Option<DateTime<Utc>>,
    received: Option<DateTime<Utc>>,
    first_action: Option<DateTime<Utc>>,
    escalated: Option<DateTime<Utc>>,
    acked: Option<DateTime<Utc>>,
    acked_by: Option<String>,
    /// When the last incident resolved, once all have.
    resolved: Option<DateTime<Utc>>,
}

impl Milestones {
    fn of(cases: &[Case]) -> Milestones {
        let first = |f: fn(&Case) -> Option<DateTime<Utc>>| cases.iter().filter_map(f).min();
        let acked = cases
            .iter()
            .filter(|c| c.acked.is_some())
            .min_by_key(|c| c.acked);
        let all_resolved = cases.iter().all(|c| c.resolved.is_some());
        Milestones {
            alert_start: first(|c| c.alert_start),
            received: first(|c| c.received),
            first_action: first(|c| c.first_action),
            escalated: first(|c| c.escalated),
            acked: acked.and_then(|c| c.acked),
            acked_by: acked.and_then(|c| c.acked_by.clone()),
            resolved: if all_resolved {
                cases.iter().filter_map(|c| c.resolved).max()
            } else {
                None
            },
        }
    }
}

fn impact(out: &mut String, f: &Facts, zone: &Zone) {
    let _ = writeln!(out, "## Impact window\n");
    let m = Milestones::of(&f.cases);
    let storm = f.storm.is_some();
    let Some(start) = m.alert_start.or(m.received) else {
        let _ = writeln!(out, "The record holds no start time.\n");
        return;
    };
    let first = if storm {
        "the first alert started firing"
    } else {
        "the alert started firing"
    };
    match m.resolved {
        Some(end) => {
            let last = if storm {
                "the last one resolved"
            } else {
                "it resolved"
            };
            let _ = writeln!(
                out,
                "From {} ({first}) to {} ({last}): **{}**.\n",
                zone.time(start),
                zone.time(end),
                duration(end - start)
            );
        }
        None => {
            let open = f.cases.iter().filter(|c| c.resolved.is_none()).count();
            let which = if storm {
                format!(" ({open} of {} incidents)", f.cases.len())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "From {} ({first}): **still open**{which}, {} so far when this draft was written ({}).\n",
                zone.time(start),
                duration(f.now - start),
                zone.time(f.now)
            );
        }
    }
}

fn response(out: &mut String, f: &Facts, zone: &Zone) {
    let _ = writeln!(out, "## Detection and response\n");
    let m = Milestones::of(&f.cases);
    let storm = f.storm.is_some();
    let acked = match &m.acked_by {
        Some(by) => format!("Acknowledged by {}", code(by)),
        None => "Acknowledged".to_string(),
    };
    let resolved = if storm {
        "Resolved (the last one)"
    } else {
        "Resolved"
    };
    let rows = [
        ("Alert started firing", m.alert_start),
        ("medic received it", m.received),
        ("First action (the runbook started)", m.first_action),
        ("Escalated to a person", m.escalated),
        (acked.as_str(), m.acked),
        (resolved, m.resolved),
    ];
    let _ = writeln!(out, "| Milestone | Time | After the alert started |");
    let _ = writeln!(out, "|---|---|---|");
    let mut never = Vec::new();
    for (name, at) in &rows {
        match at {
            Some(t) => {
                let after = since(m.alert_start, Some(*t)).unwrap_or_default();
                let _ = writeln!(out, "| {} | {} | {after} |", cell(name), zone.time(*t));
            }
            None => never.push(name.to_lowercase()),
        }
    }
    let _ = writeln!(out);
    if !never.is_empty() {
        let _ = writeln!(out, "Not reached: {}.\n", never.join("; "));
    }
    let figure = |name: &str, how: &str, value: Option<String>| match value {
        Some(v) => format!("- **{name}** ({how}): {v}"),
        None => format!("- **{name}** ({how}): —"),
    };
    let lines = [
        figure(
            "Time to detect",
            "the alert started → medic received it",
            since(m.alert_start, m.received),
        ),
        figure(
            "Time to first action",
            "received → the runbook started",
            since(m.received, m.first_action),
        ),
        figure(
            "Time to escalate",
            "received → escalated",
            since(m.received, m.escalated),
        ),
        figure(
            "Time to acknowledge",
            "escalated → acknowledged",
            since(m.escalated, m.acked),
        ),
        figure(
            "Time to resolve",
            "the alert started → resolved",
            since(m.alert_start, m.resolved),
        ),
    ];
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    if let Some((waited, _)) = waiting(f) {
        let _ = writeln!(
            out,
            "- **Waiting for a person** (escalated → acknowledged, else resolved, else now): {}",
            duration(waited)
        );
    }
    let _ = writeln!(out);
}

/// The longest wait for a person among the draft's incidents, and whether someone came.
pub(super) fn waiting(f: &Facts) -> Option<(chrono::Duration, bool)> {
    f.cases
        .iter()
        .filter_map(|c| c.waiting(f.now))
        .max_by_key(|(d, _)| *d)
}

fn timeline_table(out: &mut String, f: &Facts, zone: &Zone) {
    let _ = writeln!(out, "## Timeline\n");
    let storm = f.storm.is_some();
    // Every entry of every incident, in the audit log's order.
    let mut entries: Vec<(usize, &crate::store::TimelineEntry)> = f
        .cases
        .iter()
        .enumerate()
        .flat_map(|(n, c)| c.timeline().iter().map(move |e| (n + 1, e)))
        .collect();
    entries.sort_by_key(|(_, e)| e.seq);
    let what = if storm {
        "Every audit entry of the storm's incidents, oldest first (# is the incident's row in the summary)"
    } else {
        "Every audit entry of the incident, oldest first"
    };
    let _ = writeln!(
        out,
        "{what}; Alertmanager's repeats of a firing alert are folded into one row.\n"
    );
    if storm {
        let _ = writeln!(out, "| # | Time | Event | What |");
        let _ = writeln!(out, "|---|---|---|---|");
    } else {
        let _ = writeln!(out, "| Time | Event | What |");
        let _ = writeln!(out, "|---|---|---|");
    }
    let mut rows = 0;
    let mut k = 0;
    while k < entries.len() {
        let (n, e) = entries[k];
        // Repeats of the alert, one after another for the same incident: one row.
        let mut end = k + 1;
        if e.event == "alert_deduplicated" {
            while end < entries.len()
                && entries[end].0 == n
                && entries[end].1.event == "alert_deduplicated"
            {
                end += 1;
            }
        }
        if rows == MAX_ROWS {
            let _ = writeln!(
                out,
                "\n{} more entries are not shown: see each incident's page in the console.",
                entries.len() - k
            );
            break;
        }
        let when = super::case::parse_at(&e.at).map_or_else(|| code(&e.at), |t| zone.time(t));
        let mut what = timeline::describe(e, zone);
        if end - k > 1 {
            let last = &entries[end - 1].1.at;
            let last = super::case::parse_at(last).map_or_else(|| code(last), |t| zone.time(t));
            let _ = write!(what, " ×{}, the last at {last}", end - k);
        }
        let event = cell(&code(&e.event));
        if storm {
            let _ = writeln!(out, "| {n} | {when} | {event} | {} |", cell(&what));
        } else {
            let _ = writeln!(out, "| {when} | {event} | {} |", cell(&what));
        }
        rows += 1;
        k = end;
    }
    let _ = writeln!(out);
}

fn record(out: &mut String, f: &Facts, zone: &Zone) {
    let _ = writeln!(out, "## Record\n");
    if let Some(s) = &f.storm {
        let opened = super::case::parse_at(&s.group.opened_at)
            .map_or_else(|| code(&s.group.opened_at), |t| zone.time(t));
        let _ = writeln!(
            out,
            "- **Storm group:** {}, opened {opened}, first incident {}\n",
            code(&s.group.id),
            code(&s.group.leader)
        );
        let _ = writeln!(
            out,
            "Each incident's labels and annotations are on its page in the console.\n"
        );
        return;
    }
    let i = &f.cases[0].incident;
    let _ = writeln!(out, "- **Incident:** {}", code(&i.id));
    let _ = writeln!(out, "- **Fingerprint:** {}", code(&i.fingerprint));
    let _ = writeln!(out, "- **Source:** {}", code(&i.generator_url));
    let _ = writeln!(
        out,
        "- **Notifications received:** {}; **runs:** {}\n",
        i.deliveries, i.attempts
    );
    for (name, map) in [("Label", &i.labels), ("Annotation", &i.annotations)] {
        if map.is_empty() {
            continue;
        }
        let _ = writeln!(out, "| {name} | Value |");
        let _ = writeln!(out, "|---|---|");
        for (k, v) in map {
            let _ = writeln!(out, "| {} | {} |", cell(&code(k)), cell(&code(v)));
        }
        let _ = writeln!(out);
    }
}

/// `1 step`, `2 steps`.
pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A bulleted list, or `none` when there is nothing to list.
pub(super) fn list(out: &mut String, items: &[String], none: &str) {
    if items.is_empty() {
        let _ = writeln!(out, "{none}\n");
        return;
    }
    for i in items {
        let _ = writeln!(out, "- {i}");
    }
    let _ = writeln!(out);
}
