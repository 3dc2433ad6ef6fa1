//! The console's postmortem page, for any logged-in role: the draft of an incident (see
//! `crate::postmortem`) in a `<pre>`, a Download link (a plain GET answered as a Markdown
//! attachment, so it works without JavaScript) and a Copy button (`postmortem.js`, shown
//! only when JavaScript runs). Times are in the zone of `?tz=` (an IANA name); without
//! one, UTC, and the script asks again in the browser's own zone.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::pages::{layout, User};
use super::{not_found, page, see_other, unavailable, Console, Shared};
use crate::postmortem::{draft, valid_id, Settings, Zone};

/// The page's query: the time zone.
#[derive(Deserialize, Default)]
pub(super) struct DraftQuery {
    #[serde(default)]
    tz: String,
}

/// The zone asked for (UTC when none), and whether one was.
fn zone_of(q: &DraftQuery) -> Result<(Zone, bool), String> {
    match q.tz.trim() {
        "" => Ok((Zone::UTC, false)),
        name => Zone::parse(name)
            .map(|z| (z, true))
            .map_err(|e| e.to_string()),
    }
}

/// What a request for incident `id`'s draft gets: its text, or the answer to send.
async fn written(
    c: &Console,
    headers: &HeaderMap,
    id: &str,
    q: &DraftQuery,
) -> Result<(User, Zone, bool, String), Response> {
    let Some((_, _, user)) = c.user(headers).await else {
        return Err(see_other("/ui/login"));
    };
    if !valid_id(id) {
        return Err(not_found().await);
    }
    let (zone, chosen) = match zone_of(q) {
        Ok(z) => z,
        Err(e) => {
            return Err(page(
                StatusCode::BAD_REQUEST,
                super::pages::message(Some(&user), "Unknown time zone", &e),
            ))
        }
    };
    let settings = Settings::from_config(&c.ctx.config.get().config);
    match draft(&c.ctx.store, id, settings, &zone, c.ctx.clock.now()).await {
        Ok(Some(text)) => Ok((user, zone, chosen, text)),
        Ok(None) => Err(not_found().await),
        Err(e) => Err(unavailable(Some(&user), e)),
    }
}

/// `GET /ui/incidents/{id}/postmortem`
pub(super) async fn show(
    State(c): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DraftQuery>,
) -> Response {
    match written(&c, &headers, &id, &q).await {
        Ok((user, zone, chosen, text)) => {
            page(StatusCode::OK, view(&user, &id, &zone, chosen, &text))
        }
        Err(r) => r,
    }
}

/// `GET /ui/incidents/{id}/postmortem.md`: the draft as a file to keep.
pub(super) async fn download(
    State(c): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DraftQuery>,
) -> Response {
    match written(&c, &headers, &id, &q).await {
        Ok((_, _, _, text)) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    "text/markdown; charset=utf-8".to_string(),
                ),
                // `valid_id` allows only letters, digits, `-` and `_` in the name.
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"postmortem-{id}.md\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            ],
            text,
        )
            .into_response(),
        Err(r) => r,
    }
}

/// `GET /ui/static/postmortem.js`
pub(super) async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("postmortem.js"),
    )
        .into_response()
}

fn view(user: &User, id: &str, zone: &Zone, chosen: bool, text: &str) -> Markup {
    let tz = percent_encoding::utf8_percent_encode(zone.name(), percent_encoding::NON_ALPHANUMERIC);
    let base = format!("/ui/incidents/{id}/postmortem");
    layout(
        Some(user),
        &format!("Postmortem draft {id}"),
        html! {
            h1 { "Postmortem draft" }
            p.sub { "Incident " a href={ "/ui/incidents/" (id) } { code { (id) } } }
            p {
                "A blameless draft in Markdown, written from the incident's record and its audit log "
                "(for an incident of a storm, from the whole group). Keep it beside your team's "
                "documents and complete it with what only people know."
            }
            form.filters method="get" action=(base) {
                label { "Time zone"
                    input #tz type="text" name="tz" value=(zone.name())
                        data-chosen=(if chosen { "yes" } else { "no" })
                        placeholder="Europe/Paris";
                }
                button type="submit" { "Show" }
            }
            p.actions {
                a.button href={ (base) ".md?tz=" (tz) } download={ "postmortem-" (id) ".md" } { "Download (.md)" }
                " "
                button #copy type="button" hidden { "Copy" }
                " "
                span #copied role="status" {}
            }
            pre #draft { (text) }
            script src="/ui/static/postmortem.js" defer {}
        },
    )
}
