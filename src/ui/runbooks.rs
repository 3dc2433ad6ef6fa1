//! The console's runbook pages: each runbook of the configuration in force with the
//! routes that run it, and one runbook's source (escaped), its last runs and the success
//! rate of all its runs (counted by the store, over every incident it ran for).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{html, Markup};

use super::pages::{layout, User};
use super::{not_found, page, see_other, unavailable, Shared};

use crate::config::{Config, RunbookTarget};
use crate::store::RunbookRecord;

/// Runs shown on a runbook's page.
const LAST_RUNS: usize = 50;

/// The routes that run `name`: by file, or naming it through an annotation.
fn routes_of(config: &Config, name: &str) -> Vec<(String, String)> {
    config
        .routes
        .iter()
        .filter_map(|r| match &r.target {
            RunbookTarget::File(f) if f == name => Some((r.name.clone(), String::new())),
            RunbookTarget::Annotation(a) => {
                Some((r.name.clone(), format!("when annotation {a:?} names it")))
            }
            _ => None,
        })
        .collect()
}

pub(super) async fn list(State(c): Shared, headers: HeaderMap) -> Response {
    let Some((_, _, user)) = c.user(&headers).await else {
        return see_other("/ui/login");
    };
    let loaded = c.ctx.config.get();
    let rows: Vec<(String, Vec<(String, String)>)> = loaded
        .catalog
        .iter()
        .map(|r| (r.name.clone(), routes_of(&loaded.config, &r.name)))
        .collect();
    page(StatusCode::OK, list_page(&user, &rows))
}

fn list_page(user: &User, rows: &[(String, Vec<(String, String)>)]) -> Markup {
    layout(
        Some(user),
        "Runbooks",
        html! {
            h1 { "Runbooks" }
            @if rows.is_empty() {
                p { "No runbook is loaded." }
            } @else {
                table.runbooks {
                    thead { tr { th { "Runbook" } th { "Routes" } } }
                    tbody {
                        @for (name, routes) in rows {
                            tr {
                                td { a href={ "/ui/runbooks/" (percent(name)) } { (name) } }
                                td {
                                    @for (route, how) in routes {
                                        a href={ "/ui?route=" (percent(route)) } { (route) }
                                        @if !how.is_empty() { " (" (how) ")" }
                                        " "
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

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(super) async fn show(
    State(c): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some((_, _, user)) = c.user(&headers).await else {
        return see_other("/ui/login");
    };
    let loaded = c.ctx.config.get();
    let Some(runbook) = loaded.catalog.get(&name) else {
        return not_found().await;
    };
    let source = runbook.source.clone();
    let routes = routes_of(&loaded.config, &name);
    drop(loaded);
    let record = match c.ctx.store.runbook_record(&name, LAST_RUNS).await {
        Ok(r) => r,
        Err(e) => return unavailable(Some(&user), e),
    };
    page(
        StatusCode::OK,
        show_page(&user, &name, &source, &routes, &record),
    )
}

fn show_page(
    user: &User,
    name: &str,
    source: &str,
    routes: &[(String, String)],
    record: &RunbookRecord,
) -> Markup {
    let (fixed, finished) = (record.auto_remediated, record.finished);
    let running = record.runs - finished;
    layout(
        Some(user),
        name,
        html! {
            h1 { "Runbook " code { (name) } }
            dl.facts {
                dt { "Routes" }
                dd {
                    @for (route, how) in routes {
                        (route) @if !how.is_empty() { " (" (how) ")" } " "
                    }
                }
                dt { "Success rate" }
                dd {
                    @if finished == 0 {
                        "no finished run yet"
                    } @else {
                        (fixed) " auto-remediated of " (finished) " finished runs ("
                        (fixed * 100 / finished) "%)"
                    }
                    @if running > 0 { "; " (running) " not finished yet" }
                }
            }
            h2 { "Source" }
            pre.source { code { (source) } }
            h2 { "Last runs" @if record.runs as usize > record.last.len() { " (newest " (record.last.len()) " of " (record.runs) ")" } }
            table.runs {
                thead { tr { th { "Incident" } th { "Alert" } th { "State" } th { "Outcome" } th { "Started" } } }
                tbody {
                    @for i in &record.last {
                        tr {
                            td { a href={ "/ui/incidents/" (i.id) } { code { (i.id) } } }
                            td { (i.alertname) }
                            td { (i.state.as_str()) }
                            td { @if let Some(o) = i.outcome { (o.as_str()) } }
                            td { time { (i.started_at) } }
                        }
                    }
                }
            }
        },
    )
}
