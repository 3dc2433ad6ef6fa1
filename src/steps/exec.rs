//! Running allow-listed programs on behalf of runbooks.
//!
//! This module is the only way a runbook starts a process. It owns:
//!
//! * [`Allowlist`]: the operator's `runbooks.allowed_commands`, resolved to
//!   absolute paths once at load time, so a runbook can only name programs
//!   the operator listed (no `PATH` search at run time, no `../` tricks).
//! * [`run`]: starting one allow-listed program and collecting its result.
//!
//! Guarantees of [`run`]:
//!
//! * **No shell.** The program is executed directly with `args` as its argv.
//!   Every argument reaches the program byte for byte, so untrusted alert
//!   content (`x; rm -rf /`, `$(id)`, `*`, newlines...) is only ever data.
//! * **Nothing is run on bad input.** A program that is not allow-listed, an
//!   argument containing a NUL byte, or an argv too long for the kernel are
//!   rejected before anything is started. Arguments are never truncated.
//! * **Closed environment.** The child gets stdin from `/dev/null` and exactly
//!   the environment in [`ExecLimits::env`]; nothing leaks from this process.
//! * **Bounded output.** stdout and stderr are read concurrently, each kept up
//!   to [`ExecLimits::output_limit`] bytes; anything beyond is read and
//!   discarded, so the child never blocks on a full pipe.
//! * **Bounded time, whole group.** The child leads its own session (and so
//!   its own process group). On timeout or cancellation the whole group
//!   (children and grandchildren) gets `SIGTERM` (and `SIGCONT`, so stopped
//!   members see it), then `SIGKILL` once every member has exited or
//!   [`ExecLimits::kill_grace`] has passed. The output read so far is
//!   returned inside the error. If the future returned by [`run`] is dropped
//!   before it finishes, the group is sent `SIGKILL`.
//! * **Nothing outlives the step.** However the step ends — the child exited
//!   by itself, failed, timed out or was cancelled — what is left of its
//!   session (a `cmd &` it left behind, a process that moved to another
//!   group) is ended the same way, `SIGTERM` then `SIGKILL` after the grace;
//!   a process that escaped the session (`setsid` and a double fork) is ended
//!   too when this process is a child subreaper (see [`reaper`]). After the
//!   direct child exits, output is collected until both pipes reach
//!   end-of-file or for [`DRAIN_AFTER_EXIT`] once the leftovers are gone.
//!
//! Worst-case wall time of [`run`] is about
//! `timeout + 2 × kill_grace + DRAIN_AFTER_EXIT` (plus a second for a
//! process that does not die at once of `SIGKILL`).
//!
//! This module never prints or logs; every outcome is returned to the caller.
//! It is Linux-specific: it relies on process groups, `/proc` (to see when a
//! killed group is gone) and Linux's argv size limits.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::reaper;

/// The `PATH` given to children by default, and a sensible search path for
/// [`Allowlist::resolve`].
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output is still collected after the direct child has exited, in
/// case a background process it left behind still holds the pipes open.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);

/// Linux's limit on a single argv or environment string, terminating NUL
/// included (`MAX_ARG_STRLEN`, 32 pages of 4 KiB).
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The kernel never allows argv + envp to take more than 3/4 of the default
/// 8 MiB stack limit (`_STK_LIM / 4 * 3`), whatever `RLIMIT_STACK` says.
const KERNEL_ARG_CAP: usize = 6 * 1024 * 1024;

/// Head-room kept below the argv limit for what the kernel and loader add.
const ARG_MARGIN: usize = 4096;

/// The programs runbooks may run: each configured entry mapped to an
/// absolute path checked at load time.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// Every accepted spelling of a program (the configured entry, and for a
    /// bare name also its resolved path) mapped to the path that is executed.
    paths: HashMap<String, PathBuf>,
}

impl Allowlist {
    /// Resolves each configured entry at load time: an absolute path must
    /// exist and be an executable regular file; a bare name (no `/`) is
    /// looked up in `search_path`, a `PATH`-style list of directories (empty
    /// and relative directories in it are skipped).
    ///
    /// Returns every problem (one per bad entry), e.g.
    /// `allowed command "systemctll" not found in /usr/sbin:/usr/bin`,
    /// `allowed command "/opt/x.sh" is not executable`,
    /// `allowed command "bin/x": relative paths are not allowed; use a name or an absolute path`.
    pub fn resolve(entries: &[String], search_path: &str) -> Result<Allowlist, Vec<String>> {
        let mut paths = HashMap::new();
        let mut problems = Vec::new();
        for entry in entries {
            match resolve_entry(entry, search_path) {
                Ok(path) => {
                    if !entry.starts_with('/') {
                        paths.insert(path.to_string_lossy().into_owned(), path.clone());
                    }
                    paths.insert(entry.clone(), path);
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(Allowlist { paths })
        } else {
            Err(problems)
        }
    }

    /// The absolute path for `program` as a runbook names it: either the
    /// exact configured entry string (bare name or absolute path) or, for a
    /// bare-name entry, its resolved absolute path. Anything else (other
    /// spellings of the same file, `../` tricks, symlinks) is `None`.
    pub fn lookup(&self, program: &str) -> Option<&Path> {
        self.paths.get(program).map(PathBuf::as_path)
    }

    /// True when no program is allowed.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Checks one configured entry; the error is the operator-facing message.
fn resolve_entry(entry: &str, search_path: &str) -> Result<PathBuf, String> {
    if entry.is_empty() {
        return Err("allowed command \"\" is empty".to_string());
    }
    if entry.starts_with('/') {
        let path = PathBuf::from(entry);
        return match std::fs::metadata(&path) {
            Err(_) => Err(format!("allowed command {entry:?} does not exist")),
            Ok(meta) if !meta.is_file() => {
                Err(format!("allowed command {entry:?} is not a regular file"))
            }
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                Err(format!("allowed command {entry:?} is not executable"))
            }
            Ok(_) => Ok(path),
        };
    }
    if entry.contains('/') {
        return Err(format!(
            "allowed command {entry:?}: relative paths are not allowed; use a name or an absolute path"
        ));
    }
    search_path
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(entry))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| format!("allowed command {entry:?} not found in {search_path}"))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Limits and environment for one [`run`].
#[derive(Debug, Clone)]
pub struct ExecLimits {
    /// Wall-clock limit from start until the direct child exits.
    pub timeout: Duration,
    /// Bytes kept per stream (stdout and stderr each); the rest is discarded.
    pub output_limit: usize,
    /// The only environment the child gets.
    pub env: Vec<(String, String)>,
    /// After `SIGTERM`, how long the group may take to exit before `SIGKILL`.
    pub kill_grace: Duration,
}

impl Default for ExecLimits {
    /// 60 s timeout, 64 KiB per stream, `PATH` = [`DEFAULT_PATH`] and
    /// `LANG=C.UTF-8`, 2 s kill grace.
    fn default() -> Self {
        ExecLimits {
            timeout: Duration::from_secs(60),
            output_limit: 64 * 1024,
            env: vec![
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
                ("LANG".to_string(), "C.UTF-8".to_string()),
            ],
            kill_grace: Duration::from_secs(2),
        }
    }
}

/// What a finished (or killed) program produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutput {
    /// The exit code, or 128 + the signal number if killed by a signal.
    pub code: i64,
    /// stdout as lossy UTF-8, at most `output_limit` bytes of it.
    pub stdout: String,
    /// stderr as lossy UTF-8, at most `output_limit` bytes of it.
    pub stderr: String,
    /// True when stdout produced more than `output_limit` bytes.
    pub stdout_truncated: bool,
    /// True when stderr produced more than `output_limit` bytes.
    pub stderr_truncated: bool,
    /// Time from start until the result was complete.
    pub duration: Duration,
}

/// Why [`run`] did not return an [`ExecOutput`]. `program` is the name as the
/// runbook gave it.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program is not in the allowlist; nothing was run.
    #[error("{program:?} is not in runbooks.allowed_commands")]
    NotAllowed {
        /// The program as the runbook named it.
        program: String,
    },
    /// The timeout passed; the process group was killed.
    #[error("{program}: timed out after {timeout:?}; its process group was killed")]
    Timeout {
        /// The program as the runbook named it.
        program: String,
        /// The timeout that passed.
        timeout: Duration,
        /// Output read until the group was gone, capped like a normal result.
        partial: ExecOutput,
    },
    /// argv (plus the environment) is more than the kernel accepts; nothing
    /// was run. `bytes` counts the argv strings with their NULs.
    #[error(
        "{program}: arguments too long for the operating system ({bytes} bytes); nothing was run"
    )]
    ArgumentsTooLong {
        /// The program as the runbook named it.
        program: String,
        /// Size of argv: every string plus its terminating NUL.
        bytes: usize,
    },
    /// The program (index 0) or an argument (index i + 1 for `args[i]`)
    /// contains a NUL byte; nothing was run.
    #[error("{program}: argument {index} contains a NUL byte; nothing was run")]
    NulInArgument {
        /// The program as the runbook named it.
        program: String,
        /// argv index: 0 is the program, 1 the first argument.
        index: usize,
    },
    /// The operating system refused to start the program (or, rarely, to
    /// report on it).
    #[error("{program}: cannot start: {source}")]
    Spawn {
        /// The program as the runbook named it.
        program: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The `cancel` future completed; the process group was killed.
    #[error("{program}: cancelled; its process group was killed")]
    Cancelled {
        /// The program as the runbook named it.
        program: String,
        /// Output read until the group was gone, capped like a normal result.
        partial: ExecOutput,
    },
}

/// Runs `program` with `args` as argv (never through a shell), stdin =
/// `/dev/null`, a cleared environment plus `limits.env`, in its own process
/// group, capturing stdout and stderr concurrently, each capped at
/// `limits.output_limit`.
///
/// `program` must be spelled as [`Allowlist::lookup`] accepts it. `cancel` is
/// a future that, when it completes, kills the group (`SIGTERM`, then
/// `SIGKILL` after `kill_grace`) and makes `run` return
/// [`ExecError::Cancelled`]; pass `std::future::pending()` for none. Note
/// that a dropped oneshot sender completes a receiver-based `cancel` too.
///
/// A non-zero exit is not an error: it is in [`ExecOutput::code`].
pub async fn run(
    allow: &Allowlist,
    program: &str,
    args: &[String],
    limits: &ExecLimits,
    cancel: impl Future<Output = ()>,
) -> Result<ExecOutput, ExecError> {
    let nul_at = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .position(|arg| arg.contains('\0'));
    if let Some(index) = nul_at {
        return Err(ExecError::NulInArgument {
            program: program.to_string(),
            index,
        });
    }
    let path = allow.lookup(program).ok_or_else(|| ExecError::NotAllowed {
        program: program.to_string(),
    })?;
    check_arg_size(path, args, &limits.env).map_err(|bytes| ExecError::ArgumentsTooLong {
        program: program.to_string(),
        bytes,
    })?;

    // A child process runs in the real world: its timeout and the kill grace are measured
    // on tokio's timers here, not on the engine's injected clock (`crate::clock`).
    let started = Instant::now();
    let mut command = Command::new(path);
    command
        .args(args)
        .env_clear()
        .envs(limits.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // In a session (and so a process group) of its own.
    let (mut child, registration) =
        reaper::spawn(&mut command).map_err(|source| spawn_error(program, path, args, source))?;
    let pgid = match child.id().and_then(|id| libc::pid_t::try_from(id).ok()) {
        Some(pid) if pid > 1 => pid,
        _ => {
            return Err(ExecError::Spawn {
                program: program.to_string(),
                source: io::Error::other("the started process has no usable process id"),
            })
        }
    };
    // Declared after `child` so it is dropped first, while the child is
    // still unreaped and its pid (= the group id) cannot have been reused.
    let mut guard = GroupGuard { pgid, armed: true };

    let mut out = Capture::new(limits.output_limit);
    let mut err = Capture::new(limits.output_limit);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());

    let (ended, status) = {
        let reading = async { tokio::join!(out.fill(stdout), err.fill(stderr)) };
        tokio::pin!(reading);
        tokio::pin!(cancel);
        let deadline = tokio::time::sleep_until(after(started, limits.timeout));
        tokio::pin!(deadline);
        let mut reading_done = false;

        let (ended, exited) = loop {
            tokio::select! {
                _ = &mut reading, if !reading_done => reading_done = true,
                status = child.wait() => break (Ended::Exited, Some(status)),
                () = &mut deadline => break (Ended::TimedOut, None),
                () = &mut cancel => break (Ended::Cancelled, None),
            }
        };
        let status = match exited {
            Some(status) => status,
            None => {
                // Keep reading while the group dies, so nobody blocks on a
                // full pipe and last words are kept.
                let kill = kill_group(&mut child, pgid, limits.kill_grace);
                tokio::pin!(kill);
                loop {
                    tokio::select! {
                        _ = &mut reading, if !reading_done => reading_done = true,
                        status = &mut kill => break status,
                    }
                }
            }
        };
        // The child is reaped now (or waiting failed): never signal the
        // group by its id again, it may be reused.
        guard.armed = false;
        registration.collected();
        // Nothing the step started outlives it: end what is left of its session
        // (and escaped orphans), still reading so nobody blocks on a full pipe.
        let sweep = reaper::sweep(Some(pgid), limits.kill_grace);
        tokio::pin!(sweep);
        loop {
            tokio::select! {
                _ = &mut reading, if !reading_done => reading_done = true,
                () = &mut sweep => break,
            }
        }
        if !reading_done {
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reading).await;
        }
        (ended, status)
    };

    let status = status.map_err(|source| ExecError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let output = ExecOutput {
        code: exit_code(status),
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        stdout: out.into_string(),
        stderr: err.into_string(),
        duration: started.elapsed(),
    };
    match ended {
        Ended::Exited => Ok(output),
        Ended::TimedOut => Err(ExecError::Timeout {
            program: program.to_string(),
            timeout: limits.timeout,
            partial: output,
        }),
        Ended::Cancelled => Err(ExecError::Cancelled {
            program: program.to_string(),
            partial: output,
        }),
    }
}

/// How the main wait of [`run`] ended.
#[derive(Clone, Copy)]
enum Ended {
    Exited,
    TimedOut,
    Cancelled,
}

/// `start + wait`, saturating for absurdly long durations (`Duration::MAX`).
fn after(start: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start.checked_add(wait).unwrap_or_else(|| start + CENTURY)
}

fn exit_code(status: ExitStatus) -> i64 {
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

fn spawn_error(program: &str, path: &Path, args: &[String], source: io::Error) -> ExecError {
    if source.raw_os_error() == Some(libc::E2BIG) {
        ExecError::ArgumentsTooLong {
            program: program.to_string(),
            bytes: argv_bytes(path, args),
        }
    } else {
        ExecError::Spawn {
            program: program.to_string(),
            source,
        }
    }
}

/// argv as the kernel copies it: every string plus its NUL (argv[0] is the path).
fn argv_bytes(path: &Path, args: &[String]) -> usize {
    path.as_os_str().len() + 1 + args.iter().map(|a| a.len() + 1).sum::<usize>()
}

/// Rejects what `execve` would refuse with `E2BIG`, conservatively; the
/// error is the argv size in bytes.
fn check_arg_size(path: &Path, args: &[String], env: &[(String, String)]) -> Result<(), usize> {
    let argv = argv_bytes(path, args);
    let longest_arg = args.iter().map(String::len).max().unwrap_or(0);
    let longest_env = env
        .iter()
        .map(|(k, v)| k.len() + 1 + v.len())
        .max()
        .unwrap_or(0);
    if longest_arg.max(longest_env).max(path.as_os_str().len()) + 1 > MAX_ARG_STRLEN {
        return Err(argv);
    }
    let env_bytes: usize = env.iter().map(|(k, v)| k.len() + 1 + v.len() + 1).sum();
    // The kernel also counts the argv/envp pointer arrays and copies the
    // file name onto the new stack.
    let pointers = (args.len() + 1 + env.len() + 2) * std::mem::size_of::<usize>();
    let filename = path.as_os_str().len() + 1;
    if argv + env_bytes + pointers + filename + ARG_MARGIN > arg_max() {
        return Err(argv);
    }
    Ok(())
}

/// The kernel's limit for argv + envp, as glibc reports it (a quarter of the
/// stack limit, at least 128 KiB), capped at what Linux allows anyway.
fn arg_max() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let reported = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    match usize::try_from(reported) {
        Ok(n) if n > 0 => n.min(KERNEL_ARG_CAP),
        _ => MAX_ARG_STRLEN,
    }
}

/// One output stream: up to `limit` bytes kept, the rest counted as truncation.
struct Capture {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            buf: Vec::new(),
            limit,
            truncated: false,
        }
    }

    /// Reads `reader` to end-of-file, keeping what fits. A read error ends
    /// the stream like end-of-file.
    async fn fill<R: AsyncRead + Unpin>(&mut self, reader: Option<R>) {
        let Some(mut reader) = reader else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => self.push(&chunk[..n]),
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn into_string(mut self) -> String {
        if self.truncated {
            trim_cut_char(&mut self.buf);
        }
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Drops a UTF-8 sequence cut in half by truncation, so the cap does not end
/// in a replacement character.
fn trim_cut_char(buf: &mut Vec<u8>) {
    for back in 1..=buf.len().min(3) {
        let byte = buf[buf.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for the lead
        }
        let needed = match byte {
            0xF0..=0xFF => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        if needed > back {
            buf.truncate(buf.len() - back);
        }
        return;
    }
}

/// Sends `SIGKILL` to the group if [`run`] is dropped before the child is reaped.
struct GroupGuard {
    pgid: libc::pid_t,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // Never 0 or 1: kill(0) / kill(-1) would hit our own group / everything.
    if pgid > 1 {
        // SAFETY: kill has no memory effects; a vanished group gives ESRCH,
        // which is fine to ignore.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// `SIGTERM` the group, wait until no member is alive or `grace` passes,
/// `SIGKILL` whatever is left, then reap the direct child. The child must
/// not have been reaped yet: its zombie keeps the group id from being reused.
async fn kill_group(
    child: &mut Child,
    pgid: libc::pid_t,
    grace: Duration,
) -> io::Result<ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    signal_group(pgid, libc::SIGCONT);
    let deadline = after(Instant::now(), grace);
    let mut pause = Duration::from_millis(5);
    while Instant::now() < deadline {
        let alive = tokio::task::spawn_blocking(move || group_alive(pgid))
            .await
            .unwrap_or(true);
        if !alive {
            break;
        }
        tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    signal_group(pgid, libc::SIGKILL);
    // In case the child moved itself out of the group.
    let _ = child.start_kill();
    child.wait().await
}

/// True if a process other than a zombie is in process group `pgid`.
/// When `/proc` cannot be read, assumes it is (the caller then waits out the
/// grace period before `SIGKILL`).
fn group_alive(pgid: libc::pid_t) -> bool {
    let member_alive = |pid: libc::pid_t| matches!(proc_state(pid), Some((state, group)) if group == pgid && !matches!(state, 'Z' | 'X'));
    if member_alive(pgid) {
        return true;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .any(member_alive)
}

/// State letter and process group of `pid`, from `/proc/<pid>/stat`.
fn proc_state(pid: libc::pid_t) -> Option<(char, libc::pid_t)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::future::pending;
    use tempfile::TempDir;

    /// Writes an executable `/bin/sh` script and returns its absolute path.
    fn script(dir: &TempDir, name: &str, body: &str) -> String {
        let path = dir.path().join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
        path.to_str().expect("utf-8 temp path").to_string()
    }

    fn allow(entries: &[&str]) -> Allowlist {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        Allowlist::resolve(&entries, DEFAULT_PATH).expect("allowlist resolves")
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    fn quick() -> ExecLimits {
        ExecLimits {
            timeout: Duration::from_secs(5),
            ..ExecLimits::default()
        }
    }

    /// `run` that retries on ETXTBSY: another test thread may fork while one
    /// of our freshly written scripts is still open for writing in it.
    async fn run_retry(
        allow: &Allowlist,
        program: &str,
        args: &[String],
        limits: &ExecLimits,
    ) -> Result<ExecOutput, ExecError> {
        for _ in 0..50 {
            match run(allow, program, args, limits, pending()).await {
                Err(ExecError::Spawn { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
        panic!("{program} stayed busy");
    }

    /// A script named `name` that runs `before`, starts a background `sleep 30`
    /// and writes its pid to the returned file, then runs `after`.
    fn background_script(
        dir: &TempDir,
        name: &str,
        before: &str,
        after: &str,
    ) -> (String, PathBuf) {
        let pidfile = dir.path().join("pid");
        let body = format!(
            "{before}sleep 30 &\necho $! > {}\n{after}",
            pidfile.display()
        );
        (script(dir, name, &body), pidfile)
    }

    /// A script that touches the returned marker file, to show that it never ran.
    fn touch_script(dir: &TempDir) -> (String, PathBuf) {
        let marker = dir.path().join("ran");
        let prog = script(dir, "touch-it", &format!("touch {}", marker.display()));
        (prog, marker)
    }

    /// Asserts that the background child whose pid a script wrote to `pidfile` is gone.
    async fn assert_background_child_gone(pidfile: &Path) {
        let pid = read_pid(pidfile).await;
        assert!(!pid_alive(pid), "background child {pid} survived");
    }

    fn pid_alive(pid: libc::pid_t) -> bool {
        matches!(proc_state(pid), Some((state, _)) if !matches!(state, 'Z' | 'X'))
    }

    /// Waits (briefly) for the script to write its background child's pid.
    async fn read_pid(path: &Path) -> libc::pid_t {
        for _ in 0..200 {
            if let Ok(text) = fs::read_to_string(path) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no pid in {}", path.display());
    }

    #[tokio::test]
    async fn argv_is_passed_literally() {
        let dir = TempDir::new().expect("tempdir");
        let prog = script(&dir, "args", r#"printf '%s\0' "$@""#);
        let pwned = dir.path().join("pwned");
        let pwned2 = dir.path().join("pwned2");
        let args = vec![
            format!("x; touch {}", pwned.display()),
            format!("$(touch {})", pwned2.display()),
            "$(id)".to_string(),
            "`id`".to_string(),
            "../../etc/passwd".to_string(),
            "a\nb".to_string(),
            r#"'quoted' "double""#.to_string(),
            "*".to_string(),
            "--help".to_string(),
            "".to_string(),
            "x".repeat(100 * 1024),
        ];
        let limits = ExecLimits {
            output_limit: 1024 * 1024,
            ..quick()
        };
        let out = run_retry(&allow(&[&prog]), &prog, &args, &limits)
            .await
            .expect("runs");
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        let got: Vec<&str> = out.stdout.split_terminator('\0').collect();
        assert_eq!(got, args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!pwned.exists() && !pwned2.exists());
    }

    #[tokio::test]
    async fn environment_is_exactly_limits_env() {
        std::env::set_var("MEDIC_EXEC_TEST_SECRET", "leaked");
        let out = run_retry(&allow(&["env"]), "env", &[], &quick())
            .await
            .expect("runs");
        let mut lines: Vec<&str> = out.stdout.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, vec!["LANG=C.UTF-8", &format!("PATH={DEFAULT_PATH}")]);
    }

    #[tokio::test]
    async fn stdin_is_dev_null() {
        let out = run_retry(&allow(&["cat"]), "cat", &[], &quick())
            .await
            .expect("runs");
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (0, "", "")
        );
        assert!(out.duration < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn output_is_capped_without_deadlock() {
        let dir = TempDir::new().expect("tempdir");
        let prog = script(
            &dir,
            "loud",
            "head -c 1048576 /dev/zero | tr '\\0' a\nhead -c 1048576 /dev/zero | tr '\\0' b >&2",
        );
        let limits = ExecLimits::default();
        let out = run_retry(&allow(&[&prog]), &prog, &[], &limits)
            .await
            .expect("runs");
        assert_eq!(out.code, 0);
        assert_eq!(out.stdout, "a".repeat(limits.output_limit));
        assert_eq!(out.stderr, "b".repeat(limits.output_limit));
        assert!(out.stdout_truncated && out.stderr_truncated);
    }

    #[tokio::test]
    async fn small_output_is_not_truncated() {
        let dir = TempDir::new().expect("tempdir");
        let prog = script(&dir, "hello", "echo out; echo err >&2");
        let out = run_retry(&allow(&[&prog]), &prog, &[], &quick())
            .await
            .expect("runs");
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert!(!out.stdout_truncated && !out.stderr_truncated);
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group_and_keeps_partial_output() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, pidfile) =
            background_script(&dir, "hang", "echo started; echo oops >&2\n", "sleep 30");
        let limits = ExecLimits {
            timeout: Duration::from_millis(300),
            ..ExecLimits::default()
        };
        let started = std::time::Instant::now();
        let result = run_retry(&allow(&[&prog]), &prog, &[], &limits).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        match result {
            Err(ExecError::Timeout {
                timeout, partial, ..
            }) => {
                assert_eq!(timeout, limits.timeout);
                assert_eq!(partial.stdout, "started\n");
                assert_eq!(partial.stderr, "oops\n");
                assert_eq!(partial.code, 128 + i64::from(libc::SIGTERM));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert_background_child_gone(&pidfile).await;
    }

    #[tokio::test]
    async fn sigterm_ignorers_get_sigkill_after_grace() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, pidfile) = background_script(&dir, "stubborn", "trap '' TERM\n", "sleep 30");
        let limits = ExecLimits {
            timeout: Duration::from_millis(200),
            kill_grace: Duration::from_millis(200),
            ..ExecLimits::default()
        };
        let result = run_retry(&allow(&[&prog]), &prog, &[], &limits).await;
        match result {
            Err(ExecError::Timeout { partial, .. }) => {
                assert_eq!(partial.code, 128 + i64::from(libc::SIGKILL));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert_background_child_gone(&pidfile).await;
    }

    #[tokio::test]
    async fn cancel_kills_the_process_group() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, pidfile) = background_script(&dir, "hang", "echo started\n", "sleep 30");
        let allowlist = allow(&[&prog]);
        let limits = quick();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let pid_path = pidfile.clone();
        let canceller = tokio::spawn(async move {
            // Cancel once the script is fully running.
            read_pid(&pid_path).await;
            let _ = tx.send(());
        });
        let cancel = async {
            let _ = rx.await;
        };
        let started = std::time::Instant::now();
        let result = run(&allowlist, &prog, &[], &limits, cancel).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        match result {
            Err(ExecError::Cancelled { partial, .. }) => assert_eq!(partial.stdout, "started\n"),
            other => panic!("expected Cancelled, got {other:?}"),
        }
        canceller.await.expect("canceller");
        assert_background_child_gone(&pidfile).await;
    }

    #[tokio::test]
    async fn dropping_run_kills_the_process_group() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, pidfile) = background_script(&dir, "hang", "", "sleep 30");
        let allowlist = allow(&[&prog]);
        let limits = quick();
        let pid = {
            let running = run(&allowlist, &prog, &[], &limits, pending());
            tokio::pin!(running);
            tokio::select! {
                result = &mut running => panic!("finished early: {result:?}"),
                pid = read_pid(&pidfile) => pid,
            }
        };
        for _ in 0..100 {
            if !pid_alive(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("background child {pid} survived");
    }

    /// A `sleep` argument no other process has: `300.<pid><n>` seconds.
    fn unique_sleep() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "300.{}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Live processes whose command line is exactly `sleep <arg>`.
    fn sleeps(arg: &str) -> Vec<libc::pid_t> {
        let want = format!("sleep\0{arg}\0");
        fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
            .filter(|&pid| {
                pid_alive(pid)
                    && fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.ends_with(want.as_bytes()) && c.starts_with(b"sleep"))
            })
            .collect()
    }

    /// Regression: `sh -c 'sleep 300 & echo started'` left its `sleep` running after
    /// the step (and medic) ended.
    #[tokio::test]
    async fn a_background_child_does_not_outlive_a_step_that_exits() {
        let arg = unique_sleep();
        let args = strings(&["-c", &format!("sleep {arg} & echo started"), "step"]);
        let out = run_retry(&allow(&["sh"]), "sh", &args, &quick())
            .await
            .expect("runs");
        assert_eq!((out.code, out.stdout.as_str()), (0, "started\n"));
        assert_eq!(
            sleeps(&arg),
            Vec::<libc::pid_t>::new(),
            "sleep {arg} survived"
        );
    }

    /// Regression: a child that moved to a process group of its own escaped the group
    /// kill; it is still in the step's session.
    #[tokio::test]
    async fn a_child_in_another_process_group_does_not_outlive_its_step() {
        let dir = TempDir::new().expect("tempdir");
        let arg = unique_sleep();
        // perl's setpgrp moves the child to a group of its own before it sleeps.
        let prog = script(
            &dir,
            "regroup",
            &format!(
                "perl -e 'setpgrp(0, 0); exec \"sleep\", \"{arg}\"' &\nsleep 0.2\necho started"
            ),
        );
        let out = run_retry(&allow(&[&prog]), &prog, &[], &quick())
            .await
            .expect("runs");
        assert_eq!(out.stdout, "started\n");
        assert_eq!(
            sleeps(&arg),
            Vec::<libc::pid_t>::new(),
            "sleep {arg} survived"
        );
    }

    #[tokio::test]
    async fn background_process_holding_the_pipe_does_not_hang_run() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, pidfile) = background_script(&dir, "leaky", "", "echo done");
        let out = run_retry(&allow(&[&prog]), &prog, &[], &quick())
            .await
            .expect("runs");
        assert_eq!(out.stdout, "done\n");
        assert!(out.duration < Duration::from_secs(2), "{:?}", out.duration);
        assert_background_child_gone(&pidfile).await;
    }

    #[tokio::test]
    async fn programs_outside_the_allowlist_are_refused() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, marker) = touch_script(&dir);
        let bin = dir.path().to_str().expect("utf-8 temp path").to_string();
        let allowlist = Allowlist::resolve(&strings(&["touch-it"]), &bin).expect("resolves");
        assert_eq!(allowlist.lookup("touch-it"), Some(Path::new(&prog)));
        assert_eq!(allowlist.lookup(&prog), Some(Path::new(&prog)));
        let refused = [
            "sh".to_string(),
            "/bin/sh".to_string(),
            "./touch-it".to_string(),
            "../touch-it".to_string(),
            format!(
                "{bin}/../{}/touch-it",
                dir.path()
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("x")
            ),
            format!("{bin}//touch-it"),
            "touch-it ".to_string(),
            "TOUCH-IT".to_string(),
            String::new(),
        ];
        for program in &refused {
            assert_eq!(allowlist.lookup(program), None, "{program:?}");
            match run(&allowlist, program, &[], &quick(), pending()).await {
                Err(ExecError::NotAllowed { program: p }) => assert_eq!(&p, program),
                other => panic!("{program:?}: expected NotAllowed, got {other:?}"),
            }
        }
        // Only the bare name is allowed: the shell behind it is not.
        let sh_only = allow(&["sh"]);
        assert!(sh_only.lookup("../bin/sh").is_none());
        assert!(!marker.exists());
    }

    #[test]
    fn resolve_reports_every_bad_entry() {
        let dir = TempDir::new().expect("tempdir");
        let good = script(&dir, "good", "true");
        let plain = dir.path().join("plain.sh");
        fs::write(&plain, "#!/bin/sh\n").expect("write");
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).expect("chmod");
        let plain = plain.to_str().expect("utf-8").to_string();
        let dir_path = dir.path().to_str().expect("utf-8").to_string();
        let search = format!("relative/dir::{dir_path}:/nonexistent");

        let allowlist = Allowlist::resolve(&strings(&["good", &good]), &search).expect("resolves");
        assert_eq!(allowlist.lookup("good"), Some(Path::new(&good)));
        assert!(!allowlist.is_empty());
        assert!(Allowlist::default().is_empty());

        let bad = strings(&[
            "systemctll",
            &plain,
            "bin/x",
            "./x",
            "/nonexistent/x",
            &dir_path,
            "",
            "plain.sh",
        ]);
        let problems = Allowlist::resolve(&bad, &search).expect_err("all bad");
        assert_eq!(
            problems,
            vec![
                format!("allowed command \"systemctll\" not found in {search}"),
                format!("allowed command \"{plain}\" is not executable"),
                "allowed command \"bin/x\": relative paths are not allowed; use a name or an absolute path".to_string(),
                "allowed command \"./x\": relative paths are not allowed; use a name or an absolute path".to_string(),
                "allowed command \"/nonexistent/x\" does not exist".to_string(),
                format!("allowed command \"{dir_path}\" is not a regular file"),
                "allowed command \"\" is empty".to_string(),
                format!("allowed command \"plain.sh\" not found in {search}"),
            ]
        );
    }

    #[test]
    fn resolve_finds_system_programs() {
        let allowlist = allow(&["sh", "true"]);
        let sh = allowlist.lookup("sh").expect("sh resolves");
        assert!(sh.is_absolute());
        assert_eq!(allowlist.lookup(sh.to_str().expect("utf-8")), Some(sh));
    }

    #[tokio::test]
    async fn oversized_arguments_are_refused_before_running() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, marker) = touch_script(&dir);
        let allowlist = allow(&[&prog]);

        let one_huge = vec!["x".repeat(200_000)];
        match run(&allowlist, &prog, &one_huge, &quick(), pending()).await {
            Err(ExecError::ArgumentsTooLong { bytes, .. }) => {
                assert_eq!(bytes, prog.len() + 1 + 200_001);
            }
            other => panic!("expected ArgumentsTooLong, got {other:?}"),
        }
        let at_limit = vec!["x".repeat(MAX_ARG_STRLEN)];
        assert!(matches!(
            run(&allowlist, &prog, &at_limit, &quick(), pending()).await,
            Err(ExecError::ArgumentsTooLong { .. })
        ));
        // Each fine on its own, too much together (over any Linux limit).
        let many = vec!["y".repeat(100_000); 70];
        assert!(matches!(
            run(&allowlist, &prog, &many, &quick(), pending()).await,
            Err(ExecError::ArgumentsTooLong { .. })
        ));
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn nul_bytes_are_refused_before_running() {
        let dir = TempDir::new().expect("tempdir");
        let (prog, marker) = touch_script(&dir);
        let allowlist = allow(&[&prog]);
        let args = strings(&["fine", "a\0b"]);
        match run(&allowlist, &prog, &args, &quick(), pending()).await {
            Err(ExecError::NulInArgument { index, .. }) => assert_eq!(index, 2),
            other => panic!("expected NulInArgument, got {other:?}"),
        }
        let program = format!("{prog}\0");
        match run(&allowlist, &program, &[], &quick(), pending()).await {
            Err(ExecError::NulInArgument { index, .. }) => assert_eq!(index, 0),
            other => panic!("expected NulInArgument, got {other:?}"),
        }
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn exit_codes_and_signals() {
        let dir = TempDir::new().expect("tempdir");
        let three = script(&dir, "three", "echo bye >&2; exit 3");
        let killed = script(&dir, "killed", "kill -KILL $$");
        let allowlist = allow(&[&three, &killed]);
        let out = run_retry(&allowlist, &three, &[], &quick())
            .await
            .expect("runs");
        assert_eq!((out.code, out.stderr.as_str()), (3, "bye\n"));
        let out = run_retry(&allowlist, &killed, &[], &quick())
            .await
            .expect("runs");
        assert_eq!(out.code, 128 + i64::from(libc::SIGKILL));
    }

    #[test]
    fn truncation_does_not_split_a_character() {
        let mut capture = Capture::new(5);
        capture.push("abcdé".as_bytes()); // 'é' is 2 bytes: only its first fits
        assert!(capture.truncated);
        assert_eq!(capture.into_string(), "abcd");

        let mut capture = Capture::new(4);
        capture.push("abcdé".as_bytes());
        assert_eq!(capture.into_string(), "abcd");
    }

    #[tokio::test]
    async fn huge_limits_do_not_overflow() {
        let limits = ExecLimits {
            timeout: Duration::MAX,
            kill_grace: Duration::MAX,
            ..ExecLimits::default()
        };
        let out = run_retry(&allow(&["true"]), "true", &[], &limits)
            .await
            .expect("runs");
        assert_eq!(out.code, 0);
    }

    #[test]
    fn error_messages() {
        let err = ExecError::NotAllowed {
            program: "rm".to_string(),
        };
        assert_eq!(
            err.to_string(),
            "\"rm\" is not in runbooks.allowed_commands"
        );
        let err = ExecError::NulInArgument {
            program: "echo".to_string(),
            index: 2,
        };
        assert_eq!(
            err.to_string(),
            "echo: argument 2 contains a NUL byte; nothing was run"
        );
    }
}
