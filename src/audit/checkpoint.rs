//! Checkpoints: how the chain stays checkable after retention removed its oldest entries.
//!
//! Entries are in one global sequence, so retention only ever removes a prefix of the
//! chain, and in the same transaction appends an `audit_checkpoint` entry that records the
//! seq and hash of the last entry it removed ([`Checkpoint`]). The first kept entry's
//! `prev_hash` is that hash. [`ChainCheck`] walks what is kept: when the first entry is not
//! entry 1, it takes the chain up after it, and the walk only succeeds if, further on, it
//! meets a checkpoint (itself chained and hashed like any entry) that names exactly that
//! seq and that hash. So removing entries from the front without a checkpoint is caught,
//! and so is a checkpoint that was inserted, edited or that does not match what follows it.
//!
//! An export (`medic audit export`) is checked the same way, except that an archive may
//! also start where an earlier archive ended ([`Source::Archive`]): then it says so, with the
//! hash the earlier archive must end with.

use serde::{Deserialize, Serialize};

use super::{Broken, Entry, Event, Verifier};

/// The detail of an `audit_checkpoint` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last entry removed: the first kept entry follows it.
    pub seq: i64,
    /// Its hash: the first kept entry's `prev_hash`.
    pub hash: String,
    /// The first entry this pruning removed, and how many it removed.
    pub first: i64,
    pub removed: u64,
    /// Entries older than this, and of no incident still kept, could be removed.
    pub before: String,
    /// The medic process that pruned (as it holds leases).
    pub by: String,
}

impl Checkpoint {
    /// The checkpoint an entry records, if it is one (and its detail reads as one).
    pub fn of(e: &Entry) -> Option<Checkpoint> {
        if e.event != Event::AuditCheckpoint.as_str() {
            return None;
        }
        serde_json::from_str(&e.detail).ok()
    }
}

/// Where the entries being checked come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The store: entries missing at the front must be accounted for by a checkpoint.
    Store,
    /// An export: it may also continue an earlier archive.
    Archive,
}

/// How the checked entries begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At entry 1, chained to the genesis hash.
    Genesis,
    /// After the entries a checkpoint accounts for: up to `seq`, recorded in entry `entry`.
    Checkpoint { seq: i64, entry: i64 },
    /// After entry `seq` with hash `hash`, which is not among them (an earlier archive).
    Continues { seq: i64, hash: String },
}

/// The chain checked: how many entries, from where, to which head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub entries: u64,
    /// The first and last entries checked (none when there were none).
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// The hash of the last entry (the genesis hash when there was none).
    pub head: String,
    pub start: Start,
}

/// A chain that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Broken(#[from] Broken),
    #[error("audit entries 1 to {} are missing and no checkpoint accounts for them: the log starts at entry {first}", .first - 1)]
    Unaccounted { first: i64 },
    #[error("audit entry {first} does not follow the checkpoint in entry {entry}: the checkpoint records hash {recorded} for entry {}, the entry chains to {found}", .first - 1)]
    Mismatch {
        first: i64,
        entry: i64,
        recorded: String,
        found: String,
    },
}

/// Walks entries in `seq` order (feed it page by page), then [`ChainCheck::finish`].
#[derive(Debug)]
pub struct ChainCheck {
    source: Source,
    verifier: Verifier,
    first: Option<i64>,
    last: Option<i64>,
    /// While the first entry is not entry 1: the link it was taken up after.
    pending: Option<(i64, String)>,
    /// The checkpoint entry that accounts for the missing front, once met.
    confirmed: Option<(i64, i64)>,
}

impl ChainCheck {
    pub fn new(source: Source) -> ChainCheck {
        ChainCheck {
            source,
            verifier: Verifier::default(),
            first: None,
            last: None,
            pending: None,
            confirmed: None,
        }
    }

    /// Checks the next entry.
    pub fn check(&mut self, e: &Entry) -> Result<(), ChainError> {
        if self.first.is_none() {
            self.first = Some(e.seq);
            if e.seq > 1 {
                // Taken up on the entry's own word, until a checkpoint confirms it.
                self.verifier = Verifier::resume(e.seq - 1, &e.prev_hash);
                self.pending = Some((e.seq - 1, e.prev_hash.clone()));
            }
        }
        self.verifier.check(e)?;
        self.last = Some(e.seq);
        if let (Some((seq, hash)), None) = (&self.pending, self.confirmed) {
            if let Some(cp) = Checkpoint::of(e).filter(|cp| cp.seq == *seq) {
                if cp.hash != *hash {
                    return Err(ChainError::Mismatch {
                        first: seq + 1,
                        entry: e.seq,
                        recorded: cp.hash,
                        found: hash.clone(),
                    });
                }
                self.confirmed = Some((cp.seq, e.seq));
            }
        }
        Ok(())
    }

    /// The result, once every entry was checked.
    pub fn finish(self) -> Result<Report, ChainError> {
        let (entries, head) = self.verifier.summary();
        let start = match (self.pending, self.confirmed) {
            (None, _) => Start::Genesis,
            (Some(_), Some((seq, entry))) => Start::Checkpoint { seq, entry },
            (Some((seq, _)), None) if self.source == Source::Store => {
                return Err(ChainError::Unaccounted { first: seq + 1 })
            }
            (Some((seq, hash)), None) => Start::Continues { seq, hash },
        };
        Ok(Report {
            entries,
            first: self.first,
            last: self.last,
            head: head.to_string(),
            start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{chain_hash, GENESIS};

    /// A chain of `n` entries; those whose seq is in `checkpoints` (seq, (removed seq))
    /// are checkpoints of the entries up to that seq.
    fn chain(n: i64, checkpoints: &[(i64, i64)]) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 1..=n {
            let at = format!("2026-11-23T10:00:{:02}.000000Z", seq % 60);
            let (event, detail) = match checkpoints.iter().find(|c| c.0 == seq) {
                Some(&(_, upto)) => {
                    let cp = Checkpoint {
                        seq: upto,
                        hash: out[(upto - 1) as usize].hash.clone(),
                        first: 1,
                        removed: upto as u64,
                        before: at.clone(),
                        by: "test".into(),
                    };
                    ("audit_checkpoint", serde_json::to_string(&cp).unwrap())
                }
                None => ("state_changed", format!("{{\"n\":{seq}}}")),
            };
            let hash = chain_hash(&prev, seq, &at, event, None, &detail);
            out.push(Entry {
                seq,
                at,
                event: event.into(),
                incident_id: None,
                detail,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        out
    }

    fn check(entries: &[Entry], source: Source) -> Result<Report, ChainError> {
        let mut c = ChainCheck::new(source);
        for e in entries {
            c.check(e)?;
        }
        c.finish()
    }

    #[test]
    fn a_whole_chain_starts_at_genesis() {
        let r = check(&chain(5, &[]), Source::Store).unwrap();
        assert_eq!((r.entries, r.first, r.last), (5, Some(1), Some(5)));
        assert_eq!(r.start, Start::Genesis);
        let empty = check(&[], Source::Store).unwrap();
        assert_eq!((empty.entries, empty.head.as_str()), (0, GENESIS));
    }

    #[test]
    fn a_pruned_chain_is_checked_from_its_checkpoint() {
        // Entries 1..=4 removed; entry 8 is the checkpoint that says so.
        let c = chain(10, &[(8, 4)]);
        let r = check(&c[4..], Source::Store).unwrap();
        assert_eq!(r.start, Start::Checkpoint { seq: 4, entry: 8 });
        assert_eq!((r.entries, r.first), (6, Some(5)));
        // An older checkpoint further on changes nothing; a later pruning's counts.
        let c = chain(12, &[(6, 2), (11, 7)]);
        let r = check(&c[7..], Source::Store).unwrap();
        assert_eq!(r.start, Start::Checkpoint { seq: 7, entry: 11 });
    }

    #[test]
    fn entries_removed_without_a_checkpoint_are_caught() {
        let c = chain(10, &[]);
        assert_eq!(
            check(&c[3..], Source::Store).unwrap_err().to_string(),
            "audit entries 1 to 3 are missing and no checkpoint accounts for them: the log starts at entry 4"
        );
        // More removed than the checkpoint accounts for.
        let c = chain(10, &[(8, 4)]);
        assert_eq!(
            check(&c[6..], Source::Store).unwrap_err(),
            ChainError::Unaccounted { first: 7 }
        );
        // Fewer: a front no checkpoint names exactly is not accounted for either.
        assert_eq!(
            check(&c[2..], Source::Store).unwrap_err(),
            ChainError::Unaccounted { first: 3 }
        );
        // Nothing removed: the checkpoint is an entry like any other.
        assert_eq!(check(&c, Source::Store).unwrap().start, Start::Genesis);
    }

    #[test]
    fn a_forged_checkpoint_is_no_escape() {
        // A checkpoint that names the right seq but another hash.
        let mut c = chain(10, &[(8, 4)]);
        let mut cp = Checkpoint::of(&c[7]).unwrap();
        cp.hash = "f".repeat(64);
        c[7].detail = serde_json::to_string(&cp).unwrap();
        // As stored, its own hash no longer matches.
        assert!(matches!(
            check(&c[4..], Source::Store),
            Err(ChainError::Broken(Broken::Edited { seq: 8, .. }))
        ));
        // Rehashed (and the rest of the chain with it): the first kept entry does not
        // follow it.
        let c = rechain(c, 7);
        assert!(matches!(
            check(&c[4..], Source::Store),
            Err(ChainError::Mismatch {
                first: 5,
                entry: 8,
                ..
            })
        ));
        // An entry of the chain edited into a checkpoint of the removed front.
        let mut c = chain(10, &[]);
        let cp = Checkpoint {
            seq: 4,
            hash: c[3].hash.clone(),
            first: 1,
            removed: 4,
            before: String::new(),
            by: "forger".into(),
        };
        c[8].event = "audit_checkpoint".into();
        c[8].detail = serde_json::to_string(&cp).unwrap();
        assert!(matches!(
            check(&c[4..], Source::Store),
            Err(ChainError::Broken(Broken::Edited { seq: 9, .. }))
        ));
    }

    #[test]
    fn an_edit_after_the_checkpoint_is_still_caught() {
        let mut c = chain(10, &[(8, 4)]);
        c[8].detail = "{\"n\":99}".into();
        assert!(matches!(
            check(&c[4..], Source::Store),
            Err(ChainError::Broken(Broken::Edited { seq: 9, .. }))
        ));
        // Also between the first kept entry and the checkpoint.
        let mut c = chain(10, &[(8, 4)]);
        c[5].detail = "{\"n\":99}".into();
        assert!(matches!(
            check(&c[4..], Source::Store),
            Err(ChainError::Broken(Broken::Edited { seq: 6, .. }))
        ));
    }

    #[test]
    fn an_archive_may_continue_an_earlier_one() {
        let c = chain(10, &[]);
        let r = check(&c[3..], Source::Archive).unwrap();
        assert_eq!(
            r.start,
            Start::Continues {
                seq: 3,
                hash: c[2].hash.clone()
            }
        );
        // Its checkpoint, when it holds one, accounts for its start.
        let c = chain(10, &[(8, 4)]);
        let r = check(&c[4..], Source::Archive).unwrap();
        assert_eq!(r.start, Start::Checkpoint { seq: 4, entry: 8 });
    }

    /// Recomputes every hash from index `from` on, as someone rewriting the log would.
    fn rechain(mut c: Vec<Entry>, from: usize) -> Vec<Entry> {
        for i in from..c.len() {
            let prev = if i == 0 {
                GENESIS.to_string()
            } else {
                c[i - 1].hash.clone()
            };
            let e = &mut c[i];
            e.prev_hash = prev;
            e.hash = chain_hash(
                &e.prev_hash,
                e.seq,
                &e.at,
                &e.event,
                e.incident_id.as_deref(),
                &e.detail,
            );
        }
        c
    }
}
