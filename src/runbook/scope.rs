//! What a runbook sees: the `alert`, `incident` and `secrets` maps in its scope.
//!
//! The runner builds them from a claimed incident, `medic test` from a test's alert and
//! `medic replay` from a webhook body: one function, so a runbook sees the same shape
//! wherever it runs.

use std::collections::BTreeMap;

use rhai::{Dynamic, Map};

/// The alert a run is about.
#[derive(Debug, Clone, Copy)]
pub struct AlertView<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub fingerprint: &'a str,
    pub starts_at: &'a str,
    pub generator_url: &'a str,
}

/// The incident a run belongs to.
#[derive(Debug, Clone, Copy)]
pub struct IncidentView<'a> {
    pub id: &'a str,
    /// The route's name; empty when none.
    pub route: &'a str,
    pub runbook: &'a str,
    pub attempt: u32,
    pub dry_run: bool,
}

fn strings(m: &BTreeMap<String, String>) -> Map {
    m.iter()
        .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
        .collect()
}

/// `alert`: `#{status, labels, annotations, fingerprint, starts_at, generator_url}`. Runs
/// are only ever started for firing alerts.
pub fn alert_map(alert: &AlertView) -> Map {
    let mut m = Map::new();
    m.insert("status".into(), Dynamic::from("firing".to_string()));
    m.insert("labels".into(), Dynamic::from_map(strings(alert.labels)));
    m.insert(
        "annotations".into(),
        Dynamic::from_map(strings(alert.annotations)),
    );
    m.insert(
        "fingerprint".into(),
        Dynamic::from(alert.fingerprint.to_string()),
    );
    m.insert(
        "starts_at".into(),
        Dynamic::from(alert.starts_at.to_string()),
    );
    m.insert(
        "generator_url".into(),
        Dynamic::from(alert.generator_url.to_string()),
    );
    m
}

/// `incident`: `#{id, route, runbook, attempt, dry_run}`.
pub fn incident_map(incident: &IncidentView) -> Map {
    let mut m = Map::new();
    m.insert("id".into(), Dynamic::from(incident.id.to_string()));
    m.insert("route".into(), Dynamic::from(incident.route.to_string()));
    m.insert(
        "runbook".into(),
        Dynamic::from(incident.runbook.to_string()),
    );
    m.insert("attempt".into(), Dynamic::from(incident.attempt as i64));
    m.insert("dry_run".into(), Dynamic::from(incident.dry_run));
    m
}

/// `secrets`: `#{NAME: value}`.
pub fn secrets_map(secrets: &[(String, String)]) -> Map {
    secrets
        .iter()
        .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
        .collect()
}

/// The variables of a run, for [`super::sandbox::Sandbox::run`].
pub fn vars(
    alert: &AlertView,
    incident: &IncidentView,
    secrets: &[(String, String)],
) -> Vec<(&'static str, Dynamic)> {
    vec![
        ("alert", Dynamic::from_map(alert_map(alert))),
        ("incident", Dynamic::from_map(incident_map(incident))),
        ("secrets", Dynamic::from_map(secrets_map(secrets))),
    ]
}
