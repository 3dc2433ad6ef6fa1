//! Nothing a step starts outlives the step.
//!
//! Each program [`exec`](super::exec) starts leads its own session (and so its own process
//! group): whatever it forks stays in that session unless it calls `setsid`. When the step
//! ends — its program exited, failed or was killed — [`sweep`] ends what is left: every
//! live member of the step's session gets `SIGTERM` (and `SIGCONT`), then `SIGKILL` after
//! the grace period.
//!
//! A process that leaves the session (`setsid` and a double fork, as daemons do) is out of
//! reach of that scan. `medic serve` is therefore a child subreaper
//! ([`become_subreaper`]): such a process, once its parent is gone, is re-parented to
//! medic instead of to init. Medic's children that it did not start itself (not a step's
//! program, and in a session of their own) are such orphans. An orphan is ended once no
//! step that was running when it was created is still running — it cannot say which step
//! it came from, so every step that might have started it must have ended first — and
//! its exit is collected, so no zombie stays behind.
//!
//! Exit statuses are collected only with `waitpid` on the pids found this way, never with
//! `waitpid(-1)`, which would steal the statuses of the step programs tokio waits for.
//! The step programs are registered (under a lock held while they are spawned) so a scan
//! never mistakes one for an orphan.
//!
//! Linux only: it reads `/proc/<pid>/stat`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Set once this process is a child subreaper.
static SUBREAPER: AtomicBool = AtomicBool::new(false);
/// One sweep of orphans at a time (housekeeping).
static SWEEPING: AtomicBool = AtomicBool::new(false);
/// The step programs started and not yet collected.
static STEPS: Mutex<Vec<Step>> = Mutex::new(Vec::new());

/// How long a sweep waits after `SIGKILL` for the killed to be gone (a process in
/// uninterruptible sleep dies when it wakes).
const AFTER_KILL: Duration = Duration::from_secs(1);

/// A step program: its pid (which is also its session and group id) and when it started.
#[derive(Debug, Clone, Copy)]
struct Step {
    pid: libc::pid_t,
    /// Start time in clock ticks since boot, as `/proc/<pid>/stat` says.
    start: u64,
    /// False once its `run` was dropped before collecting it: tokio still collects it,
    /// but it no longer vouches for orphans.
    running: bool,
}

fn steps() -> MutexGuard<'static, Vec<Step>> {
    STEPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned descendants
/// are re-parented to it, not to init, so the steps' escaped processes can be found and
/// ended. Called once, when `medic serve` starts.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    SUBREAPER.store(true, Ordering::SeqCst);
    Ok(())
}

/// True when this process is a child subreaper.
pub fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::SeqCst)
}

/// A registered step program; [`Registration::collected`] once tokio has collected it.
#[derive(Debug)]
pub(crate) struct Registration {
    pid: libc::pid_t,
    done: bool,
}

impl Registration {
    /// The program was collected: forget it (its pid may be reused from now on).
    pub(crate) fn collected(mut self) {
        self.done = true;
        steps().retain(|s| s.pid != self.pid);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.done {
            // Not collected yet (its `run` was dropped): tokio will collect it, so it stays
            // known, but no longer as a running step.
            for s in steps().iter_mut().filter(|s| s.pid == self.pid) {
                s.running = false;
            }
        }
    }
}

/// Spawns `command` in a session of its own and registers it, under the lock scans take,
/// so no scan ever sees it unregistered.
pub(crate) fn spawn(command: &mut Command) -> io::Result<(Child, Registration)> {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; the new
    // process is not a group leader yet, so it cannot fail.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut live = steps();
    let child = command.spawn()?;
    let Some(pid) = child.id().and_then(|id| libc::pid_t::try_from(id).ok()) else {
        return Err(io::Error::other(
            "the started process has no usable process id",
        ));
    };
    // Unreadable: 0, the oldest start there is, so it vouches for every orphan (the safe side).
    let start = stat(pid).map_or(0, |s| s.start);
    live.retain(|s| s.pid != pid);
    live.push(Step {
        pid,
        start,
        running: true,
    });
    Ok((child, Registration { pid, done: false }))
}

/// Ends what is left of a step: the live members of session `session` (none if `None`)
/// and the orphans no running step vouches for. `SIGTERM` and `SIGCONT` first, `SIGKILL`
/// once `grace` has passed; then collects the orphans that exited. Never fails: what it
/// cannot see (no `/proc`) it leaves.
pub async fn sweep(session: Option<libc::pid_t>, grace: Duration) {
    let found = blocking(move || signal(session, &[libc::SIGTERM, libc::SIGCONT])).await;
    if found {
        // Processes in the real world: measured on tokio's timers, not the injected clock.
        let deadline = after(Instant::now(), grace);
        let mut pause = Duration::from_millis(5);
        loop {
            // Signalled again each time: what they forked meanwhile, and orphans of
            // those just ended, hear it too.
            if !blocking(move || signal(session, &[libc::SIGTERM, libc::SIGCONT])).await {
                break;
            }
            if Instant::now() >= deadline {
                blocking(move || signal(session, &[libc::SIGKILL])).await;
                let deadline = Instant::now() + AFTER_KILL;
                while Instant::now() < deadline
                    && blocking(move || !targets(session).is_empty()).await
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                break;
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
    blocking(collect_orphans).await;
}

/// Housekeeping: ends the orphans no running step vouches for and collects the exited
/// ones. Does nothing unless this process is a subreaper, or while another sweep of
/// orphans runs.
pub async fn sweep_orphans(grace: Duration) {
    if !is_subreaper() || SWEEPING.swap(true, Ordering::SeqCst) {
        return;
    }
    sweep(None, grace).await;
    SWEEPING.store(false, Ordering::SeqCst);
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn after(start: Instant, wait: Duration) -> Instant {
    start
        .checked_add(wait)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Sends `signals` to every target; says whether there was any.
fn signal(session: Option<libc::pid_t>, signals: &[libc::c_int]) -> bool {
    // The lock keeps a step from being spawned between the scan and the signals.
    let live = steps();
    let found = scan_targets(session, &live);
    for pid in &found {
        for &sig in signals {
            // SAFETY: kill has no memory effects. `pid` is alive: a session member, or our
            // own child (whose pid cannot be reused before we collect it).
            unsafe {
                libc::kill(*pid, sig);
            }
        }
    }
    !found.is_empty()
}

fn targets(session: Option<libc::pid_t>) -> Vec<libc::pid_t> {
    let live = steps();
    scan_targets(session, &live)
}

/// The live processes to end: members of `session`, and orphans no running step vouches
/// for.
fn scan_targets(session: Option<libc::pid_t>, live: &[Step]) -> Vec<libc::pid_t> {
    let me = own_pid();
    let my_session = own_session();
    processes()
        .into_iter()
        .filter(|p| !p.gone())
        .filter(|p| {
            let in_session = session.is_some_and(|s| s > 1 && p.session == s);
            in_session || (is_orphan(p, me, my_session, live) && !vouched(p, live))
        })
        .map(|p| p.pid)
        .collect()
}

/// Our child, in a session other than ours, and not a step program: it was re-parented
/// to us after it left a step's session.
fn is_orphan(p: &Stat, me: libc::pid_t, my_session: libc::pid_t, live: &[Step]) -> bool {
    p.ppid == me && p.session != my_session && !live.iter().any(|s| s.pid == p.pid)
}

/// Could a running step have started `p`? Yes if `p` is in its session, or if `p` was
/// created after the step started.
fn vouched(p: &Stat, live: &[Step]) -> bool {
    live.iter()
        .filter(|s| s.running)
        .any(|s| p.session == s.pid || p.start >= s.start)
}

/// Collects the exited orphans (zombies re-parented to us), each by its own pid.
fn collect_orphans() {
    let live = steps();
    let me = own_pid();
    let my_session = own_session();
    for p in processes() {
        if p.gone() && is_orphan(&p, me, my_session, &live) {
            let mut status = 0;
            // SAFETY: `p.pid` is our own exited child, not one tokio waits for.
            unsafe {
                libc::waitpid(p.pid, &mut status, libc::WNOHANG);
            }
        }
    }
    // A dropped run's program, once tokio collected it, is no longer our child.
    drop(live);
    steps().retain(|s| s.running || stat(s.pid).is_some_and(|p| p.ppid == me));
}

fn own_pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

fn own_session() -> libc::pid_t {
    // SAFETY: getsid(0) reads this process's session id.
    unsafe { libc::getsid(0) }
}

/// What `/proc/<pid>/stat` says of one process.
#[derive(Debug, Clone, Copy)]
struct Stat {
    pid: libc::pid_t,
    state: char,
    ppid: libc::pid_t,
    session: libc::pid_t,
    start: u64,
}

impl Stat {
    /// A zombie (or dead): nothing left to signal.
    fn gone(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn processes() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(stat)
        .collect()
}

fn stat(pid: libc::pid_t) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// Parses "pid (comm) state ppid pgrp session tty_nr ... starttime ...": `comm` may hold
/// spaces and ')'; `starttime` is field 22.
fn parse_stat(pid: libc::pid_t, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line = "4242 (we ird) name) S 1 4242 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(4242, line).expect("parses");
        assert_eq!(
            (s.state, s.ppid, s.session, s.start),
            ('S', 1, 4240, 987654)
        );
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn an_orphan_is_vouched_for_by_the_steps_running_when_it_was_created() {
        let orphan = Stat {
            pid: 50,
            state: 'S',
            ppid: 1,
            session: 50,
            start: 100,
        };
        let step = |start, running| Step {
            pid: 10,
            start,
            running,
        };
        assert!(
            vouched(&orphan, &[step(90, true)]),
            "older step still running"
        );
        assert!(!vouched(&orphan, &[step(110, true)]), "started after it");
        assert!(!vouched(&orphan, &[step(90, false)]), "its run was dropped");
        assert!(!vouched(&orphan, &[]));
        let member = Stat {
            session: 10,
            ..orphan
        };
        assert!(vouched(&member, &[step(110, true)]), "in a step's session");
    }
}
