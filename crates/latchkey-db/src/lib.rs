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

/// Answers whether the database is reachable right now (for readiness probes).
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    run(pool, |conn| conn.batch_execute("SELECT 1")).await
}
