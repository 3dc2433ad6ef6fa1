//! The one writer: a thread that owns the write connection and commits in groups.
//!
//! It takes the first waiting job, drains whatever else is already queued (up to
//! [`MAX_BATCH`] jobs and [`MAX_BATCH_WEIGHT`] units of work), runs them together inside
//! one transaction, commits once (one fsync) and only then answers every caller. If a job
//! fails, the transaction is rolled back and the batch runs again with each job in its own
//! savepoint, so the failing job rolls back to it and fails alone. A failing commit fails
//! the whole batch, and nothing in it was acknowledged. A broken connection
//! (PostgreSQL restarted) is replaced before the next batch.
//!
//! The writer knows jobs, savepoints and commits, not incidents: what a job does is its
//! own (the `impl Writer` blocks of each concern), the audit chain is [`Chain`]'s and what
//! the jobs keep in memory over a batch is [`Batch`]'s; the writer only rewinds both when
//! a job rolls back, and has them write and publish their part around the commit.

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::audit_log::{audit_head, Chain, ChainMark};
use super::batch::Batch;
use super::db::{Db, Dialect};
use super::engine::{Connector, Context, WRITE_LOCK};
use super::StoreError;
use crate::metrics::StoreMetrics;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Most work (alerts, for deliveries; 1 for anything else) in one transaction: a commit
/// stays short, so a small delivery never waits long behind a storm's big ones.
pub(super) const MAX_BATCH_WEIGHT: usize = 200;

/// One unit of work for the writer: `run` inside the transaction, `finish` after commit.
pub(super) trait Job: Send {
    fn run(&mut self, w: &mut Writer) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
    fn weight(&self) -> usize;
    /// What the job is about, for the batch to look up ahead (a delivery: its alerts'
    /// fingerprints); empty for any other job.
    fn hints(&self) -> &[String];
}

/// A job made of a closure, answered on a oneshot channel. The closure may run more than
/// once (a batch that rolled back is run again, its jobs apart): it borrows what it
/// writes, it does not consume it.
pub(super) struct FnJob<T, F> {
    f: F,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    weight: usize,
    hints: Vec<String>,
}

impl<T, F> FnJob<T, F> {
    pub(super) fn new(
        f: F,
        reply: oneshot::Sender<Result<T, StoreError>>,
        weight: usize,
        hints: Vec<String>,
    ) -> Self {
        FnJob {
            f,
            out: None,
            reply,
            weight,
            hints,
        }
    }
}

impl<T, F> Job for FnJob<T, F>
where
    T: Send,
    F: FnMut(&mut Writer) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, w: &mut Writer) -> Result<(), StoreError> {
        match (self.f)(w) {
            Ok(v) => {
                self.out = Some(Ok(v));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn weight(&self) -> usize {
        self.weight
    }

    fn hints(&self) -> &[String] {
        &self.hints
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match (committed, self.out) {
            (Ok(()), Some(out)) => out,
            (Ok(()), None) => Err(StoreError::Closed),
            (Err(e), _) => Err(e),
        };
        // The caller may have given up (timeout); the write stands either way.
        let _ = self.reply.send(answer);
    }
}

/// The write connection and what the writer keeps in memory about it.
pub(super) struct Writer {
    pub(super) conn: Box<dyn Db>,
    /// Opens a new connection when this one broke (PostgreSQL restarted or unreachable).
    reconnect: Option<Connector>,
    /// The audit chain's head and the batch's entries, written just before its commit.
    pub(super) chain: Chain,
    /// What the jobs of the current batch keep in memory beside the transaction.
    pub(super) batch: Batch,
    /// Who holds leases, the settings in force, the clock, new ids.
    pub(super) cx: Context,
    /// Fold the WAL into the database file as the writer stops (SQLite).
    pub(super) fold_wal: bool,
}

impl Writer {
    pub(super) fn new(
        conn: Box<dyn Db>,
        reconnect: Option<Connector>,
        chain: Chain,
        batch: Batch,
        cx: Context,
    ) -> Writer {
        Writer {
            conn,
            reconnect,
            chain,
            batch,
            cx,
            fold_wal: true,
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Box<dyn Job>>, metrics: StoreMetrics) {
        // A job taken from the queue that did not fit in the last batch goes first.
        let mut carry: Option<Box<dyn Job>> = None;
        loop {
            let first = match carry.take() {
                Some(job) => job,
                None => match rx.blocking_recv() {
                    Some(job) => job,
                    None => break,
                },
            };
            let mut weight = first.weight();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && weight < MAX_BATCH_WEIGHT {
                match rx.try_recv() {
                    Ok(job) if weight + job.weight() > MAX_BATCH_WEIGHT => {
                        carry = Some(job);
                        break;
                    }
                    Ok(job) => {
                        weight += job.weight();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let size = batch.len();
            self.commit_batch(batch);
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.batch_size.observe(size as f64);
        }
        // Closed: fold the WAL into the database file so a stopped medic leaves one file.
        if self.fold_wal && self.conn.dialect() == Dialect::Sqlite {
            if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "store: final checkpoint failed; the WAL is kept and replayed at next open");
            }
        }
    }

    /// Opens the transaction of a batch. With PostgreSQL it waits for the other replicas'
    /// writers (the advisory lock) and takes the audit chain's head as they left it.
    fn begin(&mut self) -> Result<(), StoreError> {
        if self.conn.is_broken() {
            if let Some(reconnect) = &self.reconnect {
                self.conn = reconnect()?;
                tracing::info!("store: reconnected to the database");
            }
        }
        match self.conn.dialect() {
            Dialect::Sqlite => self.conn.execute_batch("BEGIN IMMEDIATE"),
            Dialect::Postgres => {
                let began = self
                    .conn
                    .execute_batch(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
                    ))
                    .and_then(|()| audit_head(self.conn.as_ref()));
                match began {
                    Ok(head) => {
                        self.chain.set_head(head);
                        Ok(())
                    }
                    Err(e) => {
                        // Whatever failed (the lock's wait ran past statement_timeout, the
                        // head), the session must not stay in an aborted transaction: every
                        // later batch would fail in it.
                        let _ = self.conn.execute_batch("ROLLBACK");
                        Err(e)
                    }
                }
            }
        }
    }

    /// Commits a batch. Its jobs first run together in one transaction, without a
    /// savepoint each (a savepoint is a round trip and, in PostgreSQL, a subtransaction);
    /// if one of them fails, that transaction is rolled back and the batch runs again with
    /// each job in its own savepoint, so the failing job fails alone, as it always did.
    fn commit_batch(&mut self, mut batch: Vec<Box<dyn Job>>) {
        let outcome = match self.attempt(&mut batch, Isolation::Together) {
            Outcome::JobFailed(e) if batch.len() == 1 => {
                // Nothing else was in the transaction: the job failed alone already.
                if let Some(job) = batch.pop() {
                    job.finish(Err(e));
                }
                return;
            }
            Outcome::JobFailed(_) => self.attempt(&mut batch, Isolation::Apart),
            other => other,
        };
        match outcome {
            Outcome::Committed(results) => {
                self.batch.committed();
                for (job, r) in batch.into_iter().zip(results) {
                    job.finish(r);
                }
            }
            Outcome::Failed(msg) => {
                for job in batch {
                    job.finish(Err(StoreError::Commit(msg.clone())));
                }
            }
            Outcome::JobFailed(e) => {
                // Jobs run apart never end the attempt; kept for completeness.
                let msg = e.to_string();
                for job in batch {
                    job.finish(Err(StoreError::Commit(msg.clone())));
                }
            }
        }
    }

    /// Runs the batch's jobs in one transaction and commits it, or rolls it back.
    fn attempt(&mut self, batch: &mut [Box<dyn Job>], isolation: Isolation) -> Outcome {
        let chain_before = self.chain.mark();
        if let Err(e) = self.begin() {
            let msg = e.to_string();
            tracing::error!(error = %msg, "store: cannot begin a transaction");
            return Outcome::Failed(msg);
        }
        self.chain.begin_batch();
        self.cx.begin_batch();
        let hints: Vec<&str> = batch
            .iter()
            .flat_map(|j| j.hints())
            .map(String::as_str)
            .collect();
        let apart = isolation == Isolation::Apart;
        // Apart, each job runs after a savepoint: a failing job rolls back to it and fails
        // alone. Releasing one job's savepoint and setting the next's is one round trip.
        let mut savepoint = self
            .batch
            .begin(self.conn.as_ref(), &hints)
            .and_then(|()| match apart {
                true => self.conn.execute_batch("SAVEPOINT job"),
                false => Ok(()),
            })
            .map_err(|e| e.to_string());
        // The first savepoint step that failed, if any: the batch cannot be trusted then.
        let mut doubt = savepoint.clone().err();
        let mut results = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            if job.hints().is_empty() {
                // A job that is not a delivery may change what was looked up ahead.
                self.batch.forget_lookups();
            }
            if !apart {
                // Together: the first failure ends the attempt, and nothing is kept.
                let r = match &savepoint {
                    Ok(()) => job.run(self),
                    Err(m) => Err(StoreError::Commit(m.clone())),
                };
                if let Err(e) = r {
                    self.abandon(chain_before);
                    return match doubt {
                        Some(m) => Outcome::Failed(m),
                        None => Outcome::JobFailed(e),
                    };
                }
                results.push(Ok(()));
                continue;
            }
            let chain_mark = self.chain.mark();
            let batch_mark = self.batch.mark();
            let r = match &savepoint {
                Ok(()) => job.run(self),
                Err(m) => Err(StoreError::Commit(m.clone())),
            };
            match r {
                Ok(()) => {
                    savepoint = self
                        .conn
                        .execute_batch("RELEASE job; SAVEPOINT job")
                        .map_err(|e| e.to_string());
                    if let Err(m) = &savepoint {
                        doubt.get_or_insert_with(|| m.clone());
                    }
                    results.push(Ok(()));
                }
                Err(e) => {
                    // The savepoint stays, for the next job.
                    savepoint = self
                        .conn
                        .execute_batch("ROLLBACK TO job")
                        .map_err(|e| e.to_string());
                    if let Err(m) = &savepoint {
                        doubt.get_or_insert_with(|| m.clone());
                    }
                    self.chain.rewind(chain_mark);
                    self.batch.rewind(batch_mark);
                    results.push(Err(e));
                }
            }
        }
        // What the batch kept in memory and its audit entries, in one go, then the commit:
        // all or nothing. A savepoint that could not be set or released leaves the
        // transaction in doubt (PostgreSQL would turn the COMMIT of an aborted transaction
        // into a rollback): fail the batch.
        let committed = doubt
            .map_or(Ok(()), |m| Err(StoreError::Commit(m)))
            .and_then(|()| self.batch.flush(self.conn.as_ref()))
            .and_then(|()| self.chain.flush(self.conn.as_ref()))
            .and_then(|()| self.conn.execute_batch("COMMIT"));
        if let Err(e) = committed {
            let msg = e.to_string();
            tracing::error!(error = %msg, jobs = batch.len(), "store: commit failed; nothing in this batch was acknowledged");
            self.abandon(chain_before);
            return Outcome::Failed(msg);
        }
        Outcome::Committed(results)
    }

    /// Rolls the transaction back and forgets what the batch kept in memory.
    fn abandon(&mut self, chain_before: ChainMark) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.chain.rewind(chain_before);
        self.batch.failed();
    }
}

/// How a batch's jobs are kept apart inside its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// No savepoints: the quick way, for the batches in which no job fails (nearly all).
    Together,
    /// A savepoint per job: a failing job rolls back alone.
    Apart,
}

/// How an attempt at a batch ended.
enum Outcome {
    /// Committed; each job's own result.
    Committed(Vec<Result<(), StoreError>>),
    /// A job failed while the jobs ran together: the transaction was rolled back.
    JobFailed(StoreError),
    /// The transaction could not begin, or commit: every job fails with it.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use crate::audit::{Event, NewEntry, Verifier};
    use crate::metrics::StoreMetrics;
    use crate::store::stamp;

    /// Jobs of one batch: they first run together; one fails, so the batch is rolled back
    /// and runs again with each job apart. The failing one is rolled back to its savepoint
    /// (its audit entry with it), the others commit once, and the chain stays whole.
    #[tokio::test]
    async fn a_failing_job_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::postgres::test_url(&dir.path().join("medic.db"));
        let store = crate::store::Store::open(&url, StoreMetrics::default()).unwrap();
        let engine = &store.inner;
        fn entry(n: u32) -> NewEntry {
            NewEntry::new(Event::Paused, &json!({ "n": n }))
        }
        // The writer is held in a job of its own until the three jobs are queued, so that
        // they make one batch.
        let (started, writer_busy) = std::sync::mpsc::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = tokio::spawn({
            let engine = engine.clone();
            async move {
                engine
                    .write(move |_| {
                        let _ = started.send(());
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || writer_busy.recv())
            .await
            .unwrap()
            .unwrap();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ok = |n: u32| {
            let runs = runs.clone();
            engine.write(move |w| {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let now = stamp(Utc::now());
                w.append(entry(n), &now)
            })
        };
        let failing = engine.write(|w| {
            let now = stamp(Utc::now());
            w.append(entry(99), &now)?;
            w.conn.execute("INSERT INTO no_such_table VALUES (1)", ())?;
            Ok(())
        });
        // `join!` polls in order: the three jobs are queued before the writer is released.
        let (a, bad, b, ()) = tokio::join!(ok(1), failing, ok(2), async {
            release.send(()).unwrap();
        });
        holder.await.unwrap().unwrap();
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert!(bad.is_err());
        // Together, the first good job ran and the failing one ended the attempt; apart,
        // both good jobs ran: three runs, so the batch was run twice.
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the batch ran together, then apart"
        );
        let entries = store.audit_page(0, 100).await.unwrap();
        let details: Vec<&str> = entries.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, [r#"{"n":1}"#, r#"{"n":2}"#]);
        let mut v = Verifier::default();
        for e in &entries {
            v.check(e).unwrap();
        }
        store.close().await;
    }
}
