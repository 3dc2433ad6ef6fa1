//! `POST /pagerduty/webhook`: PagerDuty v3 webhooks. An incident acknowledged or resolved
//! in PagerDuty acknowledges the medic incident it was raised for, in the name of the
//! PagerDuty user who did it.
//!
//! medic raises a PagerDuty incident with `dedup_key` = the incident id, or
//! `medic-group-<group>` for a storm group's summary (`escalate::pagerduty`); PagerDuty
//! gives it back as `event.data.incident_key`. A group's key acknowledges every member
//! still escalated. The signature is `X-PagerDuty-Signature`: one or more `v1=<hex>`,
//! comma-separated (several while a secret is being rotated), each an HMAC-SHA256 of the
//! raw body with the subscription's secret.
//!
//! Answers: 404 while no `pagerduty` channel has a `webhook_secret`; 401 for a missing or
//! wrong signature; 413 over `server.body_limit`; 400 for a body that is not JSON; 503
//! when the store cannot write (PagerDuty retries); else 200, also for an event about an
//! incident medic does not know or one already acknowledged or closed, so that PagerDuty
//! does not retry it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{clip_name, error, secrets_and_body, signed_by_any, Context};
use crate::config::{ChannelKind, Config};
use crate::incident::AckVia;
use crate::store::Ack;

/// The header PagerDuty signs its deliveries in.
pub const SIGNATURE_HEADER: &str = "x-pagerduty-signature";

/// The `dedup_key` prefix of a storm group's summary (see `escalate::pagerduty`).
const GROUP_KEY_PREFIX: &str = "medic-group-";

/// Most members of one storm group acknowledged by one event.
const MAX_GROUP_MEMBERS: usize = 10_000;

/// The `webhook_secret`s of the configured `pagerduty` channels.
pub fn secrets(config: &Config) -> Vec<String> {
    config
        .escalation
        .channels
        .iter()
        .filter_map(|c| match &c.kind {
            ChannelKind::PagerDuty {
                webhook_secret: Some(secret),
                ..
            } => Some(secret.clone()),
            _ => None,
        })
        .collect()
}

/// Whether `header` (the value of `X-PagerDuty-Signature`) holds a `v1` signature of
/// `body` under one of `secrets`.
pub fn signed(secrets: &[String], header: Option<&str>, body: &[u8]) -> bool {
    let Some(header) = header else {
        return false;
    };
    let given: Vec<Vec<u8>> = header
        .split(',')
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .collect();
    signed_by_any(secrets, &[body], &given)
}

/// The events that acknowledge.
const ACKING_EVENTS: [&str; 2] = ["incident.acknowledged", "incident.resolved"];

pub(super) async fn webhook(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (secrets, body) = match secrets_and_body(&ctx, body, secrets).await {
        Ok(got) => got,
        Err(r) => return r,
    };
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !signed(&secrets, header, &body) {
        tracing::warn!("PagerDuty webhook refused: missing or wrong signature");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong signature");
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let event = &payload["event"];
    let event_type = event["event_type"].as_str().unwrap_or_default();
    if !ACKING_EVENTS.contains(&event_type) {
        tracing::debug!(event_type, "PagerDuty event ignored");
        return Json(json!({ "ignored": event_type })).into_response();
    }
    let Some(key) = event["data"]["incident_key"].as_str() else {
        tracing::info!(
            event_type,
            "PagerDuty event without an incident_key: not one of medic's"
        );
        return Json(json!({ "acknowledged": [] })).into_response();
    };
    let by = event["agent"]["summary"]
        .as_str()
        .and_then(clip_name)
        .unwrap_or_else(|| "pagerduty".to_string());
    let ids = match key.strip_prefix(GROUP_KEY_PREFIX) {
        Some(group) => match ctx.store.group_members(group, MAX_GROUP_MEMBERS).await {
            Ok((_, members)) => members.into_iter().map(|m| m.id).collect(),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
        },
        None => vec![key.to_string()],
    };
    if ids.is_empty() {
        tracing::info!(
            key,
            event_type,
            "PagerDuty event: no member of the storm group is still escalated"
        );
    }
    let mut acknowledged = Vec::new();
    for id in ids {
        match ctx
            .store
            .ack(&id, Some(by.clone()), AckVia::Pagerduty)
            .await
        {
            Ok(Ack::Acknowledged) => {
                tracing::info!(incident = %id, by = %by, event_type, "incident acknowledged in PagerDuty");
                acknowledged.push(id);
            }
            Ok(Ack::Already(_)) => {
                tracing::info!(incident = %id, event_type, "PagerDuty event: incident already acknowledged");
            }
            Ok(Ack::NotEscalated(state)) => {
                tracing::info!(incident = %id, state = state.as_str(), event_type, "PagerDuty event: incident not escalated, nothing to acknowledge");
            }
            Ok(Ack::NotFound) => {
                tracing::info!(key = %id, event_type, "PagerDuty event about no incident of medic's");
            }
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
        }
    }
    Json(json!({ "acknowledged": acknowledged })).into_response()
}

#[cfg(test)]
mod tests {
    use super::signed;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mac = super::super::mac(secret, &[body]).unwrap();
        use hmac::Mac as _;
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn check(secrets: &[&str], header: Option<&str>, body: &[u8], expected: bool) {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            signed(&secrets, header, body),
            expected,
            "{secrets:?} {header:?}"
        );
    }

    #[test]
    fn signatures() {
        let body = br#"{"event":{}}"#;
        let good = sign("s3cret", body);
        let other = sign("other", body);
        check(&["s3cret"], Some(&good), body, true);
        // One of several signatures (a secret being rotated), with spaces.
        check(&["s3cret"], Some(&format!("{other}, {good}")), body, true);
        // One of several channels' secrets.
        check(&["other", "s3cret"], Some(&good), body, true);
        check(&["s3cret"], Some(&other), body, false);
        check(&["s3cret"], Some(&good), br#"{"event":{ }}"#, false);
        check(&["s3cret"], None, body, false);
        check(&["s3cret"], Some(""), body, false);
        check(&["s3cret"], Some(&good.replace("v1=", "v0=")), body, false);
        check(&["s3cret"], Some("v1=zz"), body, false);
        check(&[], Some(&good), body, false);
    }
}
