//! `medic check`: the shipped config is valid; a broken one reports every problem at once.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::medic_cli;

/// Escalations paged to a file, for configs about something else.
const PAGE: &str = "\n[escalation]\nnotify = [\"log\"]\n\n[[escalation.channels]]\nname = \"log\"\ntype = \"file\"\npath = \"escalations.jsonl\"\n";

/// Runs `medic args... --config config` in `cwd` with `env` set and `MEDIC_*` secrets
/// not set unless `env` sets them; (exit code, stdout, stderr).
fn medic_with_env(
    cwd: &Path,
    args: &[&str],
    config: &Path,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medic"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(cwd);
    for var in [
        "MEDIC_WEBHOOK_TOKEN",
        "MEDIC_API_TOKEN",
        "MEDIC_ADMIN_TOKEN",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("run medic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_config_and_runbooks_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for config in ["config/medic.toml", "config/medic-postgres.toml"] {
        let (code, out, err) = medic_with_env(
            root,
            &["check"],
            &root.join(config),
            &[
                ("MEDIC_WEBHOOK_TOKEN", "t"),
                ("MEDIC_API_TOKEN", "t"),
                ("MEDIC_EXTERNAL_URL", "http://medic-a:9095"),
                ("MEDIC_DATABASE_URL", "postgres://medic@db/medic"),
            ],
        );
        assert_eq!(code, 0, "{config}: {out}{err}");
        assert!(out.contains(&format!("{config}: ok")), "{out}");
        // Nothing in the shipped configs is only probably right.
        assert!(!out.contains("warning"), "{out}");
    }
}

#[test]
fn the_shipped_config_pages_a_file_and_ignores_the_watchdog() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = medic::config::Config::parse(
        &root.join("config/medic.toml"),
        &std::fs::read_to_string(root.join("config/medic.toml")).unwrap(),
        &|name| (name == "MEDIC_WEBHOOK_TOKEN").then(|| "t".to_owned()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let policy = config.policy_for(None);
    assert_eq!(policy.tiers[0].notify, ["escalations-file"]);
    assert_eq!(
        config.escalation.channel("escalations-file").unwrap().kind,
        medic::config::ChannelKind::File {
            path: "data/escalations.jsonl".into()
        }
    );
    assert!(config
        .routes
        .iter()
        .any(|r| r.name == "watchdog" && r.target == medic::config::RunbookTarget::Ignore));
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
        format!(
            r#"[runbooks]
dir = "runbooks"

[[routes]]
matchers = ['alertname="A"']
runbook = "missing.rhai"

[[routes]]
matchers = ['severity=~"("']
runbook = "present.rhai"
verify_for = "soon"
{PAGE}"#
        ),
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
        format!("[runbooks]\ndir = \"runbooks\"\n\n[[routes]]\nmatchers = ['alertname=\"A\"']\nrunbook = \"missing.rhai\"\n{PAGE}"),
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
        format!("[runbooks]\ndir = \"runbooks\"\nallowed_commands = [\"no-such-program-here\"]\n\n[[routes]]\nrunbook = \"broken.rhai\"\n{PAGE}"),
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

/// Writes `config` (and `runbooks`, by file name) into a new directory.
fn project(config: &str, runbooks: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("runbooks")).unwrap();
    for (name, source) in runbooks {
        std::fs::write(tmp.path().join("runbooks").join(name), source).unwrap();
    }
    std::fs::write(tmp.path().join("medic.toml"), config).unwrap();
    tmp
}

#[test]
fn escalation_to_nobody_is_a_check_error_and_serve_refuses_to_start() {
    let tmp = project(
        "[runbooks]\ndir = \"runbooks\"\n\n[[routes]]\nname = \"disk-full\"\nmatchers = ['alertname=\"DiskFull\"']\nrunbook = \"disk.rhai\"\n\n[escalation]\nnotify = []\n",
        &[("disk.rhai", "log(\"cleaning\");\n")],
    );
    let config = tmp.path().join("medic.toml");
    let expected = format!(
        "{}:10:10: escalation.notify: the default policy names no channel, so escalations of route \"disk-full\" and alerts that no route matches would reach nobody; name a channel in escalation.notify (or escalation.tiers), or set ignore = true on a route to take its alerts on purpose without a runbook or a page",
        config.display()
    );
    let (code, out, _) = medic_cli(tmp.path(), &["check"], &config);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.trim(), expected);
    let (code, out, err) = medic_cli(tmp.path(), &["serve"], &config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("1 problem(s); not starting"), "{err}");
}

#[test]
fn nobody_is_told_only_when_a_route_says_ignore() {
    let tmp = project(
        "[runbooks]\ndir = \"runbooks\"\n\n[[routes]]\nname = \"watchdog\"\nmatchers = ['alertname=\"Watchdog\"']\nignore = true\n\n[[routes]]\nname = \"rest\"\nignore = true\n",
        &[],
    );
    let config = tmp.path().join("medic.toml");
    let (code, out, err) = medic_cli(tmp.path(), &["check"], &config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (2 routes, 0 runbooks)"), "{out}");
}

#[test]
fn a_verify_for_shorter_than_the_group_interval_is_a_warning() {
    let tmp = project(
        "[runbooks]\ndir = \"runbooks\"\n\n[[routes]]\nname = \"quick\"\nrunbook = \"fix.rhai\"\nverify_for = \"2m\"\n\n[escalation]\nnotify = [\"log\"]\n\n[[escalation.channels]]\nname = \"log\"\ntype = \"file\"\npath = \"escalations.jsonl\"\n",
        &[("fix.rhai", "log(\"fixed\");\n")],
    );
    let config = tmp.path().join("medic.toml");
    let (code, out, err) = medic_cli(tmp.path(), &["check"], &config);
    assert_eq!(code, 0, "a warning is not an error: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:7:14: warning: routes[0].verify_for: 2m is shorter than Alertmanager's default group_interval (5m): Alertmanager tells medic that an alert resolved only at the next group_interval, so an alert the runbook fixed may be escalated still_firing; set verify_for to at least the group_interval of its Alertmanager route, or verify = \"alertmanager\" to ask Alertmanager's API",
                config.display()
            ),
            format!("{}: ok (1 routes, 1 runbooks)", config.display()),
        ],
        "{out}"
    );
}

#[test]
fn audit_verify_does_not_need_the_webhook_or_api_token() {
    let tmp = project(
        "[server]\nwebhook_token = \"${MEDIC_WEBHOOK_TOKEN}\"\napi_token = \"${MEDIC_API_TOKEN}\"\n[store]\nurl = \"sqlite://medic.db\"\n[runbooks]\ndir = \"runbooks\"\n[escalation]\nnotify = [\"pager\"]\n[[escalation.channels]]\nname = \"pager\"\ntype = \"pagerduty\"\nrouting_key = \"${PD_ROUTING_KEY}\"\n",
        &[],
    );
    let config = tmp.path().join("medic.toml");
    let (code, out, err) = medic_with_env(tmp.path(), &["audit", "verify"], &config, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("audit log intact: 0 entries"), "{out}");
    // `check` answers for `serve`, which needs them.
    let (code, out, _) = medic_with_env(tmp.path(), &["check"], &config, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[test]
fn a_runbook_calling_a_function_that_does_not_exist_fails_check() {
    // It used to pass `check` and fail only when a run reached the call, with an error
    // that named no file.
    let tmp = project(
        &format!("[runbooks]\ndir = \"runbooks\"\n\n[[routes]]\nrunbook = \"restart.rhai\"\n{PAGE}"),
        &[
            (
                "restart.rhai",
                "let unit = alert.labels[\"name\"];\nlog(`restarting ${unit}`);\nrestart_unit(unit, 3);\nif unit.lenght() > 0 { exec(\"systemctl\", [\"status\"], 1); }\n",
            ),
            ("fine.rhai", "fn twice(x) { x * 2 }\nlet n = twice(\"ab\".len());\nlog(n.to_string());\n"),
        ],
    );
    let config = tmp.path().join("medic.toml");
    let (code, out, _) = medic_cli(tmp.path(), &["check"], &config);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "runbooks/restart.rhai:3:1: calls unknown function restart_unit/2: not a runbook function, a Rhai built-in or a function of this runbook",
            "runbooks/restart.rhai:4:9: calls unknown function lenght/1: not a runbook function, a Rhai built-in or a function of this runbook",
            "runbooks/restart.rhai:4:24: calls unknown function exec/3: exec takes 1 or 2 argument(s)",
        ],
        "{out}"
    );
}
