//! `medic check`: the shipped config is valid; a broken one reports every problem at once.

mod common;

use std::path::Path;

use common::medic_cli;

#[test]
fn shipped_config_and_runbooks_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = medic_cli(root, &["check"], &root.join("config/medic.toml"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("config/medic.toml: ok"), "{out}");
}

#[test]
fn reports_every_problem_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("runbooks")).unwrap();
    std::fs::write(dir.join("runbooks/present.rhai"), "log(\"hi\");").unwrap();
    let config = dir.join("medic.toml");
    std::fs::write(
        &config,
        r#"[runbooks]
dir = "runbooks"

[[routes]]
matchers = ['alertname="A"']
runbook = "missing.rhai"

[[routes]]
matchers = ['severity=~"("']
runbook = "present.rhai"
verify_for = "soon"
"#,
    )
    .unwrap();
    let (code, out, _) = medic_cli(dir, &["check"], &config);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let file = config.display().to_string();
    assert!(
        lines.iter().all(|l| l.starts_with(&format!("{file}:"))),
        "{out}"
    );
    assert!(lines[0].contains("routes[1].matchers[0]"), "{out}");
    assert!(lines[1].contains("routes[1].verify_for"), "{out}");

    // Once the config itself is valid, a route naming a missing runbook is reported.
    std::fs::write(
        &config,
        "[runbooks]\ndir = \"runbooks\"\n\n[[routes]]\nmatchers = ['alertname=\"A\"']\nrunbook = \"missing.rhai\"\n",
    )
    .unwrap();
    let (code, out, _) = medic_cli(dir, &["check"], &config);
    assert_eq!(code, 1);
    assert_eq!(
        out.trim(),
        format!(
            "{file}:4:1: routes[0].runbook: runbook \"missing.rhai\" does not exist in runbooks"
        )
    );
}

#[test]
fn runbook_compile_errors_are_reported_with_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("runbooks")).unwrap();
    std::fs::write(dir.join("runbooks/good.rhai"), "log(\"ok\");\n").unwrap();
    std::fs::write(
        dir.join("runbooks/broken.rhai"),
        "log(\"one\");\nlet x = ;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("runbooks/sneaky.rhai"),
        "eval(\"exec('sh', [])\");\n",
    )
    .unwrap();
    let config = dir.join("medic.toml");
    std::fs::write(
        &config,
        "[runbooks]\ndir = \"runbooks\"\nallowed_commands = [\"no-such-program-here\"]\n\n[[routes]]\nrunbook = \"broken.rhai\"\n",
    )
    .unwrap();
    let (code, out, _) = medic_cli(dir, &["check"], &config);
    assert_eq!(code, 1, "{out}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains(
            "runbooks.allowed_commands: allowed command \"no-such-program-here\" not found"
        ),
        "{out}"
    );
    assert!(lines[1].starts_with("runbooks/broken.rhai:2:9: "), "{out}");
    assert!(lines[2].starts_with("runbooks/sneaky.rhai:1:1: "), "{out}");
}
