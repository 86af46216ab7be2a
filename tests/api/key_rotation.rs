//! Rolling to a new `SECRET_KEY`: with `SECRET_KEY_PREVIOUS` set to the old one, cookies and
//! CSRF tokens made under it keep working and are re-issued under the new key; once the old key
//! is dropped, only what was re-issued still works.

use reqwest::StatusCode;

use crate::matrix;
use crate::support::{csrf_token_in, location, secret_key, set_cookie, TestApp, PASSWORD};

matrix!(the_previous_key_still_opens_cookies_and_tokens_which_come_back_under_the_new_key);

async fn the_previous_key_still_opens_cookies_and_tokens_which_come_back_under_the_new_key(app: TestApp) {
    let old_key = app.setting("SECRET_KEY").to_owned();
    let new_key = secret_key();
    app.create_user("rotate@example.com").await;
    assert_eq!(app.login_remembered("rotate@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let old_page_token = app.csrf_token("/preferences").await;
    // The flash cookie of this answer ("preferences saved") is for the next page.
    let saved = app.save_preferences("dark", "green").await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let old_cookies = app.cookies();

    // An instance already on the new key, still accepting the old one.
    let rolling = app.spawn_beside(&[("SECRET_KEY", &new_key), ("SECRET_KEY_PREVIOUS", &old_key)]).await;
    let browser = app.at(&rolling.address);
    let page = browser.get(&location(&saved)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let session = set_cookie(&page, "latchkey_session").expect("the session cookie is re-issued");
    assert!(session.contains("Max-Age="), "a remembered login's cookie stays persistent: {session}");
    assert!(set_cookie(&page, "latchkey_prefs").is_some(), "the preferences cookie is re-issued");
    let html = page.text().await.unwrap();
    assert!(html.contains("Your preferences have been saved."), "the old key's flash message is read");
    assert!(html.contains(r#"data-theme="dark""#), "the old key's preferences apply");
    assert!(browser.is_logged_in().await, "the old key's session cookie is accepted");
    let new_page_token = csrf_token_in(&browser.get_html("/preferences").await);
    assert_ne!(new_page_token, old_page_token, "pages carry tokens of the new key");
    let fields = [("theme", "light"), ("accent", "green"), ("csrf_token", old_page_token.as_str())];
    let submitted = browser.post_form("/preferences", &fields).await;
    assert_eq!(submitted.status(), StatusCode::SEE_OTHER, "a form of a page made under the old key");

    // Once every instance has rolled and the old key is gone, the re-issued cookies still work.
    let rolled = app.spawn_beside(&[("SECRET_KEY", &new_key)]).await;
    let browser = app.at(&rolled.address);
    assert!(browser.is_logged_in().await, "the re-issued session cookie is of the new key");
    assert!(browser.get_html("/").await.contains(r#"data-theme="light""#));
    let fields = [("theme", "dark"), ("accent", "green"), ("csrf_token", old_page_token.as_str())];
    let refused = browser.post_form("/preferences", &fields).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "the old key's tokens are dead");
    let stale = browser.sending(&old_cookies);
    assert!(!stale.is_logged_in().await, "cookies never re-issued died with the old key");
    assert!(!stale.get_html("/").await.contains(r#"data-theme="dark""#));
    let fields = [("theme", "dark"), ("accent", "green"), ("csrf_token", new_page_token.as_str())];
    assert_eq!(browser.post_form("/preferences", &fields).await.status(), StatusCode::SEE_OTHER);
}
