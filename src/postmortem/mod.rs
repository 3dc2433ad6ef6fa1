//! Postmortem drafts: `medic postmortem INCIDENT_ID` and the console's postmortem page.
//!
//! A draft is blameless Markdown, drawn from the record only: the incident (or, for an
//! incident of a storm group with others, the whole group) and its audit log. Two stages:
//! [`facts`] gathers what the store says (bounded reads: the incidents with their
//! timelines, the breaker changes their results caused, relapses, the same step failing in
//! recent incidents, an alert with no runbook that keeps firing); [`render`] writes it, in
//! the reader's time zone ([`Zone`]). Alert content is untrusted: every value from the
//! record is written as code (`markdown.rs`), so no label can add a heading, a link or HTML.
//! What each section is drawn from: docs/postmortem.md.

mod case;
mod facts;
mod lessons;
mod markdown;
mod render;
mod timeline;
mod zone;

use chrono::{DateTime, Utc};

pub use facts::{Settings, LOOKBACK};
pub use zone::{UnknownZone, Zone};

use crate::store::{Store, StoreError};

/// The draft about incident `id` (and its storm, if any), in `zone`, or `None` when the
/// store has no such incident. `now` is when the draft is written: it only shows for what
/// is still open.
pub async fn draft(
    store: &Store,
    id: &str,
    settings: Settings,
    zone: &Zone,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    if !valid_id(id) {
        return Ok(None);
    }
    let Some(facts) = facts::gather(store, id, settings, now).await? else {
        return Ok(None);
    };
    Ok(Some(render::render(&facts, zone)))
}

/// Whether `id` can be an incident id (medic's are ULIDs): anything else is no incident,
/// and is never sent to the store or put in a file name.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
