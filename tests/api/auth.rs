//! Registration, login, `next` handling and logout.

use reqwest::{Method, StatusCode};

use crate::matrix;
use crate::support::{attribute_in, csrf_token_in, location, Db, Options, Store, TestApp, PASSWORD};

async fn register_logs_the_user_in(app: TestApp) {
    let response = app.register("alice@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");

    let home = app.get_html("/").await;
    assert!(home.contains("Welcome back, alice@example.com"), "{home}");
    assert!(home.contains("Welcome! Your account has been created"), "flash shown: {home}");
    assert!(app.is_logged_in().await);
}
matrix!(register_logs_the_user_in);

async fn login_then_logout(app: TestApp) {
    app.create_user("bob@example.com").await;

    let response = app.login("bob@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    assert!(app.get_html("/").await.contains("You are logged in."));
    assert!(app.is_logged_in().await);

    let response = app.logout().await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/?logged_out=1");
    let home = app.get_html(&location(&response)).await;
    assert!(home.contains("You have been logged out."), "{home}");
    assert!(home.contains("Hello, guest"), "{home}");
    assert!(!app.is_logged_in().await);
}
matrix!(login_then_logout);

#[tokio::test]
async fn invalid_registration_is_422_with_field_errors_and_creates_nothing() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let token = app.csrf_token("/register").await;
    let cases: [(&str, &str, &str, &str); 4] = [
        ("not-an-email", PASSWORD, PASSWORD, "Enter a valid email address."),
        ("", PASSWORD, PASSWORD, "Enter your email address."),
        ("carol@example.com", "short", "short", "Use at least 12 characters."),
        ("carol@example.com", PASSWORD, "something else entirely", "The passwords do not match."),
    ];
    for (email, password, confirm, message) in cases {
        let response = app
            .post_form(
                "/register",
                &[
                    ("email", email),
                    ("password", password),
                    ("password_confirm", confirm),
                    ("csrf_token", &token),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{email}/{password}");
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{message} in {html}");
        assert!(html.contains(&format!(r#"value="{email}""#)), "typed email kept");
        assert!(!html.contains(password) || password.is_empty(), "password echoed");
    }
    let response = app.login("carol@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no account was created");
}

#[tokio::test]
async fn emails_are_normalised_and_unique_case_insensitively() {
    let app = TestApp::spawn(Db::Postgres, Store::Cookie).await;
    assert_eq!(app.register("  Dave@Example.COM ", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    app.logout().await;

    let response = app.register("dave@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.unwrap().contains("An account with this email already exists."));

    assert_eq!(app.login("DAVE@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
}

async fn concurrent_registrations_make_one_account(app: TestApp) {
    let browsers: Vec<_> = (0..4).map(|_| app.new_browser()).collect();
    let attempts = browsers.iter().map(|b| b.register("eve@example.com", PASSWORD));
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all(attempts).await.iter().map(|r| r.status()).collect();
    let created = statuses.iter().filter(|s| **s == StatusCode::SEE_OTHER).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY).count();
    assert_eq!((created, refused), (1, 3), "{statuses:?}");
}
matrix!(concurrent_registrations_make_one_account);

#[tokio::test]
async fn login_follows_a_safe_next_and_ignores_hostile_ones() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    app.create_user("frank@example.com").await;

    let response = app.login_with_next("frank@example.com", PASSWORD, "/account?tab=1").await;
    assert_eq!(location(&response), "/account?tab=1");

    let hostile = [
        "https://evil.example",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\r\n/evil.example",
        " //evil.example",
        "evil.example",
        "data:text/html,hi",
        "%2F%2Fevil.example",
    ];
    for next in hostile {
        let response = app.login_with_next("frank@example.com", PASSWORD, next).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(location(&response), "/", "{next:?}");
    }
}

#[tokio::test]
async fn login_required_pages_redirect_anonymous_visitors_with_next() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    for path in ["/account", "/about", "/contact"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&response), format!("/login?next={path}"));
    }
    let response = app.get("/account?tab=devices&x=1").await;
    assert_eq!(location(&response), "/login?next=/account%3Ftab%3Ddevices%26x%3D1");

    let json =
        app.request(Method::GET, "/account").header("Accept", "application/json").send().await.unwrap();
    assert_eq!(json.status(), StatusCode::UNAUTHORIZED);

    // Following the redirect, logging in lands back where the visitor was going.
    app.create_user("gina@example.com").await;
    let login_page = app.get_html("/login?next=/account%3Ftab%3Ddevices%26x%3D1").await;
    let next = attribute_in(&login_page, r#"input[name="next"]"#, "value");
    assert_eq!(next.as_deref(), Some("/account?tab=devices&x=1"));
    let response = app.login_with_next("gina@example.com", PASSWORD, "/account?tab=devices&x=1").await;
    assert_eq!(location(&response), "/account?tab=devices&x=1");
    for path in ["/account", "/about", "/contact"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let app = TestApp::spawn(Db::Postgres, Store::Cookie).await;
    app.create_user("hank@example.com").await;

    let wrong = app.login("hank@example.com", "wrong password here").await;
    let wrong_status = wrong.status();
    let wrong_html = wrong.text().await.unwrap();
    let unknown = app.login("nobody@example.com", "wrong password here").await;
    let unknown_status = unknown.status();
    let unknown_html = unknown.text().await.unwrap();

    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_status, StatusCode::UNAUTHORIZED);
    for html in [&wrong_html, &unknown_html] {
        assert_eq!(html.matches("Invalid email or password.").count(), 1, "{html}");
    }
    // Apart from the echoed email and the CSRF token, the pages are identical.
    let normalise = |html: &str, email: &str| {
        let token = csrf_token_in(html);
        html.replace(email, "EMAIL").replace(&token, "TOKEN")
    };
    assert_eq!(normalise(&wrong_html, "hank@example.com"), normalise(&unknown_html, "nobody@example.com"));
    assert!(!app.is_logged_in().await);
}

#[tokio::test]
async fn the_72_byte_prefix_of_a_long_password_does_not_log_in() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let long: String = "pässwörd-".repeat(12); // 108 characters, 132 bytes
    assert_eq!(app.register("ivy@example.com", &long).await.status(), StatusCode::SEE_OTHER);
    app.logout().await;

    let prefix = &long.as_bytes()[..72];
    let prefix = String::from_utf8_lossy(prefix).into_owned();
    assert_eq!(app.login("ivy@example.com", &prefix).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("ivy@example.com", &long).await.status(), StatusCode::SEE_OTHER);

    // Absurdly long passwords are refused outright, without hashing.
    let absurd = "x".repeat(2000);
    let response = app.register("ivy2@example.com", &absurd).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.login("ivy@example.com", &absurd).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn emoji_and_unicode_passwords_work() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let password = "🔑 ключ 鍵 clé ".repeat(5);
    assert_eq!(app.register("jo@example.com", &password).await.status(), StatusCode::SEE_OTHER);
    app.logout().await;
    assert_eq!(app.login("jo@example.com", &password).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn get_logout_changes_nothing() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    app.register("kim@example.com", PASSWORD).await;
    let page = app.get("/logout").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains(r#"action="/logout""#));
    assert!(app.is_logged_in().await);
}

#[tokio::test]
async fn an_unknown_email_takes_as_long_as_a_wrong_password() {
    // A real work factor, so that bcrypt dominates the time of a failed login.
    let options = Options { vars: vec![("BCRYPT_COST", "10".into())], ..Options::default() };
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, options).await;
    app.create_user("ruth@example.com").await;
    let token = app.csrf_token("/login").await;
    let attempt = |email: &'static str| {
        let token = token.clone();
        let app = &app;
        async move {
            let started = std::time::Instant::now();
            let fields = [("email", email), ("password", "wrong password here"), ("csrf_token", &token)];
            let response = app.post_form("/login", &fields).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            started.elapsed().as_secs_f64()
        }
    };
    // The fastest of several, interleaved: other tests share the machine.
    let (mut known, mut unknown) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        known = known.min(attempt("ruth@example.com").await);
        unknown = unknown.min(attempt("nobody@example.com").await);
    }
    // Without the dummy hash an unknown email answers in well under a millisecond of work;
    // hashing twice, or at another cost, would make it much slower.
    let ratio = unknown / known;
    assert!((0.5..2.0).contains(&ratio), "unknown {unknown:.3}s vs known {known:.3}s");
}
