//! What a session cookie is worth: nothing after logout, nothing when tampered with, and a
//! new one at every login.

use reqwest::StatusCode;

use crate::matrix;
use crate::support::{set_cookie, Db, Options, Store, TestApp, PASSWORD};

async fn a_cookie_replayed_after_logout_is_anonymous(app: TestApp) {
    app.register("lee@example.com", PASSWORD).await;
    let copied = app.cookies();
    assert!(app.sending(&copied).is_logged_in().await, "the copy works before logout");

    app.logout().await;

    assert!(!app.sending(&copied).is_logged_in().await, "the copy is dead after logout");
    let home = app.sending(&copied).get_html("/").await;
    assert!(home.contains("Hello, guest"), "{home}");
}
matrix!(a_cookie_replayed_after_logout_is_anonymous);

async fn the_session_id_changes_at_login(app: TestApp) {
    app.create_user("max@example.com").await;
    app.create_user("nia@example.com").await;

    app.login("max@example.com", PASSWORD).await;
    let first = app.session_cookie().expect("a session cookie after login");
    let first_cookies = app.cookies();

    app.login("nia@example.com", PASSWORD).await;
    let second = app.session_cookie().expect("a session cookie after the second login");
    assert_ne!(first, second, "the session id was renewed");

    // The earlier session does not survive the new login, whatever the store.
    assert!(!app.sending(&first_cookies).is_logged_in().await);
    assert!(app.get_html("/").await.contains("nia@example.com"));
}
matrix!(the_session_id_changes_at_login);

async fn tampered_or_garbage_cookies_are_anonymous(app: TestApp) {
    app.register("ola@example.com", PASSWORD).await;
    let genuine = app.session_cookie().expect("session cookie");
    let mut flipped = genuine.clone().into_bytes();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let truncated = genuine[..genuine.len() / 2].to_owned();

    for value in [flipped.as_str(), truncated.as_str(), "garbage", "", "%00%ff", "a=b=c", &"x".repeat(3000)] {
        let cookies = format!("latchkey_session={value}");
        let response = app.sending(&cookies).get("/account").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{value:?}");
        let response = app.sending(&cookies).get("/").await;
        assert_eq!(response.status(), StatusCode::OK, "{value:?}");
    }
    assert!(app.is_logged_in().await, "the genuine cookie still works");
}
matrix!(tampered_or_garbage_cookies_are_anonymous);

async fn the_session_cookie_goes_out_without_escapes_and_reads_the_same_with_them(app: TestApp) {
    let response = app.register("rae@example.com", PASSWORD).await;
    let session = set_cookie(&response, "latchkey_session").expect("session cookie set");
    let (_, value) = session.split(';').next().unwrap().split_once('=').unwrap();
    assert!(!value.contains('%'), "base64's / and = go out as they are: {session}");
    assert!(app.sending(&format!("latchkey_session={value}")).is_logged_in().await);
    // A browser holding a cookie from before this change sends them escaped: the same cookie.
    let escaped = value.replace('/', "%2F").replace('=', "%3D");
    assert!(app.sending(&format!("latchkey_session={escaped}")).is_logged_in().await, "{escaped}");
}
matrix!(the_session_cookie_goes_out_without_escapes_and_reads_the_same_with_them);

/// The cookie store's cookie carries the whole state on every request, so a login keeps in it
/// only what differs from the defaults: the token and when it was last refreshed (about 110
/// bytes of JSON, 180 characters sealed), and "remember me" when chosen. With every key
/// written it was 326 characters.
#[tokio::test]
async fn a_cookie_store_login_keeps_its_cookie_small() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let response = app.register("sam@example.com", PASSWORD).await;
    let plain = set_cookie(&response, "latchkey_session").expect("session cookie set");
    let plain = plain.split(';').next().unwrap().len();
    assert!(plain <= 220, "{plain} bytes for a plain login");
    app.logout().await;
    let response = app.login_remembered("sam@example.com", PASSWORD).await;
    let remembered = set_cookie(&response, "latchkey_session").expect("session cookie set");
    assert!(remembered.contains("Max-Age"), "the remembered cookie is persistent: {remembered}");
    let remembered = remembered.split(';').next().unwrap().len();
    assert!(remembered > plain && remembered <= 260, "{remembered} bytes remembered, {plain} plain");
}

#[tokio::test]
async fn session_cookie_attributes_in_development() {
    let app = TestApp::spawn(Db::Sqlite, Store::Redis).await;
    let response = app.register("pat@example.com", PASSWORD).await;
    let session = set_cookie(&response, "latchkey_session").expect("session cookie set");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Lax"), "{session}");
    assert!(session.contains("Path=/"), "{session}");
    assert!(!session.to_lowercase().contains("domain="), "{session}");
    assert!(!session.contains("Secure"), "works over http://localhost in development: {session}");
    assert!(app.session_cookie().is_some(), "the browser keeps it");
}

#[tokio::test]
async fn session_cookie_is_secure_and_host_prefixed_in_production() {
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options::production()).await;
    let fields = [("email", "quinn@example.com"), ("password", PASSWORD), ("password_confirm", PASSWORD)];
    let (csrf_cookie, response) = app.submit_in_production("/register", "/register", &fields).await;
    assert!(csrf_cookie.contains("Secure") && csrf_cookie.contains("HttpOnly"), "{csrf_cookie}");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&response, "__Host-latchkey_session").expect("__Host- session cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    assert!(!session.to_lowercase().contains("domain="), "{session}");
}
