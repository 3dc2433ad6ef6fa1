//! `POST /slack/actions`: Slack's interactivity Request URL. A click on a message's
//! "Acknowledge" button (`action_id` `ack`, `value` the incident id, see
//! `escalate::message`) acknowledges the incident in the name of the Slack user.
//!
//! Slack signs each request: `X-Slack-Signature` = `v0=` + hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` with the app's signing secret; a timestamp
//! more than five minutes from medic's clock is refused (a replayed request). The body is
//! form-encoded, `payload=<json>`.
//!
//! Answers: 404 while no `slack` channel has a `signing_secret`; 401 for a missing, wrong
//! or stale signature; 413 over `server.body_limit`; 400 for a body without a JSON
//! `payload`; 503 when the store cannot write; else 200 with a message for Slack that
//! says what became of the click.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{clip_name, error, secrets_and_body, signed_by_any, Context};
use crate::config::{ChannelKind, Config};
use crate::incident::AckVia;
use crate::store::Ack;

pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

/// How far a request's timestamp may be from medic's clock, in seconds.
const MAX_SKEW_SECONDS: i64 = 5 * 60;

/// The `signing_secret`s of the configured `slack` channels.
pub fn secrets(config: &Config) -> Vec<String> {
    config
        .escalation
        .channels
        .iter()
        .filter_map(|c| match &c.kind {
            ChannelKind::Slack {
                signing_secret: Some(secret),
                ..
            } => Some(secret.clone()),
            _ => None,
        })
        .collect()
}

/// Whether `signature` (`X-Slack-Signature`) signs `timestamp` and `body` under one of
/// `secrets`, and `timestamp` (`X-Slack-Request-Timestamp`, Unix seconds) is within five
/// minutes of `now`.
pub fn signed(
    secrets: &[String],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> bool {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let Ok(seconds) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if now.timestamp().abs_diff(seconds) > MAX_SKEW_SECONDS as u64 {
        return false;
    }
    let Some(given) = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    signed_by_any(
        secrets,
        &[b"v0:", timestamp.as_bytes(), b":", body],
        &[given],
    )
}

/// The name an ack records for the Slack user of `payload`.
pub(super) fn user_name(payload: &Value) -> String {
    let user = &payload["user"];
    ["username", "name", "id"]
        .iter()
        .find_map(|k| user[k].as_str().and_then(clip_name))
        .unwrap_or_else(|| "slack".to_string())
}

/// A message Slack shows to the person who clicked.
pub(super) fn reply(text: String) -> Response {
    Json(json!({
        "response_type": "in_channel",
        "replace_original": false,
        "text": text,
    }))
    .into_response()
}

pub(super) async fn actions(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (secrets, body) = match secrets_and_body(&ctx, body, secrets).await {
        Ok(got) => got,
        Err(r) => return r,
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !signed(
        &secrets,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        ctx.clock.now(),
    ) {
        tracing::warn!("Slack action refused: missing, wrong or stale signature");
        return error(
            StatusCode::UNAUTHORIZED,
            "missing, wrong or stale signature",
        );
    }
    let Some(payload) = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
    else {
        return error(StatusCode::BAD_REQUEST, "body: no \"payload\" field");
    };
    let payload: Value = match serde_json::from_str(&payload) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("payload: {e}")),
    };
    if let Some(answer) = super::slack_approval::decide(&ctx, &payload).await {
        return answer;
    }
    let ack = payload["actions"].as_array().and_then(|actions| {
        actions
            .iter()
            .find(|a| a["action_id"] == "ack")
            .and_then(|a| a["value"].as_str())
    });
    let Some(id) = ack else {
        tracing::debug!("Slack interaction without an ack: ignored");
        return Json(json!({})).into_response();
    };
    let by = user_name(&payload);
    match ctx.store.ack(id, Some(by.clone()), AckVia::Slack).await {
        Ok(Ack::Acknowledged) => {
            tracing::info!(incident = %id, by = %by, "incident acknowledged in Slack");
            reply(format!(
                ":white_check_mark: Incident {id} acknowledged by {by}: medic stops escalating it."
            ))
        }
        Ok(Ack::Already(who)) => reply(format!(
            "Incident {id} was already acknowledged{}.",
            who.map(|w| format!(" by {w}")).unwrap_or_default()
        )),
        Ok(Ack::NotEscalated(state)) => reply(format!(
            "Incident {id} is {}: there is nothing to acknowledge.",
            state.as_str()
        )),
        Ok(Ack::NotFound) => {
            tracing::info!(incident = %id, "Slack ack of an unknown incident");
            reply(format!("medic knows no incident {id}."))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use hmac::Mac as _;

    use super::signed;

    const NOW: i64 = 1_700_000_000;

    fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
        let mac = super::super::mac(secret, &[b"v0:", timestamp.as_bytes(), b":", body]).unwrap();
        format!("v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn check(timestamp: Option<&str>, signature: Option<&str>, body: &[u8], expected: bool) {
        let secrets = vec!["other".to_string(), "s3cret".to_string()];
        let now = Utc.timestamp_opt(NOW, 0).unwrap();
        assert_eq!(
            signed(&secrets, timestamp, signature, body, now),
            expected,
            "{timestamp:?} {signature:?}"
        );
    }

    #[test]
    fn signatures() {
        let body = b"payload=%7B%7D";
        let ts = NOW.to_string();
        let good = sign("s3cret", &ts, body);
        check(Some(&ts), Some(&good), body, true);
        check(Some(&ts), Some(&sign("nope", &ts, body)), body, false);
        check(Some(&ts), Some(&good), b"payload=%7B%20%7D", false);
        check(Some(&ts), Some(&good.replace("v0=", "v1=")), body, false);
        check(Some(&ts), None, body, false);
        check(None, Some(&good), body, false);
        check(Some("soon"), Some(&good), body, false);
        // The timestamp is signed: another one does not match.
        let later = (NOW + 1).to_string();
        check(Some(&later), Some(&good), body, false);
        // Within five minutes either way, and no further.
        for (offset, ok) in [(-300, true), (300, true), (-360, false), (301, false)] {
            let ts = (NOW + offset).to_string();
            check(Some(&ts), Some(&sign("s3cret", &ts, body)), body, ok);
        }
    }
}
