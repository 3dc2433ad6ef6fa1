//! The schema's version, on the store the suite runs on: `medic migrate --status` names
//! what the next start would apply, and applies nothing; a database that a newer medic
//! migrated refuses this one (`serve`, and every command that opens the store) with both
//! versions and what to do.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::upgrade::{self, Store};
use common::*;

/// The versions recorded in `schema_migrations`, oldest first.
fn versions(db: &TestDb) -> Vec<i64> {
    db.rows("SELECT version FROM schema_migrations ORDER BY version")
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

/// The newest schema version this medic knows, as `migrate --status` states it.
fn known(status: &str) -> i64 {
    let (_, rest) = status
        .split_once("schema versions up to ")
        .unwrap_or_else(|| panic!("no known version in: {status}"));
    rest.split(')').next().unwrap().parse().unwrap()
}

/// The migrations `migrate --status` lists as pending: (version, summary).
fn pending(status: &str) -> Vec<(i64, String)> {
    status
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("  ")?;
            let (v, summary) = l.split_once("  ")?;
            Some((v.parse().ok()?, summary.to_string()))
        })
        .collect()
}

#[test]
fn status_on_the_oldest_release_lists_what_a_start_applies_and_applies_nothing() {
    let store = Store::under_test();
    let fixture = upgrade::fixtures()
        .into_iter()
        .next()
        .expect("a release fixture");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let url = upgrade::install(dir, store, Some(&fixture));
    std::fs::write(dir.join("medic.toml"), upgrade::config()).unwrap();
    let db = TestDb::at(&url);
    let before = db.rows("SELECT version, applied_at FROM schema_migrations ORDER BY version");
    let old = *versions(&db).last().unwrap();

    let (code, out, err) = upgrade::cli(dir, &url, &["migrate", "--status"]);
    assert_eq!(code, 0, "{out}{err}");
    let known = known(&out);
    assert!(known >= old, "{out}");
    assert!(
        out.contains(&format!("schema version: {old}, applied ")),
        "{out}"
    );
    let listed = pending(&out);
    let want: Vec<i64> = (old + 1..=known).collect();
    assert_eq!(
        listed.iter().map(|p| p.0).collect::<Vec<_>>(),
        want,
        "v{}: {out}",
        fixture.version
    );
    assert!(listed.iter().all(|(_, s)| s.len() > 10), "named: {out}");
    if want.is_empty() {
        assert!(out.contains("up to date"), "{out}");
    }
    assert_eq!(
        db.rows("SELECT version, applied_at FROM schema_migrations ORDER BY version"),
        before,
        "--status applied nothing"
    );

    // A start applies exactly what was listed.
    let env = upgrade::env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut m = Medic::start_in_env(dir, &upgrade::config(), &env);
    assert_eq!(m.stop(), Some(0), "log:\n{}", m.log_text());
    let after = versions(&db);
    assert_eq!(after, (1..=known).collect::<Vec<_>>());
    let (code, out, err) = upgrade::cli(dir, &url, &["migrate", "--status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("schema version: {known}, applied ")),
        "{out}"
    );
    assert!(out.contains("up to date: nothing to apply"), "{out}");
    assert!(pending(&out).is_empty(), "{out}");
}

#[test]
fn status_of_a_store_never_started_lists_every_migration_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("runbooks")).unwrap();
    let config = dir.join("medic.toml");
    std::fs::write(&config, default_config(dir)).unwrap();
    let (code, out, err) = medic_cli(dir, &["migrate", "--status"], &config);
    assert_eq!(code, 0, "{out}{err}");
    let known = known(&out);
    assert_eq!(
        pending(&out).iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=known).collect::<Vec<_>>(),
        "{out}"
    );
    let db = TestDb::of(dir);
    if db.is_postgres() {
        assert!(out.contains("schema version: 0"), "{out}");
        let tables = db
            .count("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'");
        assert_eq!(tables, 0, "nothing created");
    } else {
        assert!(out.contains("schema version: none"), "{out}");
        assert!(!dir.join("data/medic.db").exists(), "nothing created");
    }
}

#[test]
fn a_database_a_newer_medic_migrated_refuses_this_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut m = Medic::start_in(dir, &default_config(dir));
    assert_eq!(m.stop(), Some(0));
    let config = m.config.clone();
    let db = TestDb::of(dir);
    let known = *versions(&db).last().unwrap();
    // What a later release leaves: its migration recorded (and whatever it changed).
    let newer = known + 1;
    db.execute(&format!(
        "INSERT INTO schema_migrations (version, applied_at) \
         VALUES ({newer}, '2030-01-01T00:00:00.000000Z')"
    ));
    let audit = db.count("SELECT COUNT(*) FROM audit");
    let schema = upgrade::schema(&db);

    let says_what_to_do = |what: &str, text: &str| {
        for want in [
            format!("schema is version {newer}"),
            format!("this medic ({})", env!("CARGO_PKG_VERSION")),
            format!("up to {known}"),
            "restore the backup".to_string(),
            "docs/upgrading.md".to_string(),
        ] {
            assert!(text.contains(&want), "{what}: {want:?} in:\n{text}");
        }
    };

    // serve stops at once, before it listens.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            panic!("medic serve started on a newer database");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = serve.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(!log.contains("listening"), "{log}");
    says_what_to_do("serve", &log);

    let (code, out, err) = medic_cli(dir, &["audit", "verify"], &config);
    assert_eq!(code, 1, "audit verify: {out}{err}");
    says_what_to_do("audit verify", &err);

    let (code, out, err) = medic_cli(dir, &["migrate", "--status"], &config);
    assert_eq!(code, 1, "migrate --status: {out}{err}");
    assert!(out.contains(&format!("schema version: {newer}")), "{out}");
    assert!(
        out.contains(&format!("schema {newer}, it knows up to {known}")),
        "{out}"
    );
    assert!(out.contains("restore the backup"), "{out}");

    // Nothing was touched.
    assert_eq!(*versions(&db).last().unwrap(), newer);
    assert_eq!(db.count("SELECT COUNT(*) FROM audit"), audit);
    assert_eq!(upgrade::schema(&db), schema);
}
