//! Every state-changing POST needs this browser's CSRF token and a same-site origin; a refused
//! request changes nothing.

use reqwest::StatusCode;

use crate::helpers::{Db, Store, TestApp, PASSWORD};

fn register_fields<'a>(email: &'a str, token: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("email", email), ("password", PASSWORD), ("password_confirm", PASSWORD), ("csrf_token", token)]
}

#[tokio::test]
async fn registration_without_a_valid_token_is_403_and_creates_nothing() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let own = app.csrf_token("/register").await;
    let foreign = app.new_browser().csrf_token("/register").await;
    assert_ne!(own, foreign);

    let missing = vec![("email", "rita@example.com"), ("password", PASSWORD), ("password_confirm", PASSWORD)];
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing", missing),
        ("empty", register_fields("rita@example.com", "")),
        ("wrong", register_fields("rita@example.com", "bm90IGEgdG9rZW4")),
        ("foreign", register_fields("rita@example.com", &foreign)),
    ];
    for (what, fields) in cases {
        let response = app.post_form("/register", &fields).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what} token");
        let html = response.text().await.unwrap();
        assert!(html.contains("Forbidden") && html.contains("<html"), "an HTML error page: {html}");
    }

    // Cross-site requests are refused even with a valid token.
    let fields = register_fields("rita@example.com", &own);
    let evil_origin = app
        .client
        .post(app.url("/register"))
        .header("Origin", "https://evil.example")
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(evil_origin.status(), StatusCode::FORBIDDEN);
    let null_origin =
        app.client.post(app.url("/register")).header("Origin", "null").form(&fields).send().await.unwrap();
    assert_eq!(null_origin.status(), StatusCode::FORBIDDEN);
    let cross_site = app
        .client
        .post(app.url("/register"))
        .header("Sec-Fetch-Site", "cross-site")
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    assert_eq!(
        app.login("rita@example.com", PASSWORD, "").await.status(),
        StatusCode::UNAUTHORIZED,
        "no account"
    );

    // The same form with this browser's token goes through.
    let ok = app.post_form("/register", &register_fields("rita@example.com", &own)).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn logout_without_a_valid_token_is_403_and_keeps_the_session() {
    let app = TestApp::spawn(Db::Postgres, Store::Redis).await;
    app.register("sam@example.com", PASSWORD).await;
    let foreign = app.new_browser().csrf_token("/logout").await;

    for token in ["", "nope", foreign.as_str()] {
        let response = app.post_form("/logout", &[("csrf_token", token)]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{token:?}");
        assert!(app.is_logged_in().await);
    }
    let no_field = app.post_form("/logout", &[]).await;
    assert_eq!(no_field.status(), StatusCode::FORBIDDEN);
    assert!(app.is_logged_in().await);
}

#[tokio::test]
async fn login_needs_a_token_too() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    app.create_user("tess@example.com").await;
    let response = app.post_form("/login", &[("email", "tess@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(!app.is_logged_in().await);
}
