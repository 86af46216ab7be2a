//! Throttling, shared by every instance (counters in Redis with a Redis store, otherwise in the
//! database): failed logins per (email, address), per address and per account (a growing wait,
//! then a lock), and registrations, re-authentications and guest sessions per address. A
//! throttled request is a 429 with `Retry-After` and a page that says when to come back.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};

use crate::matrix;
use crate::support::{location, text_in, with_token, Browser, Db, Options, Store, TestApp, PASSWORD};

const WRONG: &str = "not the password at all";

/// A login from the client address `ip`, as a proxy in `TRUSTED_PROXIES` reports it.
async fn login_from(browser: &Browser, ip: &str, email: &str, password: &str) -> Response {
    let token = browser.csrf_token("/login").await;
    browser
        .request(Method::POST, "/login")
        .header("Origin", &browser.address)
        .header("X-Forwarded-For", ip)
        .form(&with_token(&[("email", email), ("password", password)], &token))
        .send()
        .await
        .unwrap()
}

/// Checks a throttled answer: 429, a `Retry-After` of at most `most` seconds, and a page
/// that says when to try again. Returns the `Retry-After`.
async fn assert_throttled(response: Response, most: u64) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=most).contains(&retry_after), "Retry-After {retry_after}, expected 1 to {most}");
    let page = response.text().await.unwrap();
    let detail = text_in(&page, ".error-detail").expect("the page says when to try again");
    assert!(detail.starts_with("Try again in "), "{detail}");
    assert!(page.contains("Too many attempts"), "{page}");
    retry_after
}

async fn five_failures_a_minute_per_email_and_address_across_instances(app: TestApp) {
    let email = "guessed@example.com";
    app.create_user(email).await;
    let other = app.spawn_beside(&[]).await;
    let elsewhere = app.at(&other.address);
    for attempt in 0..5 {
        let browser = if attempt % 2 == 0 { &app.browser } else { &elsewhere };
        assert_eq!(browser.login(email, WRONG).await.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // Both instances count together; the right password waits too, and no bcrypt runs.
    assert_throttled(elsewhere.login(email, PASSWORD).await, 60).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retry_after = assert_throttled(app.login(email, PASSWORD).await, 60).await;
    assert!(retry_after > 2, "past the account's one-second wait, the minute's window holds: {retry_after}");
    assert!(!app.is_logged_in().await);

    // Another account from the same address is not held up by this one.
    app.create_user("neighbour@example.com").await;
    assert_eq!(app.login("neighbour@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
}

matrix!(five_failures_a_minute_per_email_and_address_across_instances);

async fn an_account_guessed_from_rotating_addresses_waits_longer_each_time_then_locks(app: TestApp) {
    let email = "target@example.com";
    app.create_user(email).await;
    let mut address = 0;
    let mut next_ip = || {
        address += 1;
        format!("198.51.100.{address}")
    };
    for attempt in 0..5 {
        let answer = login_from(&app, &next_ip(), email, WRONG).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // From the fifth consecutive failure on, each attempt waits: 1 s, 2 s, 4 s…
    for wait in [1, 2] {
        let retry_after = assert_throttled(login_from(&app, &next_ip(), email, PASSWORD).await, wait).await;
        assert_eq!(retry_after, wait);
        tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
        let answer = login_from(&app, &next_ip(), email, WRONG).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    // The eighth failure (THROTTLE_LOCK_AFTER) stops password login, right password or not.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(login_from(&app, &next_ip(), email, WRONG).await.status(), StatusCode::UNAUTHORIZED);
    let locked = login_from(&app, &next_ip(), email, PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::FORBIDDEN);
    assert!(locked.text().await.unwrap().contains("Password login is locked for this account"));
    assert!(!app.is_logged_in().await);

    // An email without an account is throttled the same way, so the throttle tells nothing.
    for _ in 0..5 {
        let answer = login_from(&app, &next_ip(), "nobody@example.com", WRONG).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(login_from(&app, &next_ip(), "nobody@example.com", WRONG).await, 1).await;
}

matrix!(
    an_account_guessed_from_rotating_addresses_waits_longer_each_time_then_locks,
    [("TRUSTED_PROXIES", "127.0.0.1"), ("THROTTLE_LOCK_AFTER", "8")]
);

async fn a_completed_login_clears_the_accounts_failures(app: TestApp) {
    let email = "forgetful@example.com";
    app.create_user(email).await;
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"] {
        assert_eq!(login_from(&app, ip, email, WRONG).await.status(), StatusCode::UNAUTHORIZED);
    }
    let logged_in = login_from(&app, "203.0.113.5", email, PASSWORD).await;
    assert_eq!(logged_in.status(), StatusCode::SEE_OTHER);
    app.logout().await;
    // Four more failures would have made nine; counted from zero, they make four, no wait.
    for ip in ["203.0.113.6", "203.0.113.7", "203.0.113.8", "203.0.113.9"] {
        assert_eq!(login_from(&app, ip, email, WRONG).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login_from(&app, "203.0.113.10", email, PASSWORD).await.status(), StatusCode::SEE_OTHER);
}

matrix!(a_completed_login_clears_the_accounts_failures, [("TRUSTED_PROXIES", "127.0.0.1")]);

#[tokio::test]
async fn one_address_spraying_many_accounts_stops_at_its_hourly_limit() {
    let vars = vec![("THROTTLE_LOGIN_IP", "10/1h".to_owned())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Database, Options { vars, ..Options::default() }).await;
    for n in 0..10 {
        let answer = app.login(&format!("sprayed{n}@example.com"), "Password123!").await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    let retry_after = assert_throttled(app.login("sprayed10@example.com", "Password123!").await, 3600).await;
    assert!(retry_after > 3500, "the hour's window: {retry_after}");
}

#[tokio::test]
async fn registrations_reauthentications_and_guest_sessions_are_limited_per_address() {
    let vars = vec![
        ("THROTTLE_REGISTER", "2/1h".to_owned()),
        ("THROTTLE_REAUTH", "3/1m".to_owned()),
        ("THROTTLE_GUEST_SESSION", "2/1h".to_owned()),
    ];
    let app = TestApp::spawn_with(Db::Postgres, Store::Redis, Options { vars, ..Options::default() }).await;
    app.create_user("one@example.com").await;
    app.create_user("two@example.com").await;
    assert_throttled(app.new_browser().register("three@example.com", PASSWORD).await, 3600).await;

    app.login("one@example.com", PASSWORD).await;
    for _ in 0..3 {
        let wrong = app.submit("/reauth", "/reauth", &[("password", WRONG)]).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(app.submit("/reauth", "/reauth", &[("password", PASSWORD)]).await, 60).await;

    // Only a guest's first item starts a session; more items in it are not counted.
    for _ in 0..2 {
        let guest = app.new_browser();
        assert_eq!(guest.add_to_cart("1", "1").await.status(), StatusCode::SEE_OTHER);
        assert_eq!(guest.add_to_cart("2", "1").await.status(), StatusCode::SEE_OTHER);
    }
    assert_throttled(app.new_browser().add_to_cart("1", "1").await, 3600).await;
}

#[tokio::test]
async fn deployments_sharing_a_redis_never_see_each_others_counts() {
    let first = TestApp::spawn(Db::Sqlite, Store::Redis).await;
    let second = TestApp::spawn(Db::Sqlite, Store::Redis).await;
    let email = "shared@example.com";
    first.create_user(email).await;
    second.create_user(email).await;
    for _ in 0..5 {
        assert_eq!(first.login(email, WRONG).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(first.login(email, PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.login(email, PASSWORD).await.status(), StatusCode::SEE_OTHER, "another deployment");
}

#[tokio::test]
async fn throttle_off_lets_every_guess_through() {
    let vars = vec![("THROTTLE", "off".to_owned())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options { vars, ..Options::default() }).await;
    app.create_user("bench@example.com").await;
    for _ in 0..12 {
        assert_eq!(app.login("bench@example.com", WRONG).await.status(), StatusCode::UNAUTHORIZED);
    }
    let logged_in = app.login("bench@example.com", PASSWORD).await;
    assert_eq!(location(&logged_in), "/");
}
