//! What went well, what went wrong, and the suggested action items: the part of a draft
//! that draws lessons from the facts, each phrased about what the systems did, never about
//! who is to blame. Pure; every value from the record goes through [`code`] or [`fence`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::case::Case;
use super::facts::Facts;
use super::markdown::{code, fence};
use super::render::{list, plural, since, waiting};
use super::zone::{duration, Zone};
use crate::incident::Reason;

/// Most distinct failing steps shown with their output.
const MAX_FAILURES: usize = 5;

pub(super) fn went_well(out: &mut String, f: &Facts) {
    let _ = writeln!(out, "## What went well\n");
    let mut items: Vec<String> = Vec::new();
    let mut worked: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for s in f.cases.iter().flat_map(|c| &c.steps) {
        if s.ok && !s.dry_run && s.kind != "log" {
            worked
                .entry(s.key.clone())
                .or_insert_with(|| (s.what.clone(), 0))
                .1 += 1;
        }
    }
    for (_, (what, n)) in worked {
        let times = if n > 1 {
            format!(" ({n} times)")
        } else {
            String::new()
        };
        items.push(format!("Step {} worked{times}.", code(&what)));
    }
    let fixed = f.cases.iter().filter(|c| c.auto_remediated()).count();
    if fixed > 0 {
        let of = if f.cases.len() > 1 {
            format!(" ({fixed} of {} incidents)", f.cases.len())
        } else {
            String::new()
        };
        items.push(format!(
            "The runbook fixed it{of}: the alert resolved after the run, with no person needed."
        ));
    }
    let guards: BTreeSet<&str> = f
        .cases
        .iter()
        .filter_map(|c| c.refused_by.as_deref())
        .collect();
    for g in guards {
        items.push(format!(
            "Guard {} held: medic did not run the runbook again and told a person instead.",
            code(g)
        ));
    }
    if f.cases.iter().any(|c| c.still_firing.is_some()) {
        items.push(
            "Verification held: the alert still fired after the runbook ended, so medic did not \
             close the incident but escalated it (`still_firing`)."
                .into(),
        );
    }
    if f.cases
        .iter()
        .any(|c| c.incident.reason == Some(Reason::Timeout))
    {
        items.push("A time limit held: the step or run that took too long was stopped.".into());
    }
    let mut breakers: BTreeSet<(String, String)> = BTreeSet::new();
    for b in f.cases.iter().flat_map(|c| &c.breakers) {
        let state = b
            .detail
            .get("state")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let id = b
            .detail
            .get("breaker")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        if state == "open" {
            breakers.insert((id.to_string(), state.to_string()));
        }
    }
    for (id, _) in breakers {
        items.push(format!(
            "Circuit breaker {} opened after this failure: medic stops running the runbook for \
             it until the cooldown ends.",
            code(&id)
        ));
    }
    let told: Vec<&Case> = f
        .cases
        .iter()
        .filter(|c| c.told.iter().any(|t| t.sent))
        .collect();
    if let Some(c) = told.first() {
        if let (Some(esc), Some(t)) = (c.escalated, c.told.iter().find(|t| t.sent)) {
            let after =
                t.at.map(|at| duration(at - esc))
                    .unwrap_or_else(|| "?".into());
            items.push(format!(
                "On-call was told through {} {after} after the escalation.",
                code(&t.channel)
            ));
        }
    }
    if let Some(c) = f
        .cases
        .iter()
        .filter(|c| c.acked.is_some())
        .min_by_key(|c| c.acked)
    {
        let by = c.acked_by.as_deref().map_or("someone".to_string(), code);
        let after = since(c.escalated, c.acked).unwrap_or_else(|| "?".into());
        items.push(format!(
            "A person ({by}) took it over {after} after the escalation."
        ));
    }
    list(
        out,
        &items,
        "Nothing in the record stands out as having gone well; add what did.",
    );
}

pub(super) fn went_wrong(out: &mut String, f: &Facts) {
    let _ = writeln!(out, "## What went wrong\n");
    let mut items: Vec<String> = Vec::new();
    let cases = &f.cases;
    let n = cases.len();
    // Why each run stopped, once per distinct reason and message.
    let mut stops: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in cases {
        if let Some(end) = c.runs.last().filter(|e| !e.completed) {
            let key = (
                end.reason.clone().unwrap_or_default(),
                end.message.clone().unwrap_or_default(),
            );
            *stops.entry(key).or_default() += 1;
        }
    }
    for ((reason, message), k) in stops {
        let count = if n > 1 {
            format!(" ({k} of {n} incidents)")
        } else {
            String::new()
        };
        items.push(format!(
            "The run stopped with {}{}{count}.",
            code(&reason),
            if message.is_empty() {
                String::new()
            } else {
                format!(": {}", code(&message))
            }
        ));
    }
    if let Some(c) = cases.iter().find(|c| c.still_firing.is_some()) {
        let k = cases.iter().filter(|c| c.still_firing.is_some()).count();
        let count = if n > 1 {
            format!(" ({k} of {n} incidents)")
        } else {
            String::new()
        };
        items.push(format!(
            "The runbook ran to its end but the alert was still firing when the wait ended{count}: {}.",
            code(c.still_firing.as_deref().unwrap_or(""))
        ));
    }
    let mut refused: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in cases {
        if let Some(g) = &c.refused_by {
            let why = c.incident.message.clone().unwrap_or_default();
            *refused.entry((g.clone(), why)).or_default() += 1;
        }
    }
    for ((guard, why), k) in refused {
        let count = if n > 1 {
            format!(" ({k} of {n} incidents)")
        } else {
            String::new()
        };
        items.push(format!(
            "medic did not run the runbook: guard {} refused it{count}: {}.",
            code(&guard),
            code(&why)
        ));
    }
    for c in cases
        .iter()
        .filter(|c| c.incident.reason == Some(Reason::NoRunbook))
        .take(1)
    {
        items.push(format!(
            "No runbook handles {}: nothing could be tried before a person came.",
            code(&c.incident.alertname)
        ));
    }
    let mut failures: BTreeMap<&str, (usize, Option<&str>)> = BTreeMap::new();
    for t in cases.iter().flat_map(|c| &c.told).filter(|t| !t.sent) {
        let e = failures.entry(t.channel.as_str()).or_default();
        e.0 += 1;
        e.1 = t.error.as_deref().or(e.1);
    }
    for (channel, (k, error)) in failures {
        items.push(format!(
            "Telling {} failed ({}): {}.",
            code(channel),
            plural(k, "attempt"),
            code(error.unwrap_or("no error recorded"))
        ));
    }
    if let Some((waited, came)) = waiting(f) {
        let how = if came {
            "until a person acknowledged it"
        } else if cases.iter().all(|c| c.resolved.is_some()) {
            "and nobody acknowledged it before it resolved"
        } else {
            "and nobody has acknowledged it yet"
        };
        let longest = if n > 1 {
            " (the longest of its incidents)"
        } else {
            ""
        };
        items.push(format!(
            "It waited {} for a person after the escalation{longest}, {how}.",
            duration(waited)
        ));
    }
    list(
        out,
        &items,
        "Nothing in the record went wrong; add what did.",
    );
    failing_steps(out, f);
}

/// Each distinct failing step, with its call, result and output.
fn failing_steps(out: &mut String, f: &Facts) {
    let mut seen: Vec<(&str, usize, &super::case::Step)> = Vec::new();
    for c in &f.cases {
        let Some(s) = c.failing_step() else { continue };
        match seen.iter_mut().find(|(k, _, _)| *k == s.key) {
            Some(found) => found.1 += 1,
            None => seen.push((&s.key, 1, s)),
        }
    }
    let n = f.cases.len();
    for (k, (_, count, s)) in seen.iter().enumerate() {
        if k == MAX_FAILURES {
            let _ = writeln!(
                out,
                "{} more failing steps are not shown.\n",
                seen.len() - k
            );
            break;
        }
        let title = if seen.len() > 1 {
            format!(" {}", k + 1)
        } else {
            String::new()
        };
        let _ = writeln!(out, "### The step that failed{title}\n");
        let mut line = format!("{} → {}", code(&s.what), code(&s.result));
        if let Some(ms) = s.duration_ms {
            let _ = write!(line, " in {ms} ms");
        }
        if n > 1 {
            let _ = write!(line, " (in {count} of {n} incidents; the first shown)");
        }
        let _ = writeln!(out, "{line}\n");
        if let Some(c) = s.code {
            let _ = writeln!(out, "Exit code: {c}\n");
        }
        if s.output.trim().is_empty() {
            let _ = writeln!(out, "It printed nothing.\n");
        } else {
            let _ = writeln!(
                out,
                "Its output (the end of it, as the audit log keeps it):\n"
            );
            let _ = writeln!(out, "{}", fence(&s.output));
        }
    }
}

pub(super) fn actions(out: &mut String, f: &Facts, zone: &Zone) {
    let _ = writeln!(out, "## Action items (suggested)\n");
    let _ = writeln!(
        out,
        "Drawn from the record only: keep, change or drop each, and give each an owner.\n"
    );
    let mut items: Vec<String> = Vec::new();
    for r in &f.repeated {
        let ids: Vec<String> = r.others.iter().take(5).map(|id| code(id)).collect();
        let more = r.others.len().saturating_sub(ids.len());
        let runbook = r.runbook.as_deref().map_or_else(
            || "The runbook".to_string(),
            |rb| format!("Runbook {}", code(rb)),
        );
        items.push(format!(
            "{runbook} also stopped at {} in {}{} of route {} since {} ({}{}): fix that step, or what it acts on.",
            code(&r.key),
            if r.capped { "at least " } else { "" },
            plural(r.others.len(), "other incident"),
            code(&r.route),
            zone.date(r.since),
            ids.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    for r in &f.relapses {
        items.push(format!(
            "Relapse: the alert fired again {} after incident {} was fixed automatically (incident {}; {}): the fix does not stick. Find the cause and make the runbook fix it, or escalate.",
            duration(r.again_at - r.fixed_at),
            code(&r.fixed),
            code(&r.again),
            if r.recorded {
                "recorded as a relapse when it opened".to_string()
            } else {
                let window = chrono::Duration::from_std(f.settings.relapse_window);
                format!("the relapse window is {}", duration(window.unwrap_or_default()))
            }
        ));
    }
    if let Some(u) = &f.unrouted {
        items.push(format!(
            "{} has no runbook and was escalated {} times since {}: write a runbook for it, or give it a route with `ignore = true` if nobody needs to act.",
            code(&u.alertname),
            u.count,
            zone.date(u.since)
        ));
    }
    let unacked: Vec<&Case> = f.cases.iter().filter(|c| c.unacknowledged()).collect();
    if !unacked.is_empty() {
        let routes: BTreeSet<Option<&str>> = unacked
            .iter()
            .map(|c| c.incident.route.as_deref())
            .collect();
        let policies: Vec<String> = routes
            .into_iter()
            .map(|r| match r {
                Some(r) => format!("the escalation policy of route {}", code(r)),
                None => "the default escalation policy".to_string(),
            })
            .collect();
        let count = if f.cases.len() > 1 {
            format!(" ({} of {} incidents)", unacked.len(), f.cases.len())
        } else {
            String::new()
        };
        items.push(format!(
            "Nobody acknowledged the escalation{count}: check who was on call, and that {} reaches them.",
            policies.join(" and ")
        ));
    }
    let mut keys = BTreeSet::new();
    for c in &f.cases {
        if let Some(s) = c.failing_step() {
            if keys.insert(s.key.clone()) {
                items.push(format!(
                    "Find out why {} ended with {}, and make the runbook handle it or say why in its escalation.",
                    code(&s.what),
                    code(&s.result)
                ));
            }
        }
    }
    if f.cases.iter().any(|c| c.still_firing.is_some()) {
        items.push("The runbook ran but the alert kept firing: check that what it does fixes the cause, and that its `verify_for` is long enough for the fix to show.".into());
    }
    let failing: BTreeSet<&str> = f
        .cases
        .iter()
        .flat_map(|c| &c.told)
        .filter(|t| !t.sent)
        .map(|t| t.channel.as_str())
        .collect();
    for ch in failing {
        items.push(format!(
            "Fix channel {}: notifications through it failed.",
            code(ch)
        ));
    }
    if items.is_empty() {
        let _ = writeln!(
            out,
            "- [ ] Nothing in the record calls for one; add what the people involved learned.\n"
        );
        return;
    }
    for i in items {
        let _ = writeln!(out, "- [ ] {i}");
    }
    let _ = writeln!(out);
}
