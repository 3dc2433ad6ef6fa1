//! The signed one-click links of escalation messages: `GET /ui/a/{token}` shows what the
//! link would do and a button, with no side effect (a mail scanner that prefetches links
//! changes nothing); `POST /ui/a/{token}` does it, once.
//!
//! No login: the token is the credential (signed with `server.link_secret`, bound to one
//! incident and one action, expiring, used once; see `escalate::link`). The POST also
//! refuses a request whose `Origin` (or, without one, `Referer`) names another site: a
//! page elsewhere that learned a token cannot make a browser use it. A request with
//! neither header (some clients strip both) is allowed: whoever holds the token may use it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::{page, pages, unavailable, valid_id, Shared};
use crate::escalate::link::{self, Action, Link, Refused};
use crate::store::{Ack, LinkAck};

/// The link `token` carries, or the refusal page.
fn check(c: &super::Console, token: &str) -> Result<Link, Box<Response>> {
    let loaded = c.ctx.config.get();
    let Some(key) = &loaded.config.server.link_secret else {
        return Err(Box::new(page(
            StatusCode::NOT_FOUND,
            pages::message(None, "Not found", "This medic does not sign links."),
        )));
    };
    let refusal = |status, why| Box::new(refused(status, why));
    match link::verify(key.as_bytes(), token, Action::Ack, c.ctx.clock.now()) {
        Ok(l) if valid_id(&l.incident) => Ok(l),
        Ok(_) => Err(refusal(StatusCode::FORBIDDEN, Refused::Malformed)),
        Err(e @ Refused::Expired) => Err(refusal(StatusCode::GONE, e)),
        Err(e) => Err(refusal(StatusCode::FORBIDDEN, e)),
    }
}

pub(super) fn refused(status: StatusCode, why: impl std::fmt::Display) -> Response {
    page(
        status,
        pages::message(
            None,
            "Link refused",
            &format!("{why}. Nothing was changed."),
        ),
    )
}

pub(super) fn used() -> Response {
    refused(StatusCode::GONE, "The link was already used")
}

/// The person a link's action is audited as.
fn by(l: &Link) -> String {
    format!("link:{}", l.person)
}

pub(super) async fn confirm(State(c): Shared, Path(token): Path<String>) -> Response {
    let l = match check(&c, &token) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    match c.ctx.store.link_used(&l.nonce).await {
        Ok(true) => return used(),
        Ok(false) => {}
        Err(e) => return unavailable(None, e),
    }
    match c.ctx.store.incident(&l.incident).await {
        Ok(Some(incident)) => page(
            StatusCode::OK,
            pages::confirm_link(&incident, &token, &by(&l), &l.expires.to_rfc3339()),
        ),
        Ok(None) => refused(StatusCode::NOT_FOUND, "The link's incident does not exist"),
        Err(e) => unavailable(None, e),
    }
}

/// Whether the request came from this site, as far as its `Origin` or `Referer` tells.
pub(super) fn same_site(headers: &HeaderMap, external_url: Option<&str>) -> bool {
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let Some(from) = from else {
        return true;
    };
    let authority = |url: &str| -> Option<String> {
        let rest = url.split_once("://")?.1;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        Some(rest[..end].to_ascii_lowercase())
    };
    let Some(from) = authority(from) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    host.as_deref() == Some(from.as_str())
        || external_url.and_then(authority).as_deref() == Some(from.as_str())
}

pub(super) async fn perform(
    State(c): Shared,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let l = match check(&c, &token) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let external = c.ctx.config.get().config.server.external_url.clone();
    if !same_site(&headers, external.as_deref()) {
        return refused(
            StatusCode::FORBIDDEN,
            "The form was not sent from this medic's page",
        );
    }
    let who = by(&l);
    let id = &l.incident;
    let done = c.ctx.store.ack_by_link(id, &who, &l.nonce, l.expires).await;
    let say = |status, title: &str, text: String| page(status, pages::message(None, title, &text));
    match done {
        Ok(LinkAck::AlreadyUsed) => used(),
        Ok(LinkAck::Ack(Ack::Acknowledged)) => {
            tracing::info!(incident = %id, by = %who, "incident acknowledged through a signed link");
            say(
                StatusCode::OK,
                "Acknowledged",
                format!(
                    "Incident {id} is acknowledged by {who}: later escalation tiers are cancelled."
                ),
            )
        }
        Ok(LinkAck::Ack(Ack::Already(by))) => say(
            StatusCode::OK,
            "Already acknowledged",
            format!(
                "Incident {id} was already acknowledged{}. Nothing was changed.",
                by.map(|b| format!(" by {b}")).unwrap_or_default()
            ),
        ),
        Ok(LinkAck::Ack(Ack::NotEscalated(state))) => say(
            StatusCode::CONFLICT,
            "Not acknowledged",
            format!(
                "Incident {id} is {}: only an escalated incident can be acknowledged.",
                state.as_str()
            ),
        ),
        Ok(LinkAck::Ack(Ack::NotFound)) => {
            refused(StatusCode::NOT_FOUND, "The link's incident does not exist")
        }
        Err(e) => unavailable(None, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_this_site_may_post_a_link() {
        let check = |pairs: &[(header::HeaderName, &str)], external: Option<&str>, want: bool| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(same_site(&h, external), want, "{pairs:?} {external:?}");
        };
        let host = (header::HOST, "medic.example:9095");
        check(&[], None, true);
        check(std::slice::from_ref(&host), None, true);
        check(
            &[host.clone(), (header::ORIGIN, "http://medic.example:9095")],
            None,
            true,
        );
        check(
            &[host.clone(), (header::ORIGIN, "https://evil.example")],
            None,
            false,
        );
        check(&[host.clone(), (header::ORIGIN, "null")], None, false);
        check(
            &[
                host.clone(),
                (header::REFERER, "http://medic.example:9095/ui/a/x"),
            ],
            None,
            true,
        );
        check(
            &[
                (header::HOST, "10.0.0.1:9095"),
                (header::ORIGIN, "https://medic.example"),
            ],
            Some("https://medic.example"),
            true,
        );
        check(
            &[
                host,
                (header::REFERER, "https://evil.example/medic.example:9095"),
            ],
            None,
            false,
        );
    }
}
