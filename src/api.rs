//! The incidents API under `/api/v1`, guarded by `server.api_token`.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::incident::State as IncidentState;
use crate::server::App;
use crate::store::IncidentFilter;

/// Default and largest page of `GET /incidents`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/incidents", get(list))
        .route("/incidents/{id}", get(show))
        .layer(middleware::from_fn_with_state(app, require_token))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.loaded().config.server.api_token {
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

async fn list(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
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
    };
    match app.store.incidents(filter).await {
        Ok(incidents) => Json(json!({ "incidents": incidents })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

async fn show(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.incident(&id).await {
        Ok(Some(incident)) => Json(incident).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no incident {id:?}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}
