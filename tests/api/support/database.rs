//! `TestDatabase`: a database of a test's own, a SQLite file in a temporary directory or a
//! PostgreSQL clone of a template migrated once per test process, removed when dropped.

use std::sync::OnceLock;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use latchkey::db::{self, DbConnection};

use super::{postgres_admin_url, Db};

/// The URL of the database `database` on the test PostgreSQL server.
fn postgres_url_for(database: &str) -> String {
    let admin = postgres_admin_url();
    let (base, _) = admin.rsplit_once('/').expect("TEST_POSTGRES_URL has a database path");
    format!("{base}/{database}")
}

fn admin_connection() -> PgConnection {
    PgConnection::establish(&postgres_admin_url()).expect("connect to PostgreSQL")
}

/// A PostgreSQL database migrated once per test process; each test clones it.
fn postgres_template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = format!("latchkey_template_{}", std::process::id());
        let mut admin = admin_connection();
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .expect("drop template");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).expect("create template");
        let mut conn = DbConnection::Postgres(
            PgConnection::establish(&postgres_url_for(&name)).expect("connect to template"),
        );
        db::migrate(&mut conn).expect("migrate template");
        name
    })
}

/// A fresh database, removed when dropped. A SQLite one is empty (the app migrates it as it
/// starts); a PostgreSQL one is already migrated.
pub enum TestDatabase {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl TestDatabase {
    /// Blocks: call it from `spawn_blocking` or a plain `#[test]`.
    pub fn create(db: Db) -> Self {
        match db {
            Db::Sqlite => Self::Sqlite(tempfile::tempdir().expect("temp dir")),
            Db::Postgres => {
                let template = postgres_template();
                let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = admin_connection();
                // Clones serialise on the template; retry while another test holds it.
                let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
                for attempt in 0.. {
                    match diesel::sql_query(&create).execute(&mut admin) {
                        Ok(_) => break,
                        Err(_) if attempt < 50 => std::thread::sleep(Duration::from_millis(100)),
                        Err(e) => panic!("create test database: {e}"),
                    }
                }
                Self::Postgres(name)
            }
        }
    }

    /// The `DATABASE_URL` for this database; `port` overrides PostgreSQL's (for a proxy).
    pub fn url(&self, port: Option<u16>) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.path().join("test.sqlite3").display()),
            Self::Postgres(name) => {
                let url = postgres_url_for(name);
                match port {
                    None => url,
                    Some(port) => {
                        let (scheme_user, rest) =
                            url.split_once('@').expect("user@host in TEST_POSTGRES_URL");
                        let (_, path) = rest.split_once('/').expect("path");
                        format!("{scheme_user}@127.0.0.1:{port}/{path}")
                    }
                }
            }
        }
    }

    /// A direct connection, for what the site does not show (blocks).
    pub fn connect(&self) -> DbConnection {
        let url = self.url(None);
        match self {
            Self::Sqlite(_) => {
                let path = url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnection::establish(path).expect("connect to SQLite");
                conn.batch_execute("PRAGMA busy_timeout = 5000").expect("busy_timeout");
                DbConnection::Sqlite(conn)
            }
            Self::Postgres(_) => {
                DbConnection::Postgres(PgConnection::establish(&url).expect("connect to PostgreSQL"))
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Postgres(name) = self {
            if let Ok(mut admin) = PgConnection::establish(&postgres_admin_url()) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin);
            }
        }
    }
}
