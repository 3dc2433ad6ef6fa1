//! The store's database as a test sees it, whichever backend the suite runs on
//! (`MEDIC_TEST_STORE=postgres` runs it on PostgreSQL).

use std::path::Path;

/// The store URL of a test directory: SQLite inside it, or its own PostgreSQL database.
pub fn store_url(dir: &Path) -> String {
    medic::store::postgres::test_url(&dir.join("data/medic.db"))
}

/// The `[store]` keys of a test directory's config: its URL and, on PostgreSQL, a short
/// lease, so that a restarted medic takes over its dead self's runs in seconds (with SQLite
/// it does at once: one process owns the file).
pub fn store_config(dir: &Path) -> String {
    let url = store_url(dir);
    if url.starts_with("postgres") {
        format!("url = \"{url}\"\nlease = \"3s\"")
    } else {
        format!("url = \"{url}\"")
    }
}

/// Direct access to a test's database, to check (or tamper with) what medic stored.
pub struct TestDb {
    url: String,
}

impl TestDb {
    pub fn of(dir: &Path) -> TestDb {
        TestDb::at(&store_url(dir))
    }

    /// The database at store URL `url`.
    pub fn at(url: &str) -> TestDb {
        TestDb {
            url: url.to_string(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// Every row of `sql`, each value as text (`None` for NULL).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        if let Some(path) = url.strip_prefix("sqlite://") {
            let conn = rusqlite::Connection::open(path).unwrap();
            let mut stmt = conn.prepare(&sql).unwrap();
            let n = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            let mut out = Vec::new();
            while let Some(r) = rows.next().unwrap() {
                out.push(
                    (0..n)
                        .map(|i| match r.get_ref(i).unwrap() {
                            rusqlite::types::ValueRef::Null => None,
                            rusqlite::types::ValueRef::Integer(i) => Some(i.to_string()),
                            rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                            rusqlite::types::ValueRef::Text(t)
                            | rusqlite::types::ValueRef::Blob(t) => {
                                Some(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                        .collect(),
                );
            }
            return out;
        }
        // The blocking client may not run on an async thread.
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.simple_query(&sql)
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect()
        })
        .join()
        .unwrap()
    }

    /// The single number `sql` selects.
    pub fn count(&self, sql: &str) -> i64 {
        self.rows(sql)[0][0].as_deref().unwrap().parse().unwrap()
    }

    /// Runs statements, failing the test on error.
    pub fn execute(&self, sql: &str) {
        self.try_execute(sql).unwrap()
    }

    /// Runs statements; the error as text.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        if let Some(path) = url.strip_prefix("sqlite://") {
            let conn = rusqlite::Connection::open(path).unwrap();
            return conn.execute_batch(&sql).map_err(|e| e.to_string());
        }
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(&sql).map_err(|e| format!("{e:?}"))
        })
        .join()
        .unwrap()
    }
}
