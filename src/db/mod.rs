//! The site's database: the connection layer of `latchkey-db`, the embedded migrations, and
//! the generated schema of every table.

pub mod schema;

use diesel::connection::SimpleConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
pub use latchkey_db::{ping, pool, run, write_transaction, DatabaseUrl, DbConnection, DbError, Pool};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Arbitrary key of the PostgreSQL advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6c61_7463_686b;

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

/// Opens one connection to `url` and applies pending migrations on the blocking pool.
pub async fn migrate_url(url: &DatabaseUrl) -> Result<Vec<String>, anyhow::Error> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = latchkey_db::ConnectionManager::new(url.clone())
            .connect()
            .map_err(|e| anyhow::anyhow!("cannot connect to {} (DATABASE_URL): {e}", url.describe()))?;
        migrate(&mut conn)
    })
    .await?
}
