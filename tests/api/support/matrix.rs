//! `matrix!`: one test per database and session store.

/// Generates one `#[tokio::test]` per database and store for an `async fn(TestApp)`, or,
/// given settings, for an `async fn(TestApp)` started with them.
#[macro_export]
macro_rules! matrix {
    ($case:ident) => {
        $crate::matrix!($case, []);
    };
    ($case:ident, [$(($var:expr, $value:expr)),* $(,)?]) => {
        mod $case {
            #[allow(unused_imports)]
            use $crate::support::{Db, Options, Store, TestApp};

            async fn spawn(db: Db, store: Store) -> TestApp {
                let vars = vec![$(($var, String::from($value))),*];
                TestApp::spawn_with(db, store, Options { vars, ..Options::default() }).await
            }

            $crate::matrix!(@each $case;
                sqlite_cookie: Sqlite, Cookie;
                sqlite_redis: Sqlite, Redis;
                sqlite_database: Sqlite, Database;
                postgres_cookie: Postgres, Cookie;
                postgres_redis: Postgres, Redis;
                postgres_database: Postgres, Database);
        }
    };
    (@each $case:ident; $($name:ident: $db:ident, $store:ident);*) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$case(spawn(Db::$db, Store::$store).await).await
            }
        )*
    };
}
