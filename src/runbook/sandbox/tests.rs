//! Sandbox tests: limits, termination, and what a runbook can and cannot reach.

use std::sync::{Arc, Mutex};

use super::*;

/// A host that records calls and answers from a script of canned results.
#[derive(Clone, Default)]
struct FakeHost {
    calls: Arc<Mutex<Vec<String>>>,
    fail_exec: Option<Stop>,
}

impl Host for FakeHost {
    fn exec(&self, program: &str, args: Vec<String>) -> Result<Map, Stop> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("exec {program} {args:?}"));
        if let Some(stop) = &self.fail_exec {
            return Err(stop.clone());
        }
        let mut m = Map::new();
        m.insert("code".into(), Dynamic::from(0_i64));
        m.insert("stdout".into(), Dynamic::from("active\n".to_string()));
        m.insert("stderr".into(), Dynamic::from(String::new()));
        Ok(m)
    }
    fn http(&self, method: &str, url: &str, body: &str) -> Result<Map, Stop> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("http {method} {url} {body}"));
        Ok(Map::new())
    }
    fn log(&self, message: &str) {
        self.calls.lock().unwrap().push(format!("log {message}"));
    }
    fn sleep(&self, duration: Duration) -> Result<(), Stop> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("sleep {duration:?}"));
        Ok(())
    }
    fn silence(&self, duration: &str, comment: &str) -> Result<String, Stop> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("silence {duration} {comment}"));
        Ok("sil-1".into())
    }
    fn query(&self, promql: &str) -> Result<Array, Stop> {
        self.calls.lock().unwrap().push(format!("query {promql}"));
        Ok(Array::new())
    }
}

fn config(edit: impl FnOnce(&mut RunbooksConfig)) -> RunbooksConfig {
    let mut c = RunbooksConfig {
        timeout: Duration::from_secs(5),
        ..RunbooksConfig::default()
    };
    edit(&mut c);
    c
}

fn run_with(cfg: &RunbooksConfig, source: &str, host: FakeHost) -> RunEnd {
    let sandbox = Sandbox::new(cfg);
    let ast = sandbox
        .compile(source)
        .unwrap_or_else(|e| panic!("compile: {e:?}"));
    let mut alert = Map::new();
    let mut labels = Map::new();
    labels.insert("name".into(), Dynamic::from("nginx.service".to_string()));
    alert.insert("labels".into(), Dynamic::from_map(labels));
    sandbox.run(
        &ast,
        vec![("alert", Dynamic::from_map(alert))],
        Box::new(host),
        Cancel::default(),
    )
}

fn run(source: &str) -> (RunEnd, Vec<String>) {
    let host = FakeHost::default();
    let end = run_with(&config(|_| {}), source, host.clone());
    let calls = host.calls.lock().unwrap().clone();
    (end, calls)
}

fn stopped(end: &RunEnd) -> &Stop {
    match end {
        RunEnd::Stopped(s) => s,
        RunEnd::Completed => panic!("expected the run to be stopped"),
    }
}

#[test]
fn a_runbook_calls_its_steps_in_order() {
    let (end, calls) = run(r#"
        let unit = alert.labels["name"];
        log(`restarting ${unit}`);
        let r = exec("systemctl", ["restart", unit]);
        if r.code != 0 { escalate("failed"); }
        print("done");
    "#);
    assert_eq!(end, RunEnd::Completed);
    assert_eq!(
        calls,
        [
            "log restarting nginx.service",
            "exec systemctl [\"restart\", \"nginx.service\"]",
            "log done"
        ]
    );
}

#[test]
fn escalate_stops_the_run() {
    let (end, calls) = run(r#"log("a"); escalate("disk still full"); log("never");"#);
    assert_eq!(
        end,
        RunEnd::Stopped(Stop::new(Reason::Requested, "disk still full"))
    );
    assert_eq!(calls, ["log a"]);
}

#[test]
fn a_failed_step_cannot_be_caught() {
    let host = FakeHost {
        fail_exec: Some(Stop::new(
            Reason::StepFailed,
            "\"rm\" is not in runbooks.allowed_commands",
        )),
        ..FakeHost::default()
    };
    let end = run_with(
        &config(|_| {}),
        r#"try { exec("rm", ["-rf", "/"]); } catch (e) { log("caught"); } log("after");"#,
        host.clone(),
    );
    assert_eq!(stopped(&end).reason, Reason::StepFailed);
    assert_eq!(
        host.calls.lock().unwrap().len(),
        1,
        "nothing after the failed step runs"
    );
}

#[test]
fn an_endless_loop_hits_max_operations() {
    let (end, _) = run("let i = 0; loop { i += 1; }");
    let s = stopped(&end);
    assert_eq!(s.reason, Reason::RunbookError);
    assert!(
        s.message
            .starts_with("the runbook exceeded runbooks.max_operations at line 1"),
        "{}",
        s.message
    );
}

#[test]
fn a_slow_loop_hits_the_deadline() {
    let cfg = config(|c| {
        c.max_operations = u64::MAX;
        c.timeout = Duration::from_millis(200);
    });
    let end = run_with(&cfg, "loop { }", FakeHost::default());
    let s = stopped(&end);
    assert_eq!(s.reason, Reason::Timeout);
    assert_eq!(
        s.message,
        "the runbook ran longer than runbooks.timeout (200ms)"
    );
}

#[test]
fn deep_recursion_hits_max_call_depth() {
    let (end, _) = run("fn down(n) { down(n + 1) } down(0);");
    let s = stopped(&end);
    assert_eq!(s.reason, Reason::RunbookError);
    assert!(s.message.contains("max_call_depth"), "{}", s.message);
}

#[test]
fn a_huge_string_hits_max_string_size() {
    let (end, _) = run(r#"let s = "x"; loop { s += s; }"#);
    let s = stopped(&end);
    assert_eq!(s.reason, Reason::RunbookError);
    assert!(
        s.message.contains("size limit") && s.message.contains("max_string_size"),
        "{}",
        s.message
    );
}

#[test]
fn a_huge_array_hits_max_array_size() {
    let (end, _) = run("let a = []; loop { a.push(1); }");
    assert!(stopped(&end).message.contains("size limit"), "{:?}", end);
}

#[test]
fn sleep_beyond_the_deadline_is_a_timeout() {
    let (end, calls) = run("sleep(1); sleep(600);");
    let s = stopped(&end);
    assert_eq!(s.reason, Reason::Timeout);
    assert!(
        s.message
            .starts_with("sleep(600) would outlast the run's time limit"),
        "{}",
        s.message
    );
    assert_eq!(calls, ["sleep 1s"]);
}

#[test]
fn a_thrown_error_is_a_runbook_error_with_its_line() {
    let (end, _) = run("log(\"x\");\nthrow \"cannot handle this\";");
    let s = stopped(&end);
    assert_eq!(s.reason, Reason::RunbookError);
    assert!(
        s.message.starts_with("runbook error at line 2"),
        "{}",
        s.message
    );
    assert!(s.message.contains("cannot handle this"), "{}", s.message);
}

#[test]
fn cancel_stops_at_the_next_operation() {
    let sandbox = Sandbox::new(&config(|c| c.max_operations = u64::MAX));
    let ast = sandbox.compile("loop { }").unwrap();
    let cancel = Cancel::default();
    let c2 = cancel.clone();
    let t =
        std::thread::spawn(move || sandbox.run(&ast, vec![], Box::new(FakeHost::default()), c2));
    std::thread::sleep(Duration::from_millis(50));
    cancel.cancel();
    let end = t.join().unwrap();
    assert_eq!(stopped(&end).reason, Reason::Interrupted);
}

#[test]
fn eval_is_not_available() {
    let sandbox = Sandbox::new(&config(|_| {}));
    let err = sandbox.compile(r#"eval("exec(\"sh\", [])")"#).unwrap_err();
    assert_eq!(err.position, Some((1, 1)));
    assert!(err.message.contains("eval"), "{}", err.message);
}

#[test]
fn imports_stay_inside_the_runbook_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("helpers.rhai"), "fn twice(x) { x * 2 }").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("evil.rhai"), "fn twice(x) { 0 }").unwrap();
    let cfg = config(|c| c.dir = dir.path().to_path_buf());

    let host = FakeHost::default();
    let end = run_with(
        &cfg,
        r#"import "helpers" as h; log(h::twice(21));"#,
        host.clone(),
    );
    assert_eq!(end, RunEnd::Completed);
    assert_eq!(host.calls.lock().unwrap()[0], "log 42");

    let escape = format!(
        "import \"../{}/evil\" as e;",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    for source in [escape.as_str(), r#"import "/etc/passwd" as p;"#] {
        let end = run_with(&cfg, source, FakeHost::default());
        let s = stopped(&end);
        assert_eq!(s.reason, Reason::RunbookError);
        assert!(
            s.message.contains("imports are limited to files inside"),
            "{}",
            s.message
        );
    }
}

#[test]
fn functions_outside_a_run_fail_cleanly() {
    // The engine is shared: a stray call with no run set must error, not panic.
    assert!(current().is_none());
}

/// A host that notes where each step was called from and keeps a clock that `sleep`
/// moves forward at once.
#[derive(Clone, Default)]
struct SiteHost {
    sites: Arc<Mutex<Vec<String>>>,
    slept: Arc<Mutex<Duration>>,
}

impl SiteHost {
    fn note(&self, what: &str) {
        let at = match call_site() {
            Some(CallSite {
                source: None,
                line,
                column,
            }) => format!("{what} {line}:{column}"),
            Some(CallSite {
                source: Some(s),
                line,
                column,
            }) => format!(
                "{what} {}:{line}:{column}",
                s.rsplit('/').next().unwrap_or("")
            ),
            None => format!("{what} ?"),
        };
        self.sites.lock().unwrap().push(at);
    }
}

impl Host for SiteHost {
    fn exec(&self, _program: &str, _args: Vec<String>) -> Result<Map, Stop> {
        self.note("exec");
        Ok(Map::new())
    }
    fn http(&self, _method: &str, _url: &str, _body: &str) -> Result<Map, Stop> {
        self.note("http");
        Ok(Map::new())
    }
    fn log(&self, _message: &str) {
        self.note("log");
    }
    fn sleep(&self, duration: Duration) -> Result<(), Stop> {
        self.note("sleep");
        *self.slept.lock().unwrap() += duration;
        Ok(())
    }
    fn silence(&self, _duration: &str, _comment: &str) -> Result<String, Stop> {
        self.note("silence");
        Ok(String::new())
    }
    fn query(&self, _promql: &str) -> Result<Array, Stop> {
        self.note("query");
        Ok(Array::new())
    }
    fn now(&self) -> Instant {
        Instant::now() + *self.slept.lock().unwrap()
    }
    fn stopping(&self, stop: &Stop) {
        self.note(&format!("stopping({})", stop.reason.as_str()));
    }
}

#[test]
fn a_host_knows_where_each_function_was_called() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("helpers.rhai"),
        "fn restart(u) {\n  exec(\"systemctl\", [\"restart\", u])\n}",
    )
    .unwrap();
    let cfg = config(|c| c.dir = dir.path().to_path_buf());
    let host = SiteHost::default();
    let source = "import \"helpers\" as h;\nlog(\"a\");\n  h::restart(\"x\");\nfn local() { http(\"GET\", \"http://x/\") }\nlocal();\nprint(\"p\");\nescalate(\"no\");";
    let sandbox = Sandbox::new(&cfg);
    let ast = sandbox.compile(source).unwrap();
    let end = sandbox.run(&ast, vec![], Box::new(host.clone()), Cancel::default());
    assert_eq!(stopped(&end).reason, Reason::Requested);
    // In a module, the source is the name it was imported by.
    assert_eq!(
        *host.sites.lock().unwrap(),
        [
            "log 2:1",
            "exec helpers:2:3",
            "http 4:14",
            "log ?", // print: Rhai does not say where
            "stopping(requested) 7:1",
        ]
    );
}

#[test]
fn the_run_clock_is_the_hosts() {
    // 5s limit: with a host clock that sleeps move forward, the second sleep(3) no longer fits.
    let host = SiteHost::default();
    let sandbox = Sandbox::new(&config(|_| {}));
    let ast = sandbox.compile("sleep(3);\nsleep(3);").unwrap();
    let started = Instant::now();
    let end = sandbox.run(&ast, vec![], Box::new(host.clone()), Cancel::default());
    assert!(started.elapsed() < Duration::from_secs(2));
    let s = stopped(&end);
    assert_eq!(s.reason, Reason::Timeout);
    assert!(
        s.message.starts_with("sleep(3) would outlast"),
        "{}",
        s.message
    );
    assert_eq!(
        *host.sites.lock().unwrap(),
        ["sleep 1:1", "stopping(timeout) 2:1"]
    );
}
