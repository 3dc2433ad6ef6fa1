//! Retention: removing closed incidents older than `store.retention`, and the audit log's
//! oldest entries behind a checkpoint, a small batch at a time on the writer.
//!
//! Which incidents are closed (and since when):
//!
//! - `resolved`: since it resolved (`resolved_at`);
//! - `ignored`: since it opened. Nothing is ever run or sent for it; while its alert keeps
//!   firing (Alertmanager's `Watchdog`), its resends only count on it. Once it is removed,
//!   the next resend opens a new ignored incident, which again does nothing;
//! - `acknowledged`: since medic last heard its alert (`last_seen_at`). A person took it
//!   over while it still fires, and Alertmanager resends a firing alert at every
//!   `repeat_interval`: removing it while it is heard of would open a new incident and run
//!   its runbook again. One not heard of for the whole retention (silenced, or gone
//!   without a resolution) is history;
//! - everything else is open work and kept, whatever its age: queued, remediating or
//!   verifying incidents are in flight, and an escalated incident nobody acknowledged is
//!   still someone's to handle.
//!
//! A closed incident is also kept while something is still owed for it: a notification
//! pending in the outbox (the "resolved" message after an escalation), or a silence not
//! expired yet. With it go its notifications, its silences, the one-click links used on it,
//! and its storm group once no incident of the group is left. Rate-limit buckets whose
//! budget is whole again (their theoretical arrival time has passed) go too: they are the
//! same as no bucket.
//!
//! The audit log is one chain, so only its front can go: the longest run of entries, from
//! the oldest, that are older than the retention and belong to no incident still kept. An
//! incident kept for longer than the retention (still open) holds back the pruning of every
//! entry after its first one; [`Pruned::held_back`] says which. The removal writes a
//! checkpoint entry (`audit::checkpoint`) in the same transaction, and `audit_checkpoints`
//! tells the database's trigger which entries may go.
//!
//! Replicas: a batch first takes or renews the `retention` lease (`leases` table); a
//! replica whose lease another holds does nothing, so one replica prunes at a time. Each
//! batch is one writer job, bounded ([`INCIDENTS_PER_BATCH`], [`AUDIT_PER_BATCH`]), so
//! deliveries queued behind it wait for one short job, never for the whole backlog.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{params, OptionalExtension, Val};
use super::writer::{Writer, MAX_BATCH_WEIGHT};
use super::{stamp, Store, StoreError};
use crate::audit::checkpoint::Checkpoint;
use crate::audit::{Event, NewEntry};

/// Most incidents removed in one batch.
pub const INCIDENTS_PER_BATCH: usize = 100;
/// Most audit entries removed in one batch.
pub const AUDIT_PER_BATCH: usize = 500;
/// Most spent rate-limit buckets removed in one batch.
const BUCKETS_PER_BATCH: usize = 500;
/// How long the pruning replica keeps the role unless it renews it: long enough to cover
/// the pauses between passes, so the same replica keeps pruning.
pub const LEASE: Duration = Duration::from_secs(90);
/// The lease's name in the `leases` table.
const LEASE_NAME: &str = "retention";

/// The queries that find closed incidents older than `?1` (at most `?2`), one per closed
/// state, each in the order of an index of its own (migration 0009).
fn closed_queries() -> [String; 3] {
    // Nothing owed for it any more: no notification pending, no silence to expire.
    const SETTLED: &str = "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id AND o.state = 'pending')
         AND NOT EXISTS (SELECT 1 FROM silences s WHERE s.incident_id = i.id AND s.expired_at IS NULL)";
    [
        ("resolved", "resolved_at"),
        ("ignored", "created_at"),
        ("acknowledged", "last_seen_at"),
    ]
    .map(|(state, since)| {
        format!(
            "SELECT i.id, i.escalation_group FROM incidents i
                 WHERE i.state = '{state}' AND i.{since} < ?1 AND {SETTLED}
                 ORDER BY i.{since} LIMIT ?2"
        )
    })
}

/// `?1, ?2, ...`: one placeholder per incident of a full batch.
fn placeholders() -> String {
    (1..=INCIDENTS_PER_BATCH)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `values` as the parameters of [`placeholders`]: the last one repeated to fill the list.
fn padded(values: &[&str]) -> Vec<Val> {
    let last = values.last().copied().unwrap_or_default();
    (0..INCIDENTS_PER_BATCH)
        .map(|i| Val::Text(values.get(i).copied().unwrap_or(last).to_string()))
        .collect()
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prune {
    /// This replica pruned (or found nothing to prune).
    Pruned(Pruned),
    /// Another replica holds the retention lease.
    Elsewhere { holder: String },
}

/// What one batch removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub incidents: u64,
    pub audit_entries: u64,
    /// The seq of the last audit entry removed, recorded in a new checkpoint entry.
    pub checkpoint: Option<i64>,
    /// When nothing could go from the audit log though its oldest entry is older than the
    /// retention: that entry and the incident it belongs to, still kept.
    pub held_back: Option<HeldBack>,
    /// How long the batch's work held the writer (real time, its commit aside).
    pub took: Duration,
}

impl Pruned {
    /// Whether a next batch would find nothing more.
    pub fn is_done(&self) -> bool {
        self.incidents < INCIDENTS_PER_BATCH as u64 && self.audit_entries < AUDIT_PER_BATCH as u64
    }
}

/// The oldest audit entry, kept because its incident is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub seq: i64,
    pub at: String,
    pub incident: String,
}

impl Store {
    /// One batch of retention: removes up to [`INCIDENTS_PER_BATCH`] incidents closed for
    /// longer than `retention` and up to [`AUDIT_PER_BATCH`] audit entries from the front
    /// of the log (behind a checkpoint), unless another replica holds the retention lease.
    pub async fn prune(&self, retention: Duration) -> Result<Prune, StoreError> {
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
        // Alone in its transaction: a delivery never shares (or waits on) a batch's commit
        // beyond this one job.
        self.inner
            .write_weighted(MAX_BATCH_WEIGHT, move |w| w.prune(retention))
            .await
    }

    /// The oldest audit entry kept: its seq and time.
    pub async fn oldest_audit_entry(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.inner
            .read(|c| {
                c.query_row("SELECT seq, at FROM audit ORDER BY seq LIMIT 1", (), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .await
    }
}

impl Writer {
    fn prune(&mut self, retention: chrono::Duration) -> Result<Prune, StoreError> {
        let started = std::time::Instant::now();
        let now = self.cx.now();
        if let Some(holder) = self.hold_lease(now)? {
            return Ok(Prune::Elsewhere { holder });
        }
        let cutoff = stamp(
            now.checked_sub_signed(retention)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        );
        let incidents = self.prune_incidents(&cutoff)?;
        self.prune_buckets(now)?;
        let mut pruned = self.prune_audit(&cutoff, &stamp(now))?;
        pruned.incidents = incidents;
        pruned.took = started.elapsed();
        Ok(Prune::Pruned(pruned))
    }

    /// Takes or renews the retention lease; the holder's name when another holds it.
    fn hold_lease(&mut self, now: DateTime<Utc>) -> Result<Option<String>, StoreError> {
        let held: Option<(String, String)> = self
            .conn
            .prepare_cached("SELECT owner, until FROM leases WHERE name = ?1")?
            .query_row([LEASE_NAME], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((owner, until)) = held {
            if owner != self.cx.owner && until > stamp(now) {
                return Ok(Some(owner));
            }
        }
        let until = now + chrono::Duration::from_std(LEASE).unwrap_or(chrono::TimeDelta::MAX);
        self.conn
            .prepare_cached(
                "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until",
            )?
            .execute(params![LEASE_NAME, self.cx.owner, stamp(until)])?;
        Ok(None)
    }

    /// Removes up to [`INCIDENTS_PER_BATCH`] closed incidents older than `cutoff`, with
    /// what refers to them. Returns how many.
    fn prune_incidents(&mut self, cutoff: &str) -> Result<u64, StoreError> {
        let queries = closed_queries();
        let mut found: Vec<(String, Option<String>)> = Vec::new();
        for sql in &queries {
            let room = INCIDENTS_PER_BATCH - found.len();
            if room == 0 {
                break;
            }
            let rows = self
                .conn
                .prepare_cached(sql)?
                .query_map(params![cutoff, room], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                found.push(row?);
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        // One statement per table for the whole batch (a round trip each on PostgreSQL),
        // the list padded to a fixed length so that each statement is prepared once.
        let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
        let mut groups: Vec<&str> = found.iter().filter_map(|(_, g)| g.as_deref()).collect();
        groups.sort_unstable();
        groups.dedup();
        for (table, column) in [
            ("outbox", "incident_id"),
            ("silences", "incident_id"),
            ("used_links", "incident_id"),
            ("incidents", "id"),
        ] {
            let sql = format!("DELETE FROM {table} WHERE {column} IN ({})", placeholders());
            self.conn.prepare_cached(&sql)?.execute(padded(&ids))?;
        }
        if !groups.is_empty() {
            let sql = format!(
                "DELETE FROM escalation_groups WHERE id IN ({})
                 AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.escalation_group = escalation_groups.id)",
                placeholders()
            );
            self.conn.prepare_cached(&sql)?.execute(padded(&groups))?;
        }
        Ok(found.len() as u64)
    }

    /// Removes rate-limit buckets whose budget is whole again: the same as no bucket.
    fn prune_buckets(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM rate_buckets WHERE key IN
                 (SELECT key FROM rate_buckets WHERE tat_us < ?1 LIMIT ?2)",
            )?
            .execute(params![now.timestamp_micros(), BUCKETS_PER_BATCH])?;
        Ok(())
    }

    /// Removes the front of the audit log: up to [`AUDIT_PER_BATCH`] entries, from the
    /// oldest, each older than `cutoff` and of no incident still kept; then appends the
    /// checkpoint that accounts for them.
    fn prune_audit(&mut self, cutoff: &str, now: &str) -> Result<Pruned, StoreError> {
        struct Front {
            seq: i64,
            hash: String,
            at: String,
            incident: Option<String>,
            kept: bool,
        }
        let rows = self
            .conn
            .prepare_cached(
                "SELECT a.seq, a.hash, a.at, a.incident_id,
                    CASE WHEN a.incident_id IS NOT NULL
                          AND EXISTS (SELECT 1 FROM incidents i WHERE i.id = a.incident_id)
                    THEN 1 ELSE 0 END
                 FROM audit a ORDER BY a.seq LIMIT ?1",
            )?
            .query_map([AUDIT_PER_BATCH], |r| {
                Ok(Front {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                    at: r.get(2)?,
                    incident: r.get(3)?,
                    kept: r.get::<_, i64>(4)? == 1,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let removable = rows
            .iter()
            .take_while(|f| f.at.as_str() < cutoff && !f.kept)
            .count();
        let mut pruned = Pruned::default();
        let Some(last) = removable.checked_sub(1).map(|i| &rows[i]) else {
            pruned.held_back = rows
                .first()
                .filter(|f| f.at.as_str() < cutoff)
                .and_then(|f| {
                    Some(HeldBack {
                        seq: f.seq,
                        at: f.at.clone(),
                        incident: f.incident.clone()?,
                    })
                });
            return Ok(pruned);
        };
        let checkpoint = Checkpoint {
            seq: last.seq,
            hash: last.hash.clone(),
            first: rows[0].seq,
            removed: removable as u64,
            before: cutoff.to_string(),
            by: self.cx.owner.clone(),
        };
        self.conn
            .prepare_cached("INSERT INTO audit_checkpoints (seq, hash, at) VALUES (?1, ?2, ?3)")?
            .execute(params![last.seq, last.hash, now])?;
        self.conn
            .prepare_cached("DELETE FROM audit_checkpoints WHERE seq < ?1")?
            .execute([last.seq])?;
        self.conn
            .prepare_cached("DELETE FROM audit WHERE seq <= ?1")?
            .execute([last.seq])?;
        self.append(NewEntry::new(Event::AuditCheckpoint, &checkpoint), now)?;
        pruned.audit_entries = removable as u64;
        pruned.checkpoint = Some(last.seq);
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests;
