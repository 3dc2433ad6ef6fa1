//! The PostgreSQL backend: one database shared by several replicas of medic.
//!
//! Each replica runs the same engine as SQLite (one writer committing in groups, see
//! [`super::engine`]) over `tokio-postgres`; reads come from a `deadpool` pool. The
//! engine's calls stay synchronous (the writer is a thread of its own, reads run on tokio's
//! blocking threads) and each waits on the driver. A connection is a task: the pool's run
//! on a small runtime of this module's own ([`driver`]), so none depends on the runtime,
//! or the test, that happened to open it; the writer's runs on the writer's thread, in the
//! calls that wait for it. Dropping a connection never blocks.
//!
//! Every connection carries a statement timeout, so a stuck database turns into an error
//! (and a 503 to Alertmanager) instead of a hung request. A connection that breaks is
//! replaced: the writer reconnects before its next batch, the pool drops broken ones.
//! TLS follows the URL's `sslmode`, as libpq does (see [`tls`]).

mod tls;
#[cfg(test)]
mod tls_tests;

use std::error::Error;
use std::future::Future;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{ClientWrapper, ConfigConnectImpl, Connect};
use tokio::runtime::Runtime;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db::{AuditRow, Db, Dialect, Row, Val};
use super::engine::{self, Engine, Parts, Readers, WRITE_LOCK};
use super::{Options, StoreError};
use crate::metrics::StoreMetrics;
use tls::Tls;

/// Schema migrations, embedded in the binary, applied in order at open.
pub(super) const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_runs.sql")),
    (3, include_str!("migrations/postgres/0003_guards.sql")),
    (4, include_str!("migrations/postgres/0004_escalation.sql")),
    (5, include_str!("migrations/postgres/0005_replicas.sql")),
    (
        6,
        include_str!("migrations/postgres/0006_group_summaries.sql"),
    ),
    (7, include_str!("migrations/postgres/0007_used_links.sql")),
    (8, include_str!("migrations/postgres/0008_approvals.sql")),
];

/// How long a connection attempt may take, and how long a read waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The runtime that drives the read pools' connections of the process: one task per
/// connection, reading and writing its socket. Started at the first open, never stopped.
fn driver() -> Result<&'static Runtime, StoreError> {
    static DRIVER: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = DRIVER.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        // Two: one big read being decoded does not hold up the others.
        .worker_threads(2)
        .thread_name("medic-pg")
        .enable_all()
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot start the PostgreSQL driver: {e}")))?;
    Ok(DRIVER.get_or_init(|| rt))
}

pub(super) fn open(
    url: &str,
    options: &Options,
    owner: String,
    metrics: StoreMetrics,
) -> Result<Engine, StoreError> {
    // Opening waits on the driver (connecting, migrating), which a thread that drives
    // async tasks must not do: open from a plain thread.
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
        path: redact(url).into(),
        source: describe(&*e).into(),
    })?;
    {
        // Replicas starting together migrate one at a time.
        writer.execute_batch(&format!("SELECT pg_advisory_lock({WRITE_LOCK})"))?;
        let migrated = engine::migrate(&writer, MIGRATIONS);
        writer.execute_batch(&format!("SELECT pg_advisory_unlock({WRITE_LOCK})"))?;
        migrated?;
    }
    let pool = manager.pool(options.pool_size.max(1) as usize)?;
    let reconnect = manager.clone();
    let parts = Parts {
        writer: Box::new(writer),
        reconnect: Some(Box::new(move || {
            reconnect
                .open()
                .map(|c| Box::new(c) as Box<dyn Db>)
                .map_err(|e| StoreError::Unavailable(describe(&*e)))
        })),
        readers: Readers::Pool(pool),
        on_close: None,
        owner,
        lease: options.lease,
    };
    Engine::start(parts, metrics)
}

/// One connection, without migrating, for a tool that only reads (`medic migrate
/// --status`). From a plain thread, as [`open`].
pub(super) fn connect_one(url: &str, options: &Options) -> Result<PgConn, StoreError> {
    Manager::new(url, options)?
        .open()
        .map_err(|e| StoreError::Open {
            path: redact(url).into(),
            source: describe(&*e).into(),
        })
}

/// An error with its causes: the driver's own message is only the kind of error ("error
/// performing TLS handshake"), the why is in its sources.
fn describe(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !out.ends_with(&more) {
            out = format!("{out}: {more}");
        }
        cause = c.source();
    }
    out
}

/// `url` fit for a log line or an error: no password, in the user part or as a parameter.
fn redact(url: &str) -> String {
    crate::config::redact_url_password(url)
}

/// Opens connections, for the pool and the writer.
#[derive(Clone)]
pub(crate) struct Manager {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    driver: &'static Runtime,
}

impl Manager {
    /// The settings of every connection: the writer's, its reconnections and the pool's.
    fn new(url: &str, options: &Options) -> Result<Manager, StoreError> {
        let bad_url = |message: String| StoreError::Url {
            url: redact(url),
            message,
        };
        let (rest, tls) = Tls::from_url(url).map_err(bad_url)?;
        let mut config =
            tokio_postgres::Config::from_str(&rest).map_err(|e| bad_url(e.to_string()))?;
        let timeout_ms = options.statement_timeout.as_millis().max(1);
        config
            .ssl_mode(tls.driver_mode())
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("medic")
            // A replica that hangs inside a transaction must not hold the write lock
            // forever.
            .options(format!(
                "-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={}",
                timeout_ms * 4
            ));
        Ok(Manager {
            config,
            tls: tls.connector().map_err(bad_url)?,
            driver: driver()?,
        })
    }

    /// Opens one connection, waiting for it: the writer's. Its task runs on a runtime of
    /// its own that the writer's thread drives while it waits for an answer, so a round
    /// trip costs no hop to another thread and back.
    fn open(&self) -> Result<PgConn, BoxError> {
        let connect = ConfigConnectImpl {
            tls: self.tls.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (client, task) = runtime.block_on(connect.connect(&self.config))?;
        Ok(PgConn {
            client: Client::Own(ClientWrapper::new(client, task)),
            driver: Driver::Own(Some(runtime)),
        })
    }

    /// The readers' pool: connections opened as reads need them, up to `size`.
    fn pool(&self, size: usize) -> Result<Pool, StoreError> {
        let manager = deadpool_postgres::Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            deadpool_postgres::ManagerConfig {
                // A connection is taken as it is, as the writer's is: one that broke is
                // dropped when it comes back, and the read that met the break fails alone.
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the read pool: {e}")))?;
        Ok(Pool {
            pool,
            driver: self.driver,
        })
    }
}

/// The readers' connections.
#[derive(Clone)]
pub(crate) struct Pool {
    pool: deadpool_postgres::Pool,
    driver: &'static Runtime,
}

impl Pool {
    /// A connection, waiting for one to be free (or opened) for at most [`CONNECT_TIMEOUT`].
    pub(crate) fn get(&self) -> Result<PgConn, NoConnection> {
        let object = self
            .driver
            .block_on(self.pool.get())
            .map_err(|e| NoConnection(describe(&e)))?;
        Ok(PgConn {
            client: Client::Pooled(object),
            driver: Driver::Shared(self.driver),
        })
    }
}

/// Why the pool had no connection to give (the database is down, or every connection
/// stayed busy).
#[derive(Debug)]
pub(crate) struct NoConnection(String);

impl std::fmt::Display for NoConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One PostgreSQL connection. Its prepared statements are cached with the client, so a
/// pooled connection keeps them from one read to the next.
pub(crate) struct PgConn {
    client: Client,
    driver: Driver,
}

/// The writer owns its connection; a reader borrows one from the pool.
enum Client {
    Own(ClientWrapper),
    Pooled(deadpool_postgres::Object),
}

impl std::ops::Deref for Client {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        match self {
            Client::Own(c) => c,
            Client::Pooled(c) => c,
        }
    }
}

/// Where a connection's task runs.
enum Driver {
    /// The writer's own runtime, run by the thread that waits (`None` once dropped).
    Own(Option<Runtime>),
    /// The shared [`driver`], for the pool's connections.
    Shared(&'static Runtime),
}

impl PgConn {
    /// Waits for `f`, on the calling thread, while the driver moves the bytes.
    fn wait<T>(
        &self,
        f: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let answer = match &self.driver {
            Driver::Own(Some(rt)) => rt.block_on(f),
            Driver::Own(None) => unreachable!("a connection is used only before it is dropped"),
            Driver::Shared(rt) => rt.block_on(f),
        };
        Ok(answer?)
    }
}

/// The writer's runtime stops without waiting for anything, on whatever thread drops it.
impl Drop for PgConn {
    fn drop(&mut self) {
        if let Driver::Own(rt) = &mut self.driver {
            if let Some(rt) = rt.take() {
                rt.shutdown_background();
            }
        }
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

/// The parameters as the driver takes them.
fn refs(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as _).collect()
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        self.wait(self.client.batch_execute(sql))
    }

    fn run(&self, sql: &str, params: &[Val]) -> Result<usize, StoreError> {
        let n = self.wait(async {
            let statement = self.client.prepare_cached(&placeholders(sql)).await?;
            self.client.execute(&statement, &refs(params)).await
        })?;
        Ok(n as usize)
    }

    fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StoreError> {
        let rows = self.wait(async {
            let statement = self.client.prepare_cached(&placeholders(sql)).await?;
            self.client.query(&statement, &refs(params)).await
        })?;
        Ok(rows.iter().map(to_row).collect())
    }

    /// All of a batch's entries in one statement: one round trip, not one each.
    fn insert_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let ats: Vec<&str> = rows.iter().map(|r| r.at.as_str()).collect();
        let events: Vec<&str> = rows.iter().map(|r| r.event).collect();
        let incidents: Vec<Option<&str>> = rows.iter().map(|r| r.incident_id.as_deref()).collect();
        let details: Vec<&str> = rows.iter().map(|r| r.detail.as_str()).collect();
        let prevs: Vec<&str> = rows.iter().map(|r| r.prev_hash.as_str()).collect();
        let hashes: Vec<&str> = rows.iter().map(|r| r.hash.as_str()).collect();
        self.wait(async {
            let statement = self
                .client
                .prepare_cached(
                    "INSERT INTO audit (seq, at, event, incident_id, detail, prev_hash, hash)
                     SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[])",
                )
                .await?;
            self.client
                .execute(
                    &statement,
                    &[&seqs, &ats, &events, &incidents, &details, &prevs, &hashes],
                )
                .await
        })?;
        Ok(())
    }

    /// One index probe per fingerprint (`incidents_period`, newest first), whatever the
    /// planner knows of the table. The same lookup as `fingerprint = ANY(..)` would be
    /// planned from statistics: before `incidents` is first analysed PostgreSQL guesses
    /// that each fingerprint matches 0.5% of the rows, so a batch of a few hundred alerts
    /// looks like the whole table and is read as a sequential scan, every batch, slower as
    /// the table grows; a plan cached while the table was empty did the same.
    fn latest_incidents(&self, fingerprints: &[&str]) -> Result<Option<Vec<Row>>, StoreError> {
        let rows = self.wait(async {
            let statement = self
                .client
                .prepare_cached(
                    "SELECT f.fingerprint, i.id, i.state, i.starts_at, i.last_seen_at
                     FROM UNNEST($1::TEXT[]) AS f (fingerprint)
                     CROSS JOIN LATERAL (SELECT id, state, starts_at, last_seen_at FROM incidents
                         WHERE fingerprint = f.fingerprint ORDER BY starts_at DESC LIMIT 1) AS i",
                )
                .await?;
            self.client.query(&statement, &[&fingerprints]).await
        })?;
        Ok(Some(rows.iter().map(to_row).collect()))
    }

    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}

fn to_row(r: &tokio_postgres::Row) -> Row {
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
    // The same driver as the store's, from a plain thread (the caller may be async).
    std::thread::spawn(create_scratch_database)
        .join()
        .unwrap_or_else(|_| Err(StoreError::Commit("creating a database panicked".into())))
}

fn create_scratch_database() -> Result<String, StoreError> {
    let server = std::env::var("MEDIC_TEST_POSTGRES").unwrap_or_else(|_| TEST_SERVER.into());
    let server = server.trim_end_matches('/');
    let admin = Manager::new(&format!("{server}/postgres"), &Options::default())?
        .open()
        .map_err(|e| StoreError::Unavailable(describe(&*e)))?;
    let name = format!(
        "medic_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    admin.execute_batch(&format!("CREATE DATABASE {name}"))?;
    Ok(format!("{server}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new deployment's first storm: the writer's connection runs the batch lookup many
    /// times while `incidents` is empty and never analysed, then the table grows by
    /// thousands of incidents before autovacuum gets to it. The lookup the connection has
    /// prepared must still find its rows through an index, not read the whole table.
    /// A connection to a new database of its own, when the suite runs on PostgreSQL.
    fn scratch_connection() -> Option<PgConn> {
        if std::env::var("MEDIC_TEST_STORE").as_deref() != Ok("postgres") {
            return None;
        }
        let url = scratch_database().unwrap();
        Some(
            Manager::new(&url, &Options::default())
                .unwrap()
                .open()
                .unwrap(),
        )
    }

    #[test]
    fn an_error_says_what_the_server_said() {
        let Some(conn) = scratch_connection() else {
            return;
        };
        let e = conn
            .execute_batch("SELECT * FROM no_such_table")
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("relation \"no_such_table\" does not exist"),
            "{text}"
        );
    }

    #[test]
    fn the_batch_lookup_reads_an_index_after_the_table_grows() {
        let Some(conn) = scratch_connection() else {
            return;
        };
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
