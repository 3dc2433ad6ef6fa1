//! Reading the whole audit log in one consistent snapshot, page by page: what `medic audit
//! verify` checks and `medic audit export` writes.
//!
//! The pages are read inside one read transaction (SQLite's snapshot, PostgreSQL's
//! `REPEATABLE READ`), so a pruning that commits meanwhile (another process's retention)
//! cannot make the reader see a log whose front moved between two pages. Pages are handed
//! over through a small channel as they are read: a log of any size streams in bounded
//! memory, and a reader that stops (drops the receiver) ends the scan.

use tokio::sync::mpsc;

use super::db::{params, Db, Dialect};
use super::{Store, StoreError};
use crate::audit;

/// Entries read per page.
const PAGE: usize = 1000;
/// Pages read ahead of the consumer.
const AHEAD: usize = 2;

/// One page of a scan, or the error that ended it.
pub type Page = Result<Vec<audit::Entry>, StoreError>;

impl Store {
    /// Every audit entry with `seq` greater than `after`, in order, in pages, from one
    /// snapshot of the log.
    pub fn audit_scan(&self, after: i64) -> mpsc::Receiver<Page> {
        let (tx, rx) = mpsc::channel(AHEAD);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let failed = tx.clone();
            let scanned = inner
                .read(move |c| {
                    let begin = match c.dialect() {
                        Dialect::Sqlite => "BEGIN",
                        Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                    };
                    c.execute_batch(begin)?;
                    let scanned = pages(c, after, &tx);
                    let _ = c.execute_batch("ROLLBACK");
                    scanned
                })
                .await;
            if let Err(e) = scanned {
                let _ = failed.send(Err(e)).await;
            }
        });
        rx
    }
}

/// Reads pages into `tx` until the log ends or the receiver is gone.
fn pages(c: &dyn Db, mut after: i64, tx: &mpsc::Sender<Page>) -> Result<(), StoreError> {
    loop {
        let mut stmt = c.prepare_cached(
            "SELECT seq, at, event, incident_id, detail, prev_hash, hash FROM audit
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let page = stmt
            .query_map(params![after, PAGE], |r| {
                Ok(audit::Entry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    event: r.get(2)?,
                    incident_id: r.get(3)?,
                    detail: r.get(4)?,
                    prev_hash: r.get(5)?,
                    hash: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        let full = page.len() == PAGE;
        if tx.blocking_send(Ok(page)).is_err() || !full {
            return Ok(());
        }
    }
}
