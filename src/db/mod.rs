//! The database: one connection type over PostgreSQL and SQLite, the pool, embedded migrations,
//! and `run`, the only way request code reaches a connection (on the blocking pool).

pub mod schema;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::R2D2Connection;
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::AppError;
use crate::settings::DatabaseUrl;

/// A connection to whichever backend `DATABASE_URL` names. Queries are written once against it.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

pub type Pool = diesel::r2d2::Pool<ConnectionManager>;
pub type PooledConnection = diesel::r2d2::PooledConnection<ConnectionManager>;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Arbitrary key of the PostgreSQL advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6c61_7463_686b;

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
    pub fn new(url: DatabaseUrl) -> Self {
        Self { url }
    }
}

impl diesel::r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => PgConnection::establish(url.expose())
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

/// Builds the pool without opening a connection up front, so the server starts (and answers
/// 503) while the database is briefly unavailable; `migrate` opens the first connection.
pub fn pool(url: &DatabaseUrl, size: u32, timeout: Duration) -> Result<Pool, anyhow::Error> {
    if let DatabaseUrl::Sqlite(path) = url {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create the directory for {}: {e}", path.display()))?;
        }
    }
    Ok(diesel::r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(timeout)
        .build_unchecked(ConnectionManager::new(url.clone())))
}

/// Applies every pending migration for the connection's backend.
pub fn migrate(conn: &mut DbConnection) -> Result<Vec<String>, anyhow::Error> {
    let applied = match conn {
        // Several instances may start at once: a session-level advisory lock lets one migrate
        // while the others wait, then find nothing pending.
        DbConnection::Postgres(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
            let applied = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>());
            c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
            applied
        }
        DbConnection::Sqlite(c) => {
            c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.iter().map(ToString::to_string).collect())
        }
    };
    applied.map_err(|e| anyhow::anyhow!("running migrations failed: {e}"))
}

/// Reverts every applied migration (used by the migration round-trip test).
pub fn revert_all(conn: &mut DbConnection) -> Result<Vec<String>, anyhow::Error> {
    let reverted = match conn {
        DbConnection::Postgres(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS),
        DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS),
    }
    .map_err(|e| anyhow::anyhow!("reverting migrations failed: {e}"))?;
    Ok(reverted.iter().map(ToString::to_string).collect())
}

/// Runs `query` with a pooled connection on actix's blocking pool.
///
/// Pool time-outs become `AppError::Unavailable` (503); query errors are classified by
/// `AppError::from(diesel::result::Error)`.
pub async fn run<T, F>(pool: &Pool, query: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConnection) -> Result<T, diesel::result::Error> + Send + 'static,
{
    let pool = pool.clone();
    actix_web::web::block(move || {
        let mut conn = pool.get().map_err(AppError::unavailable)?;
        query(&mut conn).map_err(AppError::from)
    })
    .await
    .map_err(AppError::internal)?
}

/// Answers whether the database is reachable right now (for `/readyz`).
pub async fn ping(pool: &Pool) -> Result<(), AppError> {
    run(pool, |conn| conn.batch_execute("SELECT 1")).await
}
