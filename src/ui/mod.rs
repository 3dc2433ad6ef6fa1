//! The on-call console under `/ui`: server-rendered HTML that works without JavaScript.
//!
//! Owns the console's routes, its sessions (in the store, so every replica honors them,
//! see `session.rs`), the CSRF check on every form and the pages (`pages.rs`, `maud`, which
//! escapes every value). It reads incidents and acknowledges them only through the
//! store's methods; the users and their roles come from `[[ui.users]]` in the
//! configuration in force. With no user configured, every `/ui` path answers 404, except
//! the signed one-click links of escalation messages (`/ui/a/{token}`, `links.rs`) and of
//! approval requests (`/ui/approve/{token}`, `/ui/reject/{token}`, `approval.rs`, which
//! also shows a waiting run's plan and its Approve and Reject forms).

mod actions;
mod admin;
mod approval;
mod group_links;
mod links;
mod pages;
mod postmortem;
mod runbooks;
pub mod session;
pub mod sweep;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::json;

use crate::audit::{Event, NewEntry};
use crate::clock::Clock;
use crate::config::Role;
use crate::guard::Guards;
use crate::incident::{AckVia, Reason, State as IncidentState};
use crate::metrics::Metrics;
use crate::runner::Wake;
use crate::snapshot::Current;
use crate::store::{Ack, IncidentFilter, Store};
use session::{same_token, Attempts, Session, Sessions};

/// The session cookie.
pub const SESSION_COOKIE: &str = "medic_session";
/// The cookie holding the login form's CSRF token, before there is a session.
pub const LOGIN_COOKIE: &str = "medic_login";

/// Incidents per page of the list.
const PAGE_SIZE: usize = 50;
/// The deepest page of the list (beyond it, narrow the filters).
const MAX_PAGE: usize = 100_000;
/// Longest name kept from a login form (the rest is not looked at).
const MAX_NAME: usize = 200;

/// What the console works with, handed to it by the composition root.
pub struct Context {
    pub store: Store,
    pub clock: Clock,
    /// The configuration in force: the users, and `server.external_url` (for `Secure`).
    pub config: Current,
    /// The guards in force: the guards page resets breakers and pauses through them.
    pub guards: Arc<Guards>,
    pub metrics: Arc<Metrics>,
    /// Wakes the runner when a breaker is reset or medic resumes.
    pub wake: Arc<Wake>,
}

/// The console's state: its context, and the sessions and login attempts it keeps.
struct Console {
    ctx: Context,
    sessions: Sessions,
    attempts: Attempts,
}

type Shared = State<Arc<Console>>;

/// Everything under `/ui`.
pub fn router(ctx: Context) -> Router {
    let console = Arc::new(Console {
        sessions: Sessions::new(ctx.store.clone()),
        ctx,
        attempts: Attempts::default(),
    });
    Router::new()
        .route("/", get(list))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/medic.css", get(css))
        .route("/static/refresh.js", get(js))
        .route("/static/postmortem.js", get(postmortem::js))
        .route("/incidents/{id}", get(show))
        .route("/incidents/{id}/ack", post(ack))
        .route("/incidents/{id}/note", post(actions::note))
        .route("/incidents/{id}/rerun", post(actions::rerun))
        .route("/incidents/{id}/approve", post(approval::approve))
        .route("/incidents/{id}/reject", post(approval::reject))
        .route("/incidents/{id}/postmortem", get(postmortem::show))
        .route("/incidents/{id}/postmortem.md", get(postmortem::download))
        .route("/guards", get(admin::guards))
        .route("/guards/breakers/reset", post(admin::reset_breaker))
        .route("/guards/pause", post(admin::pause))
        .route("/guards/resume", post(admin::resume))
        .route("/audit", get(admin::audit))
        .route("/runbooks", get(runbooks::list))
        .route("/runbooks/{name}", get(runbooks::show))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            proxy_login,
        ))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            require_users,
        ))
        // Signed links need no user: the token is the credential.
        .route("/a/{token}", get(links::confirm).post(links::perform))
        .route(
            "/approve/{token}",
            get(approval::confirm_approve).post(approval::perform_approve),
        )
        .route(
            "/reject/{token}",
            get(approval::confirm_reject).post(approval::perform_reject),
        )
        .with_state(console)
}

/// No user configured: the console does not exist.
async fn require_users(State(c): Shared, req: Request, next: Next) -> Response {
    let loaded = c.ctx.config.get();
    if loaded.config.ui.users.is_empty() && loaded.config.ui.proxy.is_none() {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    next.run(req).await
}

/// Login through a trusted proxy: a request from one of `ui.proxy_addresses` carrying
/// `ui.proxy_header` is logged in as the name it holds. A session is opened (and the
/// login audited) once; later requests carry its cookie. The header from any other
/// address is ignored.
async fn proxy_login(State(c): Shared, mut req: Request, next: Next) -> Response {
    let loaded = c.ctx.config.get();
    let Some(proxy) = loaded.config.ui.proxy.clone() else {
        return next.run(req).await;
    };
    drop(loaded);
    let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
    else {
        return next.run(req).await;
    };
    if !proxy.trusts(peer) {
        return next.run(req).await;
    }
    let name: String = match req
        .headers()
        .get(proxy.header.as_str())
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => v
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect(),
        None => return next.run(req).await,
    };
    if name.is_empty() {
        return next.run(req).await;
    }
    let now = c.ctx.clock.now();
    if let Some(id) = cookie(req.headers(), SESSION_COOKIE) {
        match c.sessions.touch(id, now).await {
            Ok(Some(s)) if s.user == name => return next.run(req).await,
            Ok(_) => {}
            Err(e) => return unavailable(None, e),
        }
    }
    let (id, _) = match c.sessions.open(&name, true, now).await {
        Ok(s) => s,
        Err(e) => return unavailable(None, e),
    };
    let address = peer.to_string();
    c.audit(
        Event::ConsoleLogin,
        json!({"name": name, "address": address, "via": "proxy"}),
    )
    .await;
    tracing::info!(user = %name, address = %address, "console login through the proxy");
    // The request goes on with the new session's cookie in place of any other.
    let others: Vec<String> = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(&format!("{SESSION_COOKIE}=")))
        .map(str::to_string)
        .collect();
    let mut pairs = vec![format!("{SESSION_COOKIE}={id}")];
    pairs.extend(others);
    req.headers_mut().remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&pairs.join("; ")) {
        req.headers_mut().insert(header::COOKIE, v);
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .append(header::SET_COOKIE, c.set_cookie(SESSION_COOKIE, &id, None));
    r
}

async fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::message(None, "Not found", "No such page."),
    )
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("medic.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("refresh.js"),
    )
        .into_response()
}

/// An HTML answer that no cache keeps and no frame shows.
fn page(status: StatusCode, body: maud::Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        body.into_string(),
    )
        .into_response()
}

fn forbidden(user: Option<&pages::User>, why: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        pages::message(user, "Forbidden", why),
    )
}

fn unavailable(user: Option<&pages::User>, e: impl std::fmt::Display) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message(user, "Store unavailable", &format!("store: {e}")),
    )
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Console {
    /// `Secure` when medic is reached over https.
    fn secure(&self) -> &'static str {
        let loaded = self.ctx.config.get();
        match &loaded.config.server.external_url {
            Some(url) if url.starts_with("https://") => "; Secure",
            _ => "",
        }
    }

    fn set_cookie(&self, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
        let age = max_age
            .map(|s| format!("; Max-Age={s}"))
            .unwrap_or_default();
        let text = format!(
            "{name}={value}; HttpOnly; SameSite=Strict; Path=/ui{age}{}",
            self.secure()
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The logged-in user of this request, if the session is alive and its user is still
    /// configured (a user removed by a reload is logged out). A store that cannot be read
    /// logs no one in (the error is logged).
    async fn user(&self, headers: &HeaderMap) -> Option<(String, Session, pages::User)> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let session = match self.sessions.touch(id, self.ctx.clock.now()).await {
            Ok(s) => s?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a console session");
                return None;
            }
        };
        let loaded = self.ctx.config.get();
        // A listed user has their role; a proxy user who is not listed, `proxy_role`.
        let role = match (
            loaded.config.ui.user(&session.user),
            &loaded.config.ui.proxy,
        ) {
            (Some(configured), _) => configured.role,
            (None, Some(proxy)) if session.proxy => proxy.role,
            _ => {
                drop(loaded);
                if let Err(e) = self.sessions.close(id).await {
                    tracing::warn!(error = %e, "cannot end the session of a removed user");
                }
                return None;
            }
        };
        let user = pages::User {
            name: session.user.clone(),
            role,
            csrf: session.csrf.clone(),
        };
        Some((id.to_string(), session, user))
    }

    async fn audit(&self, event: Event, detail: serde_json::Value) {
        if let Err(e) = self
            .ctx
            .store
            .audit(vec![NewEntry::new(event, &detail)])
            .await
        {
            tracing::warn!(error = %e, event = event.as_str(), "cannot audit a console event");
        }
    }
}

/// The login page, with a fresh pre-session CSRF token in its cookie.
fn login_page(c: &Console, status: StatusCode, error: Option<&str>) -> Response {
    let token = match session::random_token() {
        Ok(t) => t,
        Err(e) => return unavailable(None, format!("no randomness: {e}")),
    };
    let mut r = page(status, pages::login(&token, error));
    r.headers_mut()
        .append(header::SET_COOKIE, c.set_cookie(LOGIN_COOKIE, &token, None));
    r
}

async fn login_form(State(c): Shared, headers: HeaderMap) -> Response {
    if c.user(&headers).await.is_some() {
        return see_other("/ui");
    }
    login_page(&c, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !same_token(expected, &form.csrf) {
        return forbidden(
            None,
            "The form expired or did not come from this console: reload the login page.",
        );
    }
    let name: String = form
        .name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    let address = peer.ip().to_string();
    let keys = [format!("address:{address}"), format!("name:{name}")];
    let keys = [keys[0].as_str(), keys[1].as_str()];
    let now = c.ctx.clock.now();
    if c.attempts.limited(&keys, now) {
        c.audit(
            Event::ConsoleLoginFailed,
            json!({"name": name, "address": address, "why": "too many attempts"}),
        )
        .await;
        return login_page(
            &c,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed logins: wait a minute."),
        );
    }
    // argon2 is slow on purpose: not on the async workers.
    let config = c.ctx.config.clone();
    let (n, p) = (name.clone(), form.password);
    let who = tokio::task::spawn_blocking(move || {
        config
            .get()
            .config
            .ui
            .authenticate(&n, &p)
            .map(|u| u.name.clone())
    })
    .await
    .ok()
    .flatten();
    let Some(user) = who else {
        c.attempts.failed(&keys, now);
        c.audit(
            Event::ConsoleLoginFailed,
            json!({"name": name, "address": address, "why": "wrong name or password"}),
        )
        .await;
        return login_page(&c, StatusCode::UNAUTHORIZED, Some("wrong name or password"));
    };
    let (id, _) = match c.sessions.open(&user, false, now).await {
        Ok(s) => s,
        Err(e) => return unavailable(None, e),
    };
    c.audit(
        Event::ConsoleLogin,
        json!({"name": user, "address": address}),
    )
    .await;
    tracing::info!(user = %user, address = %address, "console login");
    let mut r = see_other("/ui");
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, c.set_cookie(SESSION_COOKIE, &id, None));
    h.append(header::SET_COOKIE, c.set_cookie(LOGIN_COOKIE, "", Some(0)));
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some((id, session, user)) = c.user(&headers).await else {
        return see_other("/ui/login");
    };
    if !same_token(&session.csrf, &form.csrf) {
        return forbidden(Some(&user), "The form did not come from this session.");
    }
    if let Err(e) = c.sessions.close(&id).await {
        return unavailable(Some(&user), e);
    }
    c.audit(
        Event::ConsoleLogout,
        json!({"name": user.name, "address": peer.ip().to_string()}),
    )
    .await;
    let mut r = see_other("/ui/login");
    r.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(SESSION_COOKIE, "", Some(0)),
    );
    r
}

/// The list's query: filters and page.
#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub alertname: String,
    #[serde(default)]
    pub route: String,
    /// Started at or after: RFC 3339, or a duration (`24h`: the last 24 hours).
    #[serde(default)]
    pub since: String,
    /// Started before: RFC 3339, or a duration (`1h`: more than an hour ago).
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub page: Option<usize>,
}

/// A time bound of the list: an RFC 3339 time, or a duration back from `now`.
fn time_bound(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&chrono::Utc)));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 24h"))?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| format!("{text:?} is too long"))?;
    Ok(Some(now.checked_sub_signed(ago).unwrap_or(now)))
}

/// The store's filter for a list query, or what is wrong with it.
fn list_filter(
    q: &ListQuery,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IncidentFilter, String> {
    let state = match q.state.as_str() {
        "" => None,
        s => Some(IncidentState::parse(s).ok_or_else(|| format!("unknown state {s:?}"))?),
    };
    let reason = match q.reason.as_str() {
        "" => None,
        r => Some(Reason::parse(r).ok_or_else(|| format!("unknown reason {r:?}"))?),
    };
    let since = time_bound(&q.since, now).map_err(|e| format!("since: {e}"))?;
    let until = time_bound(&q.until, now).map_err(|e| format!("until: {e}"))?;
    let page_no = q.page.unwrap_or(1).clamp(1, MAX_PAGE);
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(IncidentFilter {
        state,
        alertname: text(&q.alertname),
        route: text(&q.route),
        reason,
        since,
        until,
        offset: (page_no - 1) * PAGE_SIZE,
        // One more than a page: whether there is an older page.
        limit: PAGE_SIZE + 1,
    })
}

async fn list(State(c): Shared, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let Some((_, _, user)) = c.user(&headers).await else {
        return see_other("/ui/login");
    };
    let filter = match list_filter(&q, c.ctx.clock.now()) {
        Ok(f) => f,
        Err(e) => {
            return page(
                StatusCode::BAD_REQUEST,
                pages::message(Some(&user), "Bad filter", &e),
            )
        }
    };
    let page_no = filter.offset / PAGE_SIZE + 1;
    let mut shown = match c.ctx.store.incidents(filter).await {
        Ok(i) => i,
        Err(e) => return unavailable(Some(&user), e),
    };
    let more = shown.len() > PAGE_SIZE;
    shown.truncate(PAGE_SIZE);
    page(
        StatusCode::OK,
        pages::list(&user, &q, &shown, page_no, more),
    )
}

/// An incident id as medic makes them (a ULID); anything else is no incident.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn show(State(c): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some((_, _, user)) = c.user(&headers).await else {
        return see_other("/ui/login");
    };
    if !valid_id(&id) {
        return not_found().await;
    }
    match c.ctx.store.incident(&id).await {
        Ok(Some(incident)) => page(StatusCode::OK, pages::incident(&user, &incident)),
        Ok(None) => not_found().await,
        Err(e) => unavailable(Some(&user), e),
    }
}

async fn ack(
    State(c): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some((_, session, user)) = c.user(&headers).await else {
        return forbidden(None, "Log in first.");
    };
    if !user.role.may(Role::Responder) {
        return forbidden(Some(&user), "Your role may not acknowledge incidents.");
    }
    if !same_token(&session.csrf, &form.csrf) {
        return forbidden(Some(&user), "The form did not come from this session.");
    }
    if !valid_id(&id) {
        return not_found().await;
    }
    match c
        .ctx
        .store
        .ack(&id, Some(user.name.clone()), AckVia::Console)
        .await
    {
        Ok(Ack::Acknowledged) => {
            tracing::info!(incident = %id, by = %user.name, "incident acknowledged in the console");
            see_other(&format!("/ui/incidents/{id}"))
        }
        Ok(Ack::Already(by)) => page(
            StatusCode::OK,
            pages::message(
                Some(&user),
                "Already acknowledged",
                &format!(
                    "Incident {id} was already acknowledged{}. Nothing was changed.",
                    by.map(|b| format!(" by {b}")).unwrap_or_default()
                ),
            ),
        ),
        Ok(Ack::NotFound) => not_found().await,
        Ok(Ack::NotEscalated(state)) => page(
            StatusCode::CONFLICT,
            pages::message(
                Some(&user),
                "Not acknowledged",
                &format!(
                    "Incident {id} is {}: only an escalated incident can be acknowledged.",
                    state.as_str()
                ),
            ),
        ),
        Err(e) => unavailable(Some(&user), e),
    }
}
