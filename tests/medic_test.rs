//! `medic test` and `medic replay`, through the real binary.
//!
//! Each test writes a small runbook and test files into a temporary directory and runs
//! `medic test` there, so that the paths and the runbook lines in the output are known
//! exactly. The shipped runbooks' tests and example payloads are run from the project's
//! root, as `scripts/test.sh` runs them.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `medic args...` in `cwd` with `stdin`; (exit code, stdout, stderr).
fn medic(cwd: &Path, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run medic");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for medic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A runbook whose lines the tests point at: `exec` on line 3 column 9, the second `exec`
/// on line 5 column 13, `escalate` on line 7 column 24.
const RUNBOOK: &str = r#"let unit = alert.labels["name"];
log(`restarting ${unit}`);
let r = exec("systemctl", ["restart", "--", unit]);
if r.code != 0 { escalate(`restart failed: ${r.stderr}`); }
let state = exec("systemctl", ["is-active", "--", unit]).stdout;
state.trim();
if state != "active" { escalate(`${unit} is ${state}`); }
log(`${unit} is active`);
"#;

/// A test of RUNBOOK that passes, as the start of a test file.
const PASSING: &str = r#"runbook = "restart.rhai"

[[tests]]
name = "restarts the unit"
alert.labels = { name = "x.service" }

[[tests.mocks]]
exec = ["systemctl", "restart", "--", "x.service"]

[[tests.mocks]]
exec = ["systemctl", "is-active", "--", "x.service"]
stdout = "active\n"

[tests.expect]
steps = [
    ["exec", "systemctl", "restart", "--", "x.service"],
    ["exec", "systemctl", "is-active", "--", "~is-.*|x\\.service"],
]
logs = ["restarting x.service", "~x\\.service is active"]
result = "verifying"
"#;

/// A temporary directory holding RUNBOOK as `restart.rhai` and the given test files.
fn workdir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("restart.rhai"), RUNBOOK).unwrap();
    for (name, text) in files {
        let path = tmp.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    tmp
}

fn last_line(out: &str) -> &str {
    out.lines().last().unwrap_or("")
}

#[test]
fn the_shipped_runbooks_pass_their_tests() {
    let (code, out, err) = medic(Path::new(ROOT), &["test"], b"");
    assert_eq!(code, 0, "{out}{err}");
    for file in [
        "disk_full.toml",
        "health_check_restart.toml",
        "routing.toml",
        "shed_load.toml",
        "systemd_unit_failed.toml",
    ] {
        assert!(
            out.contains(&format!("runbooks/tests/{file}\n")),
            "{file}:\n{out}"
        );
    }
    assert!(!out.contains("FAIL"), "{out}");
    let counts = last_line(&out);
    let passed: usize = counts
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("last line {counts:?}"));
    assert!(passed >= 40, "{out}");
}

#[test]
fn passing_tests_exit_0() {
    let dir = workdir(&[("t.toml", PASSING)]);
    let (code, out, err) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "t.toml\n  PASS  restarts the unit\n\n1 passed, 0 failed\n"
    );
}

#[test]
fn a_failing_test_shows_a_diff_with_the_runbook_line() {
    let failing = format!(
        r#"{PASSING}
[[tests]]
name = "expects other steps"
alert.labels = {{ name = "x.service" }}

[[tests.mocks]]
exec = ["systemctl", "restart", "--", "x.service"]

[[tests.mocks]]
exec = ["systemctl", "is-active", "--", "x.service"]
stdout = "failed\n"

[tests.expect]
steps = [
    ["exec", "systemctl", "restart", "--", "x.service"],
    ["exec", "systemctl", "status", "--", "x.service"],
]
logs = ["restarting x.service", "x.service is active"]
result = "verifying"
"#
    );
    let dir = workdir(&[("t.toml", &failing)]);
    let (code, out, err) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}{err}");
    let expected = r#"t.toml
  PASS  restarts the unit
  FAIL  expects other steps  (t.toml:22)
        steps differ (- expected, + actual):
            exec systemctl restart -- x.service     restart.rhai:3:9
          - exec systemctl status -- x.service
          + exec systemctl is-active -- x.service   restart.rhai:5:13
        diverged at restart.rhai:5:13
        log lines differ (- expected, + actual):
            'restarting x.service'   restart.rhai:2:1
          - 'x.service is active'
        diverged where the run ended: escalated (requested) at restart.rhai:7:24: x.service is failed
        result: expected verifying
                got escalated (requested) at restart.rhai:7:24: x.service is failed

1 passed, 1 failed
"#;
    assert_eq!(out, expected);
}

#[test]
fn a_wrong_result_names_the_line_that_escalated() {
    let text = r#"runbook = "restart.rhai"

[[tests]]
name = "expects a different message"
alert.labels = { name = "x.service" }

[[tests.mocks]]
exec = ["systemctl", "restart", "--", "x.service"]
code = 1
stderr = "denied"

[tests.expect]
result = "escalated"
reason = "requested"
message = "~restart failed: timeout"
"#;
    let dir = workdir(&[("t.toml", text)]);
    let (code, out, _) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "        result: expected escalated (requested) with message '~restart failed: timeout'\n                got escalated (requested) at restart.rhai:4:18: restart failed: denied\n"
        ),
        "{out}"
    );
    assert_eq!(last_line(&out), "0 passed, 1 failed");
}

#[test]
fn a_syntax_error_is_reported_with_its_file_and_line() {
    let broken =
        "runbook = \"restart.rhai\"\n\n[[tests]]\nname = \"unterminated\nalert.labels = {}\n";
    let dir = workdir(&[
        (
            "tests/a_good.toml",
            &PASSING.replace("restart.rhai", "../restart.rhai"),
        ),
        ("tests/broken.toml", broken),
    ]);
    let (code, out, err) = medic(dir.path(), &["test", "tests"], b"");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("tests/a_good.toml\n  PASS  restarts the unit\n"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("FAIL"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("  FAIL  tests/broken.toml:4:"), "{out}");
    assert_eq!(last_line(&out), "1 passed, 1 failed");
}

#[test]
fn a_file_with_invalid_content_reports_every_problem() {
    let text = r#"runbook = "restart.rhai"

[[tests]]
name = "bad"
alert.labels = { name = "x.service" }

[[tests.mocks]]
exec = ["systemctl", "~(unclosed"]

[tests.expect]
result = "escalated"
reason = "broken"
"#;
    let dir = workdir(&[("t.toml", text)]);
    let (code, out, _) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  t.toml:8:22: tests[0].mocks[0].exec[1]: invalid regex \"(unclosed\": unclosed group\n"),
        "{out}"
    );
    assert!(
        out.contains("  FAIL  t.toml:12:10: tests[0].expect.reason: unknown reason \"broken\""),
        "{out}"
    );
    assert_eq!(last_line(&out), "0 passed, 1 failed");
}

#[test]
fn a_missing_runbook_is_reported() {
    let dir = workdir(&[("t.toml", &PASSING.replace("restart.rhai", "gone.rhai"))]);
    let (code, out, _) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("  FAIL  gone.rhai (named in t.toml): cannot read"),
        "{out}"
    );
    assert_eq!(last_line(&out), "0 passed, 1 failed");
}

#[test]
fn a_runbook_that_does_not_compile_is_reported_with_its_line() {
    let dir = workdir(&[("t.toml", &PASSING.replace("restart.rhai", "broken.rhai"))]);
    std::fs::write(dir.path().join("broken.rhai"), "log(\"a\");\nlet = 1;\n").unwrap();
    let (code, out, _) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("  FAIL  broken.rhai:2:"), "{out}");
}

#[test]
fn a_mock_never_used_is_a_failure() {
    let text = PASSING.replace(
        "[tests.expect]",
        "[[tests.mocks]]\nhttp = [\"GET\", \"http://127.0.0.1:1/health\"]\n\n[[tests.mocks]]\nexec = [\"systemctl\", \"is-active\", \"--\", \"x.service\"]\nstdout = \"activating\"\ntimes = 2\n\n[tests.expect]",
    );
    let dir = workdir(&[("t.toml", &text)]);
    let (code, out, _) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("        tests[0].mocks[2] was never used: http GET http://127.0.0.1:1/health (line 14)\n"),
        "{out}"
    );
    assert!(
        out.contains("        tests[0].mocks[3] answered 0 of its times = 2 calls: exec systemctl is-active -- x.service (line 17)\n"),
        "{out}"
    );
    assert_eq!(last_line(&out), "0 passed, 1 failed");
}

#[test]
fn an_unmocked_call_says_which_call_needs_a_mock() {
    let marker = tempfile::tempdir().unwrap();
    let marker = marker.path().join("ran");
    let runbook = format!(
        "exec(\"touch\", [{:?}]);\nlet r = http(\"GET\", \"http://127.0.0.1:9/health\");\nlog(`status ${{r.status}}`);\n",
        marker.display().to_string()
    );
    let text = r#"runbook = "touch.rhai"

[[tests]]
name = "mocks only the command"
alert.labels = { alertname = "A" }

[[tests.mocks]]
exec = ["touch", "~.*"]

[tests.expect]
result = "verifying"
"#;
    let dir = workdir(&[("t.toml", text), ("touch.rhai", &runbook)]);
    let (code, out, _) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}");
    let expected = r#"  FAIL  mocks only the command  (t.toml:3)
        no mock answers http GET http://127.0.0.1:9/health, called at touch.rhai:2:9
        add a mock to the test, e.g.:
            [[tests.mocks]]
            http = ["GET", "http://127.0.0.1:9/health"]
            status = 200
            body = ""
"#;
    assert!(out.contains(expected), "{out}");
    assert_eq!(last_line(&out), "0 passed, 1 failed");
    assert!(!marker.exists(), "a mocked command must not run");
}

#[test]
fn run_selects_tests_by_name() {
    let second = format!(
        "{PASSING}\n[[tests]]\nname = \"escalates without a name\"\nalert.labels = {{ alertname = \"A\" }}\n\n[tests.expect]\nresult = \"escalated\"\nreason = \"runbook_error\"\n"
    );
    let dir = workdir(&[("t.toml", &second)]);
    let (code, out, _) = medic(dir.path(), &["test", "--run", "^restarts", "t.toml"], b"");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "t.toml\n  PASS  restarts the unit\n\n1 passed, 0 failed\n"
    );
    let (_, out, _) = medic(dir.path(), &["test", "--run", "without", "t.toml"], b"");
    assert!(!out.contains("restarts the unit"), "{out}");
    assert!(out.contains("escalates without a name"), "{out}");
    let (code, _, err) = medic(dir.path(), &["test", "--run", "(", "t.toml"], b"");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn junit_report_is_well_formed() {
    let failing = PASSING
        .replace(
            "result = \"verifying\"",
            "result = \"escalated\"\nreason = \"requested\"",
        )
        .replace(
            "restarts the unit",
            "expects <an> \\\"escalation\\\" & fails",
        );
    let dir = workdir(&[
        ("a.toml", PASSING),
        ("b.toml", &failing),
        ("c.toml", "runbook = [\n"),
    ]);
    let (code, out, _) = medic(
        dir.path(),
        &[
            "test",
            "--junit",
            "report.xml",
            "a.toml",
            "b.toml",
            "c.toml",
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(last_line(&out), "1 passed, 2 failed");
    let xml = std::fs::read_to_string(dir.path().join("report.xml")).unwrap();
    let elements = check_xml(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let attr = |el: &(String, Vec<(String, String)>), name: &str| {
        el.1.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let root = &elements[0];
    assert_eq!(root.0, "testsuites");
    assert_eq!(attr(root, "tests"), "3");
    assert_eq!(attr(root, "failures"), "2");
    let suites: Vec<_> = elements.iter().filter(|e| e.0 == "testsuite").collect();
    assert_eq!(
        suites.iter().map(|s| attr(s, "name")).collect::<Vec<_>>(),
        ["a.toml", "b.toml", "c.toml"]
    );
    let cases: Vec<_> = elements.iter().filter(|e| e.0 == "testcase").collect();
    assert_eq!(
        cases.iter().map(|c| attr(c, "name")).collect::<Vec<_>>(),
        [
            "restarts the unit",
            "expects <an> \"escalation\" & fails",
            "c.toml"
        ]
    );
    assert_eq!(elements.iter().filter(|e| e.0 == "failure").count(), 2);
    assert!(
        xml.contains("result: expected escalated (requested)"),
        "{xml}"
    );
}

/// A small XML well-formedness check: a declaration, one root, tags balanced and nested,
/// attribute values quoted, only the predefined entities and character references.
/// Returns every element with its attributes (unescaped), in document order.
#[allow(clippy::type_complexity)]
fn check_xml(xml: &str) -> Result<Vec<(String, Vec<(String, String)>)>, String> {
    fn unescape(s: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let end = rest[i..]
                .find(';')
                .ok_or(format!("unterminated entity in {s:?}"))?;
            let entity = &rest[i + 1..i + end];
            out.push(match entity {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                e if e.starts_with('#') => e[1..]
                    .parse::<u32>()
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or(format!("bad character reference &{e};"))?,
                e => return Err(format!("unknown entity &{e};")),
            });
            rest = &rest[i + end + 1..];
        }
        if rest.contains('<') {
            return Err(format!("raw < in {s:?}"));
        }
        out.push_str(rest);
        Ok(out)
    }
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .ok_or("no XML declaration")?;
    let mut stack: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    let mut roots = 0;
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        unescape(text)?;
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name => continue,
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        }
        let (tag, empty) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let name = &tag[..name_end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad element name {name:?}"));
        }
        let mut attrs = Vec::new();
        let mut a = tag[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find("=\"")
                .ok_or(format!("unquoted attribute in <{tag}>"))?;
            let key = a[..eq].trim();
            let end = a[eq + 2..].find('"').ok_or("unterminated attribute")? + eq + 2;
            attrs.push((key.to_string(), unescape(&a[eq + 2..end])?));
            a = a[end + 1..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        elements.push((name.to_string(), attrs));
        if !empty {
            stack.push(name.to_string());
        }
    }
    if !stack.is_empty() || roots != 1 || !rest.trim().is_empty() {
        return Err(format!("unbalanced: open {stack:?}, {roots} roots"));
    }
    Ok(elements)
}

fn sha256(path: &str) -> String {
    let text = std::fs::read(Path::new(ROOT).join(path)).unwrap();
    hex::encode(Sha256::digest(&text))
}

#[test]
fn replay_prints_the_timeline_of_the_shipped_example() {
    let (code, out, err) = medic(
        Path::new(ROOT),
        &["replay", "runbooks/tests/payloads/systemd_unit_failed.json"],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    let expected = format!(
        r#"webhook: receiver "medic", firing, 1 alert(s)

alert 1/1: SystemdUnitFailed (firing)
  labels       {{alertname="SystemdUnitFailed", instance="web1:9100", name="nginx.service", severity="warning"}}
  fingerprint  5f1c1a1e2b3c4d5e
  route        systemd-unit-failed
  runbook      systemd_unit_failed.rhai (sha256 {})
  timeline     (dry run: nothing is run, steps return their dry-run results)
    log restarting nginx.service                                   runbooks/systemd_unit_failed.rhai:48:1
    exec systemctl restart -- nginx.service  → would run, code 0   runbooks/systemd_unit_failed.rhai:49:15
    log dry run: not checking whether nginx.service is active      runbooks/systemd_unit_failed.rhai:56:5
  end          verifying: the alert must resolve within verify_for (5m), else it is escalated still_firing
"#,
        sha256("runbooks/systemd_unit_failed.rhai")
    );
    assert_eq!(out, expected);
}

#[test]
fn replay_of_several_alerts_from_stdin() {
    let body = std::fs::read(Path::new(ROOT).join("runbooks/tests/payloads/mixed.json")).unwrap();
    let (code, out, err) = medic(Path::new(ROOT), &["replay", "-"], &body);
    assert_eq!(code, 0, "{out}{err}");
    let alerts: Vec<&str> = out.split("\nalert ").skip(1).collect();
    assert_eq!(alerts.len(), 4, "{out}");

    // A health check: the dry run's synthetic 200 does not stop it; it restarts and ends.
    let health = alerts[0];
    assert!(
        health.starts_with("1/4: HealthCheckFailing (firing)\n"),
        "{health}"
    );
    assert!(
        health.contains("  route        health-check-restart\n"),
        "{health}"
    );
    assert!(
        health.contains("    http GET http://127.0.0.1:8080/healthz  → would run, status 200"),
        "{health}"
    );
    assert!(
        health.contains("    exec systemctl restart -- api.service  → would run, code 0"),
        "{health}"
    );
    assert!(health.contains("  end          verifying: "), "{health}");

    // The shipped config does not allow cleanup-disk: refused as in production.
    let disk = alerts[1];
    assert!(disk.contains("  route        disk-full\n"), "{disk}");
    assert!(
        disk.contains("    log cleaning up /var (limit 85% used)"),
        "{disk}"
    );
    assert!(
        disk.contains("    exec cleanup-disk --mountpoint /var  → refused: exec: \"cleanup-disk\" is not in runbooks.allowed_commands   runbooks/disk_full.rhai:41:15\n"),
        "{disk}"
    );
    assert!(
        disk.contains("  end          escalated (step_failed) at runbooks/disk_full.rhai:41:15: exec: \"cleanup-disk\" is not in runbooks.allowed_commands\n"),
        "{disk}"
    );

    let resolved = alerts[2];
    assert!(
        resolved.starts_with("3/4: SystemdUnitFailed (resolved)\n"),
        "{resolved}"
    );
    assert!(
        resolved.contains(
            "  end          resolved: closes the alert's open incident, if any; no runbook runs\n"
        ),
        "{resolved}"
    );
    assert!(!resolved.contains("timeline"), "{resolved}");

    // The shipped config takes the Watchdog on purpose: nobody is paged for it.
    let watchdog = alerts[3];
    assert!(watchdog.contains("  route        watchdog\n"), "{watchdog}");
    assert!(
        watchdog.contains("  end          ignored: the route takes the alert on purpose, nothing runs, nobody is told\n"),
        "{watchdog}"
    );
}

#[test]
fn replay_names_the_field_of_a_bad_body() {
    let body = br#"{"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": 5}, "startsAt": "2024-05-01T10:00:00Z"}]}"#;
    let (code, out, _) = medic(Path::new(ROOT), &["replay", "-"], body);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "<stdin>: alerts[0].labels.alertname: invalid type: integer `5`, expected a string\n"
    );
}

/// As `serve` takes it: an alert over medic's limits is escalated `invalid_alert` and its
/// runbook does not run, even when its bounded labels match a route.
#[test]
fn replay_escalates_an_alert_over_the_limits_without_running_it() {
    let big = "x".repeat(16 * 1024 + 1);
    let body = format!(
        r#"{{"version": "4", "status": "firing", "alerts": [{{"status": "firing", "labels": {{"alertname": "SystemdUnitFailed", "name": "nginx.service", "severity": "critical", "big": "{big}"}}, "startsAt": "2024-05-01T10:00:00Z"}}]}}"#
    );
    let (code, out, err) = medic(Path::new(ROOT), &["replay", "-"], body.as_bytes());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("  end          escalated (invalid_alert): the alert breaks medic's limits and was stored bounded, so nothing was run: label \"big\": 16385 bytes, over the limit of 16384 bytes"),
        "{out}"
    );
    assert!(!out.contains("would run"), "{out}");
}

#[test]
fn the_documented_example_passes() {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/testing-runbooks.md")).unwrap();
    let start = doc.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let runbook =
        std::fs::read_to_string(Path::new(ROOT).join("runbooks/systemd_unit_failed.rhai")).unwrap();
    let dir = workdir(&[
        ("tests/example.toml", example),
        ("systemd_unit_failed.rhai", &runbook),
    ]);
    let (code, out, err) = medic(dir.path(), &["test", "tests"], b"");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(last_line(&out), "2 passed, 0 failed");
}

#[test]
fn a_call_in_an_imported_module_points_at_the_module() {
    let dir = workdir(&[
        ("helpers.rhai", "fn restart(unit) {\n    exec(\"systemctl\", [\"restart\", unit])\n}\n"),
        ("main.rhai", "import \"helpers\" as h;\nh::restart(\"x.service\");\n"),
        (
            "t.toml",
            "runbook = \"main.rhai\"\n\n[[tests]]\nname = \"unmocked\"\nalert.labels = { a = \"b\" }\nexpect.result = \"verifying\"\n",
        ),
    ]);
    let (code, out, _) = medic(dir.path(), &["test", "t.toml"], b"");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "no mock answers exec systemctl restart x.service, called at helpers.rhai:2:5\n"
        ),
        "{out}"
    );
}

#[test]
fn medic_test_does_not_need_the_servers_secrets() {
    // A config whose webhook and API tokens and channel credentials come from variables
    // that are not set: only `serve` (and `check`) use them.
    let config = r#"
[server]
webhook_token = "${MEDIC_WEBHOOK_TOKEN}"
api_token = "${MEDIC_API_TOKEN}"

[runbooks]
dir = "."
allowed_commands = ["systemctl"]

[[routes]]
runbook = "restart.rhai"

[escalation]
notify = ["pager"]

[[escalation.channels]]
name = "pager"
type = "pagerduty"
routing_key = "${PD_ROUTING_KEY}"
"#;
    let test = format!(
        "config = \"medic.toml\"\n\n[[tests]]\n{}",
        &PASSING[PASSING.find("name").unwrap()..]
    );
    let dir = workdir(&[("medic.toml", config), ("t.toml", &test)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"));
    child
        .args(["test", "t.toml"])
        .current_dir(dir.path())
        .env_remove("MEDIC_WEBHOOK_TOKEN")
        .env_remove("MEDIC_API_TOKEN")
        .env_remove("PD_ROUTING_KEY");
    let out = child.output().expect("run medic");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(last_line(&stdout), "1 passed, 0 failed", "{stdout}");
}
