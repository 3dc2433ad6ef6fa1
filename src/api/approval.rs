//! `POST /api/v1/incidents/{id}/approve` and `.../reject`: a person decides, with the API
//! token, on a run that waits for approval. Body (optional) `{"by": "name", "reason":
//! "why"}`; `by` is who the audit log names (`api` when not given) and, on a route with
//! `approvers`, must be one of them (a name, or a `[[ui.users]]` user of a listed role).
//!
//! Answers: 200 with the incident; 400 for a bad body; 403 for someone the route's
//! approvers do not list; 404 for an unknown incident; 409 when it does not wait for
//! approval, or its plan is not made yet (nothing is approved before it can be shown).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{error, show, Context, MAX_BY};
use crate::store::{Decided, Decision, Via};

/// Longest `reason` kept; longer ones are refused.
const MAX_REASON: usize = 2000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    by: Option<String>,
    reason: Option<String>,
}

pub(super) async fn approve(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(ctx, id, body, true).await
}

pub(super) async fn reject(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(ctx, id, body, false).await
}

/// A text field of the body: trimmed, `None` when empty; refused over `max` bytes or with
/// a control character (a newline in a reason is allowed).
fn field(
    value: Option<String>,
    name: &str,
    max: usize,
    newlines: bool,
) -> Result<Option<String>, String> {
    let Some(v) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let bad = |c: char| c.is_control() && !(newlines && c == '\n');
    if v.len() > max || v.chars().any(bad) {
        return Err(format!(
            "{name}: at most {max} bytes, no control characters"
        ));
    }
    Ok(Some(v))
}

async fn decide(ctx: Arc<Context>, id: String, body: Bytes, approve: bool) -> Response {
    let parsed: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    let by = match field(parsed.by, "by", MAX_BY, false) {
        Ok(by) => by.unwrap_or_else(|| "api".to_string()),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let reason = match field(parsed.reason, "reason", MAX_REASON, true) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let role = ctx.config.get().config.ui.user(&by).map(|u| u.role);
    let decision = Decision {
        approve,
        by: by.clone(),
        role,
        reason,
        via: Via::Api,
    };
    let decided = match ctx.store.decide(&id, decision).await {
        Ok(d) => d,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    match decided {
        Decided::Approved => {
            tracing::info!(incident = %id, by = %by, "run approved through the API");
            ctx.wake.wake();
        }
        Decided::Rejected => {
            tracing::info!(incident = %id, by = %by, "run rejected through the API");
        }
        Decided::NotFound => return error(StatusCode::NOT_FOUND, format!("no incident {id:?}")),
        Decided::NotAwaiting(state) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "incident {id} is {}: only a run that waits for approval can be approved or rejected",
                    state.as_str()
                ),
            )
        }
        Decided::NoPlanYet => {
            return error(
                StatusCode::CONFLICT,
                format!("incident {id}: its plan is not made yet, and nothing is approved before it can be shown; try again in a moment"),
            )
        }
        Decided::NotAnApprover => {
            return error(
                StatusCode::FORBIDDEN,
                format!("{by} may not decide on incident {id}: its route's approvers do not list them"),
            )
        }
        Decided::LinkUsed => return error(StatusCode::CONFLICT, "the link was already used"),
    }
    show(State(ctx), Path(id)).await
}
