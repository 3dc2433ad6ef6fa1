//! `medic replay`: what a webhook body would make medic do, without doing any of it.
//!
//! The body is parsed as `POST /webhook` parses it; each alert is routed with the config,
//! and a firing alert's runbook runs offline as a dry run: every step is checked as the
//! real step checks it (allowlist, URL, host), then recorded with its dry-run result.
//! Nothing is stored, run or sent. Guards (rates, breakers, in-flight caps, maintenance
//! windows, the pause switch) depend on live state and are not applied.

use std::fmt::Write as _;
use std::path::Path;

use super::offline::{self, place, show_arg, Answers, Checks, Offline, Outcome, Record};
use crate::ingest::payload::{self, Alert, PayloadError, Status};
use crate::routing::Decision;
use crate::runbook::sandbox::RunEnd;
use crate::runbook::scope::{self, AlertView, IncidentView};
use crate::steps::Redactor;

/// The timeline of every alert in `body`, as text; secrets are redacted as in the audit
/// log. An error names the field of the body that is wrong.
pub fn replay(offline: &Offline, body: &[u8]) -> Result<String, PayloadError> {
    let parsed = payload::parse(body)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "webhook: receiver {:?}, {}, {} alert(s)",
        parsed.receiver,
        parsed.status.as_str(),
        parsed.alerts.len()
    );
    let n = parsed.alerts.len();
    for (i, alert) in parsed.alerts.iter().enumerate() {
        out.push('\n');
        let invalid = parsed.invalid.get(&i).map(Vec::as_slice);
        out.push_str(&timeline(offline, alert, invalid, i + 1, n));
    }
    Ok(redactor(offline).apply(&out))
}

/// The secrets the audit log never shows, as `steps::Toolkit` lists them.
fn redactor(offline: &Offline) -> Redactor {
    let config = &offline.config;
    let mut secrets = config.runbooks.secrets.clone();
    if let Some(t) = &config.server.webhook_token {
        secrets.push(("server.webhook_token".into(), t.clone()));
    }
    if let Some(t) = &config.server.api_token {
        secrets.push(("server.api_token".into(), t.clone()));
    }
    Redactor::new(secrets)
}

fn timeline(
    offline: &Offline,
    alert: &Alert,
    invalid: Option<&[payload::Violation]>,
    i: usize,
    n: usize,
) -> String {
    let mut out = String::new();
    let labels: Vec<String> = alert
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    let _ = writeln!(
        out,
        "alert {i}/{n}: {} ({})",
        show_arg(alert.alertname()),
        alert.status.as_str()
    );
    let _ = writeln!(out, "  labels       {{{}}}", labels.join(", "));
    let _ = writeln!(out, "  fingerprint  {}", alert.fingerprint);
    let exists = |name: &str| offline.catalog.contains(name);
    let mut decision = offline
        .router
        .route(&alert.labels, &alert.annotations, &exists);
    // As `serve` does: nothing runs for an alert over medic's limits.
    if let Some(violations) = invalid {
        decision = crate::ingest::invalid_alert(decision, violations);
    }
    let (route, runbook) = match decision {
        Decision::NoRunbook { why } => {
            let _ = writeln!(out, "  route        none: {why}");
            let end = match alert.status {
                Status::Firing => format!("escalated (no_runbook): {why}"),
                Status::Resolved => "resolved: closes the alert's open incident, if any".into(),
            };
            let _ = writeln!(out, "  end          {end}");
            return out;
        }
        Decision::Ignore { route } => {
            let _ = writeln!(out, "  route        {route}");
            let _ = writeln!(out, "  end          ignored: the route takes the alert on purpose, nothing runs, nobody is told");
            return out;
        }
        Decision::Invalid { route, why } => {
            let _ = writeln!(out, "  route        {}", route.as_deref().unwrap_or("none"));
            let _ = writeln!(out, "  end          escalated (invalid_alert): {why}");
            return out;
        }
        Decision::Runbook { route, runbook } => (route, runbook),
    };
    let _ = writeln!(out, "  route        {route}");
    let Some(rb) = offline.catalog.get(&runbook) else {
        return out;
    };
    let _ = writeln!(out, "  runbook      {runbook} (sha256 {})", rb.hash);
    if alert.status == Status::Resolved {
        let _ = writeln!(
            out,
            "  end          resolved: closes the alert's open incident, if any; no runbook runs"
        );
        return out;
    }
    let starts_at = alert.starts_at.to_rfc3339();
    let view = AlertView {
        labels: &alert.labels,
        annotations: &alert.annotations,
        fingerprint: &alert.fingerprint,
        starts_at: &starts_at,
        generator_url: &alert.generator_url,
    };
    let incident = IncidentView {
        id: "replay",
        route: &route,
        runbook: &runbook,
        attempt: 1,
        dry_run: true,
    };
    let vars = scope::vars(&view, &incident, &offline.config.runbooks.secrets);
    let (end, record) = offline::run(
        &offline.sandbox,
        &rb.ast,
        vars,
        Checks::of(&offline.config),
        Answers::DryRun,
    );
    let path = offline.runbook_path(&runbook);
    let _ = writeln!(
        out,
        "  timeline     (dry run: nothing is run, steps return their dry-run results)"
    );
    out.push_str(&steps(&record, &path));
    let end = match end {
        RunEnd::Completed => {
            let verify_for = offline
                .config
                .routes
                .iter()
                .find(|r| r.name == route)
                .map(|r| humantime::format_duration(r.verify_for).to_string())
                .unwrap_or_default();
            format!("verifying: the alert must resolve within verify_for ({verify_for}), else it is escalated still_firing")
        }
        RunEnd::Stopped(stop) => {
            let at = record
                .stopped_at
                .as_ref()
                .map(|s| format!(" at {}", place(&path, s)))
                .unwrap_or_default();
            format!("escalated ({}){at}: {}", stop.reason.as_str(), stop.message)
        }
    };
    let _ = writeln!(out, "  end          {end}");
    out
}

/// One line per step and log line, with its runbook line in a column.
fn steps(record: &Record, path: &Path) -> String {
    let rows: Vec<(String, String)> = record
        .events
        .iter()
        .map(|e| match e {
            offline::Event::Log { message, at } => (
                format!("    log {}", one_line(message)),
                at.as_ref().map(|s| place(path, s)).unwrap_or_default(),
            ),
            offline::Event::Step { call, at, outcome } => {
                let what = match outcome {
                    Outcome::WouldRun { summary } => format!("would run, {summary}"),
                    Outcome::Answered { summary, .. } => summary.clone(),
                    Outcome::Failed(stop) => format!("refused: {}", stop.message),
                    Outcome::Unmocked { .. } => "no answer".to_string(),
                };
                (
                    format!("    {call}  → {what}"),
                    at.as_ref().map(|s| place(path, s)).unwrap_or_default(),
                )
            }
        })
        .collect();
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        .min(100);
    let mut out = String::new();
    for (left, at) in rows {
        if at.is_empty() {
            let _ = writeln!(out, "{left}");
        } else {
            let _ = writeln!(out, "{left:<width$}   {at}");
        }
    }
    out
}

/// A log line as is, unless it has line breaks or control characters: then quoted.
fn one_line(message: &str) -> String {
    if message.chars().any(char::is_control) {
        serde_json::to_string(message).unwrap_or_default()
    } else {
        message.to_string()
    }
}
