//! When the database or Redis goes away the site answers 503 pages, and it recovers by
//! itself when they return.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::{Db, Options, Store, TestApp, PASSWORD};

/// Polls `path` until it answers `status` (the pool or Redis client reconnecting).
async fn eventually(app: &TestApp, path: &str, status: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = app.get(path).await.status();
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "{path} still answers {got}, expected {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn database_outage_is_a_503_page_and_recovers() {
    let options = Options { database_proxy: true, ..Options::default() };
    let app = TestApp::spawn_with(Db::Postgres, Store::Cookie, options).await;
    app.register("vic@example.com", PASSWORD).await;
    assert!(app.is_logged_in().await);
    let proxy = app.database_proxy.as_ref().unwrap();

    proxy.cut();
    let response = app.get("/account").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let html = response.text().await.unwrap();
    assert!(html.contains("Service unavailable") && html.contains("<html"), "{html}");
    assert_eq!(app.get("/readyz").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "the process itself is alive");
    let token = app.csrf_token("/login").await;
    let login = app
        .post_form("/login", &[("email", "vic@example.com"), ("password", PASSWORD), ("csrf_token", &token)])
        .await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);

    proxy.restore();
    eventually(&app, "/readyz", StatusCode::OK).await;
    assert!(app.is_logged_in().await, "still logged in after the outage");
}

#[tokio::test]
async fn redis_outage_is_a_503_page_and_recovers() {
    let options = Options { redis_proxy: true, ..Options::default() };
    let app = TestApp::spawn_with(Db::Sqlite, Store::Redis, options).await;
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
