//! The `silence` step's calls to Alertmanager's API v2: create a silence for exactly one
//! alert's labels, and expire it when the incident ends.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::config::ServiceConfig;

/// Creates a silence matching every label of the alert exactly, from `now` for `length`;
/// returns its id and end.
pub async fn create_silence(
    client: &reqwest::Client,
    am: &ServiceConfig,
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
    length: Duration,
    comment: &str,
) -> Result<(String, DateTime<Utc>), String> {
    let ends_at = now + chrono::Duration::from_std(length).map_err(|e| e.to_string())?;
    let matchers: Vec<Value> = labels
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value, "isRegex": false, "isEqual": true}))
        .collect();
    let body = json!({
        "matchers": matchers,
        "startsAt": now.to_rfc3339(),
        "endsAt": ends_at.to_rfc3339(),
        "createdBy": "medic",
        "comment": comment,
    });
    let resp = client
        .post(format!("{}/api/v2/silences", am.url))
        .timeout(am.timeout)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("Alertmanager {}: {e}", am.url))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("Alertmanager answered {status}: {}", text.trim()));
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("Alertmanager's answer is not JSON: {e}"))?;
    let id = v["silenceID"]
        .as_str()
        .ok_or_else(|| format!("Alertmanager's answer has no silenceID: {text}"))?;
    Ok((id.to_string(), ends_at))
}

/// Expires a silence. An already expired or unknown silence counts as done.
pub async fn expire_silence(
    client: &reqwest::Client,
    am: &ServiceConfig,
    id: &str,
) -> Result<(), String> {
    let resp = client
        .delete(format!("{}/api/v2/silence/{id}", am.url))
        .timeout(am.timeout)
        .send()
        .await
        .map_err(|e| format!("Alertmanager {}: {e}", am.url))?;
    let status = resp.status();
    if status.is_success() || status.as_u16() == 404 {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    // Alertmanager answers 500 "silence ... already expired" for an expired one.
    if text.contains("already expired") {
        return Ok(());
    }
    Err(format!("Alertmanager answered {status}: {}", text.trim()))
}
