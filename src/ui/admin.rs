//! The console's admin pages: the guards (breakers and the pause switch) and the audit
//! chain's state. Anyone logged in reads them; only `admin` acts, through CSRF-checked
//! forms, each change audited with the session's name. A change takes effect the way the
//! API's does: in the running guards at once, persisted in the store, the runner woken.

use std::collections::VecDeque;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::pages::{self, layout, User};
use super::session::same_token;
use super::{forbidden, page, see_other, unavailable, CsrfForm, Shared};
use crate::audit::{Broken, Entry, Verifier};
use crate::config::Role;
use crate::guard::{BreakerEntry, Pause};

/// Newest audit entries shown.
const NEWEST: usize = 50;
/// Entries read from the store at a time while verifying.
const AUDIT_PAGE: usize = 1000;
/// Longest pause reason kept.
const MAX_REASON: usize = 200;

pub(super) async fn guards(State(c): Shared, headers: HeaderMap) -> Response {
    let Some((_, _, user)) = c.user(&headers).await else {
        return see_other("/ui/login");
    };
    let breakers = c.ctx.guards.breakers();
    let paused = c.ctx.guards.paused();
    page(
        StatusCode::OK,
        guards_page(&user, &breakers, paused.as_ref()),
    )
}

/// The user of an admin form, once the role and CSRF token are checked.
async fn admin(c: &super::Console, headers: &HeaderMap, csrf: &str) -> Result<User, Box<Response>> {
    let Some((_, session, user)) = c.user(headers).await else {
        return Err(Box::new(forbidden(None, "Log in first.")));
    };
    if !user.role.may(Role::Admin) {
        return Err(Box::new(forbidden(
            Some(&user),
            "Only an admin may change the guards.",
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
pub(super) struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

pub(super) async fn reset_breaker(
    State(c): Shared,
    headers: HeaderMap,
    Form(form): Form<ResetForm>,
) -> Response {
    let user = match admin(&c, &headers, &form.csrf).await {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let Some(entry) = c.ctx.guards.reset(&form.id) else {
        return page(
            StatusCode::NOT_FOUND,
            pages::message(Some(&user), "No such breaker", "That breaker is not known."),
        );
    };
    let detail = json!({ "reset_by": user.name, "via": "console" });
    if let Err(e) = c.ctx.store.save_breaker(entry, detail).await {
        return unavailable(Some(&user), e);
    }
    c.ctx.wake.wake();
    tracing::info!(breaker = %form.id, by = %user.name, "breaker reset in the console");
    see_other("/ui/guards")
}

#[derive(Deserialize)]
pub(super) struct PauseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn pause(
    State(c): Shared,
    headers: HeaderMap,
    Form(form): Form<PauseForm>,
) -> Response {
    let user = match admin(&c, &headers, &form.csrf).await {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let reason: String = form
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    let p = Pause {
        by: user.name.clone(),
        at: c.ctx.clock.now(),
        reason: if reason.trim().is_empty() {
            "paused in the console".to_owned()
        } else {
            reason
        },
    };
    if let Err(e) = c.ctx.store.set_pause(Some(p.clone()), &p.by).await {
        return unavailable(Some(&user), e);
    }
    c.ctx.guards.set_paused(Some(p.clone()));
    c.ctx.metrics.paused.set(1);
    tracing::warn!(by = %p.by, reason = %p.reason, "automation paused in the console");
    see_other("/ui/guards")
}

pub(super) async fn resume(
    State(c): Shared,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let user = match admin(&c, &headers, &form.csrf).await {
        Ok(u) => u,
        Err(r) => return *r,
    };
    if let Err(e) = c.ctx.store.set_pause(None, &user.name).await {
        return unavailable(Some(&user), e);
    }
    c.ctx.guards.set_paused(None);
    c.ctx.metrics.paused.set(0);
    c.ctx.wake.wake();
    tracing::warn!(by = %user.name, "automation resumed in the console");
    see_other("/ui/guards")
}

fn guards_page(user: &User, breakers: &[BreakerEntry], paused: Option<&Pause>) -> Markup {
    let admin = user.role.may(Role::Admin);
    layout(
        Some(user),
        "Guards",
        html! {
            h1 { "Guards" }
            h2 { "Automation" }
            @match paused {
                Some(p) => {
                    p.paused { "Paused by " (p.by) " at " time { (p.at.to_rfc3339()) } ": " (p.reason) }
                    @if admin {
                        form method="post" action="/ui/guards/resume" {
                            input type="hidden" name="csrf" value=(user.csrf);
                            button type="submit" { "Resume" }
                        }
                    }
                }
                None => {
                    p { "Running: runbooks start as alerts arrive." }
                    @if admin {
                        form method="post" action="/ui/guards/pause" {
                            input type="hidden" name="csrf" value=(user.csrf);
                            label { "Reason " input type="text" name="reason" maxlength="200"; }
                            button type="submit" { "Pause" }
                        }
                    }
                }
            }
            h2 { "Breakers" }
            @if breakers.is_empty() {
                p { "No breaker has recorded a run." }
            } @else {
                table.breakers {
                    thead { tr { th { "Route" } th { "Key" } th { "State" } th { "Since" } th { "Failures" } th {} } }
                    tbody {
                        @for b in breakers {
                            tr {
                                td { (b.route) }
                                td { @for (k, v) in &b.key { code { (k) "=" (v) } " " } }
                                td { span class={ "breaker breaker-" (b.breaker.state.as_str()) } { (b.breaker.state.as_str().replace('_', "-")) } }
                                td { @if let Some(at) = b.breaker.opened_at { time { (at.to_rfc3339()) } } }
                                td { (b.breaker.consecutive_failures) }
                                td {
                                    @if admin && b.breaker != crate::guard::breaker::Breaker::default() {
                                        form.inline method="post" action="/ui/guards/breakers/reset" {
                                            input type="hidden" name="csrf" value=(user.csrf);
                                            input type="hidden" name="id" value=(b.id);
                                            button type="submit" { "Reset" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The chain read from the start: how many entries, the head, the first break, and the
/// newest entries (newest first).
struct Chain {
    count: u64,
    head: String,
    broken: Option<Broken>,
    newest: Vec<Entry>,
}

async fn read_chain(store: &crate::store::Store) -> Result<Chain, crate::store::StoreError> {
    let mut verifier = Verifier::default();
    let mut broken = None;
    let mut newest: VecDeque<Entry> = VecDeque::with_capacity(NEWEST + 1);
    let mut after = 0;
    loop {
        let batch = store.audit_page(after, AUDIT_PAGE).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for entry in batch {
            if broken.is_none() {
                if let Err(b) = verifier.check(&entry) {
                    broken = Some(b);
                }
            }
            newest.push_back(entry);
            if newest.len() > NEWEST {
                newest.pop_front();
            }
        }
    }
    let (count, head) = verifier.summary();
    Ok(Chain {
        count,
        head: head.to_owned(),
        broken,
        newest: newest.into_iter().rev().collect(),
    })
}

pub(super) async fn audit(State(c): Shared, headers: HeaderMap) -> Response {
    let Some((_, _, user)) = c.user(&headers).await else {
        return see_other("/ui/login");
    };
    match read_chain(&c.ctx.store).await {
        Ok(chain) => page(StatusCode::OK, audit_page(&user, &chain)),
        Err(e) => unavailable(Some(&user), e),
    }
}

fn audit_page(user: &User, chain: &Chain) -> Markup {
    layout(
        Some(user),
        "Audit",
        html! {
            h1 { "Audit log" }
            dl.facts {
                dt { "Chain" }
                dd {
                    @match &chain.broken {
                        None => span.intact { "intact" },
                        Some(b) => span.broken { "BROKEN: " (b) },
                    }
                }
                dt { "Entries verified" } dd { (chain.count) }
                dt { "Head hash" } dd { code { (chain.head) } }
            }
            h2 { "Newest entries" }
            table.audit {
                thead { tr { th { "#" } th { "At" } th { "Event" } th { "Incident" } th { "Detail" } } }
                tbody {
                    @for e in &chain.newest {
                        tr {
                            td { (e.seq) }
                            td { time { (e.at) } }
                            td { (e.event) }
                            td {
                                @if let Some(id) = &e.incident_id {
                                    a href={ "/ui/incidents/" (id) } { code { (id) } }
                                }
                            }
                            td { code { (e.detail) } }
                        }
                    }
                }
            }
        },
    )
}
