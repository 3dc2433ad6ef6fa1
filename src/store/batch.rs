//! What the store's jobs keep in memory over one batch, beside its transaction.
//!
//! The writer (`writer.rs`) treats this as a whole: it begins it with the batch, marks it
//! before each job and rewinds it to the mark when the job rolls back, has it write what is
//! left to write just before the commit, and has it publish what the batch did after the
//! commit (or forget it, when the commit failed).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

use super::changelog::{self, Change, Log};
use super::db::Db;
use super::incidents::{prefetch_latest, LatestRow};
use super::storm::{write_group_sizes, GroupState};
use super::StoreError;
use crate::incident::Reason;
use crate::metrics::AutomationMetrics;

pub(super) struct Batch {
    /// The newest incident of each fingerprint of this batch's deliveries (`None`: none),
    /// as looked up when the batch began. Each answer is used once.
    pub(super) prefetched: HashMap<String, Option<LatestRow>>,
    /// The newest storm group of each route and reason, as this batch has seen it (the
    /// write lock makes it exact until the commit), with sizes written at the commit.
    pub(super) groups: HashMap<(String, Reason), GroupState>,
    /// The batch's state changes, logged after its commit.
    pub(super) changes: Vec<Change>,
    /// Set by a job that made a notification due: the sender is woken after the commit.
    pub(super) outbox_touched: bool,
    outbox_wake: Arc<Notify>,
    /// Logs the committed changes off the writer's thread.
    log: Log,
    /// What the committed changes achieved, counted before the callers are answered.
    automation: AutomationMetrics,
}

/// Where a batch stood before a job, to go back to if the job rolls back.
pub(super) struct BatchMark {
    changes: usize,
    groups: HashMap<(String, Reason), GroupState>,
}

impl Batch {
    pub(super) fn new(outbox_wake: Arc<Notify>, automation: AutomationMetrics) -> Batch {
        Batch {
            prefetched: HashMap::new(),
            groups: HashMap::new(),
            changes: Vec::new(),
            outbox_touched: false,
            outbox_wake,
            log: Log::start(),
            automation,
        }
    }

    /// A new batch, about the incidents of `fingerprints` (its deliveries' alerts).
    pub(super) fn begin(&mut self, conn: &dyn Db, fingerprints: &[&str]) -> Result<(), StoreError> {
        self.outbox_touched = false;
        self.groups.clear();
        self.prefetched = prefetch_latest(conn, fingerprints)?;
        Ok(())
    }

    /// Drops what was looked up ahead: a job that may change incidents runs next.
    pub(super) fn forget_lookups(&mut self) {
        self.prefetched.clear();
    }

    pub(super) fn mark(&self) -> BatchMark {
        BatchMark {
            changes: self.changes.len(),
            groups: self.groups.clone(),
        }
    }

    pub(super) fn rewind(&mut self, mark: BatchMark) {
        self.changes.truncate(mark.changes);
        self.groups = mark.groups;
        self.prefetched.clear();
    }

    /// Writes what the batch kept for its end (the storm groups' sizes).
    pub(super) fn flush(&mut self, conn: &dyn Db) -> Result<(), StoreError> {
        write_group_sizes(conn, self.groups.values())
    }

    /// The batch is committed: wake the sender if a notification became due, count the
    /// state changes and log them.
    pub(super) fn committed(&mut self) {
        if self.outbox_touched {
            self.outbox_wake.notify_one();
        }
        changelog::count(&self.automation, &self.changes);
        self.log.committed(&mut self.changes);
    }

    /// The batch's commit failed: none of its changes happened.
    pub(super) fn failed(&mut self) {
        self.changes.clear();
    }
}
