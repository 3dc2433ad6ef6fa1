//! What a person does to incidents besides acknowledging one: a note in its timeline, a
//! re-run of its runbook, and acknowledging a whole storm group through one signed link.
//!
//! A note is an audit entry (`note_added`) and nothing else: the timeline is the audit
//! log. A re-run moves an escalated or acknowledged incident back to `queued` through the
//! one checked transition (`transition.rs`), so the runner claims it under every guard, as
//! any run; its escalation's notifications not sent yet are cancelled, and should it
//! escalate again, a new round tells the people again. A route that asks for approval
//! before a run is never re-run: that would skip the approval.

use serde_json::json;

use super::db::{params, OptionalExtension};
use super::transition::Move;
use super::writer::Writer;
use super::{stamp, Ack, Store, StoreError};
use crate::audit::{Event, NewEntry};
use crate::incident::{AckVia, State};

/// The longest note, in characters.
pub const MAX_NOTE: usize = 4000;

/// A note's text: trimmed, not empty, at most [`MAX_NOTE`] characters, line breaks kept
/// (as `\n`) and no other control character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteText(String);

/// Why a note's text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadNote {
    #[error("text: empty")]
    Empty,
    #[error("text: longer than {MAX_NOTE} characters")]
    TooLong,
}

impl NoteText {
    pub fn parse(text: &str) -> Result<NoteText, BadNote> {
        let text: String = text
            .replace("\r\n", "\n")
            .chars()
            .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
            .collect();
        let text = text.trim();
        if text.is_empty() {
            return Err(BadNote::Empty);
        }
        if text.chars().count() > MAX_NOTE {
            return Err(BadNote::TooLong);
        }
        Ok(NoteText(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What asking for a re-run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    /// Back to `queued`: the runner claims it under the guards, as any run.
    Queued,
    NotFound,
    /// Not re-run: the incident is in `state`, and `why`.
    Refused {
        state: State,
        why: String,
    },
}

/// What acknowledging a storm group through a signed link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLinkAck {
    /// The link was used before: nothing changed.
    AlreadyUsed,
    /// The group's incidents that were escalated, now acknowledged (the link is spent
    /// only when there was one), and how many of its incidents were acknowledged before.
    Done {
        acknowledged: Vec<String>,
        already: u64,
    },
}

impl Store {
    /// Adds `text` to incident `id`'s timeline, in `by`'s name, sent through `via`
    /// (`console`, `api`). False when there is no such incident. Any incident takes notes,
    /// closed ones too (for the postmortem).
    pub async fn add_note(
        &self,
        id: &str,
        by: &str,
        via: &str,
        text: &NoteText,
    ) -> Result<bool, StoreError> {
        let (id, detail) = (
            id.to_string(),
            json!({"by": by, "via": via, "text": text.as_str()}),
        );
        self.inner
            .write(move |w| {
                if w.state_of(&id)?.is_none() {
                    return Ok(false);
                }
                let now = stamp(w.cx.now());
                w.append(NewEntry::for_incident(Event::NoteAdded, &id, &detail), &now)?;
                Ok(true)
            })
            .await
    }

    /// Runs incident `id`'s runbook again, asked by `by` through `via`: an escalated or
    /// acknowledged incident (its alert still fires: medic has not seen it resolve) with a
    /// runbook goes back to `queued`. Wake the runner after.
    pub async fn rerun(&self, id: &str, by: &str, via: &str) -> Result<Rerun, StoreError> {
        let (id, by, via) = (id.to_string(), by.to_string(), via.to_string());
        self.inner.write(move |w| w.rerun(&id, &by, &via)).await
    }

    /// Acknowledges, in `by`'s name, every incident of storm group `group` still
    /// escalated (at most `max`), through the signed link of `nonce`: refused when the
    /// link was used before, else the nonce is spent in the same transaction as the acks
    /// (and only if one was made).
    pub async fn ack_group_by_link(
        &self,
        group: &str,
        by: &str,
        nonce: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        max: usize,
    ) -> Result<GroupLinkAck, StoreError> {
        let (group, by, nonce) = (group.to_string(), by.to_string(), nonce.to_string());
        let expires_at = stamp(expires_at);
        self.inner
            .write(move |w| w.ack_group_by_link(&group, &by, &nonce, &expires_at, max))
            .await
    }
}

impl Writer {
    fn rerun(&mut self, id: &str, by: &str, via: &str) -> Result<Rerun, StoreError> {
        let Some(state) = self.state_of(id)? else {
            return Ok(Rerun::NotFound);
        };
        let refused = |why: &str| {
            Ok(Rerun::Refused {
                state,
                why: why.to_string(),
            })
        };
        if !matches!(state, State::Escalated | State::Acknowledged) {
            let why = match state.is_open() {
                true => "only an escalated or acknowledged incident is re-run",
                false => "its alert no longer fires",
            };
            return refused(why);
        }
        let (runbook, route): (Option<String>, Option<String>) = self
            .conn
            .prepare_cached("SELECT runbook, route FROM incidents WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or_default();
        if runbook.is_none() {
            return refused("no runbook handles its alert");
        }
        // A run the route asks a person to approve first is never started by a re-run,
        // nor one that was rejected or not approved in time.
        if self.cx.plans().approval(route.as_deref()).is_some() || self.lacks_approval(id)? {
            return refused(
                "its route asks a person's approval before a run, which a re-run cannot skip",
            );
        }
        let now = stamp(self.cx.now());
        let message = format!("re-run requested by {by}");
        let m = Move {
            message: Some(&message),
            extra: json!({"by": by, "via": via}),
            ..Move::new(state, State::Queued)
        };
        if !self.transition(id, m, &now)? {
            return Err(StoreError::Corrupt(format!(
                "incident {id}: expected {} to re-run it, found another state",
                state.as_str()
            )));
        }
        // Whoever acknowledged it handed it back to medic; if it escalates again, a person
        // acknowledges it anew.
        self.conn
            .prepare_cached("UPDATE incidents SET acked_by = NULL WHERE id = ?1")?
            .execute([id])?;
        self.cancel_pending(id, "its runbook runs again", &now)?;
        let detail = json!({"by": by, "via": via, "from": state});
        self.append(
            NewEntry::for_incident(Event::RerunRequested, id, &detail),
            &now,
        )?;
        Ok(Rerun::Queued)
    }

    fn ack_group_by_link(
        &mut self,
        group: &str,
        by: &str,
        nonce: &str,
        expires_at: &str,
        max: usize,
    ) -> Result<GroupLinkAck, StoreError> {
        let used: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM used_links WHERE nonce = ?1")?
            .query_row([nonce], |r| r.get(0))
            .optional()?;
        if used.is_some() {
            return Ok(GroupLinkAck::AlreadyUsed);
        }
        let escalated = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM incidents WHERE escalation_group = ?1 AND state = 'escalated'
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![group, max as i64], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let already: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM incidents WHERE escalation_group = ?1 AND state = 'acknowledged'",
            )?
            .query_row([group], |r| r.get(0))?;
        let mut acknowledged = Vec::new();
        for id in escalated {
            if self.ack(&id, Some(by.to_string()), AckVia::Link)? == Ack::Acknowledged {
                acknowledged.push(id);
            }
        }
        if !acknowledged.is_empty() {
            let now = stamp(self.cx.now());
            self.conn
                .prepare_cached(
                    "INSERT INTO used_links (nonce, incident_id, action, used_by, used_at, expires_at)
                     VALUES (?1, ?2, 'ack_group', ?3, ?4, ?5)",
                )?
                .execute(params![nonce, group, by, now, expires_at])?;
        }
        Ok(GroupLinkAck::Done {
            acknowledged,
            already: already as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_bounded_and_keep_their_lines() {
        let ok = |t: &str| NoteText::parse(t).unwrap().as_str().to_string();
        assert_eq!(
            ok("  rebooted db1\r\nwatching it  "),
            "rebooted db1\nwatching it"
        );
        assert_eq!(ok("a\u{0}b\u{1b}[31mc\td"), "ab[31mc\td");
        assert_eq!(NoteText::parse(" \n\t "), Err(BadNote::Empty));
        assert_eq!(NoteText::parse("\u{7}"), Err(BadNote::Empty));
        assert_eq!(ok(&"é".repeat(MAX_NOTE)).chars().count(), MAX_NOTE);
        assert_eq!(
            NoteText::parse(&"é".repeat(MAX_NOTE + 1)),
            Err(BadNote::TooLong)
        );
    }
}
