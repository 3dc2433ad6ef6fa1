//! Storm grouping: escalations of one route and reason close in time share a group, and
//! the group's members after the first are told through one summary notification.
//!
//! Which group an escalation joins is `guard::storm`'s decision; this file keeps the
//! groups (read once per batch, sizes written at the commit, see `batch.rs`), schedules a
//! group's summary when its second incident joins, and decides, as a summary is claimed,
//! whom it is told through or that nobody is left to tell.

use serde_json::json;

use super::db::{params, Db, OptionalExtension};
use super::outbox::Owed;
use super::writer::Writer;
use super::{
    parse_time, stamp, GroupMember, Notification, NotificationKey, NotificationKind, OutboxState,
    Store, StoreError,
};
use crate::audit::{Event, NewEntry};
use crate::guard::storm;
use crate::incident::Reason;

/// A storm group as the writer knows it: read once per batch, then kept up to date.
#[derive(Debug, Clone)]
pub(super) struct GroupState {
    pub id: String,
    pub opened_at: String,
    pub size: i64,
    pub leader: String,
    /// Its size grew in this batch and is not written yet.
    pub grown: bool,
}

/// Writes the sizes of the groups a batch grew (once each, not once per member).
pub(super) fn write_group_sizes<'a>(
    conn: &dyn Db,
    groups: impl Iterator<Item = &'a GroupState>,
) -> Result<(), StoreError> {
    for g in groups.filter(|g| g.grown) {
        conn.prepare_cached("UPDATE escalation_groups SET size = ?2 WHERE id = ?1")?
            .execute(params![g.id, g.size])?;
    }
    Ok(())
}

impl Store {
    /// The incidents of storm group `group` still escalated (at most `limit`, its first
    /// incident first), with how many there are: what its summary lists when it goes out.
    pub async fn group_members(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<(u64, Vec<GroupMember>), StoreError> {
        let group = group.to_string();
        self.inner.read(move |c| {
            let total: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM incidents WHERE escalation_group = ?1 AND state = 'escalated'",
                )?
                .query_row([&group], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(
                "SELECT i.id, i.alertname, i.labels, i.state FROM incidents i
                 JOIN escalation_groups g ON g.id = i.escalation_group
                 WHERE i.escalation_group = ?1 AND i.state = 'escalated'
                 ORDER BY CASE WHEN i.id = g.leader THEN 0 ELSE 1 END, i.id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![group, limit as i64], |r| {
                Ok(MemberRow {
                    id: r.get(0)?,
                    alertname: r.get(1)?,
                    labels: r.get(2)?,
                    state: r.get(3)?,
                })
            })?;
            let mut out = Vec::new();
            for row in rows {
                let row = row?;
                out.push(GroupMember {
                    labels: serde_json::from_str(&row.labels).unwrap_or_default(),
                    id: row.id,
                    alertname: row.alertname,
                    state: row.state,
                });
            }
            Ok((total as u64, out))
        })
        .await
    }
}

impl Writer {
    /// Puts an escalation into its storm group and audits it (see [`Self::assign_group`]).
    pub(super) fn group_escalation(
        &mut self,
        id: &str,
        route: &str,
        reason: Reason,
        now: &str,
    ) -> Result<GroupState, StoreError> {
        let (group, first) = self.assign_group(id, route, reason, now)?;
        self.audit_grouping(id, route, reason, &group, first, now)?;
        Ok(group)
    }

    pub(super) fn audit_grouping(
        &mut self,
        id: &str,
        route: &str,
        reason: Reason,
        group: &GroupState,
        first: bool,
        now: &str,
    ) -> Result<(), StoreError> {
        let detail = json!({"group": group.id, "route": route, "reason": reason, "first": first, "size": group.size});
        self.append(
            NewEntry::for_incident(Event::EscalationGrouped, id, &detail),
            now,
        )
    }

    /// Chooses an escalation's storm group: the open group of its route and reason, or a
    /// new one (see `guard::storm`); returns it, and whether it is new. A group's size is
    /// counted here and written with the batch (see [`Self::flush_groups`]).
    pub(super) fn assign_group(
        &mut self,
        id: &str,
        route: &str,
        reason: Reason,
        now: &str,
    ) -> Result<(GroupState, bool), StoreError> {
        let key = (route.to_string(), reason);
        let latest = match self.batch.groups.get(&key) {
            Some(g) => Some(g.clone()),
            None => self
                .conn
                .prepare_cached(
                    "SELECT id, opened_at, size, leader FROM escalation_groups WHERE route = ?1 AND reason = ?2
                     ORDER BY opened_at DESC LIMIT 1",
                )?
                .query_row(params![route, reason.as_str()], |r| {
                    Ok(GroupState {
                        id: r.get(0)?,
                        opened_at: r.get(1)?,
                        size: r.get(2)?,
                        leader: r.get(3)?,
                        grown: false,
                    })
                })
                .optional()?,
        };
        let as_storm = latest.as_ref().and_then(|g| {
            Some(storm::Group {
                id: g.id.clone(),
                opened_at: parse_time(&g.opened_at)?,
                size: g.size as u32,
            })
        });
        let now_t = parse_time(now).unwrap_or_else(|| self.cx.now());
        let grouping = storm::assign(as_storm.as_ref(), now_t, self.cx.storm_window());
        let (group, first) = match (grouping, latest) {
            (storm::Grouping::Join(_), Some(mut g)) => {
                g.size += 1;
                g.grown = true;
                (g, false)
            }
            _ => {
                let gid = self.cx.new_id();
                self.conn
                    .prepare_cached(
                        "INSERT INTO escalation_groups (id, route, reason, opened_at, size, leader)
                         VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                    )?
                    .execute(params![gid, route, reason.as_str(), now, id])?;
                let g = GroupState {
                    id: gid,
                    opened_at: now.to_string(),
                    size: 1,
                    leader: id.to_string(),
                    grown: false,
                };
                (g, true)
            }
        };
        self.batch.groups.insert(key, group.clone());
        Ok((group, first))
    }

    /// Puts the summary notification of storm group `g` in the outbox, on its route's
    /// channels, due when the group's window ends. The summary belongs to the group (its key
    /// and `group_id`), not to an incident: `member`, the first to join, is only who it is
    /// told through until it is due (see [`Self::summary_due`]).
    pub(super) fn schedule_group_summary(
        &mut self,
        g: &GroupState,
        member: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let (gid, opened_at) = (&g.id, &g.opened_at);
        let route = self.route_of(&g.leader)?;
        let plans = self.cx.plans();
        let policy = plans.policy(route.as_deref());
        let start = parse_time(opened_at).unwrap_or_else(|| self.cx.now()) + self.cx.storm_window();
        for (index, tier) in policy.tiers.iter().enumerate() {
            let number = index + 1;
            let due = stamp(start + tier.after);
            for channel in &tier.notify {
                let key = NotificationKey::GroupSummary {
                    group: gid.clone(),
                    tier: number as u32,
                    channel: channel.clone(),
                };
                self.owe(Owed {
                    key,
                    incident: member,
                    kind: NotificationKind::Escalated,
                    round: 1,
                    tier: number as u32,
                    channel,
                    due: &due,
                    group: Some(gid),
                    now,
                })?;
            }
        }
        self.batch.outbox_touched = true;
        let detail = json!({"group": gid, "summary_due_at": stamp(start)});
        self.append(
            NewEntry::for_incident(Event::EscalationScheduled, member, &detail),
            now,
        )
    }

    /// Whether storm group `gid`'s summary will still list a member that joins now: every
    /// notification of its first tier is pending and not being sent (each is rendered, with
    /// the members escalated then, when it is claimed).
    pub(super) fn summary_will_list(&self, gid: &str, now: &str) -> Result<bool, StoreError> {
        let (all, waiting): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = ?3
                        AND (claimed_until IS NULL OR claimed_until < ?2) THEN 1 ELSE 0 END), 0)
                 FROM outbox WHERE group_id = ?1 AND kind = ?4 AND tier = 1",
            )?
            .query_row(
                params![
                    gid,
                    now,
                    OutboxState::Pending.as_str(),
                    NotificationKind::Escalated.as_str()
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
        Ok(all > 0 && waiting == all)
    }

    /// Storm group `n.group`'s summary `n` is due. It goes out while an incident that
    /// joined the group is still escalated (the group's first has notifications of its own),
    /// told through the first incident if it is still escalated, else the first such member;
    /// when every one was acknowledged or resolved it is not sent, and the audit log says so.
    pub(super) fn summary_due(
        &mut self,
        mut n: Notification,
        now: &str,
    ) -> Result<Option<Notification>, StoreError> {
        let gid = n.group.clone().unwrap_or_default();
        let leader: Option<String> = self
            .conn
            .prepare_cached("SELECT leader FROM escalation_groups WHERE id = ?1")?
            .query_row([&gid], |r| r.get(0))
            .optional()?;
        let leader = leader.unwrap_or_default();
        let unhandled = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM incidents WHERE escalation_group = ?1 AND state = 'escalated'
                 ORDER BY CASE WHEN id = ?2 THEN 0 ELSE 1 END, id LIMIT 2",
            )?;
            let rows = stmt.query_map(params![gid, leader], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let through = match unhandled.iter().any(|id| *id != leader) {
            true => unhandled.into_iter().next(),
            false => None,
        };
        if let Some(id) = through {
            if id != n.incident_id {
                self.conn
                    .prepare_cached("UPDATE outbox SET incident_id = ?2 WHERE id = ?1")?
                    .execute(params![n.id, id])?;
                n.incident_id = id;
            }
            return Ok(Some(n));
        }
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = ?3, done_at = ?2 WHERE id = ?1 AND state = ?4",
            )?
            .execute(params![
                n.id,
                now,
                OutboxState::Cancelled.as_str(),
                OutboxState::Pending.as_str()
            ])?;
        let detail = json!({
            "notifications": 1, "group": gid, "key": n.key.to_string(), "tier": n.tier, "channel": n.channel,
            "why": "every incident of the storm group was acknowledged or resolved before its summary was due",
        });
        self.append(
            NewEntry::for_incident(Event::NotificationsCancelled, &n.incident_id, &detail),
            now,
        )?;
        Ok(None)
    }
}

/// A member of a storm group, as read for its summary.
struct MemberRow {
    id: String,
    alertname: String,
    labels: String,
    state: String,
}
