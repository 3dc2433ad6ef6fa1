//! The incident page's actions besides the ack: a note (`responder` and `admin`) and a
//! re-run of the runbook (`admin`), each a CSRF-checked form acting in the logged-in
//! person's name, never one sent with the form; and what the page shows of them: the
//! failed step near the top, notes and re-runs in the timeline.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::{self, User};
use super::session::same_token;
use super::{forbidden, not_found, page, see_other, unavailable, valid_id, CsrfForm, Shared};
use crate::audit::Event;
use crate::config::Role;
use crate::escalate::message::Message;
use crate::incident::State as IncidentState;
use crate::store::{Incident, NoteText, Rerun, TimelineEntry, MAX_NOTE};

/// The user of a form, once logged in, allowed (`role`, to do `what`) and the CSRF token
/// checked.
async fn acting(
    c: &super::Console,
    headers: &HeaderMap,
    csrf: &str,
    role: Role,
    what: &str,
) -> Result<User, Box<Response>> {
    let Some((_, session, user)) = c.user(headers).await else {
        return Err(Box::new(forbidden(None, "Log in first.")));
    };
    if !user.role.may(role) {
        return Err(Box::new(forbidden(
            Some(&user),
            &format!("Your role may not {what}."),
        )));
    }
    if !same_token(&session.csrf, csrf) {
        return Err(Box::new(forbidden(
            Some(&user),
            "The form did not come from this session.",
        )));
    }
    Ok(user)
}

#[derive(Deserialize)]
pub(super) struct NoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
}

pub(super) async fn note(
    State(c): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Response {
    let user = match acting(&c, &headers, &form.csrf, Role::Responder, "add notes").await {
        Ok(u) => u,
        Err(r) => return *r,
    };
    if !valid_id(&id) {
        return not_found().await;
    }
    let text = match NoteText::parse(&form.text) {
        Ok(t) => t,
        Err(e) => {
            return page(
                StatusCode::BAD_REQUEST,
                pages::message(Some(&user), "Note not added", &e.to_string()),
            )
        }
    };
    match c
        .ctx
        .store
        .add_note(&id, &user.name, "console", &text)
        .await
    {
        Ok(true) => {
            tracing::info!(incident = %id, by = %user.name, "note added in the console");
            see_other(&format!("/ui/incidents/{id}#timeline"))
        }
        Ok(false) => not_found().await,
        Err(e) => unavailable(Some(&user), e),
    }
}

pub(super) async fn rerun(
    State(c): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let user = match acting(&c, &headers, &form.csrf, Role::Admin, "re-run runbooks").await {
        Ok(u) => u,
        Err(r) => return *r,
    };
    if !valid_id(&id) {
        return not_found().await;
    }
    match c.ctx.store.rerun(&id, &user.name, "console").await {
        Ok(Rerun::Queued) => {
            c.ctx.wake.wake();
            tracing::info!(incident = %id, by = %user.name, "runbook re-run requested in the console");
            see_other(&format!("/ui/incidents/{id}"))
        }
        Ok(Rerun::NotFound) => not_found().await,
        Ok(Rerun::Refused { state, why }) => page(
            StatusCode::CONFLICT,
            pages::message(
                Some(&user),
                "Not re-run",
                &format!("Incident {id} is {}: {why}.", state.as_str()),
            ),
        ),
        Err(e) => unavailable(Some(&user), e),
    }
}

/// Whether the incident's runbook may be re-run from its page now (one that waited for
/// approval is not: a re-run would skip it).
fn may_rerun(user: &User, i: &Incident) -> bool {
    user.role.may(Role::Admin)
        && matches!(
            i.state,
            IncidentState::Escalated | IncidentState::Acknowledged
        )
        && i.runbook.is_some()
        && i.approval.is_none()
}

/// The buttons beside the ack: the re-run, for an admin.
pub(super) fn buttons(user: &User, i: &Incident) -> Markup {
    html! {
        @if may_rerun(user, i) {
            form.rerun method="post" action={ "/ui/incidents/" (i.id) "/rerun" } {
                input type="hidden" name="csrf" value=(user.csrf);
                button type="submit" { "Re-run runbook" }
            }
        }
    }
}

/// The last failed step of an incident waiting for a person, with its output, where they
/// look first. (Once it runs again or resolves, the timeline keeps it.)
pub(super) fn failed_step(i: &Incident, message: &Message) -> Markup {
    let waiting = matches!(
        i.state,
        IncidentState::Escalated | IncidentState::Acknowledged
    );
    html! {
        @if let Some(s) = message.steps.iter().rev().find(|s| waiting && !s.ok) {
            section.failed-step {
                h2 { "Failed step" }
                div.step.failed {
                    code { (s.what) }
                    " → " (s.result)
                    @if let Some(ms) = s.duration_ms { " in " (ms) " ms" }
                    @if !s.output.is_empty() { pre { (s.output) } }
                }
            }
        }
    }
}

/// What a timeline entry of a note or a re-run says, beside its event's name.
pub(super) fn timeline_detail(e: &TimelineEntry) -> Markup {
    let text = |k: &str| e.detail.get(k).and_then(|v| v.as_str()).unwrap_or("");
    html! {
        @match Event::parse(&e.event) {
            Some(Event::NoteAdded) => {
                " by " (text("by"))
                blockquote.note { (text("text")) }
            }
            Some(Event::RerunRequested | Event::IncidentAcknowledged) if !text("by").is_empty() => {
                " by " (text("by"))
            }
            _ => {}
        }
    }
}

/// The note form, for a responder or an admin.
pub(super) fn note_form(user: &User, i: &Incident) -> Markup {
    html! {
        @if user.role.may(Role::Responder) {
            form.note method="post" action={ "/ui/incidents/" (i.id) "/note" } {
                input type="hidden" name="csrf" value=(user.csrf);
                label {
                    "Add a note (as " (user.name) ")"
                    textarea name="text" rows="3" maxlength=(MAX_NOTE) required {}
                }
                button type="submit" { "Add note" }
            }
        }
    }
}
