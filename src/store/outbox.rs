//! The outbox: the notifications an escalation owes, committed with it, and their
//! delivery as the sender records it.
//!
//! An escalation schedules one round of its policy (each tier's channels, due after the
//! tier's delay); the sender claims what is due for one lease ([`Store::outbox_due`]) and
//! records each attempt: sent, retried later, given up, or fallen through to the next tier
//! now. Acks and resolutions cancel what is not sent yet; a resolution is announced to the
//! channels that were told. Renotify starts a new round. Storm summaries are `storm.rs`'s.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::db::{params, OptionalExtension, Row};
use super::storm::GroupState;
use super::writer::Writer;
use super::{
    parse_time, stamp, Attempt, Notification, NotificationKey, NotificationKind, OutboxCounts,
    OutboxState, Store, StoreError,
};
use crate::audit::{Event, NewEntry};
use crate::incident::State;

impl Store {
    /// Notifications due at `now`, oldest first, claimed for this process's sender for
    /// one lease: no other replica takes them meanwhile.
    pub async fn outbox_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        // Claimed, not just read: a replica's sender never takes a notification another is
        // delivering, until that claim runs out.
        // `'pending'` is `OutboxState::Pending`, written out in these queries of due
        // notifications so that the partial index `outbox_due` (`WHERE state = 'pending'`)
        // serves them.
        self.inner.write(move |w| {
            let now_s = stamp(now);
            let until = stamp(now + w.cx.lease);
            let mut stmt = w.conn.prepare_cached(
                "SELECT id, key, incident_id, kind, round, tier, channel, attempts, group_id FROM outbox
                 WHERE state = 'pending' AND due_at <= ?1 AND (claimed_until IS NULL OR claimed_until < ?1)
                 ORDER BY due_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_s, limit as i64], |r| {
                let id: i64 = r.get(0)?;
                let incident: String = r.get(2)?;
                Ok((id, incident, notification_row(r)))
            })?;
            let rows = rows.collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            let mut due = Vec::with_capacity(rows.len());
            for (id, incident, n) in rows {
                // A row that cannot be read must not hold up every other notification: it
                // is set aside (failed), audited and logged, and the others go on.
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        w.set_aside(id, &incident, &e, &now_s)?;
                        continue;
                    }
                };
                // A storm group's summary goes out only while a member is still escalated.
                match &n.group {
                    Some(_) => due.extend(w.summary_due(n, &now_s)?),
                    None => due.push(n),
                }
            }
            for n in &due {
                w.conn
                    .prepare_cached(
                        "UPDATE outbox SET claimed_by = ?2, claimed_until = ?3 WHERE id = ?1",
                    )?
                    .execute(params![n.id, w.cx.owner, until])?;
            }
            Ok(due)
        })
        .await
    }

    /// Notifications due at `now`, claimed or not, without claiming them (for tests).
    #[cfg(test)]
    pub(crate) async fn outbox_peek(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        self.inner.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, key, incident_id, kind, round, tier, channel, attempts, group_id FROM outbox
                 WHERE state = 'pending' AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![stamp(now), limit as i64], notification_row)?;
            rows.collect()
        })
        .await
    }

    /// Every outbox row and every storm group's first incident (for tests).
    #[cfg(test)]
    pub(crate) async fn outbox_rows(&self) -> Result<OutboxDump, StoreError> {
        self.inner
            .read(|c| {
                let mut stmt = c.prepare_cached(
                "SELECT key, incident_id, tier, channel, state, group_id FROM outbox ORDER BY id",
            )?;
                let rows = stmt.query_map((), |r| {
                    Ok(OutboxRow {
                        key: r.get(0)?,
                        incident: r.get(1)?,
                        tier: r.get(2)?,
                        channel: r.get(3)?,
                        state: r.get(4)?,
                        group: r.get(5)?,
                    })
                })?;
                let rows = rows.collect::<Result<Vec<_>, _>>()?;
                let mut stmt = c.prepare_cached("SELECT id, leader FROM escalation_groups")?;
                let leaders = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(OutboxDump {
                    rows,
                    leaders: leaders.collect::<Result<_, _>>()?,
                })
            })
            .await
    }

    /// When the next pending notification is due, if any.
    pub async fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner
            .read(|c| {
                let next: Option<String> = c.query_row(
                "SELECT MIN(CASE WHEN claimed_until > due_at THEN claimed_until ELSE due_at END)
                 FROM outbox WHERE state = 'pending'",
                (),
                |r| r.get(0),
            )?;
                Ok(next.as_deref().and_then(parse_time))
            })
            .await
    }

    /// Records one delivery attempt of notification `id` and audits it.
    pub async fn outbox_attempt(&self, id: i64, attempt: Attempt) -> Result<(), StoreError> {
        self.inner
            .write(move |w| w.outbox_attempt(id, attempt.clone()))
            .await
    }

    /// Starts a new escalation round for every escalated, unacknowledged incident whose
    /// policy renotifies and whose last round is that old. Returns how many.
    pub async fn renotify_due(&self) -> Result<usize, StoreError> {
        self.inner.write(|w| w.renotify_due()).await
    }

    /// Counts of the outbox, and its oldest notification due and not delivered, for metrics.
    pub async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let now_at = self.inner.now();
        let now = stamp(now_at);
        self.inner
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT state, COUNT(*) FROM outbox WHERE state IN (?1, ?2) GROUP BY state",
                )?;
                let (pending, failed) = (OutboxState::Pending, OutboxState::Failed);
                let rows = stmt.query_map(params![pending.as_str(), failed.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?;
                let mut counts = OutboxCounts::default();
                for row in rows {
                    let (state, n) = row?;
                    match OutboxState::parse(&state) {
                        Some(OutboxState::Pending) => counts.pending = n as u64,
                        Some(OutboxState::Failed) => counts.failed = n as u64,
                        _ => {
                            return Err(StoreError::Corrupt(format!(
                                "outbox: unexpected state {state:?} counted"
                            )))
                        }
                    }
                }
                // The literal state, so that the partial index on due pending rows serves it.
                let oldest: Option<String> = c
                    .prepare_cached(
                        "SELECT MIN(due_at) FROM outbox WHERE state = 'pending' AND due_at <= ?1",
                    )?
                    .query_row([&now], |r| r.get(0))?;
                if let Some(at) = oldest {
                    let due = parse_time(&at)
                        .ok_or_else(|| StoreError::Corrupt(format!("outbox: bad due_at {at:?}")))?;
                    counts.oldest_due_waiting = (now_at - due).to_std().unwrap_or_default();
                }
                Ok(counts)
            })
            .await
    }
}

/// One notification owed: a tier of an escalation round, a storm group's summary or a
/// resolution. It is sent through `incident` (a summary: the member it is told through
/// until it is due), no earlier than `due`.
pub(super) struct Owed<'a> {
    pub(super) key: NotificationKey,
    pub(super) incident: &'a str,
    pub(super) kind: NotificationKind,
    /// 0 for a resolution, which belongs to no round.
    pub(super) round: u32,
    /// 0 for a resolution, which belongs to no tier.
    pub(super) tier: u32,
    pub(super) channel: &'a str,
    pub(super) due: &'a str,
    /// The storm group, for its summary.
    pub(super) group: Option<&'a str>,
    /// When it was put in: the write's time.
    pub(super) now: &'a str,
}

impl Writer {
    /// An incident was just escalated: its first round of notifications.
    pub(super) fn escalate(
        &mut self,
        id: &str,
        group: Option<GroupState>,
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE incidents SET escalation_group = COALESCE(?3, escalation_group),
                    escalated_at = COALESCE(escalated_at, ?2), round = 1, round_at = ?2
                 WHERE id = ?1",
            )?
            .execute(params![id, now, group.as_ref().map(|g| &g.id)])?;
        self.schedule_escalation(id, group, now)
    }

    /// Schedules an escalation's notifications.
    pub(super) fn schedule_escalation(
        &mut self,
        id: &str,
        group: Option<GroupState>,
        now: &str,
    ) -> Result<(), StoreError> {
        // Storm grouping: the group's first incident is notified at once, as usual. The others
        // are not notified one by one: when the first of them joins, one summary notification
        // of the group is scheduled for the end of its window, listing every member then.
        // A member that joins when the summary's first tier can no longer list it (it went
        // out, is going out, or was not sent: a window made longer by a reload, a delivery
        // committed after the window's end, a replica whose clock is behind) is told on its
        // own.
        match group {
            // Its `escalation_grouped` entry already says it is covered by the summary.
            Some(g) if g.leader != id => match g.size == 2 {
                true => self.schedule_group_summary(&g, id, now),
                false if self.summary_will_list(&g.id, now)? => Ok(()),
                false => self.schedule_round(id, 1, now),
            },
            _ => self.schedule_round(id, 1, now),
        }
    }

    /// Puts one round of the incident's escalation policy in the outbox: each tier's
    /// channels, due `after` from now. The idempotency key refuses a second copy.
    fn schedule_round(&mut self, id: &str, round: u32, now: &str) -> Result<(), StoreError> {
        self.schedule_round_from(id, round, now, now)
    }

    fn schedule_round_from(
        &mut self,
        id: &str,
        round: u32,
        from: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let route = self.route_of(id)?;
        let plans = self.cx.plans();
        let policy = plans.policy(route.as_deref());
        let start = parse_time(from).unwrap_or_else(|| self.cx.now());
        let mut tiers = Vec::with_capacity(policy.tiers.len());
        for (index, tier) in policy.tiers.iter().enumerate() {
            let number = index + 1;
            let due = stamp(start + tier.after);
            for channel in &tier.notify {
                let key = NotificationKey::Round {
                    incident: id.to_string(),
                    round,
                    tier: number as u32,
                    channel: channel.clone(),
                };
                self.owe(Owed {
                    key,
                    incident: id,
                    kind: NotificationKind::Escalated,
                    round,
                    tier: number as u32,
                    channel,
                    due: &due,
                    group: None,
                    now,
                })?;
            }
            tiers.push(json!({
                "tier": number, "after": humantime::format_duration(tier.after).to_string(),
                "notify": tier.notify, "due_at": due,
            }));
        }
        // Wake the sender only when something was put in the outbox.
        self.batch.outbox_touched |= policy.tiers.iter().any(|t| !t.notify.is_empty());
        let told = policy.tiers.iter().flat_map(|t| &t.notify);
        super::changelog::told(&mut self.batch.changes, id, told);
        let mut detail = json!({"round": round, "tiers": tiers});
        if policy.tiers.is_empty() {
            detail["note"] = json!("no escalation policy names a channel: nobody is notified");
        }
        if let Some(every) = policy.renotify {
            detail["renotify"] = json!(humantime::format_duration(every).to_string());
        }
        self.append(
            NewEntry::for_incident(Event::EscalationScheduled, id, &detail),
            now,
        )
    }

    /// Sets aside an outbox row that cannot be read (`error`): marked failed, audited on its
    /// incident and logged, so that it cannot block the notifications due after it.
    pub(super) fn set_aside(
        &mut self,
        id: i64,
        incident: &str,
        error: &StoreError,
        now: &str,
    ) -> Result<(), StoreError> {
        tracing::error!(outbox = id, incident, error = %error, "an outbox row cannot be read: set aside as failed");
        self.conn
            .prepare_cached("UPDATE outbox SET state = ?2, done_at = ?3 WHERE id = ?1")?
            .execute(params![id, OutboxState::Failed.as_str(), now])?;
        let detail = json!({"outbox": id, "error": error.to_string(), "permanent": true,
            "next": "set aside: the row cannot be read"});
        self.append(
            NewEntry::for_incident(Event::NotificationFailed, incident, &detail),
            now,
        )
    }

    /// Cancels what was not sent yet of the incident's escalation, because of `why`.
    pub(super) fn cancel_pending(
        &mut self,
        id: &str,
        why: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let cancelled = self
            .conn
            .prepare_cached(
                "UPDATE outbox SET state = ?3, done_at = ?2
                 WHERE incident_id = ?1 AND kind = ?4 AND state = ?5 AND group_id IS NULL",
            )?
            .execute(params![
                id,
                now,
                OutboxState::Cancelled.as_str(),
                NotificationKind::Escalated.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        if cancelled > 0 {
            let detail = json!({"notifications": cancelled, "why": why});
            self.append(
                NewEntry::for_incident(Event::NotificationsCancelled, id, &detail),
                now,
            )?;
        }
        Ok(())
    }

    /// An escalated incident's alert resolved: later tiers are not needed, and every
    /// channel that was told about it is told, once, that it is over.
    pub(super) fn announce_resolution(&mut self, id: &str, now: &str) -> Result<(), StoreError> {
        self.cancel_pending(id, "the alert resolved", now)?;
        let channels = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT DISTINCT channel FROM outbox WHERE incident_id = ?1 AND kind = ?2 AND state = ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    id,
                    NotificationKind::Escalated.as_str(),
                    OutboxState::Sent.as_str()
                ],
                |r| r.get::<_, String>(0),
            )?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        for channel in channels {
            self.owe_resolution(id, &channel, now)?;
        }
        Ok(())
    }

    pub(super) fn owe_resolution(
        &mut self,
        id: &str,
        channel: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let key = NotificationKey::Resolution {
            incident: id.to_string(),
            channel: channel.to_string(),
        };
        self.owe(Owed {
            key,
            incident: id,
            kind: NotificationKind::Resolved,
            round: 0,
            tier: 0,
            channel,
            due: now,
            group: None,
            now,
        })?;
        self.batch.outbox_touched = true;
        Ok(())
    }

    /// Puts `owed` in the outbox, pending; its key refuses a second copy.
    pub(super) fn owe(&mut self, owed: Owed) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (key, incident_id, kind, round, tier, channel, state, due_at, created_at, group_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                owed.key.to_string(),
                owed.incident,
                owed.kind.as_str(),
                owed.round,
                owed.tier,
                owed.channel,
                OutboxState::Pending.as_str(),
                owed.due,
                owed.now,
                owed.group
            ])?;
        Ok(())
    }

    fn outbox_attempt(&mut self, id: i64, attempt: Attempt) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = ?1",
            )?
            .execute([id])?;
        let row = self
            .conn
            .prepare_cached(
                "SELECT o.incident_id, o.kind, o.round, o.tier, o.channel, o.attempts, o.state, i.is_open, i.state,
                    o.group_id
                 FROM outbox o JOIN incidents i ON i.id = o.incident_id WHERE o.id = ?1",
            )?
            .query_row([id], |r| {
                Ok(AttemptRow {
                    incident: r.get(0)?,
                    kind: r.get(1)?,
                    round: r.get(2)?,
                    tier: r.get(3)?,
                    channel: r.get(4)?,
                    attempts: r.get(5)?,
                    state: r.get(6)?,
                    is_open: r.get(7)?,
                    incident_state: r.get(8)?,
                    group: r.get(9)?,
                })
            })
            .optional()?;
        let Some(AttemptRow {
            incident,
            kind,
            round,
            tier,
            channel,
            attempts,
            state,
            is_open,
            incident_state,
            group,
        }) = row
        else {
            return Ok(());
        };
        let corrupt = |what: String| StoreError::Corrupt(format!("outbox {id}: {what}"));
        let kind = NotificationKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?;
        let state = OutboxState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown state {state:?}")))?;
        let incident_state = State::parse(&incident_state).ok_or_else(|| {
            corrupt(format!(
                "incident {incident}: unknown state {incident_state:?}"
            ))
        })?;
        let attempt_no = attempts + 1;
        let now = stamp(self.cx.now());
        let mut detail = json!({
            "channel": channel, "kind": kind, "round": round, "tier": tier, "attempt": attempt_no,
        });
        if let Some(g) = &group {
            detail["group"] = json!(g);
        }
        match attempt {
            Attempt::Sent => {
                self.conn
                    .prepare_cached(
                        "UPDATE outbox SET state = ?4, attempts = ?2, done_at = ?3, last_error = NULL WHERE id = ?1",
                    )?
                    .execute(params![id, attempt_no, now, OutboxState::Sent.as_str()])?;
                self.append(
                    NewEntry::for_incident(Event::NotificationSent, &incident, &detail),
                    &now,
                )?;
                // Delivered while the alert resolved: this channel is owed the end too.
                if kind == NotificationKind::Escalated && is_open == 0 {
                    self.owe_resolution(&incident, &channel, &now)?;
                }
                if kind == NotificationKind::ApprovalRequested {
                    self.request_sent(&incident, &channel, incident_state, &now)?;
                }
            }
            Attempt::Failed {
                error,
                permanent,
                retry_at,
                fall_through,
            } => {
                let next = match (&retry_at, permanent, state) {
                    (_, _, OutboxState::Cancelled) => OutboxState::Cancelled,
                    (Some(_), false, _) => OutboxState::Pending,
                    _ => OutboxState::Failed,
                };
                self.conn
                    .prepare_cached(
                        "UPDATE outbox SET state = ?2, attempts = ?3, last_error = ?4,
                            due_at = COALESCE(?5, due_at), done_at = CASE WHEN ?2 = ?7 THEN NULL ELSE ?6 END
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        next.as_str(),
                        attempt_no,
                        error,
                        retry_at.filter(|_| next == OutboxState::Pending).map(stamp),
                        now,
                        OutboxState::Pending.as_str()
                    ])?;
                detail["error"] = json!(error);
                detail["permanent"] = json!(permanent);
                match (next, &retry_at) {
                    (OutboxState::Pending, Some(at)) => {
                        detail["next_attempt_at"] = json!(stamp(*at))
                    }
                    (OutboxState::Failed, _) => detail["gave_up"] = json!(true),
                    _ => {}
                }
                self.append(
                    NewEntry::for_incident(Event::NotificationFailed, &incident, &detail),
                    &now,
                )?;
                // A summary's later tiers decide when due whether anyone is left to tell.
                let falls = match &group {
                    Some(_) => true,
                    None => incident_state == State::Escalated,
                };
                if fall_through && kind == NotificationKind::Escalated && falls {
                    self.fall_through(&incident, group.as_deref(), round, tier, &channel, &now)?;
                }
            }
        }
        Ok(())
    }

    /// Makes the next tier of the round (after `tier`) due now, if it is not yet: of the
    /// incident's own notifications, or of storm group `group`'s summary.
    fn fall_through(
        &mut self,
        incident: &str,
        group: Option<&str>,
        round: i64,
        tier: i64,
        channel: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        // The round's tiers: the incident's own notifications, or the group's summary.
        let (owner, of) = match group {
            Some(g) => (g, "group_id = ?1"),
            None => (incident, "incident_id = ?1 AND group_id IS NULL"),
        };
        let next: Option<i64> = self
            .conn
            .prepare_cached(&format!(
                "SELECT MIN(tier) FROM outbox WHERE {of} AND round = ?2 AND kind = ?4 AND tier > ?3"
            ))?
            .query_row(
                params![owner, round, tier, NotificationKind::Escalated.as_str()],
                |r| r.get(0),
            )?;
        let Some(next) = next else {
            return Ok(());
        };
        let moved = self
            .conn
            .prepare_cached(&format!(
                "UPDATE outbox SET due_at = ?4 WHERE {of} AND round = ?2 AND kind = ?5
                    AND state = ?6 AND tier = ?3 AND due_at > ?4"
            ))?
            .execute(params![
                owner,
                round,
                next,
                now,
                NotificationKind::Escalated.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        if moved == 0 {
            // Already due, sent or cancelled.
            return Ok(());
        }
        self.batch.outbox_touched = true;
        let detail =
            json!({"round": round, "from_tier": tier, "to_tier": next, "failing_channel": channel});
        self.append(
            NewEntry::for_incident(Event::EscalationFellThrough, incident, &detail),
            now,
        )
    }

    fn renotify_due(&mut self) -> Result<usize, StoreError> {
        let plans = self.cx.plans();
        // Only rounds old enough for the shortest renotify interval in force can be due;
        // with no policy that renotifies, none is.
        let shortest = std::iter::once(&plans.default)
            .chain(plans.routes.values().map(|r| &r.policy))
            .filter_map(|p| p.renotify)
            .min();
        let Some(shortest) = shortest else {
            return Ok(0);
        };
        let now_t = self.cx.now();
        let Some(cutoff) = chrono::Duration::from_std(shortest)
            .ok()
            .and_then(|d| now_t.checked_sub_signed(d))
        else {
            return Ok(0);
        };
        let cutoff = stamp(cutoff);
        let rows = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, route, round, round_at FROM incidents
                 WHERE state = 'escalated' AND round_at IS NOT NULL AND round_at <= ?1",
            )?;
            let rows = stmt.query_map([cutoff], |r| {
                Ok(RoundRow {
                    id: r.get(0)?,
                    route: r.get(1)?,
                    round: r.get(2)?,
                    round_at: r.get(3)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let now = stamp(now_t);
        let mut started = 0;
        for RoundRow {
            id,
            route,
            round,
            round_at,
        } in rows
        {
            let Some(every) = plans.policy(route.as_deref()).renotify else {
                continue;
            };
            let due = parse_time(&round_at).is_some_and(|at| at + every <= now_t);
            if !due {
                continue;
            }
            let round = round as u32 + 1;
            self.conn
                .prepare_cached("UPDATE incidents SET round = ?2, round_at = ?3 WHERE id = ?1")?
                .execute(params![id, round, now])?;
            self.schedule_round(&id, round, &now)?;
            started += 1;
        }
        Ok(started)
    }
}

/// Maps a row of `SELECT id, key, incident_id, kind, round, tier, channel, attempts`.
fn notification_row(r: &Row) -> Result<Notification, StoreError> {
    let id: i64 = r.get(0)?;
    let (key, kind): (String, String) = (r.get(1)?, r.get(3)?);
    Ok(Notification {
        id,
        key: NotificationKey::parse(&key)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox {id}: bad key {key:?}")))?,
        incident_id: r.get(2)?,
        kind: NotificationKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox {id}: unknown kind {kind:?}")))?,
        round: r.get(4)?,
        tier: r.get(5)?,
        channel: r.get(6)?,
        attempts: r.get(7)?,
        group: r.get(8)?,
    })
}

/// A notification and its incident, as an attempt to deliver it reads them.
struct AttemptRow {
    incident: String,
    kind: String,
    round: i64,
    tier: i64,
    channel: String,
    /// Attempts made before this one.
    attempts: i64,
    state: String,
    is_open: i64,
    incident_state: String,
    /// For a storm group's summary, the group.
    group: Option<String>,
}

/// An escalated incident's latest round, as renotify reads it.
struct RoundRow {
    id: String,
    route: Option<String>,
    round: i64,
    round_at: String,
}

/// One outbox row, for tests.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRow {
    pub key: String,
    pub incident: String,
    pub tier: i64,
    pub channel: String,
    pub state: String,
    pub group: Option<String>,
}

/// Every outbox row and each storm group's first incident (group → incident), for tests.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub(crate) struct OutboxDump {
    pub rows: Vec<OutboxRow>,
    pub leaders: std::collections::HashMap<String, String>,
}
