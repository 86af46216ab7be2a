//! Session lifecycle: remember-me, idle and absolute timeouts, the status and extend
//! endpoints, rotation with a grace period, and purging — with timeouts in seconds.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::matrix;
use crate::support::{
    csrf_token_in, location, secret_key, set_cookie, Db, Options, Store, TestApp, PASSWORD,
};

async fn sleep(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}

async fn remember_me_is_chosen_per_login(app: TestApp) {
    app.create_user("ann@example.com").await;

    let plain = app.login("ann@example.com", PASSWORD).await;
    let cookie = set_cookie(&plain, "latchkey_session").expect("session cookie");
    assert!(!cookie.contains("Max-Age") && !cookie.contains("Expires"), "browser-session cookie: {cookie}");

    let remembered = app.login_remembered("ann@example.com", PASSWORD).await;
    assert_eq!(remembered.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&remembered, "latchkey_session").expect("session cookie");
    assert!(cookie.contains("Max-Age=2592000"), "persistent for REMEMBER_DURATION: {cookie}");
    assert!(app.is_logged_in().await);

    app.logout().await;
    let plain = app.login("ann@example.com", PASSWORD).await;
    let cookie = set_cookie(&plain, "latchkey_session").expect("session cookie");
    assert!(!cookie.contains("Max-Age"), "the next login chooses again: {cookie}");
}
matrix!(remember_me_is_chosen_per_login);

async fn an_idle_session_expires_with_a_message(app: TestApp) {
    app.register("ben@example.com", PASSWORD).await;
    let copied = app.cookies();
    sleep(2.5).await;

    let response = app.get("/account?tab=x").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login?next=/account%3Ftab%3Dx");
    let login = app.get_html("/login?next=/account%3Ftab%3Dx").await;
    assert!(login.contains("Your session expired"), "{login}");
    assert!(!app.sending(&copied).is_logged_in().await, "a replayed cookie is anonymous too");
}
matrix!(an_idle_session_expires_with_a_message, [("IDLE_TIMEOUT", "2s"), ("TIMEOUT_WARNING", "1s")]);

async fn activity_keeps_a_session_alive_until_the_absolute_timeout(app: TestApp) {
    // A request about every second, never more than 3 s apart (IDLE_TIMEOUT is 4 s), so only
    // ABSOLUTE_TIMEOUT (5 s after the login) can end the login.
    let most_idle = Duration::from_secs(3);
    let started = Instant::now();
    app.register("cy@example.com", PASSWORD).await;
    let registered = Instant::now();
    let mut last = registered;
    let mut active = |at: Instant| {
        let idle = at - std::mem::replace(&mut last, at);
        assert!(idle < most_idle, "idle for {idle:?}: the idle timeout could end the login");
    };
    for n in 1..=4 {
        // By 3.6 s after the login began: well within ABSOLUTE_TIMEOUT.
        tokio::time::sleep_until((started + Duration::from_millis(900 * n)).into()).await;
        active(Instant::now());
        assert!(app.is_logged_in().await, "active, {:?} after the login", started.elapsed());
    }
    tokio::time::sleep_until((registered + Duration::from_millis(5400)).into()).await;
    active(Instant::now());
    let response = app.get("/account").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "the absolute timeout ends even an active login");
    assert_eq!(location(&response), "/login?next=/account");
}
matrix!(
    activity_keeps_a_session_alive_until_the_absolute_timeout,
    [("IDLE_TIMEOUT", "4s"), ("ABSOLUTE_TIMEOUT", "5s"), ("TIMEOUT_WARNING", "1s")]
);

async fn a_remembered_session_outlives_the_idle_timeout(app: TestApp) {
    app.create_user("dot@example.com").await;
    app.login_remembered("dot@example.com", PASSWORD).await;
    sleep(2.5).await;
    assert!(app.is_logged_in().await);
}
matrix!(a_remembered_session_outlives_the_idle_timeout, [("IDLE_TIMEOUT", "2s"), ("TIMEOUT_WARNING", "1s")]);

async fn status_does_not_extend_but_extend_does(app: TestApp) {
    app.register("eli@example.com", PASSWORD).await;

    let status: serde_json::Value = app.get("/session/status").await.json().await.unwrap();
    assert_eq!(status["authenticated"], true);
    let idle = status["idle_expires_in"].as_i64().unwrap();
    assert!((2..=3).contains(&idle), "{status}");
    assert!(status["absolute_expires_in"].as_i64().unwrap() > 3000, "{status}");
    assert_eq!(status["warn_before"], 1);

    // Polling the status is not activity.
    for _ in 0..4 {
        sleep(1.0).await;
        let _ = app.get("/session/status").await;
    }
    assert!(!app.is_logged_in().await, "status polling did not keep the session alive");

    // "Stay signed in" is activity, and needs the CSRF header.
    app.login("eli@example.com", PASSWORD).await;
    let page = app.get_html("/").await;
    assert!(page.contains(r#"id="session-timeout""#), "the warning dialog is on logged-in pages");
    assert!(page.contains("/static/session-timeout.js"));
    let token = csrf_token_in(&page);
    let refused = app.request(Method::POST, "/session/extend").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    for _ in 0..3 {
        sleep(1.5).await;
        let extended =
            app.request(Method::POST, "/session/extend").header("X-CSRF-Token", &token).send().await.unwrap();
        assert_eq!(extended.status(), StatusCode::OK);
        let status: serde_json::Value = extended.json().await.unwrap();
        assert_eq!(status["idle_expires_in"], 3, "{status}");
    }
    let status: serde_json::Value = app.get("/session/status").await.json().await.unwrap();
    assert_eq!(status["authenticated"], true, "4.5s after login, kept alive by extend: {status}");

    app.logout().await;
    let status: serde_json::Value = app.get("/session/status").await.json().await.unwrap();
    assert_eq!(status["authenticated"], false);
}
matrix!(status_does_not_extend_but_extend_does, [("IDLE_TIMEOUT", "3s"), ("TIMEOUT_WARNING", "1s")]);

async fn server_side_ids_rotate_with_a_grace_period(app: TestApp) {
    app.register("fay@example.com", PASSWORD).await;
    let before = app.session_cookie().expect("session cookie");
    let old_cookies = app.cookies();
    sleep(1.2).await;

    let response = app.get("/account").await;
    assert_eq!(response.status(), StatusCode::OK);
    let after = app.session_cookie().expect("session cookie");
    assert_ne!(before, after, "the id was rotated");
    assert!(app.sending(&old_cookies).is_logged_in().await, "the old id works during the grace period");

    sleep(2.5).await;
    assert!(!app.sending(&old_cookies).is_logged_in().await, "the old id is dead after the grace period");
    assert!(app.is_logged_in().await, "the new id works");
}

#[tokio::test]
async fn redis_ids_rotate_with_a_grace_period() {
    let vars = vec![("ROTATE_INTERVAL", "1s".into()), ("ROTATE_GRACE", "2s".into())];
    server_side_ids_rotate_with_a_grace_period(
        TestApp::spawn_with(Db::Sqlite, Store::Redis, Options { vars, ..Options::default() }).await,
    )
    .await;
}

#[tokio::test]
async fn database_ids_rotate_with_a_grace_period() {
    for db in [Db::Sqlite, Db::Postgres] {
        let vars = vec![("ROTATE_INTERVAL", "1s".into()), ("ROTATE_GRACE", "2s".into())];
        server_side_ids_rotate_with_a_grace_period(
            TestApp::spawn_with(db, Store::Database, Options { vars, ..Options::default() }).await,
        )
        .await;
    }
}

#[tokio::test]
async fn expired_database_sessions_are_purged_by_the_task_and_the_command() {
    let vars = vec![("IDLE_TIMEOUT", "2s".into()), ("TIMEOUT_WARNING", "1s".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Database, Options { vars, ..Options::default() }).await;
    for n in 0..3 {
        let browser = app.new_browser();
        browser.register(&format!("gus{n}@example.com"), PASSWORD).await;
    }
    assert!(app.session_states() >= 3, "server-side state exists");
    sleep(4.5).await; // past the state's lifetime: IDLE_TIMEOUT plus one IDLE_TIMEOUT of margin

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["sessions", "purge"])
        .env("DATABASE_URL", app.database_url())
        .env("SECRET_KEY", secret_key())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    // "purged 0 ended login(s), 3 expired session(s) and 0 old audit event(s)"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "expired").expect("a count of expired sessions");
    let purged: i64 = words[at - 1].parse().unwrap();
    assert!(purged >= 3, "{stdout}");
    assert_eq!(app.session_states(), 0);

    // The periodic task does the same without anyone asking.
    let vars = vec![
        ("IDLE_TIMEOUT", "2s".into()),
        ("TIMEOUT_WARNING", "1s".into()),
        ("SESSION_PURGE_INTERVAL", "1s".into()),
    ];
    let app =
        TestApp::spawn_with(Db::Postgres, Store::Database, Options { vars, ..Options::default() }).await;
    app.register("hal@example.com", PASSWORD).await;
    assert!(app.session_states() >= 1);
    let mut remaining = app.session_states();
    for _ in 0..20 {
        sleep(0.5).await;
        remaining = app.session_states();
        if remaining == 0 {
            break;
        }
    }
    assert_eq!(remaining, 0, "the purge task removed expired state");
}
