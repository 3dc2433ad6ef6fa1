//! The PostgreSQL backend: one database shared by several replicas of medic.
//!
//! Each replica runs the same engine as SQLite (one writer committing in groups, see
//! [`super::engine`]) over the `postgres` crate; reads come from an `r2d2` pool. Every
//! connection carries a statement timeout, so a stuck database turns into an error (and a
//! 503 to Alertmanager) instead of a hung request. A connection that breaks is replaced:
//! the writer reconnects before its next batch, the pool drops broken connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::db::{AuditRow, Db, Dialect, Row, Val};
use super::engine::{self, Engine, Parts, Readers, WRITE_LOCK};
use super::{Options, StoreError};
use crate::config::redact_url_password;
use crate::metrics::StoreMetrics;

/// Schema migrations, embedded in the binary, applied in order at open.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_runs.sql")),
    (3, include_str!("migrations/postgres/0003_guards.sql")),
    (4, include_str!("migrations/postgres/0004_escalation.sql")),
    (5, include_str!("migrations/postgres/0005_replicas.sql")),
    (
        6,
        include_str!("migrations/postgres/0006_group_summaries.sql"),
    ),
];

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn open(
    url: &str,
    options: &Options,
    owner: String,
    metrics: StoreMetrics,
) -> Result<Engine, StoreError> {
    // The `postgres` crate blocks on a runtime of its own, which it cannot do on a thread
    // that already drives async tasks: open from a plain thread.
    std::thread::scope(|s| {
        s.spawn(|| open_blocking(url, options, owner, metrics))
            .join()
            .unwrap_or_else(|_| Err(StoreError::Commit("opening PostgreSQL panicked".into())))
    })
}

fn open_blocking(
    url: &str,
    options: &Options,
    owner: String,
    metrics: StoreMetrics,
) -> Result<Engine, StoreError> {
    let manager = Manager::new(url, options)?;
    let writer = manager.open().map_err(|e| StoreError::Open {
        path: redact_url_password(url).into(),
        source: Box::new(e),
    })?;
    {
        // Replicas starting together migrate one at a time.
        writer.execute_batch(&format!("SELECT pg_advisory_lock({WRITE_LOCK})"))?;
        let migrated = engine::migrate(&writer, MIGRATIONS);
        writer.execute_batch(&format!("SELECT pg_advisory_unlock({WRITE_LOCK})"))?;
        migrated?;
    }
    let pool = r2d2::Pool::builder()
        .max_size(options.pool_size.max(1))
        .min_idle(Some(1))
        .connection_timeout(CONNECT_TIMEOUT)
        .test_on_check_out(false)
        .build_unchecked(manager.clone());
    let reconnect = manager.clone();
    let parts = Parts {
        writer: Box::new(writer),
        reconnect: Some(Box::new(move || {
            reconnect
                .open()
                .map(|c| Box::new(c) as Box<dyn Db>)
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })),
        readers: Readers::Pool(pool),
        on_close: None,
        owner,
        lease: options.lease,
    };
    Engine::start(parts, metrics)
}

/// Opens connections, for the pool and the writer.
#[derive(Clone)]
pub(crate) struct Manager {
    config: postgres::Config,
}

impl Manager {
    /// The settings of every connection: the writer's, its reconnections and the pool's.
    fn new(url: &str, options: &Options) -> Result<Manager, StoreError> {
        let mut config = postgres::Config::from_str(url).map_err(|e| StoreError::Url {
            url: redact_url_password(url),
            message: e.to_string(),
        })?;
        let timeout_ms = options.statement_timeout.as_millis().max(1);
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("medic")
            // A replica that hangs inside a transaction must not hold the write lock
            // forever.
            .options(&format!(
                "-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={}",
                timeout_ms * 4
            ));
        Ok(Manager { config })
    }

    fn open(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: RefCell::new(Some(self.config.connect(NoTls)?)),
            statements: RefCell::new(HashMap::new()),
        })
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        self.open()
    }

    fn is_valid(&self, c: &mut PgConn) -> Result<(), postgres::Error> {
        c.client().simple_query("").map(drop)
    }

    fn has_broken(&self, c: &mut PgConn) -> bool {
        c.client().is_closed()
    }
}

/// One PostgreSQL connection with its cache of prepared statements.
pub(crate) struct PgConn {
    /// Always `Some` but while being dropped.
    client: RefCell<Option<Client>>,
    /// Prepared statements by their text as the store wrote it.
    statements: RefCell<HashMap<String, Statement>>,
}

impl PgConn {
    fn client(&self) -> std::cell::RefMut<'_, Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut()
                .expect("a connection is used only before it is dropped")
        })
    }

    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.client().prepare(&placeholders(sql))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }
}

/// `?N` (the store's placeholders) as PostgreSQL's `$N`. The store never writes a `?`
/// inside a string literal.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client().batch_execute(sql)?)
    }

    fn run(&self, sql: &str, params: &[Val]) -> Result<usize, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        Ok(self.client().execute(&statement, &params)? as usize)
    }

    fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.client().query(&statement, &params)?;
        Ok(rows.iter().map(to_row).collect())
    }

    /// All of a batch's entries in one statement: one round trip, not one each.
    fn insert_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let statement = self.statement(
            "INSERT INTO audit (seq, at, event, incident_id, detail, prev_hash, hash)
             SELECT * FROM UNNEST(?1::BIGINT[], ?2::TEXT[], ?3::TEXT[], ?4::TEXT[], ?5::TEXT[], ?6::TEXT[], ?7::TEXT[])",
        )?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let ats: Vec<&str> = rows.iter().map(|r| r.at.as_str()).collect();
        let events: Vec<&str> = rows.iter().map(|r| r.event).collect();
        let incidents: Vec<Option<&str>> = rows.iter().map(|r| r.incident_id.as_deref()).collect();
        let details: Vec<&str> = rows.iter().map(|r| r.detail.as_str()).collect();
        let prevs: Vec<&str> = rows.iter().map(|r| r.prev_hash.as_str()).collect();
        let hashes: Vec<&str> = rows.iter().map(|r| r.hash.as_str()).collect();
        self.client().execute(
            &statement,
            &[&seqs, &ats, &events, &incidents, &details, &prevs, &hashes],
        )?;
        Ok(())
    }

    /// One index probe per fingerprint (`incidents_period`, newest first), whatever the
    /// planner knows of the table. The same lookup as `fingerprint = ANY(..)` would be
    /// planned from statistics: before `incidents` is first analysed PostgreSQL guesses
    /// that each fingerprint matches 0.5% of the rows, so a batch of a few hundred alerts
    /// looks like the whole table and is read as a sequential scan, every batch, slower as
    /// the table grows; a plan cached while the table was empty did the same.
    fn latest_incidents(&self, fingerprints: &[&str]) -> Result<Option<Vec<Row>>, StoreError> {
        let statement = self.statement(
            "SELECT f.fingerprint, i.id, i.state, i.starts_at, i.last_seen_at
             FROM UNNEST(?1::TEXT[]) AS f (fingerprint)
             CROSS JOIN LATERAL (SELECT id, state, starts_at, last_seen_at FROM incidents
                 WHERE fingerprint = f.fingerprint ORDER BY starts_at DESC LIMIT 1) AS i",
        )?;
        let rows = self.client().query(&statement, &[&fingerprints])?;
        Ok(Some(rows.iter().map(to_row).collect()))
    }

    fn is_broken(&self) -> bool {
        self.client().is_closed()
    }
}

/// The `postgres` client blocks on a runtime of its own as it closes, which it cannot do
/// on a thread that drives async tasks: such a thread hands the client to another.
impl Drop for PgConn {
    fn drop(&mut self) {
        let Some(client) = self.client.get_mut().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("medic-pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

fn to_row(r: &postgres::Row) -> Row {
    Row((0..r.len()).map(|i| r.get::<_, Val>(i)).collect())
}

type BoxError = Box<dyn Error + Sync + Send>;

/// Binds a value to whatever type PostgreSQL inferred for the parameter: the store's
/// schema uses `TEXT` and `BIGINT`, and its SQL is shared with SQLite, which has no types.
impl ToSql for Val {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => i.to_string().to_sql(ty, out),
            },
            Val::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::FLOAT8 => f.to_sql(ty, out),
                _ => f.to_string().to_sql(ty, out),
            },
            Val::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Reads any column the store's schema has.
impl<'a> FromSql<'a> for Val {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Val, BoxError> {
        Ok(match *ty {
            Type::INT8 => Val::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Val::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Val::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Val::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Val::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Val::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::VOID => Val::Null,
            _ => Val::Text(String::from_utf8_lossy(raw).into_owned()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Val, BoxError> {
        Ok(Val::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The server tests use: `MEDIC_TEST_POSTGRES`, else the local one.
const TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// For tests: the store URL to use. SQLite at `sqlite_path`, unless `MEDIC_TEST_STORE` is
/// `postgres`: then a new, empty database on the test server (`MEDIC_TEST_POSTGRES`), the
/// same one each time for the same path (its URL is kept beside it), so a test can restart.
#[doc(hidden)]
pub fn test_url(sqlite_path: &std::path::Path) -> String {
    if std::env::var("MEDIC_TEST_STORE").as_deref() != Ok("postgres") {
        return format!("sqlite://{}", sqlite_path.display());
    }
    let kept = sqlite_path.with_extension("pgurl");
    if let Ok(url) = std::fs::read_to_string(&kept) {
        return url;
    }
    let url = scratch_database().expect("cannot create a test database on PostgreSQL");
    if let Some(dir) = kept.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&kept, &url).expect("cannot keep the test database's URL");
    url
}

/// For tests: creates a new, empty database on the test server and returns its URL.
#[doc(hidden)]
pub fn scratch_database() -> Result<String, StoreError> {
    std::thread::spawn(create_scratch_database)
        .join()
        .unwrap_or_else(|_| Err(StoreError::Commit("creating a database panicked".into())))
}

fn create_scratch_database() -> Result<String, StoreError> {
    let server = std::env::var("MEDIC_TEST_POSTGRES").unwrap_or_else(|_| TEST_SERVER.into());
    let server = server.trim_end_matches('/');
    let mut admin = Client::connect(&format!("{server}/postgres"), NoTls)?;
    let name = format!(
        "medic_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
    Ok(format!("{server}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new deployment's first storm: the writer's connection runs the batch lookup many
    /// times while `incidents` is empty and never analysed, then the table grows by
    /// thousands of incidents before autovacuum gets to it. The lookup the connection has
    /// prepared must still find its rows through an index, not read the whole table.
    #[test]
    fn the_batch_lookup_reads_an_index_after_the_table_grows() {
        if std::env::var("MEDIC_TEST_STORE").as_deref() != Ok("postgres") {
            return;
        }
        let url = scratch_database().unwrap();
        let conn = Manager::new(&url, &Options::default())
            .unwrap()
            .open()
            .unwrap();
        engine::migrate(&conn, MIGRATIONS).unwrap();
        let wanted: Vec<String> = (0..50).map(|i| format!("fp{:05}", i * 97)).collect();
        let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        // More than five runs: enough for PostgreSQL to consider a cached generic plan.
        for _ in 0..10 {
            assert!(conn.latest_incidents(&wanted).unwrap().unwrap().is_empty());
        }
        conn.execute_batch(
            "INSERT INTO incidents (id, fingerprint, alertname, labels, annotations, generator_url,
                starts_at, state, is_open, deliveries, created_at, updated_at, last_seen_at)
             SELECT 'i' || g, 'fp' || lpad(g::TEXT, 5, '0'), 'DiskFull', '{}', '{}', '',
                '2026-11-23T10:00:00.000000000Z', 'queued', 1, 1, '2026-11-23T10:00:01Z',
                '2026-11-23T10:00:01Z', '2026-11-23T10:00:01Z'
             FROM generate_series(0, 4999) AS g;
             INSERT INTO incidents (id, fingerprint, alertname, labels, annotations, generator_url,
                starts_at, state, is_open, deliveries, created_at, updated_at, last_seen_at,
                resolved_at)
             SELECT 'r' || g, 'fp' || lpad(g::TEXT, 5, '0'), 'DiskFull', '{}', '{}', '',
                '2026-11-23T09:00:00.000000000Z', 'resolved', 0, 1, '2026-11-23T09:00:01Z',
                '2026-11-23T09:30:00Z', '2026-11-23T09:00:01Z', '2026-11-23T09:30:00Z'
             FROM generate_series(0, 4999) AS g",
        )
        .unwrap();
        // Each fingerprint's newest incident, the one still open.
        let found = conn.latest_incidents(&wanted).unwrap().unwrap();
        let mut fingerprints: Vec<String> = found.iter().map(|r| r.get(0).unwrap()).collect();
        fingerprints.sort();
        assert_eq!(fingerprints, wanted);
        for r in &found {
            assert!(r.get::<_, String>(1).unwrap().starts_with('i'), "{r:?}");
        }

        // The plan of the statement the connection prepared, as it would run it next.
        let prepared = conn
            .rows(
                "SELECT name FROM pg_prepared_statements
                 WHERE statement LIKE '%FROM incidents%' AND statement NOT LIKE '%pg_prepared%'",
                &[],
            )
            .unwrap();
        assert_eq!(prepared.len(), 1, "{prepared:?}");
        let name: String = prepared[0].get(0).unwrap();
        let explain: String = conn
            .rows(
                &format!(
                    "EXPLAIN (FORMAT JSON) EXECUTE {name}('{{{}}}')",
                    wanted.join(",")
                ),
                &[],
            )
            .unwrap()[0]
            .get(0)
            .unwrap();
        let plan: serde_json::Value = serde_json::from_str(&explain).unwrap();
        let mut nodes = Vec::new();
        let mut todo = vec![&plan[0]["Plan"]];
        while let Some(node) = todo.pop() {
            nodes.push((
                node["Node Type"].as_str().unwrap_or_default(),
                node["Relation Name"].as_str(),
                node["Index Name"].as_str(),
            ));
            todo.extend(node["Plans"].as_array().into_iter().flatten());
        }
        assert!(
            !nodes.contains(&("Seq Scan", Some("incidents"), None)),
            "the lookup reads the whole table: {nodes:?}"
        );
        assert!(
            nodes
                .iter()
                .any(|(_, table, index)| *table == Some("incidents") && index.is_some()),
            "the lookup reads no index of incidents: {nodes:?}"
        );
    }

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            placeholders("UPDATE t SET a = ?2 WHERE id = ?1 AND b = 'x'"),
            "UPDATE t SET a = $2 WHERE id = $1 AND b = 'x'"
        );
    }
}
