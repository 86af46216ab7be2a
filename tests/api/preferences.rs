//! Display preferences: anyone can pick a theme and accent, every page applies them, and only a
//! cookie this site signed is believed.

use reqwest::StatusCode;

use crate::matrix;
use crate::support::{
    attribute_in, forged_forms, location, set_cookie, with_token, Db, Options, Store, TestApp, PASSWORD,
};

/// The theme and accent the page's `<html>` element applies.
fn applied(html: &str) -> (String, String) {
    (
        attribute_in(html, "html", "data-theme").expect("data-theme on <html>"),
        attribute_in(html, "html", "data-accent").expect("data-accent on <html>"),
    )
}

fn pair(theme: &str, accent: &str) -> (String, String) {
    (theme.to_owned(), accent.to_owned())
}

/// The value of the checked radio button called `name`.
fn checked(html: &str, name: &str) -> Option<String> {
    attribute_in(html, &format!(r#"input[name="{name}"][checked]"#), "value")
}

#[tokio::test]
async fn a_new_visitor_sees_light_and_blue() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;

    let response = app.get("/preferences").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(set_cookie(&response, "latchkey_prefs"), None, "showing the form stores nothing");
    let html = response.text().await.unwrap();
    assert_eq!(applied(&html), pair("light", "blue"));
    assert_eq!(checked(&html, "theme").as_deref(), Some("light"));
    assert_eq!(checked(&html, "accent").as_deref(), Some("blue"));
    for theme in ["light", "dark"] {
        assert!(attribute_in(&html, &format!(r#"input[name="theme"][value="{theme}"]"#), "id").is_some());
    }
    for accent in ["blue", "green", "purple", "orange", "red"] {
        assert!(attribute_in(&html, &format!(r#"input[name="accent"][value="{accent}"]"#), "id").is_some());
    }
    assert!(html.contains(r#"<a href="/preferences" aria-current="page">Preferences</a>"#), "{html}");
    assert_eq!(applied(&app.get_html("/").await), pair("light", "blue"));
    assert!(app.preferences_cookie().is_none());
}

#[tokio::test]
async fn a_guest_saves_dark_green_and_every_page_applies_it() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;

    let response = app.save_preferences("dark", "green").await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/preferences");
    let cookie = set_cookie(&response, "latchkey_prefs").expect("the preferences cookie is set");
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
        assert!(attributes.contains(&attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "works over http://localhost in development: {cookie}");
    assert!(!cookie.to_lowercase().contains("domain="), "{cookie}");
    let value = app.preferences_cookie().expect("the browser keeps the cookie");
    assert!(value.ends_with("dark.green") && value != "dark.green", "signed: {value}");

    let html = app.get_html("/preferences").await;
    assert!(html.contains("Your preferences have been saved."), "{html}");
    assert_eq!(applied(&html), pair("dark", "green"));
    assert_eq!(checked(&html, "theme").as_deref(), Some("dark"));
    assert_eq!(checked(&html, "accent").as_deref(), Some("green"));
    for path in ["/", "/login", "/register"] {
        assert_eq!(applied(&app.get_html(path).await), pair("dark", "green"), "{path}");
    }
    let missing = app.get("/no/such/page").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(applied(&missing.text().await.unwrap()), pair("dark", "green"), "error pages too");

    // Saving again replaces the choice.
    assert_eq!(app.save_preferences("light", "orange").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(applied(&app.get_html("/").await), pair("light", "orange"));
}

async fn preferences_belong_to_the_browser_not_the_login(app: TestApp) {
    app.register("pat@example.com", PASSWORD).await;
    assert!(app.is_logged_in().await);

    assert_eq!(app.save_preferences("dark", "green").await.status(), StatusCode::SEE_OTHER);

    assert!(app.is_logged_in().await, "saving preferences keeps the login");
    let account = app.get_html("/account").await;
    assert!(account.contains("pat@example.com"), "{account}");
    assert_eq!(applied(&account), pair("dark", "green"));
    let form = app.get_html("/preferences").await;
    assert_eq!(checked(&form, "theme").as_deref(), Some("dark"));
    assert_eq!(checked(&form, "accent").as_deref(), Some("green"));

    assert_eq!(app.logout().await.status(), StatusCode::SEE_OTHER);
    let home = app.get_html("/").await;
    assert!(home.contains("Hello, guest"), "{home}");
    assert_eq!(applied(&home), pair("dark", "green"), "logging out keeps the preferences");

    assert_eq!(app.login("pat@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(applied(&app.get_html("/account").await), pair("dark", "green"));
}
matrix!(preferences_belong_to_the_browser_not_the_login);

#[tokio::test]
async fn invalid_choices_are_422_and_leave_the_cookie_alone() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    assert_eq!(app.save_preferences("dark", "green").await.status(), StatusCode::SEE_OTHER);
    let before = app.preferences_cookie().expect("saved");

    let theme_error = "Choose light or dark.";
    let accent_error = "Choose one of the accent colours listed.";
    let cases: [(&str, &str, &[&str]); 6] = [
        ("blue", "green", &[theme_error]),
        ("dark", "teal", &[accent_error]),
        ("Dark", "GREEN", &[theme_error, accent_error]),
        ("", "", &[theme_error, accent_error]),
        ("dark.red", "green", &[theme_error]),
        ("<script>alert(1)</script>", "red;}html{display:none", &[theme_error, accent_error]),
    ];
    for (theme, accent, errors) in cases {
        let response = app.save_preferences(theme, accent).await;

        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{theme:?} {accent:?}");
        assert_eq!(set_cookie(&response, "latchkey_prefs"), None, "{theme:?} {accent:?}");
        let html = response.text().await.unwrap();
        assert!(html.contains("Your preferences were not saved"), "{html}");
        for error in errors {
            assert!(html.contains(error), "{error} for {theme:?} {accent:?}: {html}");
        }
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(!html.contains("display:none"), "submitted text is never echoed: {html}");
        assert_eq!(applied(&html), pair("dark", "green"), "the page keeps the saved preferences");
        assert_eq!(app.preferences_cookie().as_deref(), Some(before.as_str()));
    }

    // The valid half of a submission stays checked; the other shows the saved choice.
    let html = app.save_preferences("light", "teal").await.text().await.unwrap();
    assert_eq!(checked(&html, "theme").as_deref(), Some("light"));
    assert_eq!(checked(&html, "accent").as_deref(), Some("green"));

    let no_fields = app.submit("/preferences", "/preferences", &[]).await;
    assert_eq!(no_fields.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let html = app.get_html("/").await;
    assert_eq!(applied(&html), pair("dark", "green"));
    assert!(!html.contains("Your preferences have been saved."), "{html}");
    assert_eq!(app.preferences_cookie(), Some(before));
}

#[tokio::test]
async fn tampered_unsigned_or_foreign_cookies_are_ignored() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    assert_eq!(app.save_preferences("dark", "green").await.status(), StatusCode::SEE_OTHER);
    let signed = app.preferences_cookie().expect("saved");
    let signature = signed.strip_suffix("dark.green").expect("the value ends with the preferences");
    let genuine = app.sending(&format!("latchkey_prefs={signed}")).get_html("/").await;
    assert_eq!(applied(&genuine), pair("dark", "green"), "the genuine cookie works");

    let other_site = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    assert_eq!(other_site.save_preferences("dark", "green").await.status(), StatusCode::SEE_OTHER);
    let foreign = other_site.preferences_cookie().expect("saved on the other site");
    assert_ne!(foreign, signed, "another SECRET_KEY signs differently");

    let flipped = {
        let mut bytes = signed.clone().into_bytes();
        bytes[0] = if bytes[0] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let forgeries = [
        ("value changed", format!("{signature}dark.red")),
        ("value extended", format!("{signed}x")),
        ("signature changed", flipped),
        ("unsigned", "dark.green".to_owned()),
        ("signature only", signature.to_owned()),
        ("empty", String::new()),
        ("junk", "%%%not-base64%%%".to_owned()),
        ("another site's key", foreign),
    ];
    for (what, value) in forgeries {
        let forger = app.sending(&format!("latchkey_prefs={value}"));
        for path in ["/", "/preferences"] {
            let response = forger.get(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{what} on {path}");
            let html = response.text().await.unwrap();
            assert_eq!(applied(&html), pair("light", "blue"), "{what} on {path}");
        }
        let missing = forger.get("/no/such/page").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{what}");
        assert_eq!(applied(&missing.text().await.unwrap()), pair("light", "blue"), "{what}");
    }
}

#[tokio::test]
async fn saving_without_a_valid_csrf_token_is_403_and_changes_nothing() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    let own = app.csrf_token("/preferences").await;
    let foreign = app.new_browser().csrf_token("/preferences").await;
    assert_ne!(own, foreign);

    let fields = [("theme", "dark"), ("accent", "green")];
    for (what, forged) in forged_forms(&fields, &foreign) {
        let response = app.post_form("/preferences", &forged).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what} token");
        assert_eq!(set_cookie(&response, "latchkey_prefs"), None, "{what} token");
        let html = response.text().await.unwrap();
        assert!(html.contains("Forbidden") && html.contains("<html"), "an HTML error page: {html}");
    }
    let cross_site =
        app.post_form_from("https://evil.example", "/preferences", &with_token(&fields, &own)).await;
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN, "valid token, foreign origin");
    assert_eq!(app.preferences_cookie(), None);
    assert_eq!(applied(&app.get_html("/").await), pair("light", "blue"));

    // Nor does a refused request touch preferences saved earlier.
    assert_eq!(app.save_preferences("dark", "green").await.status(), StatusCode::SEE_OTHER);
    let saved = app.preferences_cookie();
    let refused =
        app.post_form("/preferences", &[("theme", "light"), ("accent", "red"), ("csrf_token", "")]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.preferences_cookie(), saved);
    assert_eq!(applied(&app.get_html("/").await), pair("dark", "green"));
}

#[tokio::test]
async fn the_cookie_is_secure_and_host_prefixed_in_production() {
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options::production()).await;
    let fields = [("theme", "dark"), ("accent", "purple")];
    let (_, response) = app.submit_in_production("/preferences", "/preferences", &fields).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&response, "__Host-latchkey_prefs").expect("__Host- preferences cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.to_lowercase().contains("domain="), "{cookie}");
    let prefs_pair = cookie.split(';').next().unwrap();
    let html = app.sending(prefs_pair).get_html("/").await;
    assert_eq!(applied(&html), pair("dark", "purple"));

    // The development name is not read in production, even with a good signature.
    let value = prefs_pair.strip_prefix("__Host-latchkey_prefs=").unwrap();
    let html = app.sending(&format!("latchkey_prefs={value}")).get_html("/").await;
    assert_eq!(applied(&html), pair("light", "blue"));
}
