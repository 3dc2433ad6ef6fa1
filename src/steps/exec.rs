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
mod tests;
