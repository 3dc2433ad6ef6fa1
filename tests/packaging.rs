//! What ships beside the binary, as an operator meets it: `medic --version` names the
//! commit and build date, the completions and man page cover every command, the systemd
//! unit is the hardened one the docs describe and its `systemctl reload` (SIGHUP) reloads
//! medic, and the LICENSE file is the license Cargo.toml names.
//!
//! `scripts/check-packaging.sh` (run by `scripts/test.sh`) checks the same files with
//! outside tools: `systemd-analyze verify`, `man`, and each shell's parser.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn medic(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run medic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The subcommands `medic --help` lists.
fn subcommands() -> Vec<String> {
    let (_, help, _) = medic(&["--help"]);
    let commands = help
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .unwrap();
    commands
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let (code, out, err) = medic(&["--version"]);
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    let rest = line
        .strip_prefix(&format!("medic {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{line}"));
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap_or_else(|e| panic!("{line}: {e}"));
    // Built from this checkout, the commit is its HEAD (a packager may set
    // MEDIC_GIT_COMMIT; without git it is "unknown").
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match (head, std::env::var("MEDIC_GIT_COMMIT").ok()) {
        (_, Some(set)) if !set.trim().is_empty() => assert_eq!(commit, set.trim(), "{line}"),
        (Some(head), _) => assert_eq!(commit, head, "{line}"),
        (None, _) => assert_eq!(commit, "unknown", "{line}"),
    }
    // The first word after the name is the version, as the upgrade fixture script reads it.
    assert_eq!(
        line.split_whitespace().nth(1),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_cover_every_command_in_each_shell() {
    let subcommands = subcommands();
    for want in ["serve", "backup", "migrate", "completions", "man", "audit"] {
        assert!(
            subcommands.iter().any(|s| s == want),
            "{want}: {subcommands:?}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = medic(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for sub in &subcommands {
            assert!(out.contains(sub.as_str()), "{shell}: {sub} missing");
        }
        // The flags of the new commands complete too (fish spells them `-l force`).
        assert!(out.contains("force") && out.contains("status"), "{shell}");
        let file = tmp.path().join(format!("medic.{shell}"));
        std::fs::write(&file, &out).unwrap();
        let parsed = Command::new(shell).arg("-n").arg(&file).output();
        match parsed {
            Ok(o) => assert!(
                o.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            // Only bash is on every Debian host; zsh and fish are checked where installed.
            Err(_) => assert_ne!(shell, "bash", "bash is installed"),
        }
    }
    let (code, _, err) = medic(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error");
    assert!(err.contains("bash"), "names the shells: {err}");
}

#[test]
fn man_pages_document_every_command() {
    let (code, page, err) = medic(&["man"]);
    assert_eq!(code, 0, "{err}");
    let text = page.replace("\\-", "-");
    assert!(text.contains("\n.TH medic 1 "), "{text}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "SUBCOMMANDS",
        "SIGNALS",
        "FILES",
    ] {
        assert!(text.contains(&format!(".SH {section}")), "{section}");
    }
    for sub in subcommands() {
        assert!(text.contains(&format!("medic-{sub}(1)")), "{sub}");
    }
    assert!(text.contains(env!("CARGO_PKG_VERSION")));

    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = medic(&["man", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("medic.1")).unwrap(),
        page
    );
    for sub in subcommands()
        .into_iter()
        .chain(["audit-verify".to_string()])
    {
        let path = tmp.path().join(format!("medic-{sub}.1"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .replace("\\-", "-");
        assert!(text.contains(&format!(".TH medic-{sub} 1")), "{text}");
    }
    let backup = std::fs::read_to_string(tmp.path().join("medic-backup.1")).unwrap();
    assert!(
        backup.contains("pg_dump"),
        "the page says what PostgreSQL needs"
    );
    let (code, _, err) = medic(&["man", "--dir", "/nonexistent/man1"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/man1"), "{err}");
}

/// The unit's settings, as `Key=value` lines of its sections (comments and blank lines
/// skipped; a key set twice keeps both values).
fn unit() -> Vec<(String, String)> {
    std::fs::read_to_string(root().join("packaging/medic.service"))
        .expect("packaging/medic.service")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('[') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not Key=value: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn the_systemd_unit_runs_medic_as_its_own_user_in_a_sandbox() {
    let unit = unit();
    let get = |key: &str| -> Vec<&str> {
        unit.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (key, want) in [
        ("User", "medic"),
        ("Group", "medic"),
        ("StateDirectory", "medic"),
        ("WorkingDirectory", "/var/lib/medic"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("KillMode", "mixed"),
    ] {
        assert_eq!(get(key), [want], "{key}");
    }
    // ExecStart runs `medic serve` on the packaged config, with arguments medic accepts.
    let exec = get("ExecStart");
    let args: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(
        args,
        [
            "/usr/local/bin/medic",
            "serve",
            "--config",
            "/etc/medic/medic.toml"
        ]
    );
    let (code, _, err) = medic(&["serve", "--config", "/etc/medic/medic.toml", "--help"]);
    assert_eq!(code, 0, "{err}");
    // Nothing writable outside the state directory: no ReadWritePaths by default.
    assert!(get("ReadWritePaths").is_empty());
    // medic's own stop is shorter than systemd's patience.
    let stop: u64 = get("TimeoutStopSec")[0]
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        Duration::from_secs(stop) > medic::app::SHUTDOWN_GRACE,
        "TimeoutStopSec {stop}s"
    );
}

/// `systemctl reload medic` is `kill -HUP`: medic reloads on it, and keeps the config in
/// force when the new one does not check out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = default_config(dir);
    let m = Medic::start_in(dir, &config);
    let pid = m.child.id().to_string();
    let reloads = |m: &Medic, message: &str| -> usize {
        m.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message && v["trigger"] == "SIGHUP")
            .count()
    };
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    hup();
    eventually(Duration::from_secs(30), "a reload on SIGHUP", || async {
        (reloads(&m, "configuration and runbooks reloaded") == 1).then_some(())
    })
    .await;

    // A config that does not check out: refused, and medic keeps serving.
    std::fs::write(
        &m.config,
        config.replace("[server]", "[server]\nno_such_key = 1"),
    )
    .unwrap();
    hup();
    eventually(Duration::from_secs(30), "the refusal logged", || async {
        (reloads(
            &m,
            "reload refused; the previous configuration stays in force",
        ) >= 1)
            .then_some(())
    })
    .await;
    let r = client().get(m.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        post_webhook(&m, &body(vec![alert("ServiceDown", "web1", "firing")]))
            .await
            .0,
        200
    );
}

#[test]
fn the_license_file_is_the_license_cargo_names() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&manifest).unwrap();
    assert_eq!(manifest["package"]["license"].as_str(), Some("Apache-2.0"));
    let license = std::fs::read_to_string(root().join("LICENSE")).expect("LICENSE");
    assert!(
        license.trim_start().starts_with("Apache License"),
        "{}",
        &license[..60]
    );
    assert!(license.contains("Version 2.0, January 2004"));
    assert!(license.contains("END OF TERMS AND CONDITIONS"));
}
