//! The incidents API under `/api/v1`, guarded by `server.api_token` (all of `/api`, known
//! paths or not): list and show incidents, and acknowledge an escalated one. Approving and
//! rejecting a run that waits for approval is `approval.rs`'s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::clock::Clock;
use crate::guard::Guards;
use crate::incident::{AckVia, State as IncidentState};
use crate::metrics::Metrics;
use crate::runner::Wake;
use crate::snapshot::Current;
use crate::store::{Ack, IncidentFilter, Store};

/// Longest `by` of an ack.
const MAX_BY: usize = 200;

/// Default and largest page of `GET /incidents`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// What the API works with, handed to it by the composition root.
pub struct Context {
    pub store: Store,
    pub guards: Arc<Guards>,
    pub metrics: Arc<Metrics>,
    /// Wakes the runner when a breaker is reset or medic resumes.
    pub wake: Arc<Wake>,
    pub clock: Clock,
    /// The configuration in force: who may approve (routes' approvers, users' roles).
    pub config: Current,
}

mod approval;

/// Everything under `/api`; the token is checked by [`require_token`], around the whole
/// server's routes.
pub fn router(ctx: Arc<Context>) -> Router {
    let v1 = Router::new()
        .route("/incidents", get(list))
        .route("/incidents/{id}", get(show))
        .route("/breakers", get(breakers))
        .route("/breakers/{id}/reset", post(reset_breaker))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/incidents/{id}/ack", post(ack))
        .route("/incidents/{id}/approve", post(approval::approve))
        .route("/incidents/{id}/reject", post(approval::reject));
    Router::new()
        .nest("/v1", v1)
        .fallback(not_found)
        .with_state(ctx)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such API path")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Whether `path` is the API's, which `server.api_token` guards.
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The API token check, as a layer around all of the server's routes: it guards every path
/// under `/api` before routing, so a path that does not exist answers 401 like the others
/// to a caller without the token, and 404 only after.
pub async fn require_token(State(config): State<Current>, req: Request, next: Next) -> Response {
    if !is_api(req.uri().path()) {
        return next.run(req).await;
    }
    if let Some(token) = &config.get().config.server.api_token {
        if !crate::auth::bearer_ok(req.headers(), token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong API token");
        }
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    alertname: Option<String>,
    limit: Option<usize>,
}

async fn list(State(ctx): State<Arc<Context>>, Query(q): Query<ListQuery>) -> Response {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => match IncidentState::parse(s) {
            Some(st) => Some(st),
            None => {
                let known: Vec<&str> = IncidentState::ALL.iter().map(|s| s.as_str()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "state: unknown state {s:?}, expected one of {}",
                        known.join(", ")
                    ),
                );
            }
        },
    };
    let filter = IncidentFilter {
        state,
        alertname: q.alertname.filter(|a| !a.is_empty()),
        limit: q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        ..Default::default()
    };
    match ctx.store.incidents(filter).await {
        Ok(incidents) => Json(json!({ "incidents": incidents })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

async fn show(State(ctx): State<Arc<Context>>, Path(id): Path<String>) -> Response {
    match ctx.store.incident(&id).await {
        Ok(Some(incident)) => Json(incident).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no incident {id:?}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

async fn breakers(State(ctx): State<Arc<Context>>) -> Response {
    Json(json!({ "breakers": ctx.guards.breakers() })).into_response()
}

/// Who is acting, from an optional JSON body `{"by": "...", "reason": "..."}`.
#[derive(Deserialize, Default)]
struct Actor {
    by: Option<String>,
    reason: Option<String>,
}

fn actor(body: &axum::body::Bytes) -> Result<Actor, Box<Response>> {
    if body.is_empty() {
        return Ok(Actor::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("body: {e}"))))
}

fn clip(s: Option<String>, default: &str) -> String {
    let s = s
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

async fn reset_breaker(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let who = match actor(&body) {
        Ok(a) => clip(a.by, "api"),
        Err(r) => return *r,
    };
    let Some(entry) = ctx.guards.reset(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no breaker {id:?}"));
    };
    let detail = json!({ "reset_by": who });
    if let Err(e) = ctx.store.save_breaker(entry.clone(), detail).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"));
    }
    ctx.wake.wake();
    Json(json!({ "breaker": entry })).into_response()
}

async fn pause(State(ctx): State<Arc<Context>>, body: axum::body::Bytes) -> Response {
    let a = match actor(&body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let p = crate::guard::Pause {
        by: clip(a.by, "api"),
        at: ctx.clock.now(),
        reason: clip(a.reason, "paused through the API"),
    };
    if let Err(e) = ctx.store.set_pause(Some(p.clone()), &p.by).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"));
    }
    ctx.guards.set_paused(Some(p.clone()));
    ctx.metrics.paused.set(1);
    tracing::warn!(by = %p.by, reason = %p.reason, "automation paused");
    Json(json!({ "paused": p })).into_response()
}

async fn resume(State(ctx): State<Arc<Context>>, body: axum::body::Bytes) -> Response {
    let who = match actor(&body) {
        Ok(a) => clip(a.by, "api"),
        Err(r) => return *r,
    };
    if let Err(e) = ctx.store.set_pause(None, &who).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"));
    }
    ctx.guards.set_paused(None);
    ctx.metrics.paused.set(0);
    tracing::warn!(by = %who, "automation resumed");
    ctx.wake.wake();
    Json(json!({ "paused": null })).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: Option<String>,
}

/// `POST /incidents/{id}/ack`, body `{"by": "name"}` (optional): a person takes the
/// incident over; later escalation tiers are cancelled. 200 with the incident; 404 for an
/// unknown one; 409 when it is not escalated. Acking twice is not an error.
async fn ack(State(ctx): State<Arc<Context>>, Path(id): Path<String>, body: Bytes) -> Response {
    let parsed: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    let by = parsed
        .by
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty());
    if by
        .as_ref()
        .is_some_and(|b| b.len() > MAX_BY || b.chars().any(char::is_control))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("by: at most {MAX_BY} bytes, no control characters"),
        );
    }
    let result = match ctx.store.ack(&id, by.clone(), AckVia::Api).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    match result {
        Ack::Acknowledged => {
            tracing::info!(incident = %id, by = by.as_deref().unwrap_or("-"), "incident acknowledged");
        }
        Ack::Already(_) => {}
        Ack::NotFound => return error(StatusCode::NOT_FOUND, format!("no incident {id:?}")),
        Ack::NotEscalated(state) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "incident {id} is {}: only an escalated incident can be acknowledged",
                    state.as_str()
                ),
            )
        }
    }
    show(State(ctx), Path(id)).await
}
