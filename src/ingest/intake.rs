//! The layers in front of the webhook handler, outermost first: [`observe`] (the metrics of
//! every delivery, and the config it is judged by), [`credentials`] (401),
//! [`content_type`] (415) and [`limits`] (413, 408). All of them answer before any of the
//! body is read.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tower::{ServiceBuilder, ServiceExt as _};
use tower_http::limit::RequestBodyLimitLayer;

use super::{count_rejected, error, refuse, too_large, InForce, Outcome};
use crate::metrics::OutcomeLabel;

/// Outermost: takes the config in force for the whole delivery, then counts the delivery
/// by its outcome (`medic_webhook_deliveries_total`) and its time.
pub(super) async fn observe(
    State(ctx): State<Arc<super::Context>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = ctx.clock.instant();
    req.extensions_mut().insert(InForce(ctx.config.get()));
    let response = next.run(req).await;
    if let Some(&Outcome(outcome)) = response.extensions().get::<Outcome>() {
        let m = &ctx.metrics;
        m.deliveries.get_or_create(&OutcomeLabel { outcome }).inc();
        let elapsed = ctx.clock.instant().saturating_duration_since(started);
        m.webhook_seconds.observe(elapsed.as_secs_f64());
    }
    response
}

/// With `server.webhook_token` set: a bearer token, or HTTP Basic with the token as
/// password; else 401 with `WWW-Authenticate`.
pub(super) async fn credentials(
    State(ctx): State<Arc<super::Context>>,
    Extension(InForce(loaded)): Extension<InForce>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = &loaded.config.server.webhook_token else {
        return next.run(req).await;
    };
    if crate::auth::bearer_or_basic_ok(req.headers(), token) {
        return next.run(req).await;
    }
    count_rejected(&ctx, "unauthorized");
    let mut refused = error(
        "unauthorized",
        StatusCode::UNAUTHORIZED,
        "missing or wrong credentials",
    );
    refused.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"medic\""),
    );
    refused
}

/// `Content-Type: application/json`, else 415.
pub(super) async fn content_type(
    State(ctx): State<Arc<super::Context>>,
    req: Request,
    next: Next,
) -> Response {
    if is_json(req.headers()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    refuse(
        &ctx,
        "content_type",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("Content-Type must be application/json, got {given:?}"),
    )
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// `server.body_limit` and `server.request_timeout` of the delivery's config, so that a
/// reload applies to the next delivery (tower-http's layers take their values when built,
/// and the router is built once). tower-http's `RequestBodyLimit`, built here for each
/// request, answers a `Content-Length` over the limit before any of the body is read (its
/// own 413, given medic's JSON error here) and caps a body sent without one; the handler
/// finds that error by type. The body must also arrive whole within the timeout
/// ([`Deadline`]).
pub(super) async fn limits(
    State(ctx): State<Arc<super::Context>>,
    Extension(InForce(loaded)): Extension<InForce>,
    req: Request,
    next: Next,
) -> Response {
    let server = &loaded.config.server;
    let limit = server.body_limit;
    let req = req.map(|body| Body::new(Deadline::new(body, server.request_timeout)));
    let limited = ServiceBuilder::new()
        .layer(RequestBodyLimitLayer::new(limit))
        .map_request(|req: Request<tower_http::body::Limited<Body>>| req.map(Body::new))
        .service(next);
    let response = match limited.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // Every answer of medic's own carries its outcome: a 413 without one is tower-http's.
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<Outcome>().is_none()
    {
        return too_large(&ctx, limit);
    }
    response.map(Body::new)
}

/// The body did not arrive whole within `server.request_timeout`.
#[derive(Debug)]
pub(super) struct TooLate;

impl std::fmt::Display for TooLate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the body did not arrive in time")
    }
}

impl std::error::Error for TooLate {}

/// A request body that must arrive whole before a deadline, else it fails with [`TooLate`].
/// tower-http's `RequestBodyTimeout` bounds the wait for each frame instead, so a client
/// sending a byte now and then would hold the request for as long as it liked; and its
/// `Timeout` bounds the whole request, the store's commit included, which must answer 503.
struct Deadline {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(body: Body, timeout: Duration) -> Deadline {
        Deadline {
            body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // As `tokio::time::timeout` does: what has arrived is taken before the deadline is
        // looked at.
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TooLate)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
