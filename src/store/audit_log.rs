//! The audit log as the store keeps it: the chain's head, appending, and reading pages.
//!
//! Every entry hashes the previous entry's hash and all its own fields
//! ([`crate::audit::chain_hash`]). The writer holds the chain's head ([`Chain`]); a job
//! appends entries with [`Writer::append`], and they are written together just before the
//! batch's commit (nothing in a batch reads the audit log back). A job that rolls back
//! takes its entries and the head with it.

use super::db::{params, AuditRow, Db, OptionalExtension};
use super::writer::Writer;
use super::{Store, StoreError};
use crate::audit::{self, chain_hash, NewEntry};

/// The newest audit entry's (seq, hash) and the current batch's entries.
pub(super) struct Chain {
    /// The link the next entry chains to.
    head: (i64, String),
    /// The current batch's entries, written just before its commit.
    rows: Vec<AuditRow>,
}

/// Where the chain stood, to go back to when a job (or a commit) fails.
pub(super) struct ChainMark {
    head: (i64, String),
    rows: usize,
}

impl Chain {
    pub(super) fn new(head: (i64, String)) -> Chain {
        Chain {
            head,
            rows: Vec::new(),
        }
    }

    /// The head as the database has it now (another replica may have moved it).
    pub(super) fn set_head(&mut self, head: (i64, String)) {
        self.head = head;
    }

    pub(super) fn begin_batch(&mut self) {
        self.rows.clear();
    }

    pub(super) fn mark(&self) -> ChainMark {
        ChainMark {
            head: self.head.clone(),
            rows: self.rows.len(),
        }
    }

    pub(super) fn rewind(&mut self, mark: ChainMark) {
        self.head = mark.head;
        self.rows.truncate(mark.rows);
    }

    /// Writes the batch's entries, in one go where the database allows.
    pub(super) fn flush(&mut self, conn: &dyn Db) -> Result<(), StoreError> {
        let written = conn.insert_audit(&self.rows);
        self.rows.clear();
        written
    }
}

/// The sequence number and hash of the newest audit entry.
pub(super) fn audit_head(c: &dyn Db) -> Result<(i64, String), StoreError> {
    let head = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(head.unwrap_or((0, audit::GENESIS.to_string())))
}

impl Writer {
    /// Appends one audit entry at time `at` (a stored stamp), chained to the current head.
    /// The entry is written with the rest of the batch's entries, just before the commit.
    pub(super) fn append(&mut self, e: NewEntry, at: &str) -> Result<(), StoreError> {
        let chain = &mut self.chain;
        let seq = chain.head.0 + 1;
        let event = e.event.as_str();
        let hash = chain_hash(
            &chain.head.1,
            seq,
            at,
            event,
            e.incident_id.as_deref(),
            &e.detail,
        );
        let prev_hash = std::mem::replace(&mut chain.head, (seq, hash.clone())).1;
        chain.rows.push(AuditRow {
            seq,
            at: at.to_string(),
            event,
            incident_id: e.incident_id,
            detail: e.detail,
            prev_hash,
            hash,
        });
        Ok(())
    }
}

impl Store {
    /// Appends entries to the audit log, durably.
    pub async fn audit(&self, entries: Vec<NewEntry>) -> Result<(), StoreError> {
        self.inner
            .write(move |w| {
                let now = super::stamp(w.cx.now());
                entries.iter().cloned().try_for_each(|e| w.append(e, &now))
            })
            .await
    }

    /// Up to `limit` audit entries with `seq` greater than `after`, in order.
    pub async fn audit_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<audit::Entry>, StoreError> {
        self.inner
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, at, event, incident_id, detail, prev_hash, hash FROM audit
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after, limit as i64], |r| {
                    Ok(audit::Entry {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        event: r.get(2)?,
                        incident_id: r.get(3)?,
                        detail: r.get(4)?,
                        prev_hash: r.get(5)?,
                        hash: r.get(6)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await
    }
}
