//! "Your devices": every live login, revocation, password change, session protection.

use reqwest::StatusCode;

use crate::helpers::{attribute_in, location, Db, Options, Store, TestApp, PASSWORD};
use crate::matrix;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0";
const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A browser with its own cookie jar and user agent.
struct Device {
    client: reqwest::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
}

impl Device {
    fn new(user_agent: &str) -> Self {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { client, jar }
    }

    async fn get(&self, app: &TestApp, path: &str) -> reqwest::Response {
        self.client.get(app.url(path)).send().await.unwrap()
    }

    async fn post(&self, app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.client.post(app.url(path)).header("Origin", &app.address).form(fields).send().await.unwrap()
    }

    async fn token(&self, app: &TestApp, path: &str) -> String {
        crate::helpers::csrf_token_in(&self.get(app, path).await.text().await.unwrap())
    }

    async fn login(&self, app: &TestApp, email: &str, password: &str) -> reqwest::Response {
        let token = self.token(app, "/login").await;
        self.post(app, "/login", &[("email", email), ("password", password), ("csrf_token", &token)]).await
    }

    async fn logged_in(&self, app: &TestApp) -> bool {
        self.get(app, "/account").await.status() == StatusCode::OK
    }

    fn cookies(&self, app: &TestApp) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&app.address.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// GET /account with `cookies` copied into a different browser (Chrome instead of Firefox).
async fn from_another_browser(app: &TestApp, cookies: &str) -> reqwest::Response {
    let other = reqwest::Client::builder()
        .user_agent(CHROME)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    other.get(app.url("/account")).header("Cookie", cookies).send().await.unwrap()
}

async fn the_devices_page_lists_and_revokes_logins(app: TestApp) {
    app.create_user("ida@example.com").await;
    let laptop = Device::new(FIREFOX);
    let desktop = Device::new(CHROME);
    laptop.login(&app, "ida@example.com", PASSWORD).await;
    desktop.login(&app, "ida@example.com", PASSWORD).await;

    let page = laptop.get(&app, "/account/sessions").await.text().await.unwrap();
    assert!(page.contains("Firefox 132.0 on Linux"), "{page}");
    assert!(page.contains("Chrome 131.0.0.0 on Windows 10"), "{page}");
    assert_eq!(page.matches("This device").count(), 1);
    assert!(page.contains("127.0.0.1"));
    assert!(page.contains("Until the browser closes"));

    // Revoke the desktop from the laptop.
    let action = attribute_in(&page, r#"form[action$="/revoke"]"#, "action").expect("a revoke form");
    let token = crate::helpers::csrf_token_in(&page);
    let response = laptop.post(&app, &action, &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/account/sessions");
    assert!(!desktop.logged_in(&app).await, "the revoked device is logged out at once");
    assert!(laptop.logged_in(&app).await);

    // Someone else cannot revoke this user's sessions, even with a real id.
    let ids: Vec<String> = {
        let page = laptop.get(&app, "/account/sessions").await.text().await.unwrap();
        let document = scraper::Html::parse_document(&page);
        let selector = scraper::Selector::parse("form").unwrap();
        document.select(&selector).filter_map(|f| f.value().attr("action").map(str::to_owned)).collect()
    };
    let intruder = Device::new(CHROME);
    app.create_user("jay@example.com").await;
    intruder.login(&app, "jay@example.com", PASSWORD).await;
    let token = intruder.token(&app, "/account/sessions").await;
    let forged = intruder
        .post(
            &app,
            "/account/sessions/0000000000000000000000000000000000000000000000000000000000000000/revoke",
            &[("csrf_token", &token)],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
    for action in ids.iter().filter(|a| a.ends_with("/revoke")) {
        let response = intruder.post(&app, action, &[("csrf_token", &token)]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{action}");
    }
    assert!(laptop.logged_in(&app).await);
}
matrix!(the_devices_page_lists_and_revokes_logins);

async fn log_out_everywhere_else(app: TestApp) {
    app.create_user("kai@example.com").await;
    let devices: Vec<Device> = (0..3).map(|_| Device::new(FIREFOX)).collect();
    for device in &devices {
        device.login(&app, "kai@example.com", PASSWORD).await;
    }
    let token = devices[0].token(&app, "/account/sessions").await;
    let response = devices[0].post(&app, "/account/sessions/revoke-others", &[("csrf_token", &token)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = devices[0].get(&app, "/account/sessions").await.text().await.unwrap();
    // Three other devices, plus the browser create_user registered with.
    assert!(page.contains("Logged out 3 other sessions."), "{page}");
    assert!(devices[0].logged_in(&app).await);
    assert!(!devices[1].logged_in(&app).await);
    assert!(!devices[2].logged_in(&app).await);
}
matrix!(log_out_everywhere_else);

async fn changing_the_password_ends_other_sessions_and_rotates_this_one(app: TestApp) {
    app.create_user("lou@example.com").await;
    let phone = Device::new(CHROME);
    phone.login(&app, "lou@example.com", PASSWORD).await;
    app.login("lou@example.com", PASSWORD, "").await;
    let before = app.cookies();

    let token = app.csrf_token("/account/password").await;
    let new = "a much better passphrase";
    let app = &app;
    let token = &token;
    let attempt = |current: &'static str, confirm: &'static str| async move {
        app.post_form(
            "/account/password",
            &[
                ("current_password", current),
                ("new_password", new),
                ("new_password_confirm", confirm),
                ("csrf_token", token),
            ],
        )
        .await
    };
    let wrong = attempt("not my password", "a much better passphrase").await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.text().await.unwrap().contains("Your current password is not correct."));
    let mismatch = attempt(PASSWORD, "a different passphrase").await;
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(phone.logged_in(app).await, "failed attempts change nothing");

    let changed = attempt(PASSWORD, "a much better passphrase").await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert!(app.is_logged_in().await, "this session continues");
    assert_ne!(app.cookies(), before, "under a new session id");
    assert!(!app.is_logged_in_with(&before).await, "the old id is dead");
    assert!(!phone.logged_in(app).await, "other sessions ended");

    app.logout().await;
    assert_eq!(app.login("lou@example.com", PASSWORD, "").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("lou@example.com", new, "").await.status(), StatusCode::SEE_OTHER);
}
matrix!(changing_the_password_ends_other_sessions_and_rotates_this_one);

async fn strong_protection_ends_a_session_whose_browser_changes(app: TestApp) {
    app.create_user("max@example.com").await;
    let device = Device::new(FIREFOX);
    device.login(&app, "max@example.com", PASSWORD).await;
    assert!(device.logged_in(&app).await);

    let response = from_another_browser(&app, &device.cookies(&app)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(!device.logged_in(&app).await, "strong protection ended the login itself");
}
matrix!(strong_protection_ends_a_session_whose_browser_changes, [("SESSION_PROTECTION", "strong")]);

async fn basic_protection_marks_the_session_not_fresh(app: TestApp) {
    app.create_user("ned@example.com").await;
    let device = Device::new(FIREFOX);
    device.login(&app, "ned@example.com", PASSWORD).await;
    let page = device.get(&app, "/account/sessions").await.text().await.unwrap();
    assert!(!page.contains("IP address or browser changed"));

    let response = from_another_browser(&app, &device.cookies(&app)).await;
    assert_eq!(response.status(), StatusCode::OK, "basic protection keeps the session");
    let page = device.get(&app, "/account/sessions").await.text().await.unwrap();
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
        app.client
            .post(app.url("/login"))
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
    let device = Device::new(FIREFOX);
    device.login(&app, "pia@example.com", PASSWORD).await;
    let response = from_another_browser(&app, &device.cookies(&app)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = device.get(&app, "/account/sessions").await.text().await.unwrap();
    assert!(!page.contains("IP address or browser changed"), "{page}");
}
