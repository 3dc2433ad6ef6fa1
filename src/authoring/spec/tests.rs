use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("t.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

const GOOD: &str = r#"runbook = "../r.rhai"

[[tests]]
name = "one"
alert.labels = { name = "x.service" }

[[tests.mocks]]
exec = ["systemctl", "~is-.*", "--", "x.service"]
stdout = "active\n"
times = 2

[[tests.mocks]]
http = ["get", "http://h/health"]
status = 0

[tests.expect]
steps = [["exec", "systemctl", "restart"], ["sleep", 1.5], ["http", "GET", "http://h/health"]]
logs = ["~restarting .*"]
result = "escalated"
reason = "requested"
message = "~.*failed.*"
"#;

#[test]
fn a_complete_file_is_read() {
    let f = parse(Path::new("dir/t.toml"), GOOD).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(f.target, Target::Runbook(PathBuf::from("r.rhai")));
    let t = &f.tests[0];
    assert_eq!(t.location.line, 3);
    assert_eq!(t.mocks.len(), 2);
    assert_eq!(t.mocks[0].times, Some(2));
    assert_eq!(t.mocks[0].location.map(|l| l.line), Some(7));
    assert_eq!(
        t.mocks[1].answer,
        Answer::Http {
            status: 0,
            body: String::new(),
            error: "connection refused".into()
        }
    );
    let steps = t.expect.steps.as_ref().unwrap();
    assert_eq!(steps[1].to_string(), "sleep 1.5");
    assert_eq!(t.mocks[1].call.to_string(), "http GET http://h/health");
    assert_eq!(
        t.mocks[0].call.to_string(),
        "exec systemctl ~is-.* -- x.service"
    );
    let call = Call {
        kind: StepKind::Exec,
        args: vec![
            "systemctl".into(),
            "is-active".into(),
            "--".into(),
            "x.service".into(),
        ],
    };
    assert!(t.mocks[0].call.matches(&call));
    let call = Call {
        kind: StepKind::Http,
        args: vec!["GET".into(), "http://h/health".into(), "{}".into()],
    };
    assert!(t.mocks[1].call.matches(&call), "no body pattern: any body");
}

#[test]
fn regexes_match_the_whole_value() {
    let p = Pattern::parse("~a.c").unwrap();
    assert!(p.matches("abc"));
    assert!(!p.matches("xabc"));
    assert!(!p.matches("abcd"));
    assert!(Pattern::parse("~~x").unwrap().matches("~x"));
    assert!(Pattern::parse("~(").is_err());
}

#[test]
fn a_syntax_error_has_its_line() {
    let e = errors("runbook = \"r.rhai\"\n[[tests]\nname = 1\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.toml:2:"), "{e:?}");
}

#[test]
fn every_problem_is_reported_with_its_place() {
    let text = r#"runbook = "r.rhai"

[[tests]]
name = "a"
alert.labels = {}
[[tests.mocks]]
exec = ["x"]
status = 200
[[tests.mocks]]
query = "~("
[tests.expect]
route = "r"
result = "escalated"
reason = "nope"

[[tests]]
name = "a"
alert.labels = {}
expect.result = "done"
"#;
    let e = errors(text);
    let expected = [
            "t.toml:6:1: tests[0].mocks[0].status: `status` answers http steps, but this mock answers exec",
            "t.toml:10:9: tests[0].mocks[1].query[0]: invalid regex",
            "t.toml:12:9: tests[0].expect.route: only a test file with `config` routes its alerts",
            "t.toml:14:10: tests[0].expect.reason: unknown reason \"nope\"",
            "t.toml:16:1: tests[1].name: \"a\" is also the name of the test at line 3",
            "t.toml:19:17: tests[1].expect.result: unknown result \"done\"",
        ];
    assert_eq!(e.len(), expected.len(), "{e:#?}");
    for (got, want) in e.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
}

#[test]
fn unknown_keys_are_errors() {
    let e = errors("runbook = \"r.rhai\"\n[[tests]]\nname = \"a\"\nalert.labels = {}\nexpect.result = \"verifying\"\nexpect.stpes = []\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("unknown field `stpes`"), "{e:?}");
}

#[test]
fn paths_are_normalized() {
    assert_eq!(
        normalize(Path::new("runbooks/tests/../x.rhai")),
        PathBuf::from("runbooks/x.rhai")
    );
    assert_eq!(normalize(Path::new("../a/./b")), PathBuf::from("../a/b"));
}
