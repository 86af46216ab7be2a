//! Public pages, error pages and probes.

use reqwest::{Method, StatusCode};

use crate::support::{attribute_in, text_in, Db, Store, TestApp, PASSWORD};

#[tokio::test]
async fn public_pages_render_for_guests() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    // Each page by what only it has (the navigation names every page): its heading, and the
    // fields of the form it posts to itself, if any.
    let pages: [(&str, &str, &[&str]); 4] = [
        ("/", "Hello, guest", &[]),
        ("/login", "Log in", &["email", "password", "remember", "next", "csrf_token"]),
        ("/register", "Create an account", &["email", "password", "password_confirm", "csrf_token"]),
        ("/logout", "You are not logged in", &[]),
    ];
    for (path, heading, fields) in pages {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        let html = response.text().await.unwrap();
        assert_eq!(text_in(&html, "main h1").as_deref(), Some(heading), "{path}: {html}");
        for field in fields {
            let input = format!(r#"main form[method="post"][action="{path}"] input[name="{field}"]"#);
            assert!(attribute_in(&html, &input, "name").is_some(), "{path}: {input} in {html}");
        }
        assert!(html.contains(r#"<link rel="stylesheet" href="/static/style.css">"#));
    }
    let css = app.get("/static/style.css").await;
    assert_eq!(css.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_navigation_shows_who_is_logged_in() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    app.register("uma@example.com", PASSWORD).await;
    let html = app.get_html("/about").await;
    assert!(html.contains("Signed in as <strong>uma@example.com</strong>"), "{html}");
    assert!(html.contains(r#"action="/logout""#));
    let account = app.get_html("/account").await;
    assert!(account.contains("uma@example.com"));
}

#[tokio::test]
async fn user_input_is_escaped() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let token = app.csrf_token("/register").await;
    let email = "<script>alert(1)</script>";
    let response = app
        .post_form(
            "/register",
            &[("email", email), ("password", "x"), ("password_confirm", "x"), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>alert(1)</script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
}

#[tokio::test]
async fn unknown_paths_get_a_404_page() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let response = app.get("/no/such/page").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let html = response.text().await.unwrap();
    assert!(html.contains("Page not found") && html.contains("<html"), "{html}");
}

#[tokio::test]
async fn oversized_and_malformed_forms_are_refused() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let token = app.csrf_token("/register").await;

    let huge = "a".repeat(100 * 1024);
    let response = app
        .post_form(
            "/register",
            &[
                ("email", huge.as_str()),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.text().await.unwrap().contains("Request too large"));

    let json = app
        .request(Method::POST, "/register")
        .header("Origin", &app.address)
        .header("Content-Type", "application/json")
        .header("X-CSRF-Token", &token)
        .body(r#"{"email":"x@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::BAD_REQUEST, "a JSON body with a valid token");
    assert!(json.text().await.unwrap().contains("Expected a form submission."));

    let duplicated = format!("csrf_token={token}&csrf_token={token}&email=a");
    let response = app
        .request(Method::POST, "/register")
        .header("Origin", &app.address)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(duplicated)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn probes_answer() {
    for store in [Store::Cookie, Store::Redis] {
        let app = TestApp::spawn(Db::Postgres, store).await;
        let health = app.get("/healthz").await;
        assert_eq!(health.status(), StatusCode::OK);
        assert_eq!(health.text().await.unwrap(), "ok");
        assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    }
}
