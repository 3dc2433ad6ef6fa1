//! Acks that come back from the channels: `POST /pagerduty/webhook` (PagerDuty v3
//! webhooks, [`pagerduty`]) and `POST /slack/actions` (Slack's interactive buttons,
//! [`slack`]). A person who acknowledges in PagerDuty or clicks "Acknowledge" in Slack
//! acknowledges the medic incident through the store's one ack (`Store::ack`), so the
//! later tiers are cancelled and the audit log names the person.
//!
//! Each endpoint checks its sender's signature with the secrets of the configured channels
//! (any one channel's secret is enough) and answers 404, as if it did not exist, while no
//! channel has a secret. This module decides nothing about incidents: it authenticates,
//! parses and asks the store.

pub mod pagerduty;
pub mod slack;
mod slack_approval;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::clock::Clock;
use crate::store::Store;

/// Longest `by` recorded for an ack; longer names are cut.
const MAX_BY: usize = 200;

/// What the callback endpoints use, handed over by the composition root.
pub struct Context {
    pub store: Store,
    /// The configuration in force: the channels' secrets and the body limit.
    pub config: crate::snapshot::Current,
    /// The time Slack's request timestamps are judged by.
    pub clock: Clock,
}

/// `POST /pagerduty/webhook` and `POST /slack/actions`.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/pagerduty/webhook", post(pagerduty::webhook))
        .route("/slack/actions", post(slack::actions))
        .with_state(ctx)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The answer of an endpoint that no channel enables.
fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

/// What both endpoints start with: the secrets of the channels that enable them
/// (`secrets_of`; none: 404, as if the endpoint did not exist) and the request's body, at
/// most `server.body_limit` bytes (413 beyond).
async fn secrets_and_body(
    ctx: &Context,
    body: Body,
    secrets_of: fn(&crate::config::Config) -> Vec<String>,
) -> Result<(Vec<String>, Bytes), Response> {
    let (secrets, limit) = {
        let snapshot = ctx.config.get();
        (
            secrets_of(&snapshot.config),
            snapshot.config.server.body_limit,
        )
    };
    if secrets.is_empty() {
        return Err(not_found());
    }
    Ok((secrets, read_body(body, limit).await?))
}

/// The body, at most `limit` bytes (413 beyond).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over the limit of {limit} bytes"),
        )
    })
}

/// HMAC-SHA256 of `parts`, in order, keyed with `secret`.
fn mac(secret: &str, parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac)
}

/// Whether `given` (raw bytes, decoded from hex) is the HMAC-SHA256 of `parts` under one
/// of `secrets`. Each comparison takes constant time.
fn signed_by_any(secrets: &[String], parts: &[&[u8]], given: &[Vec<u8>]) -> bool {
    secrets.iter().any(|secret| {
        mac(secret, parts).is_some_and(|mac| {
            given
                .iter()
                .any(|signature| mac.clone().verify_slice(signature).is_ok())
        })
    })
}

/// A person's name as an ack records it: trimmed, without control characters, bounded.
fn clip_name(name: &str) -> Option<String> {
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_BY)
        .collect();
    (!name.is_empty()).then_some(name)
}
