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
mod tests;
