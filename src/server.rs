//! The HTTP server: the routes, the ops endpoints (`/healthz`, `/readyz`, `/metrics`), and
//! [`serve`], which accepts connections until told to stop and then lets the requests in
//! flight finish. What the handlers share is handed to [`router`] by the composition root
//! (`app`); this module owns no state of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::guard::Guards;
use crate::metrics::Metrics;
use crate::snapshot::Current;
use crate::store::Store;

/// What the ops endpoints (`/readyz`, `/metrics`) read, handed over by the composition root.
pub struct Context {
    pub config: Current,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub guards: Arc<Guards>,
    /// Which escalation channels keep failing.
    pub escalation: Arc<crate::escalate::Health>,
}

/// The HTTP routes: the webhook, the console (`/ui`), the channels' callbacks, the API (its token checked around every route, so that an
/// unknown `/api` path answers 401 before 404), and the ops endpoints.
pub fn router(
    ops: Arc<Context>,
    ingest: Arc<crate::ingest::Context>,
    api: Arc<crate::api::Context>,
    console: crate::ui::Context,
    callbacks: Arc<crate::callbacks::Context>,
) -> Router {
    let config = ops.config.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
        .route("/webhook", crate::ingest::route(ingest))
        .merge(crate::callbacks::router(callbacks))
        .nest("/api", crate::api::router(api))
        .nest("/ui", crate::ui::router(console))
        .layer(axum::middleware::from_fn_with_state(
            config,
            crate::api::require_token,
        ))
}

/// Serves `router` on `listener` over HTTP/1.1 until `shutdown` completes, then stops
/// accepting and waits for the connections open to finish their requests.
///
/// Each connection must send a request's complete headers within `header_read_timeout()`
/// (asked per connection, so a reload applies to new ones), or it is closed: a client that
/// opens connections and sends a few bytes on each cannot hold them forever. Handlers see
/// the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: impl Fn() -> Duration + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each connection holds a clone; `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let timeout = header_read_timeout();
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    let loaded = ctx.config.get();
    let paused = ctx.guards.paused();
    match ctx.store.ping().await {
        Ok(()) => {
            // A failing channel does not make medic unready (it still remediates and
            // queues notifications), but it is shown.
            let failing: Vec<_> = ctx
                .escalation
                .failing(loaded.config.escalation.retry.fall_through_after)
                .into_iter()
                .map(|(channel, failures)| json!({"channel": channel, "consecutive_failures": failures}))
                .collect();
            (
                StatusCode::OK,
                axum::Json(json!({"ready": true, "runbooks": loaded.catalog.len(), "routes": loaded.config.routes.len(),
                                  "failing_channels": failing, "paused": paused})),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "error": format!("store: {e}")})),
        )
            .into_response(),
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    let loaded = ctx.config.get();
    ctx.metrics
        .known_routes(loaded.config.routes.iter().map(|r| r.name.as_str()));
    drop(loaded);
    let mut worst: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for b in ctx.guards.breakers() {
        let v = worst.entry(b.route.clone()).or_insert(0);
        *v = (*v).max(b.breaker.state.gauge());
    }
    for (route, v) in worst {
        ctx.metrics
            .breaker_state
            .get_or_create(&crate::metrics::RouteLabel { route })
            .set(v);
    }
    ctx.metrics
        .paused
        .set(i64::from(ctx.guards.paused().is_some()));
    match ctx.store.count_by_state().await {
        Ok(counts) => ctx.metrics.set_incident_counts(&counts),
        Err(e) => tracing::warn!(error = %e, "cannot count incidents for /metrics"),
    }
    match ctx.store.outbox_counts().await {
        Ok(c) => {
            ctx.metrics.outbox_pending.set(c.pending as i64);
            ctx.metrics.outbox_failed.set(c.failed as i64);
            let waited = c.oldest_due_waiting.as_secs();
            ctx.metrics
                .outbox_oldest_due_seconds
                .set(i64::try_from(waited).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the outbox for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
        .into_response()
}
