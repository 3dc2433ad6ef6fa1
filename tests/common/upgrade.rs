//! The databases of earlier releases (`tests/fixtures/upgrade/v<version>/`, made by
//! `scripts/make-upgrade-fixture.sh`), laid out for the code under test to start on,
//! and the schema of a store, to compare an upgraded database with a new one.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{TestDb, API_TOKEN, WEBHOOK_TOKEN};

/// The PostgreSQL server of the tests, as `medic::store::postgres` uses it.
const TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Where the fixtures and their config live.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

/// One release's fixture.
pub struct Fixture {
    pub version: String,
    pub dir: PathBuf,
    /// `expected.json`: `{"release", "incidents": {"sqlite": [...], "postgres": [...]}}`.
    pub expected: Value,
}

impl Fixture {
    /// The incidents the release's API listed before it stopped, newest first.
    pub fn incidents(&self, store: Store) -> Vec<Value> {
        self.expected["incidents"][store.name()]
            .as_array()
            .unwrap_or_else(|| panic!("v{}: no {} incidents", self.version, store.name()))
            .clone()
    }

    /// The expected incident of `alertname` (the first listed, the newest).
    pub fn incident(&self, store: Store, alertname: &str) -> Value {
        self.incidents(store)
            .into_iter()
            .find(|i| i["alertname"] == alertname)
            .unwrap_or_else(|| panic!("v{}: no {alertname} incident", self.version))
    }
}

/// Every release's fixture, oldest first.
pub fn fixtures() -> Vec<Fixture> {
    let mut found: Vec<Fixture> = std::fs::read_dir(root())
        .expect("tests/fixtures/upgrade")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix('v')?.to_string();
            let dir = e.path();
            let text = std::fs::read_to_string(dir.join("expected.json"))
                .unwrap_or_else(|e| panic!("{name}/expected.json: {e}"));
            let expected: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}/expected.json: {e}"));
            assert_eq!(
                expected["release"], version,
                "{name}/expected.json: release"
            );
            Some(Fixture {
                version,
                dir,
                expected,
            })
        })
        .collect();
    let numbers = |v: &str| -> Vec<u64> { v.split('.').map(|n| n.parse().unwrap_or(0)).collect() };
    found.sort_by_key(|f| numbers(&f.version));
    found
}

/// The store the suite runs on (`MEDIC_TEST_STORE=postgres`, else SQLite).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    pub fn under_test() -> Store {
        if std::env::var("MEDIC_TEST_STORE").as_deref() == Ok("postgres") {
            Store::Postgres
        } else {
            Store::Sqlite
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }
}

/// The fixtures' config (`tests/fixtures/upgrade/medic.toml`): its store URL and tokens
/// come from the environment, [`env`].
pub fn config() -> String {
    std::fs::read_to_string(root().join("medic.toml")).expect("tests/fixtures/upgrade/medic.toml")
}

/// The environment the fixtures' config needs: the store at `url` and the tokens of the
/// test helpers.
pub fn env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MEDIC_STORE_URL", url.to_string()),
        ("MEDIC_WEBHOOK_TOKEN", WEBHOOK_TOKEN.to_string()),
        ("MEDIC_API_TOKEN", API_TOKEN.to_string()),
    ]
}

/// Lays out `dir` for medic to start in with [`config`]: its runbooks and, with
/// `fixture`, that release's database (else an empty one). Returns the store URL.
pub fn install(dir: &Path, store: Store, fixture: Option<&Fixture>) -> String {
    let runbooks = dir.join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for entry in std::fs::read_dir(root().join("runbooks")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), runbooks.join(entry.file_name())).unwrap();
    }
    match store {
        Store::Sqlite => {
            let db = dir.join("data/medic.db");
            if let Some(f) = fixture {
                std::fs::copy(f.dir.join("medic.sqlite"), &db).unwrap();
            }
            format!("sqlite://{}", db.display())
        }
        Store::Postgres => {
            let url = scratch_database();
            if let Some(f) = fixture {
                psql(
                    &url,
                    &[
                        "-f",
                        &f.dir.join("medic.postgres.sql").display().to_string(),
                    ],
                );
            }
            url
        }
    }
}

/// A new, empty database on the test server (named like the suite's, so that
/// `scripts/test.sh` drops it on its next run).
fn scratch_database() -> String {
    let server = std::env::var("MEDIC_TEST_POSTGRES").unwrap_or_else(|_| TEST_SERVER.into());
    let server = server.trim_end_matches('/');
    let name = format!(
        "medic_test_upgrade_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    psql(
        &format!("{server}/postgres"),
        &["-c", &format!("CREATE DATABASE {name}")],
    );
    format!("{server}/{name}")
}

/// Runs psql on the database at `url`, stopping at the first error.
fn psql(url: &str, args: &[&str]) {
    let out = Command::new("psql")
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(args)
        .output()
        .expect("psql (the PostgreSQL client) runs");
    assert!(
        out.status.success(),
        "psql {args:?} on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `medic <args> --config <dir>/medic.toml` in `dir` on the store at `url`; returns
/// (exit code, stdout, stderr).
pub fn cli(dir: &Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .arg("--config")
        .arg(dir.join("medic.toml"))
        .current_dir(dir)
        .envs(env(url))
        .output()
        .expect("run medic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The schema of a store as text, one line per column, index and trigger: two databases
/// with the same lines have the same tables, columns, types, defaults and indexes.
pub fn schema(db: &TestDb) -> Vec<String> {
    let queries: &[&str] = if db.is_postgres() {
        &[
            "SELECT 'column', table_name, column_name, data_type, is_nullable, \
                    COALESCE(column_default, '') \
               FROM information_schema.columns WHERE table_schema = 'public'",
            "SELECT 'index', tablename, indexname, indexdef FROM pg_indexes \
              WHERE schemaname = 'public'",
            "SELECT 'trigger', c.relname, t.tgname, pg_get_triggerdef(t.oid) \
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal",
        ]
    } else {
        &[
            "SELECT 'column', m.name, p.name, p.type, p.\"notnull\", \
                    COALESCE(p.dflt_value, ''), p.pk \
               FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'",
            "SELECT m.type, m.tbl_name, m.name, COALESCE(m.sql, '') FROM sqlite_master m \
              WHERE m.type IN ('index', 'trigger')",
        ]
    };
    let mut lines: Vec<String> = queries
        .iter()
        .flat_map(|q| db.rows(q))
        .map(|row| {
            row.into_iter()
                .map(Option::unwrap_or_default)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    lines.sort();
    lines
}
