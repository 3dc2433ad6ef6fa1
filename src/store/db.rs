//! The few things the store asks of a database connection, so that one body of SQL and
//! one writer serve both backends.
//!
//! The store's SQL is written once, in the dialect SQLite and PostgreSQL share: `?N`
//! placeholders (PostgreSQL's connection rewrites them to `$N`), `ON CONFLICT ... DO
//! NOTHING`, `RETURNING`, text timestamps and `BIGINT` numbers. Values cross the boundary
//! as [`Val`]; rows come back as [`Row`]s. The shape of the calls follows rusqlite's
//! (`prepare_cached(..)?.execute(params![..])`, `query_row(..).optional()`), so the store
//! code reads like ordinary rusqlite code whichever database is under it.

use super::StoreError;

/// Which database a connection talks to, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One value bound to, or read from, a statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A database connection as the store uses it. Methods take `&self`: a connection is
/// used by one thread at a time, and keeps its statement cache inside.
pub(crate) trait Db: Send {
    fn dialect(&self) -> Dialect;
    /// Runs one or more statements without parameters or results.
    fn execute_batch(&self, sql: &str) -> Result<(), StoreError>;
    /// Runs one statement; returns how many rows it changed.
    fn run(&self, sql: &str, params: &[Val]) -> Result<usize, StoreError>;
    /// Runs one statement and returns every row.
    fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StoreError>;
    /// Writes audit entries, in order. One statement each, unless the database has a
    /// quicker way.
    fn insert_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        for r in rows {
            self.run(
                "INSERT INTO audit (seq, at, event, incident_id, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &[
                    Val::Int(r.seq),
                    Val::Text(r.at.clone()),
                    Val::Text(r.event.to_string()),
                    r.incident_id.to_val(),
                    Val::Text(r.detail.clone()),
                    Val::Text(r.prev_hash.clone()),
                    Val::Text(r.hash.clone()),
                ],
            )?;
        }
        Ok(())
    }

    /// The newest incident of each fingerprint, as rows of (fingerprint, id, state,
    /// starts_at), in one statement; `None` where that is no quicker than one lookup each.
    fn latest_incidents(&self, _fingerprints: &[&str]) -> Result<Option<Vec<Row>>, StoreError> {
        Ok(None)
    }

    /// Whether the connection can no longer be used (PostgreSQL went away).
    fn is_broken(&self) -> bool {
        false
    }
}

/// One audit entry as stored, hash-chained already.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub event: &'static str,
    pub incident_id: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A result row.
#[derive(Debug, Clone)]
pub(crate) struct Row(pub(crate) Vec<Val>);

impl Row {
    /// Column `i`, converted to `T` (an error names the column and what it holds).
    pub(crate) fn get<I: Index, T: FromVal>(&self, i: I) -> Result<T, StoreError> {
        let i = i.index();
        let v = self
            .0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {i} in a result row")))?;
        T::from_val(v).ok_or_else(|| StoreError::Corrupt(format!("column {i} holds {v:?}")))
    }
}

/// A column index (so that `r.get::<_, T>(0)` reads as in rusqlite).
pub(crate) trait Index {
    fn index(self) -> usize;
}

impl Index for usize {
    fn index(self) -> usize {
        self
    }
}

impl Index for i32 {
    fn index(self) -> usize {
        self as usize
    }
}

/// A Rust value a column converts into.
pub(crate) trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
}

impl FromVal for String {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromVal for u32 {
    fn from_val(v: &Val) -> Option<Self> {
        i64::from_val(v).and_then(|i| u32::try_from(i).ok())
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> Option<Self> {
        match v {
            Val::Null => Some(None),
            v => T::from_val(v).map(Some),
        }
    }
}

/// A Rust value bound as a parameter.
pub(crate) trait ToVal {
    fn to_val(&self) -> Val;
}

impl ToVal for Val {
    fn to_val(&self) -> Val {
        self.clone()
    }
}

impl ToVal for str {
    fn to_val(&self) -> Val {
        Val::Text(self.to_string())
    }
}

impl ToVal for String {
    fn to_val(&self) -> Val {
        Val::Text(self.clone())
    }
}

impl ToVal for i64 {
    fn to_val(&self) -> Val {
        Val::Int(*self)
    }
}

impl ToVal for u32 {
    fn to_val(&self) -> Val {
        Val::Int(i64::from(*self))
    }
}

impl ToVal for i32 {
    fn to_val(&self) -> Val {
        Val::Int(i64::from(*self))
    }
}

impl ToVal for usize {
    fn to_val(&self) -> Val {
        Val::Int(*self as i64)
    }
}

impl ToVal for bool {
    fn to_val(&self) -> Val {
        Val::Int(i64::from(*self))
    }
}

impl<T: ToVal + ?Sized> ToVal for &T {
    fn to_val(&self) -> Val {
        (**self).to_val()
    }
}

impl<T: ToVal> ToVal for Option<T> {
    fn to_val(&self) -> Val {
        match self {
            Some(v) => v.to_val(),
            None => Val::Null,
        }
    }
}

/// Parameters of one statement: `params![a, b]`, an array of one type, or `()`.
pub(crate) trait Params {
    fn vals(self) -> Vec<Val>;
}

impl Params for Vec<Val> {
    fn vals(self) -> Vec<Val> {
        self
    }
}

impl Params for () {
    fn vals(self) -> Vec<Val> {
        Vec::new()
    }
}

impl<T: ToVal, const N: usize> Params for [T; N] {
    fn vals(self) -> Vec<Val> {
        self.iter().map(ToVal::to_val).collect()
    }
}

/// `params![a, b, c]`: the parameters of a statement, of any types that bind.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        vec![$($crate::store::db::ToVal::to_val(&$v)),*]
    };
}
pub(crate) use params;

/// A statement about to run (rusqlite's `prepare_cached`): the connection caches the
/// prepared form by its text.
pub(crate) struct Stmt<'a> {
    db: &'a dyn Db,
    sql: String,
}

impl Stmt<'_> {
    pub(crate) fn execute(&mut self, params: impl Params) -> Result<usize, StoreError> {
        self.db.run(&self.sql, &params.vals())
    }

    /// The first row, mapped; [`StoreError::NoRows`] when there is none (see
    /// [`OptionalExtension::optional`]).
    pub(crate) fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let rows = self.db.rows(&self.sql, &params.vals())?;
        rows.first().map(f).unwrap_or(Err(StoreError::NoRows))
    }

    /// Every row, mapped.
    pub(crate) fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row) -> Result<T, StoreError>,
    ) -> Result<std::vec::IntoIter<Result<T, StoreError>>, StoreError> {
        let rows = self.db.rows(&self.sql, &params.vals())?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }
}

impl dyn Db + '_ {
    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>, StoreError> {
        Ok(Stmt {
            db: self,
            sql: sql.to_string(),
        })
    }

    pub(crate) fn execute(&self, sql: &str, params: impl Params) -> Result<usize, StoreError> {
        self.run(sql, &params.vals())
    }

    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// rusqlite's `optional()`: no row is `None`, not an error.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> OptionalExtension<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// SQLite connections, through rusqlite.
impl Db for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        Ok(rusqlite::Connection::execute_batch(self, sql)?)
    }

    fn run(&self, sql: &str, params: &[Val]) -> Result<usize, StoreError> {
        let mut stmt = rusqlite::Connection::prepare_cached(self, sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))?)
    }

    fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = rusqlite::Connection::prepare_cached(self, sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(i) => Val::Int(i),
                    ValueRef::Real(f) => Val::Real(f),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Val::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Real(f) => ValueRef::Real(*f),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_calls_read_and_write_sqlite() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let db: &dyn Db = &c;
        db.execute_batch("CREATE TABLE t (a TEXT, b BIGINT, c TEXT)")
            .unwrap();
        let n = db
            .execute(
                "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3)",
                params!["x", 7i64, None::<String>],
            )
            .unwrap();
        assert_eq!(n, 1);
        let (a, b, c): (String, i64, Option<String>) = db
            .query_row("SELECT a, b, c FROM t WHERE b = ?1", [7i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((a.as_str(), b, c), ("x", 7, None));
        let none = db
            .query_row("SELECT a FROM t WHERE b = ?1", [8i64], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let wrong = db.query_row("SELECT a FROM t", (), |r| r.get::<_, i64>(0));
        assert!(matches!(wrong, Err(StoreError::Corrupt(m)) if m.contains("column 0")));
    }
}
