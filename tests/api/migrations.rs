//! Every migration runs up, down and up again on both backends.

use diesel::connection::SimpleConnection;
use latchkey::db::{self, DbConnection};

use crate::support::{Db, TestDatabase};

/// How many migrations the repository holds (the same for both backends).
fn migrations_on_disk() -> usize {
    let count = |backend: &str| {
        std::fs::read_dir(format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR")))
            .expect("the migrations directory")
            .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().join("up.sql").exists()))
            .count()
    };
    assert_eq!(count("postgres"), count("sqlite"), "every migration has a twin");
    count("postgres")
}

fn round_trip(mut conn: DbConnection) {
    let reverted = db::revert_all(&mut conn).expect("revert all");
    assert_eq!(reverted.len(), migrations_on_disk(), "{reverted:?}");
    assert!(conn.batch_execute("SELECT count(*) FROM users").is_err(), "users is gone");
    let applied = db::migrate(&mut conn).expect("migrate again");
    assert_eq!(applied.len(), migrations_on_disk(), "{applied:?}");
    conn.batch_execute(
        "SELECT count(*) FROM users; SELECT count(*) FROM logins; \
         SELECT count(*) FROM products; SELECT count(*) FROM cart_items",
    )
    .expect("tables are back");
}

#[tokio::test]
async fn postgres_migrations_round_trip() {
    tokio::task::spawn_blocking(|| {
        let database = TestDatabase::create(Db::Postgres);
        round_trip(database.connect());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sqlite_migrations_round_trip() {
    tokio::task::spawn_blocking(|| {
        let database = TestDatabase::create(Db::Sqlite);
        let mut conn = database.connect();
        let applied = db::migrate(&mut conn).expect("first migrate");
        assert_eq!(applied.len(), migrations_on_disk());
        round_trip(conn);
    })
    .await
    .unwrap();
}
