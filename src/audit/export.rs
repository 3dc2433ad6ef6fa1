//! The audit log as an archive: one JSON document a line, each an entry with its hashes
//! (`medic audit export`), and the check of such a file on its own (`medic audit verify
//! --file`), without the store.
//!
//! A line holds every stored field; `detail` is the exact JSON text that was hashed, as a
//! string (`jq '.detail | fromjson'` reads it), so that the file re-checks byte for byte:
//!
//! ```text
//! {"seq":1,"at":"2026-11-23T10:00:00.000000Z","event":"server_started","incident_id":null,"detail":"{...}","prev_hash":"000...","hash":"3f1..."}
//! ```

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use super::checkpoint::{ChainCheck, ChainError, Report, Source};
use super::Entry;

/// The longest line an archive may hold (an entry's detail is bounded well below this).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// One line of an archive.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    seq: i64,
    #[serde(borrow)]
    at: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    incident_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    detail: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    prev_hash: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    hash: std::borrow::Cow<'a, str>,
}

/// Writes `e` as one line.
pub fn write_entry(out: &mut impl Write, e: &Entry) -> io::Result<()> {
    let line = Line {
        seq: e.seq,
        at: e.at.as_str().into(),
        event: e.event.as_str().into(),
        incident_id: e.incident_id.as_deref().map(Into::into),
        detail: e.detail.as_str().into(),
        prev_hash: e.prev_hash.as_str().into(),
        hash: e.hash.as_str().into(),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Reads one line back as an entry.
pub fn parse_entry(line: &str) -> Result<Entry, String> {
    let l: Line<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok(Entry {
        seq: l.seq,
        at: l.at.into_owned(),
        event: l.event.into_owned(),
        incident_id: l.incident_id.map(|s| s.into_owned()),
        detail: l.detail.into_owned(),
        prev_hash: l.prev_hash.into_owned(),
        hash: l.hash.into_owned(),
    })
}

/// Why an archive does not check out; the line is 1-based.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("line {line}: {source}")]
    Broken { line: u64, source: ChainError },
    #[error("line {line}: not an audit entry: {message}")]
    Unreadable { line: u64, message: String },
    #[error("line {line}: longer than {MAX_LINE} bytes")]
    TooLong { line: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Checks an archive read from `input`, line by line (blank lines are skipped).
pub fn verify(input: impl BufRead) -> Result<Report, ArchiveError> {
    let mut check = ChainCheck::new(Source::Archive);
    let mut input = input.take(0);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        input.set_limit(MAX_LINE as u64 + 1);
        let n = input.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line += 1;
        if buf.len() > MAX_LINE {
            return Err(ArchiveError::TooLong { line });
        }
        let text = std::str::from_utf8(&buf).map_err(|e| ArchiveError::Unreadable {
            line,
            message: e.to_string(),
        })?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let entry =
            parse_entry(text).map_err(|message| ArchiveError::Unreadable { line, message })?;
        check
            .check(&entry)
            .map_err(|source| ArchiveError::Broken { line, source })?;
    }
    check
        .finish()
        .map_err(|source| ArchiveError::Broken { line, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::Start;
    use crate::audit::{chain_hash, Broken, GENESIS};

    fn chain(n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let at = format!("2026-11-23T10:00:{seq:02}.000000Z");
                // Details as stored: any JSON text, spacing and escapes included.
                let detail = format!("{{\"n\": {seq}, \"s\":\"é\\u0000\\n\"}}");
                let id = (seq % 2 == 0).then(|| "01JINCIDENT".to_string());
                let hash = chain_hash(&prev, seq, &at, "state_changed", id.as_deref(), &detail);
                let e = Entry {
                    seq,
                    at,
                    event: "state_changed".into(),
                    incident_id: id,
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    fn export(entries: &[Entry]) -> String {
        let mut out = Vec::new();
        for e in entries {
            write_entry(&mut out, e).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_export_reads_back_exactly_and_verifies_on_its_own() {
        let c = chain(6);
        let text = export(&c);
        assert_eq!(text.lines().count(), 6);
        let back: Vec<Entry> = text.lines().map(|l| parse_entry(l).unwrap()).collect();
        assert_eq!(back, c);
        let r = verify(text.as_bytes()).unwrap();
        assert_eq!((r.entries, r.start), (6, Start::Genesis));
        assert_eq!(r.head, c[5].hash);
    }

    #[test]
    fn an_edited_line_is_named() {
        let text = export(&chain(6));
        let edited = text.replacen("\\\"n\\\": 4", "\\\"n\\\": 5", 1);
        assert_ne!(edited, text);
        let err = verify(edited.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Broken {
                    line: 4,
                    source: ChainError::Broken(Broken::Edited { seq: 4, .. })
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("line 4: audit entry 4 "),
            "{err}"
        );
        // A line removed.
        let lines: Vec<&str> = text.lines().collect();
        let removed = [&lines[..2], &lines[3..]].concat().join("\n");
        assert_eq!(
            verify(removed.as_bytes()).unwrap_err().to_string(),
            "line 3: audit entry 3 is missing: the entry after 2 is 4"
        );
        // Not an entry at all.
        let garbage = format!("{}\n{{\"seq\": \"x\"}}\n", lines[0]);
        assert!(matches!(
            verify(garbage.as_bytes()).unwrap_err(),
            ArchiveError::Unreadable { line: 2, .. }
        ));
    }

    #[test]
    fn an_archive_that_continues_another_says_after_what() {
        let c = chain(6);
        let r = verify(export(&c[2..]).as_bytes()).unwrap();
        assert_eq!(
            r.start,
            Start::Continues {
                seq: 2,
                hash: c[1].hash.clone()
            }
        );
    }

    #[test]
    fn an_overlong_line_is_refused_without_reading_it_all() {
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(matches!(
            verify(&long[..]).unwrap_err(),
            ArchiveError::TooLong { line: 1 }
        ));
    }
}
