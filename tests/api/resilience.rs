//! When the database or Redis goes away the site answers 503 pages, and it recovers by
//! itself when they return.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{Db, Options, Store, TestApp, PASSWORD};

/// Polls `path` until it answers `status` (the pool or Redis client reconnecting). Every
/// answer on the way must be 200 or 503: an outage is no reason for a 500 or a logout.
async fn eventually(app: &TestApp, path: &str, status: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = app.get(path).await.status();
        assert!(
            got == StatusCode::OK || got == StatusCode::SERVICE_UNAVAILABLE,
            "{path} answered {got} while waiting for {status}"
        );
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "{path} still answers {got}, expected {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The database goes away under a logged-in user, whose session lives in `store`.
async fn database_outage_is_a_503_page_and_recovers(store: Store) {
    let options = Options { database_proxy: true, ..Options::default() };
    let app = TestApp::spawn_with(Db::Postgres, store, options).await;
    app.register("vic@example.com", PASSWORD).await;
    assert!(app.is_logged_in().await);
    // The login form as it was before the outage.
    let token = app.csrf_token("/login").await;
    let proxy = app.database_proxy.as_ref().unwrap();

    proxy.cut();
    let response = app.get("/account").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let html = response.text().await.unwrap();
    assert!(html.contains("Service unavailable") && html.contains("<html"), "{html}");
    assert_eq!(app.get("/readyz").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    let probe = app.new_browser().get("/healthz").await.status();
    assert_eq!(probe, StatusCode::OK, "the process itself is alive");
    // Probes and static files need no session, so not even the database store's.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "to a logged-in browser too");
    assert_eq!(app.get("/static/style.css").await.status(), StatusCode::OK, "the 503 page keeps its styles");
    let login = app
        .post_form("/login", &[("email", "vic@example.com"), ("password", PASSWORD), ("csrf_token", &token)])
        .await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.restore();
    eventually(&app, "/readyz", StatusCode::OK).await;
    assert!(app.is_logged_in().await, "still logged in after the outage");
}

/// One `#[tokio::test]` per argument of an `async fn`.
macro_rules! cases {
    ($case:ident: $($name:ident($argument:expr)),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                $case($argument).await;
            }
        )+
    };
}

cases!(database_outage_is_a_503_page_and_recovers:
    database_outage_with_cookie_sessions(Store::Cookie),
    database_outage_with_database_sessions(Store::Database),
);

/// Redis, which holds the sessions, goes away under a logged-in user.
async fn redis_outage_is_a_503_page_and_recovers(db: Db) {
    let options = Options { redis_proxy: true, ..Options::default() };
    let app = TestApp::spawn_with(db, Store::Redis, options).await;
    app.register("wes@example.com", PASSWORD).await;
    assert!(app.is_logged_in().await);
    let proxy = app.redis_proxy.as_ref().unwrap();

    proxy.cut();
    eventually(&app, "/account", StatusCode::SERVICE_UNAVAILABLE).await;
    let html = app.get_html("/account").await;
    assert!(html.contains("Service unavailable"), "{html}");
    eventually(&app, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;

    proxy.restore();
    eventually(&app, "/account", StatusCode::OK).await;
    eventually(&app, "/readyz", StatusCode::OK).await;
}

cases!(redis_outage_is_a_503_page_and_recovers:
    redis_outage_on_sqlite(Db::Sqlite),
    redis_outage_on_postgres(Db::Postgres),
);
