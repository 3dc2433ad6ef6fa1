//! Approval in the console: the plan of a run that waits (or waited) for approval on its
//! incident's page ([`panel`]), the Approve and Reject forms for responders and admins
//! (CSRF-checked, decided in the logged-in person's name), and the pages of the signed
//! approve and reject links of approval requests (`/ui/approve/{token}`,
//! `/ui/reject/{token}`: a confirmation page with the plan on GET, the decision on POST,
//! once; the token is the credential, as for ack links, see `links.rs`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::links::{refused, same_site, used};
use super::pages::{self, layout, User};
use super::session::same_token;
use super::{forbidden, not_found, page, see_other, unavailable, valid_id, Console, Shared};
use crate::config::Role;
use crate::escalate::link::{self, Action, Link, Refused};
use crate::incident::State as IncidentState;
use crate::store::{Decided, Decision, Incident, Via};

/// Longest reason kept from a form.
const MAX_REASON: usize = 2000;

/// The approval part of an incident's page: the plan, the deadline or the decision, and
/// for a responder or admin while it waits, the forms to decide.
pub(super) fn panel(user: &User, i: &Incident) -> Markup {
    let Some(a) = &i.approval else {
        return html! {};
    };
    let waiting = i.state == IncidentState::AwaitingApproval;
    let may = waiting && user.role.may(Role::Responder);
    html! {
        h2 #approval { "Approval" }
        dl.facts {
            @if waiting { dt { "Decide by" } dd { time { (a.until) } " (then it is escalated approval_timeout)" } }
            @if let Some(by) = &a.approved_by {
                dt { "Approved by" } dd { (by) @if let Some(at) = &a.approved_at { " at " time { (at) } } }
            }
        }
        (plan(i))
        @if may && a.plan.is_some() {
            form.ack.inline method="post" action={ "/ui/incidents/" (i.id) "/approve" } {
                input type="hidden" name="csrf" value=(user.csrf);
                button type="submit" { "Approve and run this plan" }
            }
            form.reject method="post" action={ "/ui/incidents/" (i.id) "/reject" } {
                input type="hidden" name="csrf" value=(user.csrf);
                label { "Reason " input type="text" name="reason" maxlength="2000" placeholder="why not (optional)"; }
                " "
                button type="submit" { "Reject" }
            }
        } @else if may {
            p { "The plan is being made: nothing can be approved before it is shown. Reload in a moment." }
            form.reject method="post" action={ "/ui/incidents/" (i.id) "/reject" } {
                input type="hidden" name="csrf" value=(user.csrf);
                label { "Reason " input type="text" name="reason" maxlength="2000"; }
                " "
                button type="submit" { "Reject" }
            }
        }
    }
}

/// The plan, step by step, and how its dry run ended.
fn plan(i: &Incident) -> Markup {
    let Some(p) = i.approval.as_ref().and_then(|a| a.plan.as_ref()) else {
        return html! { p { "No plan yet: a dry run of the runbook makes it when the incident opens." } };
    };
    html! {
        h3 { "Plan" }
        p.sub { "A dry run of " code { (p.runbook) } " (" code.hash { (p.sha256.get(..12).unwrap_or(&p.sha256)) } "). The approved run is bound to these steps, in order: a step that differs is stopped before it acts, off_plan." }
        ol.plan {
            @for s in &p.steps { li { code { (s.to_string()) } } }
        }
        @if p.steps.is_empty() { p { "No step that acts: the runbook would only log, sleep or query." } }
        p { (p.end_line()) }
    }
}

#[derive(Deserialize)]
pub(super) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// A form's reason: trimmed, control characters dropped, bounded; `None` when empty.
fn reason_of(text: &str) -> Option<String> {
    let r: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    (!r.is_empty()).then_some(r)
}

pub(super) async fn approve(
    state: Shared,
    headers: HeaderMap,
    path: Path<String>,
    form: Form<DecisionForm>,
) -> Response {
    decide(state, headers, path, form, true).await
}

pub(super) async fn reject(
    state: Shared,
    headers: HeaderMap,
    path: Path<String>,
    form: Form<DecisionForm>,
) -> Response {
    decide(state, headers, path, form, false).await
}

async fn decide(
    State(c): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
    approve: bool,
) -> Response {
    let Some((_, session, user)) = c.user(&headers) else {
        return forbidden(None, "Log in first.");
    };
    if !user.role.may(Role::Responder) {
        return forbidden(Some(&user), "Your role may not decide on runs.");
    }
    if !same_token(&session.csrf, &form.csrf) {
        return forbidden(Some(&user), "The form did not come from this session.");
    }
    if !valid_id(&id) {
        return not_found().await;
    }
    let decision = Decision {
        approve,
        by: user.name.clone(),
        role: Some(user.role),
        reason: reason_of(&form.reason),
        via: Via::Console,
    };
    match c.ctx.store.decide(&id, decision).await {
        Ok(Decided::Approved | Decided::Rejected) => {
            tracing::info!(incident = %id, by = %user.name, approve, "run decided in the console");
            if approve {
                c.ctx.wake.wake();
            }
            see_other(&format!("/ui/incidents/{id}"))
        }
        Ok(Decided::NotFound) => not_found().await,
        Ok(other) => answer(Some(&user), &id, other),
        Err(e) => unavailable(Some(&user), e),
    }
}

/// The page for a decision that was not made.
fn answer(user: Option<&User>, id: &str, d: Decided) -> Response {
    let (status, text) = match d {
        Decided::NotAwaiting(state) => (
            StatusCode::CONFLICT,
            format!("Incident {id} is {}: it no longer waits for a decision. Nothing was changed.", state.as_str()),
        ),
        Decided::NoPlanYet => (
            StatusCode::CONFLICT,
            format!("Incident {id}'s plan is not made yet: nothing is approved before it can be shown. Try again in a moment."),
        ),
        Decided::NotAnApprover => (
            StatusCode::FORBIDDEN,
            format!("You may not decide on incident {id}: its route's approvers do not list you. Nothing was changed."),
        ),
        Decided::LinkUsed => return used(),
        Decided::NotFound => (StatusCode::NOT_FOUND, format!("No incident {id}.")),
        Decided::Approved | Decided::Rejected => (StatusCode::OK, "Decided.".to_string()),
    };
    page(status, pages::message(user, "Not decided", &text))
}

/// The link `token` carries for `action`, or the refusal page.
fn check(c: &Console, token: &str, action: Action) -> Result<Link, Box<Response>> {
    let loaded = c.ctx.config.get();
    let Some(key) = &loaded.config.server.link_secret else {
        return Err(Box::new(page(
            StatusCode::NOT_FOUND,
            pages::message(None, "Not found", "This medic does not sign links."),
        )));
    };
    match link::verify(key.as_bytes(), token, action, c.ctx.clock.now()) {
        Ok(l) if valid_id(&l.incident) => Ok(l),
        Ok(_) => Err(Box::new(refused(StatusCode::FORBIDDEN, Refused::Malformed))),
        Err(e @ Refused::Expired) => Err(Box::new(refused(StatusCode::GONE, e))),
        Err(e) => Err(Box::new(refused(StatusCode::FORBIDDEN, e))),
    }
}

pub(super) async fn confirm_approve(state: Shared, path: Path<String>) -> Response {
    confirm(state, path, Action::Approve).await
}

pub(super) async fn confirm_reject(state: Shared, path: Path<String>) -> Response {
    confirm(state, path, Action::Reject).await
}

/// `GET` of a signed approve or reject link: what it would do, with the plan, and the
/// button. No side effect.
async fn confirm(State(c): Shared, Path(token): Path<String>, action: Action) -> Response {
    let l = match check(&c, &token, action) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    match c.ctx.store.link_used(&l.nonce).await {
        Ok(true) => return used(),
        Ok(false) => {}
        Err(e) => return unavailable(None, e),
    }
    let incident = match c.ctx.store.incident(&l.incident).await {
        Ok(Some(i)) => i,
        Ok(None) => return refused(StatusCode::NOT_FOUND, "The link's incident does not exist"),
        Err(e) => return unavailable(None, e),
    };
    let approve = action == Action::Approve;
    let verb = if approve { "Approve" } else { "Reject" };
    let waiting = incident.state == IncidentState::AwaitingApproval;
    let ready = !approve || incident.approval.as_ref().is_some_and(|a| a.plan.is_some());
    let body = html! {
        h1 { (verb) " the run for " (incident.alertname) "?" }
        p.sub { "Incident " code { (incident.id) } " " span class={ "state state-" (incident.state.as_str()) } { (incident.state.as_str()) } }
        dl.facts {
            dt { "Action" } dd { @if approve { "approve: medic runs exactly this plan" } @else { "reject: nothing runs, and it is escalated rejected" } }
            @if let Some(r) = &incident.runbook { dt { "Runbook" } dd { (r) } }
            @if let Some(a) = &incident.approval { dt { "Decide by" } dd { time { (a.until) } } }
            dt { "As" } dd { "link:" (l.person) }
            dt { "Link expires" } dd { time { (l.expires.to_rfc3339()) } }
        }
        (plan(&incident))
        @if waiting && ready {
            form.ack method="post" action={ "/ui/" (action.as_str()) "/" (token) } {
                @if !approve { label { "Reason " input type="text" name="reason" maxlength="2000"; } " " }
                button type="submit" { (verb) }
            }
            p { "Nothing happens until you press the button. The link works once." }
        } @else if waiting {
            p { "The plan is not made yet: open the link again in a moment." }
        } @else {
            p { "This incident no longer waits for a decision: it is " (incident.state.as_str()) "." }
        }
    };
    page(StatusCode::OK, layout(None, &format!("{verb}?"), body))
}

pub(super) async fn perform_approve(
    state: Shared,
    headers: HeaderMap,
    path: Path<String>,
    body: Bytes,
) -> Response {
    perform(state, headers, path, body, Action::Approve).await
}

pub(super) async fn perform_reject(
    state: Shared,
    headers: HeaderMap,
    path: Path<String>,
    body: Bytes,
) -> Response {
    perform(state, headers, path, body, Action::Reject).await
}

/// `POST` of a signed approve or reject link: the decision, in the name `link:<channel>`,
/// once. The body is read as a form whatever its content type, and may be empty.
async fn perform(
    State(c): Shared,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: Bytes,
    action: Action,
) -> Response {
    let l = match check(&c, &token, action) {
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
    let approve = action == Action::Approve;
    let who = format!("link:{}", l.person);
    let decision = Decision {
        approve,
        by: who.clone(),
        role: None,
        // The form's `reason`, whatever the request's content type says (a bare POST, as a
        // script sends it, has none).
        reason: form_urlencoded::parse(&body)
            .find(|(k, _)| k == "reason")
            .and_then(|(_, v)| reason_of(&v)),
        via: Via::Link {
            nonce: l.nonce.clone(),
            expires_at: l.expires,
        },
    };
    let id = &l.incident;
    let say = |title: &str, text: String| page(StatusCode::OK, pages::message(None, title, &text));
    match c.ctx.store.decide(id, decision).await {
        Ok(Decided::Approved) => {
            tracing::info!(incident = %id, by = %who, "run approved through a signed link");
            c.ctx.wake.wake();
            say("Approved", format!("Incident {id}: the plan is approved by {who}. medic runs it, bound to that plan (guards still apply)."))
        }
        Ok(Decided::Rejected) => {
            tracing::info!(incident = %id, by = %who, "run rejected through a signed link");
            say(
                "Rejected",
                format!(
                    "Incident {id}: the run is rejected by {who}. Nothing runs; it is escalated."
                ),
            )
        }
        Ok(Decided::NotFound) => {
            refused(StatusCode::NOT_FOUND, "The link's incident does not exist")
        }
        Ok(other) => answer(None, id, other),
        Err(e) => unavailable(None, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, PlanEnd, PlannedStep};
    use crate::store::{Approval, TimelineEntry};
    use serde_json::json;

    fn entry(event: &str, detail: serde_json::Value) -> TimelineEntry {
        TimelineEntry {
            seq: 0,
            at: "2026-11-23T10:00:01Z".into(),
            event: event.into(),
            detail,
        }
    }

    fn incident(state: IncidentState, timeline: Vec<TimelineEntry>) -> Incident {
        Incident {
            id: "01INC".into(),
            fingerprint: "f".into(),
            alertname: "DbDown".into(),
            labels: Default::default(),
            annotations: Default::default(),
            state,
            reason: None,
            outcome: None,
            route: Some("db".into()),
            runbook: Some("fix.rhai".into()),
            generator_url: String::new(),
            started_at: "2026-11-23T10:00:00Z".into(),
            updated_at: "2026-11-23T10:00:00Z".into(),
            last_seen_at: "2026-11-23T10:00:00Z".into(),
            resolved_at: None,
            deliveries: 1,
            attempts: 0,
            message: None,
            escalation_group: None,
            external_url: String::new(),
            verify_until: None,
            escalated_at: None,
            acknowledged_by: None,
            approval: Some(Approval {
                until: "2026-11-23T10:15:00Z".into(),
                plan: Some(Plan {
                    runbook: "fix.rhai".into(),
                    sha256: "0123456789abcdef".into(),
                    steps: vec![PlannedStep::exec(
                        "/bin/fix",
                        &["restart".into(), "<db1>".into()],
                    )],
                    truncated: false,
                    end: PlanEnd::Completed,
                }),
                approved_by: None,
                approved_at: None,
            }),
            timeline: Some(timeline),
        }
    }

    fn user(role: Role) -> User {
        User {
            name: "rita".into(),
            role,
            csrf: "tok".into(),
        }
    }

    #[test]
    fn a_waiting_run_shows_its_plan_and_the_forms_to_those_who_may_decide() {
        let i = incident(IncidentState::AwaitingApproval, vec![]);
        let page = pages::incident(&user(Role::Responder), &i).into_string();
        assert!(
            page.contains("<code>exec /bin/fix restart &lt;db1&gt;</code>"),
            "{page}"
        );
        assert!(
            page.contains("action=\"/ui/incidents/01INC/approve\""),
            "{page}"
        );
        assert!(page.contains("name=\"csrf\" value=\"tok\""), "{page}");
        let viewer = pages::incident(&user(Role::Viewer), &i).into_string();
        assert!(viewer.contains("exec /bin/fix restart"), "{viewer}");
        assert!(!viewer.contains("/approve"), "{viewer}");
        let decided = pages::incident(&user(Role::Admin), &incident(IncidentState::Queued, vec![]));
        assert!(!decided.into_string().contains("/approve\""));
    }

    #[test]
    fn an_off_plan_step_is_shown_with_the_planned_one_and_later_steps_stay_in_place() {
        let timeline = vec![
            entry(
                "step_started",
                json!({"step": "exec", "args": {"program": "probe", "args": []}}),
            ),
            entry(
                "step_finished",
                json!({"step": "exec", "code": 0, "stdout": "primary"}),
            ),
            entry(
                "step_off_plan",
                json!({"step": "exec", "position": 2,
                "planned": "exec fix restart", "attempted": "exec fix failover"}),
            ),
            entry(
                "step_started",
                json!({"step": "exec", "args": {"program": "later", "args": []}}),
            ),
            entry(
                "step_finished",
                json!({"step": "exec", "code": 0, "stdout": "second run"}),
            ),
        ];
        let page = pages::incident(
            &user(Role::Viewer),
            &incident(IncidentState::Escalated, timeline),
        )
        .into_string();
        let off = page.find("<code>exec fix failover</code>").expect(&page);
        assert!(
            page[off..].contains("off plan (the plan's step 2 is `exec fix restart`)"),
            "{page}"
        );
        let later = page.find("<code>exec later</code>").expect(&page);
        assert!(page[later..].contains("second run"), "{page}");
    }

    #[test]
    fn reasons_are_bounded_and_one_line() {
        assert_eq!(reason_of("  "), None);
        assert_eq!(reason_of(" db is fine\n"), Some("db is fine".into()));
        assert_eq!(reason_of("a\u{0}b\rc"), Some("abc".into()));
        assert_eq!(reason_of(&"x".repeat(5000)).unwrap().len(), MAX_REASON);
    }
}
