//! The Alertmanager webhook body (version "4"), parsed and checked.
//!
//! This file owns the shape of what Alertmanager sends and every rule about what we
//! accept. Fields that newer Alertmanagers add are kept in `extra`, never rejected.
//!
//! Only the shape can refuse a delivery: a body that is not a version-4 webhook (not JSON,
//! a field missing or of the wrong type, another version) is an error that names the field.
//! What a well-formed alert *contains* never refuses the delivery, because Alertmanager would
//! resend the same group forever and every alert in it would be lost. Label and annotation
//! values are data: newlines, tabs and any other character but NUL are kept as received.
//! An alert that breaks a limit (a NUL, too many labels, a name or value over its size) is
//! kept *bounded* (values cut on a char boundary, NUL replaced, extra entries dropped) and
//! comes back with [`Violation`]s that say what was cut, the size and SHA-256 of what was
//! received, and the limit; ingest escalates it `invalid_alert` and runs nothing for it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use crate::alert::{Alert, Status};

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
/// Longest `generatorURL`, in bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest delivery-level text (`receiver`, `groupKey`), in bytes; longer is cut.
pub const MAX_DELIVERY_TEXT_BYTES: usize = 64 * 1024;

/// What a NUL is stored as: databases refuse NUL in text, and no program takes it in an argument.
const NUL_REPLACEMENT: char = '\u{FFFD}';

/// The only webhook payload version medic understands.
pub const VERSION: &str = "4";

/// A parsed, checked webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub version: String,
    pub receiver: String,
    pub status: Status,
    /// Every alert of the delivery, each bounded to medic's limits.
    pub alerts: Vec<Alert>,
    /// The alerts (by index in `alerts`) that broke a limit, and how. Nothing may be run for
    /// them: what is stored is not what was sent.
    pub invalid: BTreeMap<usize, Vec<Violation>>,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub external_url: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    /// Top-level fields this version of medic does not know (`notification_reason`, ...).
    pub extra: Map<String, Value>,
}

/// Why a body was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PayloadError {
    /// A short, low-cardinality reason for metrics: `json`, `schema`, `version`.
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

/// One way an alert broke medic's limits, and what was stored instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What broke the limit, as people read it: `label "instance"`, `labels`,
    /// `annotation "description"`, `label name "..."`, `generatorURL`, `fingerprint`.
    /// Names are quoted with their control characters escaped.
    pub field: String,
    /// What is wrong, naming the limit, and what was kept: with the size in bytes and the
    /// SHA-256 of what was received whenever something was cut, replaced or dropped.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// How many violations [`describe`] spells out before counting the rest.
const DESCRIBED: usize = 8;

/// The violations of one alert as one line for the incident (its `message` and timeline).
pub fn describe(violations: &[Violation]) -> String {
    let mut parts: Vec<String> = violations
        .iter()
        .take(DESCRIBED)
        .map(Violation::to_string)
        .collect();
    if violations.len() > DESCRIBED {
        parts.push(format!("and {} more", violations.len() - DESCRIBED));
    }
    format!(
        "the alert breaks medic's limits and was stored bounded, so nothing was run: {}",
        parts.join("; ")
    )
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

/// Parses and checks a webhook body. Errors are only about its shape; alerts over medic's
/// limits come back bounded, listed in [`Payload::invalid`].
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError::new("json", format!("body is not valid JSON: {e}")))?;
    let Value::Object(top) = &mut value else {
        return Err(PayloadError::new("schema", "body: expected a JSON object"));
    };
    let extra = split_extra(top, PAYLOAD_FIELDS);
    let mut alert_extras = Vec::new();
    if let Some(Value::Array(alerts)) = top.get_mut("alerts") {
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

    let mut alerts = Vec::with_capacity(raw.alerts.len());
    let mut invalid = BTreeMap::new();
    for (i, (a, extra)) in raw.alerts.into_iter().zip(alert_extras).enumerate() {
        let mut violations = Vec::new();
        // The fingerprint is always that of the labels as received, so that the resends of
        // an alert stored bounded still find its incident.
        let fingerprint = if a.fingerprint.is_empty() {
            fingerprint(&a.labels)
        } else if a.fingerprint.len() <= 64
            && a.fingerprint.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            a.fingerprint
        } else {
            let own = fingerprint(&a.labels);
            violations.push(Violation {
                field: "fingerprint".into(),
                message: format!(
                    "{} is not up to 64 letters and digits; medic uses its own fingerprint of the labels, {own}",
                    shorten(&a.fingerprint)
                ),
            });
            own
        };
        if a.labels.is_empty() {
            violations.push(Violation {
                field: "labels".into(),
                message: "none; an alert needs at least one label".into(),
            });
        }
        let labels = bound_map(a.labels, Kind::Label, &mut violations);
        let annotations = bound_map(a.annotations, Kind::Annotation, &mut violations);
        let generator_url = bound_text(
            "generatorURL".into(),
            a.generator_url,
            MAX_URL_BYTES,
            &mut violations,
        );
        if !violations.is_empty() {
            invalid.insert(i, violations);
        }
        alerts.push(Alert {
            status: a.status,
            labels,
            annotations,
            starts_at: a.starts_at,
            ends_at: a.ends_at.filter(|t| t.timestamp() > 0),
            generator_url,
            fingerprint,
            extra,
        });
    }
    // Delivery-level fields are Alertmanager's own, not an alert's: bounded quietly.
    let mut ignored = Vec::new();
    Ok(Payload {
        version: raw.version,
        receiver: bound_text(
            String::new(),
            raw.receiver,
            MAX_DELIVERY_TEXT_BYTES,
            &mut ignored,
        ),
        status: raw.status,
        alerts,
        invalid,
        group_labels: bound_map(raw.group_labels, Kind::Label, &mut ignored),
        common_labels: bound_map(raw.common_labels, Kind::Label, &mut ignored),
        common_annotations: bound_map(raw.common_annotations, Kind::Annotation, &mut ignored),
        external_url: bound_text(String::new(), raw.external_url, MAX_URL_BYTES, &mut ignored),
        group_key: bound_text(
            String::new(),
            raw.group_key,
            MAX_DELIVERY_TEXT_BYTES,
            &mut ignored,
        ),
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

impl Kind {
    fn max_entries(self) -> usize {
        match self {
            Kind::Label => MAX_LABELS,
            Kind::Annotation => MAX_ANNOTATIONS,
        }
    }

    fn max_value(self) -> usize {
        match self {
            Kind::Label => MAX_LABEL_VALUE_BYTES,
            Kind::Annotation => MAX_ANNOTATION_VALUE_BYTES,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Label => "label",
            Kind::Annotation => "annotation",
        }
    }
}

/// `map` within the limits of `kind`: at most its number of entries (the first by name),
/// names and values cut to their sizes, NUL replaced, empty names dropped. Each change is
/// recorded in `violations`.
fn bound_map(
    map: BTreeMap<String, String>,
    kind: Kind,
    violations: &mut Vec<Violation>,
) -> BTreeMap<String, String> {
    let noun = kind.noun();
    let max_entries = kind.max_entries();
    if map.len() > max_entries {
        let received = serde_json::to_vec(&map).unwrap_or_default();
        violations.push(Violation {
            field: format!("{noun}s"),
            message: format!(
                "{} {noun}s, over the limit of {max_entries}; stored the first {max_entries} by name and dropped {} ({})",
                map.len(),
                map.len() - max_entries,
                received_digest("all of them as JSON", &received),
            ),
        });
    }
    let mut bounded = BTreeMap::new();
    for (name, value) in map.into_iter().take(max_entries) {
        if name.is_empty() {
            violations.push(Violation {
                field: format!("{noun} name \"\""),
                message: format!(
                    "a name must not be empty; dropped with its value ({})",
                    received_digest("value", value.as_bytes())
                ),
            });
            continue;
        }
        let shown = shorten(&name);
        let kept_name = bound_text(
            format!("{noun} name {shown}"),
            name,
            MAX_NAME_BYTES,
            violations,
        );
        let kept_value = bound_text(
            format!("{noun} {shown}"),
            value,
            kind.max_value(),
            violations,
        );
        if bounded.contains_key(&kept_name) {
            violations.push(Violation {
                field: format!("{noun} {shown}"),
                message: format!(
                    "once bounded, its name is that of another {noun}; dropped ({})",
                    received_digest("value", kept_value.as_bytes())
                ),
            });
            continue;
        }
        bounded.insert(kept_name, kept_value);
    }
    bounded
}

/// `text` with NUL replaced and cut to `max` bytes on a char boundary; a change is recorded
/// in `violations` under `field`.
fn bound_text(field: String, text: String, max: usize, violations: &mut Vec<Violation>) -> String {
    let has_nul = text.contains('\0');
    if !has_nul && text.len() <= max {
        return text;
    }
    let mut kept = if has_nul {
        text.replace('\0', &NUL_REPLACEMENT.to_string())
    } else {
        text.clone()
    };
    let cut = kept.len() > max;
    if cut {
        let mut end = max;
        while !kept.is_char_boundary(end) {
            end -= 1;
        }
        kept.truncate(end);
    }
    let what = match (has_nul, text.len() > max) {
        (true, false) => "contains NUL, which medic never stores or passes on; stored with U+FFFD in its place".to_string(),
        (false, _) => format!(
            "{} bytes, over the limit of {max} bytes; stored cut to its first {} bytes",
            text.len(),
            kept.len()
        ),
        (true, true) => format!(
            "{} bytes, over the limit of {max} bytes, and contains NUL; stored with U+FFFD in place of NUL, cut to {} bytes",
            text.len(),
            kept.len()
        ),
    };
    violations.push(Violation {
        field,
        message: format!("{what} ({})", received_digest("received", text.as_bytes())),
    });
    kept
}

/// "received: 16385 bytes, sha256 ..." for what was received before it was bounded.
fn received_digest(what: &str, bytes: &[u8]) -> String {
    format!(
        "{what}: {} bytes, sha256 {}",
        bytes.len(),
        hex::encode(Sha256::digest(bytes))
    )
}

/// A name cut to a printable length and quoted, its control characters escaped.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
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

    /// Parses `v`, which must be accepted, and returns its first alert with its violations.
    fn first(v: Value) -> (Alert, Vec<Violation>) {
        let p = parse(&body(v)).expect("a well-formed delivery is accepted");
        let violations = p.invalid.get(&0).cloned().unwrap_or_default();
        (p.alerts[0].clone(), violations)
    }

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    /// Regression: a newline in a label value refused the whole delivery (400), so
    /// Alertmanager resent the group forever and none of its alerts was ever handled.
    #[test]
    fn control_characters_in_labels_are_data() {
        let p = payload_with(vec![alert()]);
        for value in [
            "a\nrm -rf /",
            "tab\there",
            "cr\r\n",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "\u{85}next line",
        ] {
            let (a, violations) = first(with(p.clone(), "/alerts/0/labels/instance", json!(value)));
            assert!(violations.is_empty(), "{value:?}: {violations:?}");
            assert_eq!(a.labels["instance"], value, "kept byte for byte");
        }
        let (a, violations) = first(with(
            p,
            "/alerts/0/labels",
            json!({"alertname": "X", "line\nbreak": "v"}),
        ));
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(a.labels["line\nbreak"], "v");
    }

    /// Regression: an alert over a limit refused the whole delivery; now it is accepted
    /// bounded, its violation naming the field and the limit, and the other alerts of the
    /// delivery are untouched.
    #[test]
    fn alerts_over_the_limits_are_kept_bounded() {
        let p = payload_with(vec![alert(), alert()]);
        let check = |pointer: &str, v: Value, field: &str, message: &str| {
            let parsed = parse(&body(with(p.clone(), pointer, v))).expect("accepted");
            assert!(
                !parsed.invalid.contains_key(&1),
                "the other alert is untouched"
            );
            let violations = &parsed.invalid[&0];
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert_eq!(violations[0].field, field);
            assert!(
                violations[0].message.starts_with(message),
                "{field}: got {:?}, want {message:?}",
                violations[0].message
            );
            parsed.alerts[0].clone()
        };

        let big = "x".repeat(MAX_LABEL_VALUE_BYTES + 1);
        let a = check(
            "/alerts/0/labels/instance",
            json!(big),
            "label \"instance\"",
            &format!(
                "16385 bytes, over the limit of 16384 bytes; stored cut to its first 16384 bytes (received: 16385 bytes, sha256 {})",
                sha(&big)
            ),
        );
        assert_eq!(a.labels["instance"], "x".repeat(MAX_LABEL_VALUE_BYTES));
        // The fingerprint is Alertmanager's, of the labels as sent.
        assert_eq!(a.fingerprint, "c3f1a2b4d5e6f708");

        // Cut on a char boundary: 'é' is two bytes, and 16384 falls inside the last one.
        let wide = format!("{}é", "x".repeat(MAX_LABEL_VALUE_BYTES - 1));
        let a = check(
            "/alerts/0/labels/instance",
            json!(wide),
            "label \"instance\"",
            "16385 bytes, over the limit of 16384 bytes; stored cut to its first 16383 bytes",
        );
        assert_eq!(a.labels["instance"], "x".repeat(MAX_LABEL_VALUE_BYTES - 1));

        let a = check(
            "/alerts/0/labels/instance",
            json!("a\u{0}b"),
            "label \"instance\"",
            &format!(
                "contains NUL, which medic never stores or passes on; stored with U+FFFD in its place (received: 3 bytes, sha256 {})",
                sha("a\0b")
            ),
        );
        assert_eq!(a.labels["instance"], "a\u{FFFD}b");

        let a = check(
            "/alerts/0/labels",
            json!({"alertname": "X", "a\u{0}b": "v"}),
            "label name \"a\\0b\"",
            "contains NUL",
        );
        assert_eq!(a.labels.get("a\u{FFFD}b").map(String::as_str), Some("v"));

        let long = "n".repeat(2000);
        let a = check(
            "/alerts/0/labels",
            json!({"alertname": "X", long.clone(): "v"}),
            &format!("label name \"{}\"...", "n".repeat(64)),
            "2000 bytes, over the limit of 1024 bytes; stored cut to its first 1024 bytes",
        );
        assert!(a.labels.contains_key(&"n".repeat(MAX_NAME_BYTES)));

        let many: Map<String, Value> = (0..=MAX_LABELS)
            .map(|i| (format!("l{i:03}"), json!("v")))
            .collect();
        let a = check(
            "/alerts/0/labels",
            Value::Object(many),
            "labels",
            "257 labels, over the limit of 256; stored the first 256 by name and dropped 1 (all of them as JSON: ",
        );
        assert_eq!(a.labels.len(), MAX_LABELS);
        assert!(!a.labels.contains_key("l256"));

        let a = check(
            "/alerts/0/annotations/description",
            json!("d".repeat(MAX_ANNOTATION_VALUE_BYTES + 1)),
            "annotation \"description\"",
            "131073 bytes, over the limit of 131072 bytes",
        );
        assert_eq!(
            a.annotations["description"].len(),
            MAX_ANNOTATION_VALUE_BYTES
        );
        check(
            "/alerts/0/annotations",
            json!({"x": "nul\u{0}"}),
            "annotation \"x\"",
            "contains NUL",
        );
        check(
            "/alerts/0/generatorURL",
            json!("u".repeat(MAX_URL_BYTES + 1)),
            "generatorURL",
            "8193 bytes, over the limit of 8192 bytes",
        );
        check(
            "/alerts/0/labels",
            json!({}),
            "labels",
            "none; an alert needs at least one label",
        );
        check(
            "/alerts/0/labels",
            json!({"alertname": "X", "": "v"}),
            "label name \"\"",
            "a name must not be empty; dropped with its value (value: 1 bytes, sha256 ",
        );
        let a = check(
            "/alerts/0/fingerprint",
            json!("../../etc/passwd"),
            "fingerprint",
            "\"../../etc/passwd\" is not up to 64 letters and digits; medic uses its own fingerprint of the labels, ",
        );
        assert_eq!(a.fingerprint, fingerprint(&a.labels));
    }

    /// Resends of an invalid alert must find its incident: the fingerprint is that of the
    /// labels as received, never of what was stored.
    #[test]
    fn an_invalid_alert_keeps_the_fingerprint_of_its_full_labels() {
        let p = without(payload_with(vec![alert()]), "/alerts/0/fingerprint");
        let big = "x".repeat(MAX_LABEL_VALUE_BYTES + 10);
        let (a, violations) = first(with(p, "/alerts/0/labels/instance", json!(big.clone())));
        assert_eq!(violations.len(), 1);
        let mut full = a.labels.clone();
        full.insert("instance".into(), big);
        assert_eq!(a.fingerprint, fingerprint(&full));
        assert_ne!(a.fingerprint, fingerprint(&a.labels));
    }

    /// Regression: more than 10,000 alerts in one delivery refused all of them. The body
    /// limit bounds a delivery; the number of alerts in it does not refuse it.
    #[test]
    fn a_storm_group_is_never_refused_for_its_size() {
        let alerts: Vec<Value> = (0..10_001)
            .map(|i| {
                let mut a = alert();
                a["labels"]["instance"] = json!(format!("host{i}"));
                a["fingerprint"] = json!(format!("f{i}"));
                a
            })
            .collect();
        let p = parse(&body(payload_with(alerts))).unwrap();
        assert_eq!(p.alerts.len(), 10_001);
        assert!(p.invalid.is_empty());
    }

    #[test]
    fn delivery_level_fields_do_not_refuse_either() {
        let mut v = payload_with(vec![alert()]);
        v["commonLabels"] = json!({"instance": "a\u{0}\nb", "": "x"});
        v["externalURL"] = json!("http://am\u{0}:9093");
        let p = parse(&body(v)).unwrap();
        assert!(p.invalid.is_empty());
        assert_eq!(p.common_labels["instance"], "a\u{FFFD}\nb");
        assert_eq!(p.external_url, "http://am\u{FFFD}:9093");
    }

    #[test]
    fn describe_names_every_violation_up_to_a_bound() {
        let v = |i: usize| Violation {
            field: format!("label \"l{i}\""),
            message: "contains NUL".into(),
        };
        assert_eq!(
            describe(&[v(1), v(2)]),
            "the alert breaks medic's limits and was stored bounded, so nothing was run: \
             label \"l1\": contains NUL; label \"l2\": contains NUL"
        );
        let many: Vec<Violation> = (0..20).map(v).collect();
        assert!(describe(&many).ends_with("label \"l7\": contains NUL; and 12 more"));
    }
}
