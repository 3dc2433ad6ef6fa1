//! An alert as medic knows it once a delivery is parsed: its labels, annotations, times and
//! whether it is firing or resolved.
//!
//! Plain data, shared by `ingest` (which builds it from the webhook body, see
//! `ingest::payload`), `incident` (which decides what it means) and `store` (which keeps it).
//! It does no IO and knows nothing of HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

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
