//! The Alertmanager webhook body (version "4"), parsed and checked.
//!
//! This file owns the shape of what Alertmanager sends and every rule about what we
//! accept. Fields that newer Alertmanagers add are kept in `extra`, never rejected.
//! Everything here is untrusted input: limits are enforced before anything is stored,
//! and every error names the field that caused it (`alerts[3].labels.instance: ...`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Most labels one alert may carry.
pub const MAX_LABELS: usize = 256;
/// Most annotations one alert may carry.
pub const MAX_ANNOTATIONS: usize = 256;
/// Longest label or annotation name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest label value, in bytes. Labels identify an alert; they are never documents.
pub const MAX_LABEL_VALUE_BYTES: usize = 16 * 1024;
/// Longest annotation value, in bytes (descriptions may be long, but not unbounded).
pub const MAX_ANNOTATION_VALUE_BYTES: usize = 128 * 1024;
/// Most alerts in one delivery.
pub const MAX_ALERTS: usize = 10_000;

/// The only webhook payload version medic understands.
pub const VERSION: &str = "4";

/// A parsed, checked webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub version: String,
    pub receiver: String,
    pub status: Status,
    pub alerts: Vec<Alert>,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub external_url: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    /// Top-level fields this version of medic does not know (`notification_reason`, ...).
    pub extra: Map<String, Value>,
}

/// One alert of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub status: Status,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    /// `None` for Alertmanager's zero time (`0001-01-01T00:00:00Z`): no end known yet.
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
    pub fingerprint: String,
    /// Alert fields this version of medic does not know.
    pub extra: Map<String, Value>,
}

impl Alert {
    /// The `alertname` label, or "" when the alert has none.
    pub fn alertname(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Whether an alert (or a whole group) is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Why a body was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PayloadError {
    /// A short, low-cardinality reason for metrics: `json`, `schema`, `version`, `limits`.
    pub kind: &'static str,
    pub message: String,
}

impl PayloadError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        PayloadError {
            kind,
            message: message.into(),
        }
    }
}

// The typed layer that serde fills. Unknown fields have already been moved out into
// `extra` by `split_extra`, so these structs only ever see the fields they name.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPayload {
    version: String,
    status: Status,
    alerts: Vec<RawAlert>,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    group_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    #[serde(default)]
    group_key: String,
    #[serde(default)]
    truncated_alerts: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAlert {
    status: Status,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

const PAYLOAD_FIELDS: &[&str] = &[
    "version",
    "status",
    "alerts",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "groupKey",
    "truncatedAlerts",
];
const ALERT_FIELDS: &[&str] = &[
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
];

/// Parses and checks a webhook body.
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError::new("json", format!("body is not valid JSON: {e}")))?;
    let Value::Object(top) = &mut value else {
        return Err(PayloadError::new("schema", "body: expected a JSON object"));
    };
    let extra = split_extra(top, PAYLOAD_FIELDS);
    let mut alert_extras = Vec::new();
    if let Some(Value::Array(alerts)) = top.get_mut("alerts") {
        if alerts.len() > MAX_ALERTS {
            return Err(PayloadError::new(
                "limits",
                format!(
                    "alerts: {} alerts, at most {MAX_ALERTS} per delivery",
                    alerts.len()
                ),
            ));
        }
        for alert in alerts.iter_mut() {
            alert_extras.push(match alert {
                Value::Object(map) => split_extra(map, ALERT_FIELDS),
                _ => Map::new(),
            });
        }
    }
    let raw: RawPayload = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        PayloadError::new("schema", format!("{path}: {}", e.into_inner()))
    })?;

    if raw.version != VERSION {
        return Err(PayloadError::new(
            "version",
            format!(
                "version: unsupported webhook version {:?}, expected {VERSION:?}",
                raw.version
            ),
        ));
    }
    if raw.alerts.is_empty() {
        return Err(PayloadError::new("schema", "alerts: must not be empty"));
    }
    check_map("groupLabels", &raw.group_labels, Kind::Label)?;
    check_map("commonLabels", &raw.common_labels, Kind::Label)?;
    check_map(
        "commonAnnotations",
        &raw.common_annotations,
        Kind::Annotation,
    )?;

    let mut alerts = Vec::with_capacity(raw.alerts.len());
    for (i, (a, extra)) in raw.alerts.into_iter().zip(alert_extras).enumerate() {
        if a.labels.is_empty() {
            return Err(PayloadError::new(
                "schema",
                format!("alerts[{i}].labels: an alert needs at least one label"),
            ));
        }
        check_map(&format!("alerts[{i}].labels"), &a.labels, Kind::Label)?;
        check_map(
            &format!("alerts[{i}].annotations"),
            &a.annotations,
            Kind::Annotation,
        )?;
        check_text(&format!("alerts[{i}].generatorURL"), &a.generator_url, 8192)?;
        let fingerprint = if a.fingerprint.is_empty() {
            fingerprint(&a.labels)
        } else if a.fingerprint.len() <= 64
            && a.fingerprint.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            a.fingerprint
        } else {
            return Err(PayloadError::new(
                "schema",
                format!("alerts[{i}].fingerprint: expected up to 64 letters and digits"),
            ));
        };
        alerts.push(Alert {
            status: a.status,
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            ends_at: a.ends_at.filter(|t| t.timestamp() > 0),
            generator_url: a.generator_url,
            fingerprint,
            extra,
        });
    }
    Ok(Payload {
        version: raw.version,
        receiver: raw.receiver,
        status: raw.status,
        alerts,
        group_labels: raw.group_labels,
        common_labels: raw.common_labels,
        common_annotations: raw.common_annotations,
        external_url: raw.external_url,
        group_key: raw.group_key,
        truncated_alerts: raw.truncated_alerts,
        extra,
    })
}

/// Moves every field not in `known` out of `map`.
fn split_extra(map: &mut Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut extra = Map::new();
    for key in unknown {
        if let Some(v) = map.remove(&key) {
            extra.insert(key, v);
        }
    }
    extra
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Label,
    Annotation,
}

/// Checks one label or annotation map against the limits and character rules.
fn check_map(field: &str, map: &BTreeMap<String, String>, kind: Kind) -> Result<(), PayloadError> {
    let (max_entries, max_value, noun) = match kind {
        Kind::Label => (MAX_LABELS, MAX_LABEL_VALUE_BYTES, "labels"),
        Kind::Annotation => (MAX_ANNOTATIONS, MAX_ANNOTATION_VALUE_BYTES, "annotations"),
    };
    if map.len() > max_entries {
        return Err(PayloadError::new(
            "limits",
            format!("{field}: {} {noun}, at most {max_entries}", map.len()),
        ));
    }
    for (name, value) in map {
        let shown = shorten(name);
        if name.is_empty() {
            return Err(PayloadError::new("schema", format!("{field}: empty name")));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(PayloadError::new(
                "limits",
                format!(
                    "{field}: name {shown:?} is {} bytes, at most {MAX_NAME_BYTES}",
                    name.len()
                ),
            ));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(PayloadError::new(
                "schema",
                format!("{field}: name {shown:?} contains control character {c:?}"),
            ));
        }
        if value.len() > max_value {
            return Err(PayloadError::new(
                "limits",
                format!(
                    "{field}.{shown}: value is {} bytes, at most {max_value}",
                    value.len()
                ),
            ));
        }
        // Annotations are prose: newlines and tabs are fine there. Label values
        // identify an alert and must be a single line.
        let bad = match kind {
            Kind::Label => value.chars().find(|c| c.is_control()),
            Kind::Annotation => value
                .chars()
                .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
        };
        if let Some(c) = bad {
            return Err(PayloadError::new(
                "schema",
                format!("{field}.{shown}: value contains control character {c:?}"),
            ));
        }
    }
    Ok(())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), PayloadError> {
    if value.len() > max {
        return Err(PayloadError::new(
            "limits",
            format!("{field}: {} bytes, at most {max}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(PayloadError::new(
            "schema",
            format!("{field}: contains control character {c:?}"),
        ));
    }
    Ok(())
}

/// A name cut to a printable length for error messages.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted names and values,
/// each followed by 0xff), used when a sender leaves `fingerprint` out.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14695981039346656037;
    const PRIME: u64 = 1099511628211;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        feed(name.as_bytes());
        feed(&[0xff]);
        feed(value.as_bytes());
        feed(&[0xff]);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn alert() -> Value {
        json!({
            "status": "firing",
            "labels": {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical"},
            "annotations": {"summary": "Disk full", "description": "line one\nline two"},
            "startsAt": "2026-11-23T10:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
            "fingerprint": "c3f1a2b4d5e6f708"
        })
    }

    fn payload_with(alerts: Vec<Value>) -> Value {
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"DiskFull\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "medic",
            "groupLabels": {"alertname": "DiskFull"},
            "commonLabels": {"alertname": "DiskFull"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts
        })
    }

    /// Parses `v` and returns the error message, failing the test on success.
    fn err(v: Value) -> String {
        match parse(&body(v)) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.message,
        }
    }

    fn with(mut v: Value, pointer: &str, new: Value) -> Value {
        *v.pointer_mut(pointer).expect("pointer exists") = new;
        v
    }

    fn without(mut v: Value, pointer: &str) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap()
            .remove(key);
        v
    }

    #[test]
    fn parses_every_field() {
        let p = parse(&body(payload_with(vec![alert()]))).unwrap();
        assert_eq!(p.version, "4");
        assert_eq!(p.receiver, "medic");
        assert_eq!(p.status, Status::Firing);
        assert_eq!(p.group_key, "{}:{alertname=\"DiskFull\"}");
        assert_eq!(p.truncated_alerts, 0);
        assert_eq!(p.external_url, "http://alertmanager:9093");
        assert_eq!(p.group_labels["alertname"], "DiskFull");
        assert_eq!(p.common_labels["alertname"], "DiskFull");
        assert!(p.common_annotations.is_empty());
        let a = &p.alerts[0];
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.alertname(), "DiskFull");
        assert_eq!(a.labels["instance"], "db1:9100");
        assert_eq!(a.annotations["description"], "line one\nline two");
        assert_eq!(a.starts_at.timestamp_subsec_nanos(), 123456789);
        assert_eq!(a.ends_at, None, "Alertmanager's zero time means no end");
        assert_eq!(a.generator_url, "http://prometheus:9090/graph?g0.expr=up");
        assert_eq!(a.fingerprint, "c3f1a2b4d5e6f708");
        assert!(p.extra.is_empty() && a.extra.is_empty());
    }

    #[test]
    fn keeps_fields_from_newer_alertmanagers() {
        let mut v = payload_with(vec![alert()]);
        v["notification_reason"] = json!("repeat");
        v["routeLabels"] = json!({"team": "db"});
        v["alerts"][0]["silencedBy"] = json!([]);
        let p = parse(&body(v)).unwrap();
        assert_eq!(p.extra["notification_reason"], "repeat");
        assert_eq!(p.extra["routeLabels"]["team"], "db");
        assert_eq!(p.alerts[0].extra["silencedBy"], json!([]));
    }

    #[test]
    fn optional_fields_default() {
        let v = json!({"version": "4", "status": "resolved", "alerts": [{
            "status": "resolved", "labels": {"alertname": "X"}, "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "2026-01-01T00:05:00+01:00"
        }]});
        let p = parse(&body(v)).unwrap();
        assert_eq!(p.receiver, "");
        let a = &p.alerts[0];
        assert_eq!(a.ends_at.unwrap().to_rfc3339(), "2025-12-31T23:05:00+00:00");
        // Computed as Alertmanager would: FNV-1a over {alertname="X"}.
        assert_eq!(a.fingerprint, fingerprint(&a.labels));
        assert_eq!(a.fingerprint.len(), 16);
    }

    #[test]
    fn fingerprint_is_fnv1a_over_sorted_labels() {
        // FNV-1a 64 of nothing is its offset basis.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        let ls = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let a = fingerprint(&ls(&[("alertname", "X"), ("instance", "a")]));
        assert_eq!(
            a,
            fingerprint(&ls(&[("instance", "a"), ("alertname", "X")]))
        );
        assert_ne!(
            a,
            fingerprint(&ls(&[("alertname", "X"), ("instance", "b")]))
        );
        // The separator keeps name and value apart: {ab="c"} is not {a="bc"}.
        assert_ne!(
            fingerprint(&ls(&[("ab", "c")])),
            fingerprint(&ls(&[("a", "bc")]))
        );
        // The real Alertmanager's fingerprints are compared in tests/alertmanager.rs.
    }

    #[test]
    fn rejects_what_is_not_json() {
        let e = parse(b"{\"version\": ").unwrap_err();
        assert_eq!(e.kind, "json");
        assert!(
            e.message.starts_with("body is not valid JSON: EOF"),
            "{}",
            e.message
        );
        assert_eq!(
            parse(b"[1]").unwrap_err().message,
            "body: expected a JSON object"
        );
    }

    #[test]
    fn names_missing_fields() {
        let p = payload_with(vec![alert()]);
        assert_eq!(
            err(without(p.clone(), "/alerts")),
            ".: missing field `alerts`"
        );
        assert_eq!(
            err(without(p.clone(), "/version")),
            ".: missing field `version`"
        );
        assert_eq!(
            err(without(p.clone(), "/status")),
            ".: missing field `status`"
        );
        assert_eq!(
            err(without(p.clone(), "/alerts/0/labels")),
            "alerts[0]: missing field `labels`"
        );
        assert_eq!(
            err(without(p, "/alerts/0/startsAt")),
            "alerts[0]: missing field `startsAt`"
        );
    }

    #[test]
    fn names_wrong_types() {
        let p = payload_with(vec![alert(), alert()]);
        assert_eq!(
            err(with(p.clone(), "/alerts", json!("many"))),
            "alerts: invalid type: string \"many\", expected a sequence"
        );
        assert_eq!(
            err(with(p.clone(), "/alerts/1/labels/instance", json!(5))),
            "alerts[1].labels.instance: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            err(with(p.clone(), "/alerts/0/status", json!("burning"))),
            "alerts[0].status: unknown variant `burning`, expected `firing` or `resolved`"
        );
        assert_eq!(
            err(with(p.clone(), "/alerts/0/startsAt", json!("yesterday"))),
            "alerts[0].startsAt: input contains invalid characters"
        );
        assert_eq!(
            err(with(p.clone(), "/truncatedAlerts", json!(-1))),
            "truncatedAlerts: invalid value: integer `-1`, expected u64"
        );
        assert_eq!(
            err(with(p, "/version", json!(4))),
            "version: invalid type: integer `4`, expected a string"
        );
    }

    #[test]
    fn rejects_other_versions_and_empty_deliveries() {
        let p = payload_with(vec![alert()]);
        assert_eq!(
            err(with(p.clone(), "/version", json!("3"))),
            "version: unsupported webhook version \"3\", expected \"4\""
        );
        assert_eq!(
            err(with(p, "/alerts", json!([]))),
            "alerts: must not be empty"
        );
    }

    #[test]
    fn rejects_hostile_labels() {
        let p = payload_with(vec![alert()]);
        let labels = |extra: Value| {
            let mut l = json!({"alertname": "X"});
            for (k, v) in extra.as_object().unwrap() {
                l[k] = v.clone();
            }
            with(p.clone(), "/alerts/0/labels", l)
        };
        assert_eq!(
            err(labels(json!({"bad\u{0}name": "x"}))),
            "alerts[0].labels: name \"bad\\0name\" contains control character '\\0'"
        );
        assert_eq!(
            err(labels(json!({"instance": "a\u{0}b"}))),
            "alerts[0].labels.instance: value contains control character '\\0'"
        );
        assert_eq!(
            err(labels(json!({"instance": "a\nrm -rf /"}))),
            "alerts[0].labels.instance: value contains control character '\\n'"
        );
        assert_eq!(
            err(labels(json!({"line\nbreak": "x"}))),
            "alerts[0].labels: name \"line\\nbreak\" contains control character '\\n'"
        );
        assert_eq!(
            err(labels(json!({"big": "x".repeat(1 << 20)}))),
            "alerts[0].labels.big: value is 1048576 bytes, at most 16384"
        );
        let many: Map<String, Value> = (0..10_000).map(|i| (format!("l{i}"), json!("v"))).collect();
        assert_eq!(
            err(labels(Value::Object(many))),
            "alerts[0].labels: 10001 labels, at most 256"
        );
        assert_eq!(
            err(with(p.clone(), "/alerts/0/labels", json!({}))),
            "alerts[0].labels: an alert needs at least one label"
        );
        assert_eq!(
            err(with(
                p.clone(),
                "/alerts/0/annotations",
                json!({"x": "nul\u{0}"})
            )),
            "alerts[0].annotations.x: value contains control character '\\0'"
        );
        assert_eq!(
            err(with(p, "/alerts/0/fingerprint", json!("../../etc/passwd"))),
            "alerts[0].fingerprint: expected up to 64 letters and digits"
        );
    }

    #[test]
    fn error_names_are_shortened() {
        let long = "n".repeat(2000);
        let v = with(
            payload_with(vec![alert()]),
            "/alerts/0/labels",
            json!({ long: "x" }),
        );
        let e = err(v);
        assert!(e.starts_with("alerts[0].labels: name \"nnnn"), "{e}");
        assert!(e.ends_with("...\" is 2000 bytes, at most 1024"), "{e}");
    }
}
