//! `medic audit verify [--file FILE]` and `medic audit export [--until DATE] [--after SEQ]`:
//! the store's side (a consistent scan of the log) joined to the audit module's checks and
//! archive format.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

use crate::audit::checkpoint::{ChainCheck, Report, Source, Start};
use crate::audit::export;
use crate::config::{Config, Purpose};
use crate::store::Store;

/// Opens the store of the configuration at `path`, beside a `medic serve` that may be
/// running on it; only the store matters here, the server's tokens and the channels'
/// secrets need not be set.
fn open_store(path: &Path) -> anyhow::Result<Store> {
    let config = Config::load_for(path, Purpose::Audit).map_err(|e| anyhow::anyhow!("{e}"))?;
    Store::connect_beside(&config.store).with_context(|| {
        format!(
            "opening the store {}",
            crate::config::redact_url_password(&config.store.url)
        )
    })
}

/// Re-checks the store's chain, from its checkpoint when retention removed its front.
pub(super) async fn verify(path: &Path) -> anyhow::Result<ExitCode> {
    let store = open_store(path)?;
    let mut pages = store.audit_scan(0);
    let mut check = ChainCheck::new(Source::Store);
    let mut broken = None;
    'scan: while let Some(page) = pages.recv().await {
        for entry in &page? {
            if let Err(b) = check.check(entry) {
                broken = Some(b);
                break 'scan;
            }
        }
    }
    drop(pages);
    store.close().await;
    let report = match broken {
        Some(b) => Err(b),
        None => check.finish(),
    };
    match report {
        Ok(r) => {
            println!("audit log intact: {}", describe(&r));
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            println!("{b}");
            eprintln!("audit log BROKEN");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Checks an export on its own.
pub(super) fn verify_file(file: &Path) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    match export::verify(std::io::BufReader::new(f)) {
        Ok(r) => {
            println!("{}: intact: {}", file.display(), describe(&r));
            Ok(ExitCode::SUCCESS)
        }
        Err(export::ArchiveError::Io(e)) => {
            Err(e).with_context(|| format!("reading {}", file.display()))
        }
        Err(e) => {
            println!("{}:{e}", file.display());
            eprintln!("archive BROKEN");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What was checked, in words.
fn describe(r: &Report) -> String {
    let head = &r.head;
    let range = match (r.first, r.last) {
        (Some(a), Some(b)) => format!(" (seq {a} to {b})"),
        _ => String::new(),
    };
    match &r.start {
        Start::Genesis => format!("{} entries{range}, head {head}", r.entries),
        Start::Checkpoint { seq, entry } => format!(
            "verified {} entries from checkpoint at seq {seq}{range}: entries up to {seq} were removed by retention, as checkpoint entry {entry} records; head {head}",
            r.entries
        ),
        Start::Continues { seq, hash } => format!(
            "{} entries{range}, head {head}; it continues an earlier archive, which must end with entry {seq} with hash {hash}",
            r.entries
        ),
    }
}

/// `--until`: an RFC 3339 time, or a date (its midnight, UTC).
pub(super) fn parse_until(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("invalid date {s:?}: expected YYYY-MM-DD or an RFC 3339 time, like 2026-01-31T00:00:00Z")
        })
}

/// Writes the log's entries (after `after`, up to the first written at or after
/// `until`) as JSON lines on stdout, from one snapshot of the store.
pub(super) async fn export(
    path: &Path,
    until: Option<DateTime<Utc>>,
    after: i64,
) -> anyhow::Result<ExitCode> {
    let store = open_store(path)?;
    let until = until.map(crate::store::stamp);
    let mut pages = store.audit_scan(after);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut n, mut first, mut last) = (0u64, None, None::<(i64, String)>);
    let written: anyhow::Result<()> = async {
        'scan: while let Some(page) = pages.recv().await {
            for e in &page? {
                if until.as_deref().is_some_and(|u| e.at.as_str() >= u) {
                    break 'scan;
                }
                export::write_entry(&mut out, e).context("writing to standard output")?;
                n += 1;
                first.get_or_insert(e.seq);
                last = Some((e.seq, e.hash.clone()));
            }
        }
        out.flush().context("writing to standard output")
    }
    .await;
    drop(pages);
    store.close().await;
    written?;
    match (first, last) {
        (Some(a), Some((b, head))) => {
            eprintln!("exported {n} entries (seq {a} to {b}), head {head}")
        }
        _ => eprintln!("exported 0 entries"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_a_date_or_a_time() {
        assert_eq!(
            parse_until("2026-01-31").unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_until("2026-01-31T12:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-31T10:00:00+00:00"
        );
        assert_eq!(
            parse_until("31/01/2026").unwrap_err(),
            "invalid date \"31/01/2026\": expected YYYY-MM-DD or an RFC 3339 time, like 2026-01-31T00:00:00Z"
        );
    }
}
