//! One Diesel connection type over PostgreSQL and SQLite, its r2d2 pool, and [`run`], the way
//! request code reaches a connection: on actix's blocking pool, never on the async executor.
//!
//! ```no_run
//! use latchkey_db::{pool, run, DatabaseUrl};
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = pool(&DatabaseUrl::parse("sqlite://data/app.sqlite3")?, 4, std::time::Duration::from_secs(5))?;
//! let answer: i32 = run(&pool, |conn| {
//!     use diesel::RunQueryDsl;
//!     diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1")).get_result(conn)
//! })
//! .await?;
//! assert_eq!(answer, 1);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::R2D2Connection;
use diesel::sqlite::SqliteConnection;
use diesel::Connection;

/// `DbConnection` lives in a module of its own: diesel's `MultiConnection` derive generates
/// public helper types beside it that cannot carry docs.
#[allow(missing_docs)]
mod connection {
    use diesel::pg::PgConnection;
    use diesel::sqlite::SqliteConnection;

    /// A connection to whichever backend the URL names. Queries are written once against it.
    #[derive(diesel::MultiConnection)]
    pub enum DbConnection {
        /// A PostgreSQL connection.
        Postgres(PgConnection),
        /// A SQLite connection, with the pragmas [`ConnectionManager`](crate::ConnectionManager) sets.
        Sqlite(SqliteConnection),
    }
}

pub use connection::*;

/// The connection pool.
pub type Pool = diesel::r2d2::Pool<ConnectionManager>;

/// The database to use, chosen by the scheme of its URL. `Debug` hides PostgreSQL credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// The full `postgres://` URL, credentials included.
    Postgres(String),
    /// The path of the SQLite file.
    Sqlite(PathBuf),
}

/// A database URL that names no backend we speak.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub &'static str);

impl DatabaseUrl {
    /// `postgres://…` or `postgresql://…` for PostgreSQL; `sqlite://path` or a bare path for
    /// SQLite.
    ///
    /// ```
    /// use latchkey_db::DatabaseUrl;
    /// assert!(matches!(DatabaseUrl::parse("postgres://u@h/db"), Ok(DatabaseUrl::Postgres(_))));
    /// assert_eq!(DatabaseUrl::parse("sqlite://a.db").ok(), Some(DatabaseUrl::Sqlite("a.db".into())));
    /// assert!(DatabaseUrl::parse("mysql://h/db").is_err());
    /// ```
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let path = raw.strip_prefix("sqlite://").unwrap_or(raw);
        if path.contains("://") {
            return Err(UrlError(
                "use postgres://… or postgresql://… for PostgreSQL, or a file path (optionally sqlite://path) for SQLite",
            ));
        }
        if path.is_empty() {
            return Err(UrlError("the SQLite path is empty"));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// A description safe for logs: the backend and, for SQLite, the file.
    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(_) => "PostgreSQL".to_owned(),
            Self::Sqlite(path) => format!("SQLite at {}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(_) => f.write_str("Postgres([redacted])"),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// Opens connections for the pool.
///
/// Written by hand rather than using diesel's `r2d2::ConnectionManager<DbConnection>`: the
/// `MultiConnection` derive tries every backend in turn and reports only the last failure, so a
/// wrong PostgreSQL URL would surface as a confusing SQLite error (or create a stray file). Here
/// the scheme picks the backend, and SQLite connections get the pragmas they need.
#[derive(Debug)]
pub struct ConnectionManager {
    url: DatabaseUrl,
}

impl ConnectionManager {
    /// A manager for `url`; nothing is opened until a connection is asked for.
    ///
    /// ```
    /// use latchkey_db::{ConnectionManager, DatabaseUrl, DbConnection};
    /// let manager = ConnectionManager::new(DatabaseUrl::parse(":memory:")?);
    /// assert!(matches!(manager.connect()?, DbConnection::Sqlite(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(url: DatabaseUrl) -> Self {
        Self { url }
    }

    /// Opens one connection outside any pool (migrations, tools).
    pub fn connect(&self) -> Result<DbConnection, diesel::r2d2::Error> {
        diesel::r2d2::ManageConnection::connect(self)
    }
}

impl diesel::r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => PgConnection::establish(url)
                .map(DbConnection::Postgres)
                .map_err(diesel::r2d2::Error::ConnectionError),
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let mut conn =
                    SqliteConnection::establish(&path).map_err(diesel::r2d2::Error::ConnectionError)?;
                // WAL lets readers proceed during a write; busy_timeout makes concurrent writers
                // wait for the lock instead of failing; SQLite enforces foreign keys only on request.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                )
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        match conn {
            DbConnection::Postgres(c) => c.ping(),
            DbConnection::Sqlite(c) => c.ping(),
        }
        .map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        match conn {
            DbConnection::Postgres(c) => c.is_broken(),
            DbConnection::Sqlite(c) => c.is_broken(),
        }
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the directory for {path}: {source}")]
pub struct PoolError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Builds the pool without opening a connection up front, so a server starts (and answers
/// 503) while the database is briefly unavailable. For SQLite, the file's directory is created.
pub fn pool(url: &DatabaseUrl, size: u32, timeout: Duration) -> Result<Pool, PoolError> {
    if let DatabaseUrl::Sqlite(path) = url {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| PoolError { path: path.display().to_string(), source })?;
        }
    }
    Ok(diesel::r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(timeout)
        .build_unchecked(ConnectionManager::new(url.clone())))
}

/// What can go wrong reaching the database from request code.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection within the pool's time-out: the database is down or overloaded.
    #[error("no database connection")]
    Unavailable(#[source] diesel::r2d2::PoolError),
    /// The query failed; [`DbError::is_transient`] tells whether retrying may help.
    #[error("database query failed")]
    Query(#[source] diesel::result::Error),
    /// The blocking pool is shutting down.
    #[error("the blocking pool is gone")]
    Blocking(#[source] actix_web::error::BlockingError),
}

impl DbError {
    /// A failure of the database rather than of the query: a closed connection, or a SQLite
    /// lock held past `busy_timeout`. Callers answer 503 for these.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match self {
            Self::Unavailable(_) | Self::Blocking(_) => true,
            Self::Query(Error::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _)) => true,
            Self::Query(Error::DatabaseError(_, info)) => info.message().contains("database is locked"),
            Self::Query(_) => false,
        }
    }
}

/// Runs `query` with a pooled connection on actix's blocking pool.
pub async fn run<T, F>(pool: &Pool, query: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConnection) -> Result<T, diesel::result::Error> + Send + 'static,
{
    let pool = pool.clone();
    actix_web::web::block(move || {
        let mut conn = pool.get().map_err(DbError::Unavailable)?;
        query(&mut conn).map_err(DbError::Query)
    })
    .await
    .map_err(DbError::Blocking)?
}

/// Runs `work` in a transaction that is to write: on SQLite it begins `IMMEDIATE`, taking the
/// write lock up front; on PostgreSQL it is an ordinary transaction.
///
/// Diesel's [`Connection::transaction`] begins SQLite transactions `DEFERRED`: one that reads
/// and then writes fails at once with "database is locked" when another connection has
/// committed a write since its read, because its snapshot is stale. The busy timeout cannot
/// help there; SQLite does not wait. Begun `IMMEDIATE`, the transaction instead waits (up to
/// `busy_timeout`) for writers ahead of it, and then nothing can write under it. Written here
/// because diesel offers `immediate_transaction` on `SqliteConnection` only, not through a
/// `MultiConnection`. Nested transactions inside `work` are savepoints as usual.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let DbConnection::Sqlite(sqlite) = conn else {
        return conn.transaction(work);
    };
    let depth = AnsiTransactionManager::transaction_manager_status_mut(sqlite).transaction_depth()?;
    if depth.is_some() {
        // Inside a transaction already (which holds the lock if it writes): a savepoint.
        return conn.transaction(work);
    }
    AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
    let done = work(conn);
    // `work` cannot change the variant: the connection is still SQLite's.
    let DbConnection::Sqlite(sqlite) = conn else {
        return done;
    };
    match done {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(sqlite)?;
            Ok(value)
        }
        // As diesel's own `transaction`: the caller's error, unless the rollback failed too.
        Err(error) => match AnsiTransactionManager::rollback_transaction(sqlite) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Answers whether the database is reachable right now (for readiness probes).
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    run(pool, |conn| conn.batch_execute("SELECT 1")).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::{QueryResult, RunQueryDsl};
    use std::sync::mpsc;

    /// What the transaction under test runs.
    type Work<'a> = &'a mut dyn FnMut(&mut DbConnection) -> QueryResult<()>;

    fn connect(path: &std::path::Path) -> Result<DbConnection, diesel::r2d2::Error> {
        ConnectionManager::new(DatabaseUrl::Sqlite(path.to_owned())).connect()
    }

    fn count(conn: &mut DbConnection) -> Result<i64, diesel::result::Error> {
        diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT count(*) FROM t").get_result(conn)
    }

    /// A transaction reads, another connection writes meanwhile, then the transaction writes:
    /// what `begin` does with that. Returns the first transaction's outcome and the count of
    /// rows at the end.
    fn read_then_write_beside_a_writer(
        begin: fn(&mut DbConnection, Work<'_>) -> QueryResult<()>,
    ) -> Result<(QueryResult<()>, i64), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.sqlite3");
        let mut first = connect(&path)?;
        first.batch_execute("CREATE TABLE t (n INTEGER)")?;
        let (read, go) = mpsc::channel::<()>();
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || -> Result<(), String> {
            let mut other = connect(&writer_path).map_err(|e| e.to_string())?;
            go.recv().map_err(|e| e.to_string())?;
            other.batch_execute("INSERT INTO t VALUES (1)").map_err(|e| e.to_string())
        });
        let outcome = begin(&mut first, &mut |conn| {
            count(conn)?;
            let _ = read.send(());
            // Time for the other connection to write (or to start waiting for the lock).
            std::thread::sleep(Duration::from_millis(200));
            conn.batch_execute("INSERT INTO t VALUES (2)")
        });
        writer.join().map_err(|_| "the writer panicked")??;
        Ok((outcome, count(&mut first)?))
    }

    #[test]
    fn a_deferred_transaction_that_reads_then_writes_fails_beside_a_writer(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (outcome, rows) =
            read_then_write_beside_a_writer(|conn, work: Work<'_>| conn.transaction(|c| work(c)))?;
        let locked = matches!(&outcome, Err(diesel::result::Error::DatabaseError(_, info)) if info.message().contains("locked"));
        assert!(locked, "diesel's transaction on SQLite: {outcome:?}");
        assert_eq!(rows, 1, "only the other connection's row");
        Ok(())
    }

    #[test]
    fn a_write_transaction_inside_another_is_a_savepoint() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut conn = connect(&dir.path().join("t.sqlite3"))?;
        conn.batch_execute("CREATE TABLE t (n INTEGER)")?;
        write_transaction(&mut conn, |conn| -> QueryResult<()> {
            conn.batch_execute("INSERT INTO t VALUES (1)")?;
            let inner: QueryResult<()> = write_transaction(conn, |conn| {
                conn.batch_execute("INSERT INTO t VALUES (2)")?;
                Err(diesel::result::Error::RollbackTransaction)
            });
            assert!(inner.is_err());
            Ok(())
        })?;
        assert_eq!(count(&mut conn)?, 1, "the inner one rolled back alone");
        Ok(())
    }

    #[test]
    fn a_write_transaction_waits_for_the_lock_instead() -> Result<(), Box<dyn std::error::Error>> {
        let (outcome, rows) =
            read_then_write_beside_a_writer(|conn, work: Work<'_>| write_transaction(conn, |c| work(c)))?;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(rows, 2, "both rows: the other connection waited for this transaction");
        Ok(())
    }
}
