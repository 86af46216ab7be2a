//! `/metrics`: Prometheus (OpenMetrics) text with requests by route pattern, logins by
//! outcome, throttled requests, store errors, live logins and password-hash timings; readable
//! from `METRICS_ALLOW` addresses or with `METRICS_TOKEN`, a 404 for anyone else.

use reqwest::{Method, StatusCode};

use crate::support::{location, Db, Options, Store, TestApp, PASSWORD};

/// The metrics, as an allowed reader sees them.
async fn scrape(app: &TestApp) -> String {
    let answer = app.new_browser().get("/metrics").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let content_type = answer.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    answer.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as written), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn requests_logins_and_hashes_are_counted() {
    let app = TestApp::spawn(Db::Sqlite, Store::Database).await;
    let email = "counted@example.com";
    app.create_user(email).await;
    assert_eq!(app.login(email, "not the password at all").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(location(&app.login(email, PASSWORD).await), "/");
    for _ in 0..3 {
        assert_eq!(app.get("/about").await.status(), StatusCode::OK);
    }
    let secret_path = "/password/reset/a-token-that-must-not-become-a-label";
    assert_eq!(app.get(secret_path).await.status(), StatusCode::GONE);

    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, r#"latchkey_http_requests_total{route="/about",method="GET",status="200"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"latchkey_http_requests_total{route="/password/reset/{token}",method="GET",status="410"}"#
        ),
        Some(1.0)
    );
    assert!(!metrics.contains("a-token-that-must-not"), "{metrics}");
    assert_eq!(
        sample(&metrics, r#"latchkey_http_request_duration_seconds_count{route="/about",method="GET"}"#),
        Some(3.0)
    );
    // Registering signs in too: two successes, one failure.
    assert_eq!(sample(&metrics, r#"latchkey_logins_total{outcome="success"}"#), Some(2.0));
    assert_eq!(sample(&metrics, r#"latchkey_logins_total{outcome="failure"}"#), Some(1.0));
    assert_eq!(
        sample(&metrics, r#"latchkey_security_events_total{event="user_created",outcome="success"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "latchkey_live_logins"), Some(2.0), "the registering browser's and this one");
    // A hash at registration, two checks at login.
    assert_eq!(sample(&metrics, "latchkey_password_hash_duration_seconds_count"), Some(3.0));
    assert_eq!(sample(&metrics, "latchkey_password_hash_wait_seconds_count"), Some(3.0));

    app.logout().await;
    assert_eq!(sample(&scrape(&app).await, "latchkey_live_logins"), Some(1.0));
}

#[tokio::test]
async fn throttled_requests_and_store_errors_are_counted() {
    let options = Options {
        vars: vec![("THROTTLE_REGISTER", "1/1h".into())],
        database_proxy: true,
        ..Options::default()
    };
    let app = TestApp::spawn_with(Db::Postgres, Store::Cookie, options).await;
    app.create_user("first@example.com").await;
    let refused = app.new_browser().register("second@example.com", PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sample(&scrape(&app).await, "latchkey_throttled_requests_total"), Some(1.0));

    let proxy = app.database_proxy.as_ref().unwrap();
    proxy.cut();
    assert_eq!(app.get("/readyz").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The metrics still answer while the database is down.
    let metrics = scrape(&app).await;
    proxy.restore();
    let database = sample(&metrics, r#"latchkey_store_errors_total{store="database"}"#);
    assert!(database.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(!metrics.contains(r#"store="redis""#), "{metrics}");
}

/// A session store in Redis that does not answer counts as Redis's errors.
#[tokio::test]
async fn store_errors_are_counted_by_store() {
    let options = Options { redis_proxy: true, ..Options::default() };
    let app = TestApp::spawn_with(Db::Sqlite, Store::Redis, options).await;
    app.register("stored@example.com", PASSWORD).await;
    let proxy = app.redis_proxy.as_ref().unwrap();
    proxy.cut();
    let started = std::time::Instant::now();
    while app.get("/account").await.status() != StatusCode::SERVICE_UNAVAILABLE {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "Redis never failed");
    }
    let metrics = scrape(&app).await;
    proxy.restore();
    let redis = sample(&metrics, r#"latchkey_store_errors_total{store="redis"}"#);
    assert!(redis.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(!metrics.contains(r#"store="database""#), "{metrics}");
}

/// From an address outside `METRICS_ALLOW` (as a trusted proxy reports it), only the token
/// opens the metrics; otherwise there is nothing there.
#[tokio::test]
async fn metrics_are_hidden_from_other_addresses() {
    let token = "a-metrics-token-of-thirty-two-characters";
    let vars = vec![("TRUSTED_PROXIES", "127.0.0.1".into()), ("METRICS_TOKEN", token.into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options { vars, ..Options::default() }).await;
    let from_outside = |authorization: Option<&str>| {
        let request = app.request(Method::GET, "/metrics").header("X-Forwarded-For", "203.0.113.9");
        match authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
        .send()
    };
    assert_eq!(from_outside(None).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(from_outside(Some("Bearer wrong-token")).await.unwrap().status(), StatusCode::NOT_FOUND);
    let with_token = from_outside(Some(&format!("Bearer {token}"))).await.unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    assert!(with_token.text().await.unwrap().contains("latchkey_http_requests_total"));
    // Loopback itself, with no proxy in between, is allowed by default.
    scrape(&app).await;
}
