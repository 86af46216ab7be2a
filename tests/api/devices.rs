//! "Your devices": every live login, revocation, password change, session protection.

use reqwest::{Method, Response, StatusCode};

use crate::matrix;
use crate::support::{attribute_in, location, Db, Options, Store, TestApp, PASSWORD};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0";
const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// GET /account from a different browser (Chrome, where the login was Firefox's) into
/// which `cookies` were copied.
async fn from_another_browser(app: &TestApp, cookies: &str) -> Response {
    app.new_browser_with_agent(CHROME).sending(cookies).get("/account").await
}

async fn the_devices_page_lists_and_revokes_logins(app: TestApp) {
    app.create_user("ida@example.com").await;
    let laptop = app.new_browser_with_agent(FIREFOX);
    let desktop = app.new_browser_with_agent(CHROME);
    laptop.login("ida@example.com", PASSWORD).await;
    desktop.login("ida@example.com", PASSWORD).await;

    let page = laptop.get_html("/account/sessions").await;
    assert!(page.contains("Firefox 132.0 on Linux"), "{page}");
    assert!(page.contains("Chrome 131.0.0.0 on Windows 10"), "{page}");
    assert_eq!(page.matches("This device").count(), 1);
    assert!(page.contains("127.0.0.1"));
    assert!(page.contains("Until the browser closes"));

    // Revoke the desktop from the laptop.
    let action = attribute_in(&page, r#"form[action$="/revoke"]"#, "action").expect("a revoke form");
    let response = laptop.submit("/account/sessions", &action, &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/account/sessions");
    assert!(!desktop.is_logged_in().await, "the revoked device is logged out at once");
    assert!(laptop.is_logged_in().await);

    // Someone else cannot revoke this user's sessions, even with a real id.
    let ids: Vec<String> = {
        let page = laptop.get_html("/account/sessions").await;
        let document = scraper::Html::parse_document(&page);
        let selector = scraper::Selector::parse("form").unwrap();
        document.select(&selector).filter_map(|f| f.value().attr("action").map(str::to_owned)).collect()
    };
    let intruder = app.new_browser_with_agent(CHROME);
    app.create_user("jay@example.com").await;
    intruder.login("jay@example.com", PASSWORD).await;
    let forged = "/account/sessions/0000000000000000000000000000000000000000000000000000000000000000/revoke";
    for action in ids.iter().map(String::as_str).filter(|a| a.ends_with("/revoke")).chain([forged]) {
        let response = intruder.submit("/account/sessions", action, &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{action}");
    }
    assert!(laptop.is_logged_in().await);
}
matrix!(the_devices_page_lists_and_revokes_logins);

async fn log_out_everywhere_else(app: TestApp) {
    app.create_user("kai@example.com").await;
    let devices: Vec<_> = (0..3).map(|_| app.new_browser_with_agent(FIREFOX)).collect();
    for device in &devices {
        device.login("kai@example.com", PASSWORD).await;
    }
    let response = devices[0].submit("/account/sessions", "/account/sessions/revoke-others", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = devices[0].get_html("/account/sessions").await;
    // Three other devices, plus the browser create_user registered with.
    assert!(page.contains("Logged out 3 other sessions."), "{page}");
    assert!(devices[0].is_logged_in().await);
    assert!(!devices[1].is_logged_in().await);
    assert!(!devices[2].is_logged_in().await);
}
matrix!(log_out_everywhere_else);

async fn changing_the_password_ends_other_sessions_and_rotates_this_one(app: TestApp) {
    app.create_user("lou@example.com").await;
    let phone = app.new_browser_with_agent(CHROME);
    phone.login("lou@example.com", PASSWORD).await;
    app.login("lou@example.com", PASSWORD).await;
    let before = app.cookies();

    let new = "a much better passphrase";
    let app = &app;
    let attempt = |current: &'static str, confirm: &'static str| async move {
        let fields =
            [("current_password", current), ("new_password", new), ("new_password_confirm", confirm)];
        app.submit("/account/password", "/account/password", &fields).await
    };
    let wrong = attempt("not my password", "a much better passphrase").await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.text().await.unwrap().contains("Your current password is not correct."));
    let mismatch = attempt(PASSWORD, "a different passphrase").await;
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(phone.is_logged_in().await, "failed attempts change nothing");

    let changed = attempt(PASSWORD, "a much better passphrase").await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert!(app.is_logged_in().await, "this session continues");
    assert_ne!(app.cookies(), before, "under a new session id");
    assert!(!app.sending(&before).is_logged_in().await, "the old id is dead");
    assert!(!phone.is_logged_in().await, "other sessions ended");

    app.logout().await;
    assert_eq!(app.login("lou@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("lou@example.com", new).await.status(), StatusCode::SEE_OTHER);
}
matrix!(changing_the_password_ends_other_sessions_and_rotates_this_one);

async fn strong_protection_ends_a_session_whose_browser_changes(app: TestApp) {
    app.create_user("max@example.com").await;
    let device = app.new_browser_with_agent(FIREFOX);
    device.login("max@example.com", PASSWORD).await;
    assert!(device.is_logged_in().await);

    let response = from_another_browser(&app, &device.cookies()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(!device.is_logged_in().await, "strong protection ended the login itself");
}
matrix!(strong_protection_ends_a_session_whose_browser_changes, [("SESSION_PROTECTION", "strong")]);

async fn basic_protection_marks_the_session_not_fresh(app: TestApp) {
    app.create_user("ned@example.com").await;
    let device = app.new_browser_with_agent(FIREFOX);
    device.login("ned@example.com", PASSWORD).await;
    let page = device.get_html("/account/sessions").await;
    assert!(!page.contains("IP address or browser changed"));

    let response = from_another_browser(&app, &device.cookies()).await;
    assert_eq!(response.status(), StatusCode::OK, "basic protection keeps the session");
    let page = device.get_html("/account/sessions").await;
    assert!(page.contains("IP address or browser changed"), "{page}");
}
matrix!(basic_protection_marks_the_session_not_fresh);

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    for (trusted, expected) in [("", "127.0.0.1"), ("127.0.0.1", "203.0.113.7")] {
        let vars = vec![("TRUSTED_PROXIES", trusted.to_owned())];
        let app =
            TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options { vars, ..Options::default() }).await;
        app.create_user("ola@example.com").await;
        let token = app.csrf_token("/login").await;
        app.request(Method::POST, "/login")
            .header("Origin", &app.address)
            .header("X-Forwarded-For", "203.0.113.7")
            .form(&[("email", "ola@example.com"), ("password", PASSWORD), ("csrf_token", &token)])
            .send()
            .await
            .unwrap();
        let page = app.get_html("/account/sessions").await;
        assert!(page.contains(&format!("<dd>{expected}</dd>")), "TRUSTED_PROXIES={trusted:?}: {page}");
    }
}

#[tokio::test]
async fn protection_off_ignores_a_changed_browser() {
    let vars = vec![("SESSION_PROTECTION", "off".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Database, Options { vars, ..Options::default() }).await;
    app.create_user("pia@example.com").await;
    let device = app.new_browser_with_agent(FIREFOX);
    device.login("pia@example.com", PASSWORD).await;
    let response = from_another_browser(&app, &device.cookies()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = device.get_html("/account/sessions").await;
    assert!(!page.contains("IP address or browser changed"), "{page}");
}
