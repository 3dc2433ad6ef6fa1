//! Records what `medic --version` reports beside the crate's version: the commit the
//! binary was built from and the date it was built.
//!
//! - `MEDIC_GIT_COMMIT`: the variable of that name in the build's environment, when set (a
//!   packager building from a tarball can set it); else `git rev-parse HEAD` (12 hex
//!   digits), when the crate's directory is the top of a git checkout and git is
//!   installed; else `unknown`.
//! - `MEDIC_BUILD_DATE`: the UTC date (`YYYY-MM-DD`) of `SOURCE_DATE_EPOCH` when it is set
//!   (reproducible builds), else of the moment this script runs.
//!
//! The script runs again only when the commit changes (git's `HEAD` and the branch it
//! points to), or one of those variables does, never on every build: the date is that of
//! the build that first saw the commit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=MEDIC_GIT_COMMIT");

    let commit = std::env::var("MEDIC_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MEDIC_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=MEDIC_BUILD_DATE={}", build_date());
}

/// The commit of the checkout, and the files to watch for it to change.
fn git_commit() -> Option<String> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    // Not a checkout of its own (a tarball unpacked inside another repository): the
    // enclosing repository's commit would be a lie.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != manifest_dir.canonicalize().ok()? {
        return None;
    }
    let git_dir = manifest_dir.join(git(&["rev-parse", "--git-dir"])?);
    let common_dir = git(&["rev-parse", "--git-common-dir"])
        .map(|d| manifest_dir.join(d))
        .unwrap_or_else(|| git_dir.clone());
    // HEAD names the branch; the branch's file (or packed-refs) names the commit.
    watch(&git_dir.join("HEAD"));
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(&common_dir.join(branch));
    }
    watch(&common_dir.join("packed-refs"));
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    commit
        .chars()
        .all(|c| c.is_ascii_hexdigit())
        .then_some(commit)
}

/// Asks cargo to run this script again when `path` changes. Only existing files: cargo
/// treats a missing one as always changed, which would rebuild every time.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `git ARGS` in the crate's directory: its trimmed output, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// `YYYY-MM-DD` of `SOURCE_DATE_EPOCH`, or of now.
fn build_date() -> String {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse::<i64>().unwrap_or_else(|_| {
            panic!("SOURCE_DATE_EPOCH must be a number of seconds since 1970, not {s:?}")
        }),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): the build script has no date crate to lean on.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
