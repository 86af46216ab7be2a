//! Re-authentication ("sudo mode", Flask-Login's `fresh_login_required`): sensitive actions
//! need a login whose password was entered within `REAUTH_WINDOW` and that session protection
//! has not flagged; a stale one is sent to `/reauth` and back. And the two actions that came
//! with it: changing the email and deleting the account.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::matrix;
use crate::support::{attribute_in, location, set_cookie, Browser, TestApp, PASSWORD};

/// Short enough for a test to wait it out.
const WINDOW: Duration = Duration::from_secs(2);

async fn wait_out_the_window() {
    tokio::time::sleep(WINDOW + Duration::from_millis(300)).await;
}

/// The protected pages and form posts, each with where re-authentication returns to.
const PROTECTED_PAGES: &[&str] = &["/account/password", "/account/email", "/account/delete"];

async fn reauthenticate(browser: &Browser, next: &str, password: &str) -> reqwest::Response {
    let page = browser.get(&format!("/reauth?next={next}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Confirm it"), "{html}");
    let token = crate::support::csrf_token_in(&html);
    let fields = [("password", password), ("next", next), ("csrf_token", token.as_str())];
    browser.post_form("/reauth", &fields).await
}

async fn a_stale_login_proves_itself_again_before_sensitive_actions(app: TestApp) {
    app.create_user("sudo@example.com").await;
    let other_device = app.new_browser();
    other_device.login("sudo@example.com", PASSWORD).await;
    app.login("sudo@example.com", PASSWORD).await;
    for page in PROTECTED_PAGES {
        assert_eq!(app.get(page).await.status(), StatusCode::OK, "{page} right after logging in");
    }
    let devices = app.get_html("/account/sessions").await;
    // create_user's registration, the other device and this one.
    assert_eq!(devices.matches("Password entered recently").count(), 3, "{devices}");
    let token = app.csrf_token("/account/sessions").await;

    wait_out_the_window().await;
    assert!(app.is_logged_in().await, "a stale login is still a login");
    assert!(app.get_html("/account/sessions").await.contains("Password needed for sensitive changes"));
    for page in PROTECTED_PAGES {
        let response = app.get(page).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(location(&response), format!("/reauth?next={page}"));
    }
    let revoke_others = app.post_form("/account/sessions/revoke-others", &[("csrf_token", &token)]).await;
    assert_eq!(revoke_others.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&revoke_others), "/reauth?next=/account/sessions", "back to the form's page");
    assert!(other_device.is_logged_in().await, "the action did not run");
    let json = app
        .request(Method::POST, "/account/sessions/revoke-others")
        .header("Origin", &app.address)
        .header("Accept", "application/json")
        .form(&[("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = json.json().await.unwrap();
    assert_eq!(body["reauth"], "/reauth?next=/account/sessions");

    let wrong = reauthenticate(&app, "/account/sessions", "not my password at all").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await.unwrap().contains("That password is not correct."));
    assert_eq!(app.get("/account/password").await.status(), StatusCode::SEE_OTHER, "still stale");

    let before = app.session_cookie();
    let proved = reauthenticate(&app, "/account/sessions", PASSWORD).await;
    assert_eq!(proved.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&proved), "/account/sessions");
    assert!(set_cookie(&proved, "latchkey_session").is_some(), "the session cookie is renewed");
    assert_ne!(app.session_cookie(), before);
    let token = app.csrf_token("/account/sessions").await;
    let revoked = app.post_form("/account/sessions/revoke-others", &[("csrf_token", &token)]).await;
    assert_eq!(location(&revoked), "/account/sessions", "submitted again, it runs");
    assert!(!other_device.is_logged_in().await);

    // `next` is only ever a path of this site.
    let outside = reauthenticate(&app, "https://evil.example/", PASSWORD).await;
    assert_eq!(location(&outside), "/");
}
matrix!(a_stale_login_proves_itself_again_before_sensitive_actions, [("REAUTH_WINDOW", "2s")]);

async fn a_login_flagged_by_session_protection_must_prove_itself(app: TestApp) {
    app.create_user("flag@example.com").await;
    let laptop = app.new_browser_with_agent("Firefox");
    laptop.login("flag@example.com", PASSWORD).await;
    assert_eq!(laptop.get("/account/password").await.status(), StatusCode::OK);

    // The same cookies from another browser: basic protection keeps the login, not fresh.
    let elsewhere = app.new_browser_with_agent("Chrome").sending(&laptop.cookies());
    assert_eq!(elsewhere.get("/account").await.status(), StatusCode::OK);
    let response = elsewhere.get("/account/password").await;
    assert_eq!(location(&response), "/reauth?next=/account/password", "flagged within the window");
    assert_eq!(laptop.get("/account/password").await.status(), StatusCode::SEE_OTHER, "on every device");

    // Proving it from the new browser makes that browser the login's.
    let proved = reauthenticate(&laptop, "/account/password", PASSWORD).await;
    assert_eq!(proved.status(), StatusCode::SEE_OTHER);
    assert_eq!(laptop.get("/account/password").await.status(), StatusCode::OK);
}
matrix!(a_login_flagged_by_session_protection_must_prove_itself);

async fn deleting_the_account_removes_it_with_every_login_and_cart(app: TestApp) {
    app.create_user("leaving@example.com").await;
    let phone = app.new_browser();
    phone.login("leaving@example.com", PASSWORD).await;
    app.login("leaving@example.com", PASSWORD).await;
    app.add_to_cart("1", "2").await;
    assert!(!app.cart().await.is_empty());
    let copied = app.cookies();

    let page = app.get_html("/account/delete").await;
    assert_eq!(attribute_in(&page, "form[action=\"/account/delete\"]", "method").as_deref(), Some("post"));
    let refused = app.submit("/account/delete", "/account/delete", &[("confirm", "yes")]).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(app.is_logged_in().await, "nothing was deleted");

    let deleted = app.submit("/account/delete", "/account/delete", &[("confirm", "delete")]).await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&deleted), "/");
    assert!(!app.is_logged_in().await);
    assert!(!phone.is_logged_in().await, "every device is logged out");
    assert!(!app.sending(&copied).is_logged_in().await);
    assert_eq!(app.login("leaving@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    use diesel::{QueryDsl, RunQueryDsl};
    let mut conn = app.connection();
    let logins: i64 = latchkey_auth::registry::schema::logins::table.count().get_result(&mut conn).unwrap();
    let carts: i64 = latchkey::db::schema::cart_items::table.count().get_result(&mut conn).unwrap();
    assert_eq!((logins, carts), (0, 0), "no login or cart line is left");
    // The address is free again.
    assert_eq!(app.register("leaving@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
}
matrix!(deleting_the_account_removes_it_with_every_login_and_cart);

/// A form's fields.
type Fields = &'static [(&'static str, &'static str)];

/// Every protected form, posted by a stale login: 303 to `/reauth` with the form's page as
/// `next`, and nothing done.
async fn every_protected_action_sends_a_stale_login_to_reauth(app: TestApp) {
    app.register("stale@example.com", PASSWORD).await;
    let token = app.csrf_token("/account").await;
    wait_out_the_window().await;
    let actions: &[(&str, Fields, &str)] = &[
        ("/account/sessions/revoke-others", &[], "/account/sessions"),
        ("/account/sessions/0123/revoke", &[], "/account/sessions"),
        (
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "another long passphrase"),
                ("new_password_confirm", "another long passphrase"),
            ],
            "/account/password",
        ),
        ("/account/email", &[("new_email", "moved@example.com")], "/account/email"),
        ("/account/delete", &[("confirm", "delete")], "/account/delete"),
        ("/account/security/totp", &[], "/account/security"),
        ("/account/security/totp/confirm", &[("code", "123456")], "/account/security"),
        ("/account/security/totp/disable", &[("code", "123456")], "/account/security"),
        ("/account/security/recovery-codes", &[], "/account/security"),
    ];
    for (action, fields, page) in actions {
        let mut form = fields.to_vec();
        form.push(("csrf_token", &token));
        let response = app.post_form(action, &form).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{action}");
        assert_eq!(location(&response), format!("/reauth?next={page}"), "{action}");
    }
    assert!(app.is_logged_in().await, "nothing was deleted");
    assert!(app.get_html("/account").await.contains("stale@example.com"), "nor changed");
    let fresh = app.new_browser();
    assert_eq!(fresh.login("stale@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
}
matrix!(every_protected_action_sends_a_stale_login_to_reauth, [("REAUTH_WINDOW", "2s")]);
