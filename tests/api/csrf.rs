//! Every state-changing POST needs this browser's CSRF token and a same-site origin; a refused
//! request changes nothing.

use reqwest::{Method, StatusCode};

use crate::matrix;
use crate::support::{forged_forms, with_token, Db, Store, TestApp, PASSWORD};

#[tokio::test]
async fn registration_without_a_valid_token_is_403_and_creates_nothing() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let own = app.csrf_token("/register").await;
    let foreign = app.new_browser().csrf_token("/register").await;
    assert_ne!(own, foreign);

    let fields = [("email", "rita@example.com"), ("password", PASSWORD), ("password_confirm", PASSWORD)];
    for (what, forged) in forged_forms(&fields, &foreign) {
        let response = app.post_form("/register", &forged).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what} token");
        let html = response.text().await.unwrap();
        assert!(html.contains("Forbidden") && html.contains("<html"), "an HTML error page: {html}");
    }

    // Cross-site requests are refused even with a valid token.
    let valid = with_token(&fields, &own);
    for origin in ["https://evil.example", "null"] {
        let response = app.post_form_from(origin, "/register", &valid).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "Origin: {origin}");
    }
    let cross_site = app
        .request(Method::POST, "/register")
        .header("Sec-Fetch-Site", "cross-site")
        .form(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    assert_eq!(
        app.login("rita@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED,
        "no account"
    );

    // The same form with this browser's token goes through.
    let ok = app.post_form("/register", &valid).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn logout_without_a_valid_token_is_403_and_keeps_the_session() {
    let app = TestApp::spawn(Db::Postgres, Store::Redis).await;
    app.register("sam@example.com", PASSWORD).await;
    let foreign = app.new_browser().csrf_token("/logout").await;

    for (what, forged) in forged_forms(&[], &foreign) {
        let response = app.post_form("/logout", &forged).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what} token");
        assert!(app.is_logged_in().await, "{what} token");
    }
}

#[tokio::test]
async fn login_needs_a_token_too() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    app.create_user("tess@example.com").await;
    let response = app.post_form("/login", &[("email", "tess@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(!app.is_logged_in().await);
}

/// The CSRF secret is renewed at login and at logout: a token from before either is refused.
async fn tokens_from_before_a_login_or_logout_are_refused(app: TestApp) {
    app.create_user("tok@example.com").await;
    let before_login = app.csrf_token("/login").await;
    assert_eq!(app.login("tok@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let stale = app.post_form("/logout", &[("csrf_token", &before_login)]).await;
    assert_eq!(stale.status(), StatusCode::FORBIDDEN, "a token from before the login");
    assert!(app.is_logged_in().await);

    let before_logout = app.csrf_token("/account").await;
    assert_eq!(app.logout().await.status(), StatusCode::SEE_OTHER);
    let fields =
        [("email", "tok@example.com"), ("password", PASSWORD), ("csrf_token", before_logout.as_str())];
    let stale = app.post_form("/login", &fields).await;
    assert_eq!(stale.status(), StatusCode::FORBIDDEN, "a token from before the logout");
    assert!(!app.is_logged_in().await);
    assert_eq!(app.login("tok@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
}
matrix!(tokens_from_before_a_login_or_logout_are_refused);

/// A POST without a token is refused before its body is parsed, whatever its content type.
#[tokio::test]
async fn a_post_without_a_token_is_forbidden_whatever_its_content_type() {
    let app = TestApp::spawn(Db::Sqlite, Store::Database).await;
    app.get("/register").await;
    for (content_type, body) in [
        ("application/json", r#"{"email":"x@example.com"}"#),
        (
            "multipart/form-data; boundary=x",
            "--x\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nx\r\n--x--",
        ),
        ("text/plain", "email=x@example.com"),
        ("application/x-www-form-urlencoded", "email=x%40example.com"),
        ("application/x-www-form-urlencoded", "%%%not a form"),
    ] {
        let response = app
            .request(reqwest::Method::POST, "/register")
            .header("Origin", &app.address)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{content_type}: {body}");
    }
}
