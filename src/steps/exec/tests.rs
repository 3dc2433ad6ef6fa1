//! Tests of running a step's program: argv, environment, output caps, timeouts and the
//! process group's end.

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
fn background_script(dir: &TempDir, name: &str, before: &str, after: &str) -> (String, PathBuf) {
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
        &format!("perl -e 'setpgrp(0, 0); exec \"sleep\", \"{arg}\"' &\nsleep 0.2\necho started"),
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
