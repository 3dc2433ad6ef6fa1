//! The signed link of a storm's summary: one link that acknowledges every incident of the
//! storm group still escalated, for the person paged at 3 a.m. about twenty of them.
//!
//! Like an incident's link (`links.rs`, which hands such tokens over here): `GET` shows
//! what it would do (the incidents still escalated, a button) and changes nothing; `POST`
//! acknowledges every incident of the group still escalated when it is pressed, each
//! audited as the link's person, and spends the link in the same transaction. The token
//! is an `escalate::link` token for the action `ack_group`, bound to the group's id.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;

use super::links::{by, refused, same_site, used};
use super::pages::{layout, message};
use super::{page, unavailable, valid_id, Console};
use crate::escalate::link::{self, Action, Link, Refused};
use crate::escalate::message::GROUP_LISTED;
use crate::store::GroupLinkAck;

/// Most incidents one group link acknowledges (as PagerDuty's group key does).
const MAX_MEMBERS: usize = 10_000;

/// The group link `token` carries: `None` when it is not one (the caller treats it as an
/// incident's link), else the link or the page that refuses it.
fn check(c: &Console, token: &str) -> Option<Result<Link, Response>> {
    let loaded = c.ctx.config.get();
    let key = loaded.config.server.link_secret.as_ref()?;
    match link::verify(key.as_bytes(), token, Action::AckGroup, c.ctx.clock.now()) {
        Ok(l) if valid_id(&l.incident) => Some(Ok(l)),
        Ok(_) => Some(Err(refused(StatusCode::FORBIDDEN, Refused::Malformed))),
        // Signed for this action, expired.
        Err(e @ Refused::Expired) => Some(Err(refused(StatusCode::GONE, e))),
        Err(_) => None,
    }
}

/// `GET /ui/a/{token}` for a group link: the incidents it would acknowledge, a button.
pub(super) async fn confirm(c: &Console, token: &str) -> Option<Response> {
    let l = match check(c, token)? {
        Ok(l) => l,
        Err(r) => return Some(r),
    };
    match c.ctx.store.link_used(&l.nonce).await {
        Ok(true) => return Some(used()),
        Ok(false) => {}
        Err(e) => return Some(unavailable(None, e)),
    }
    let (size, members) = match c.ctx.store.group_members(&l.incident, GROUP_LISTED).await {
        Ok(m) => m,
        Err(e) => return Some(unavailable(None, e)),
    };
    let body = html! {
        h1 { "Acknowledge this storm?" }
        p.sub { "Storm group " code { (l.incident) } }
        dl.facts {
            dt { "Action" } dd { "acknowledge every incident of the group still escalated (stops their later escalation tiers)" }
            dt { "As" } dd { (by(&l)) }
            dt { "Link expires" } dd { time { (l.expires.to_rfc3339()) } }
        }
        @if size == 0 {
            p { "No incident of this storm group is still escalated: there is nothing to acknowledge." }
        } @else {
            p { (size) " incidents are still escalated:" }
            ul.members {
                @for m in &members {
                    li {
                        code { (m.id) } " " (m.alertname)
                        @if let Some(i) = m.labels.get("instance") { " on " (i) }
                    }
                }
                @if size as usize > members.len() {
                    li { "… and " (size as usize - members.len()) " more" }
                }
            }
            form.ack method="post" action={ "/ui/a/" (token) } {
                button type="submit" { "Acknowledge all " (size) }
            }
            p { "Nothing happens until you press the button. The link works once." }
        }
    };
    Some(page(
        StatusCode::OK,
        layout(None, "Acknowledge this storm?", body),
    ))
}

/// `POST /ui/a/{token}` for a group link: acknowledges the group's incidents still
/// escalated.
pub(super) async fn perform(c: &Console, headers: &HeaderMap, token: &str) -> Option<Response> {
    let l = match check(c, token)? {
        Ok(l) => l,
        Err(r) => return Some(r),
    };
    let external = c.ctx.config.get().config.server.external_url.clone();
    if !same_site(headers, external.as_deref()) {
        return Some(refused(
            StatusCode::FORBIDDEN,
            "The form was not sent from this medic's page",
        ));
    }
    let who = by(&l);
    let group = &l.incident;
    let done = c
        .ctx
        .store
        .ack_group_by_link(group, &who, &l.nonce, l.expires, MAX_MEMBERS)
        .await;
    let say = |title: &str, text: String| page(StatusCode::OK, message(None, title, &text));
    Some(match done {
        Ok(GroupLinkAck::AlreadyUsed) => used(),
        Ok(GroupLinkAck::Done {
            acknowledged,
            already,
        }) if acknowledged.is_empty() => say(
            "Nothing to acknowledge",
            format!(
                "No incident of storm group {group} is still escalated ({already} already acknowledged). Nothing was changed."
            ),
        ),
        Ok(GroupLinkAck::Done {
            acknowledged,
            already,
        }) => {
            tracing::info!(group = %group, by = %who, incidents = acknowledged.len(), "storm group acknowledged through a signed link");
            say(
                "Acknowledged",
                format!(
                    "{} incidents of storm group {group} are acknowledged by {who}: {}. Later escalation tiers are cancelled.{}",
                    acknowledged.len(),
                    acknowledged.join(", "),
                    if already > 0 {
                        format!(" Acknowledged before: {already}.")
                    } else {
                        String::new()
                    }
                ),
            )
        }
        Err(e) => unavailable(None, e),
    })
}
