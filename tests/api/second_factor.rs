//! Second factors: setting up an authenticator app (TOTP, computed here from the secret the
//! page shows), logging in in two steps, recovery codes, replays, the five-wrong-codes rule,
//! an expired pending login, re-authentication with a code, turning it off, and secrets sealed
//! at rest across a key rotation.

use std::time::{SystemTime, UNIX_EPOCH};

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reqwest::StatusCode;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::matrix;
use crate::support::{attribute_in, location, secret_key, Browser, TestApp, PASSWORD};

use latchkey_auth::second_factor::schema::{pending_logins, totp_factors};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The code of `secret` (base32) for the time `at`.
fn code_at(secret: &str, at: u64) -> String {
    let bytes = Secret::Encoded(secret.to_owned()).to_bytes().unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new()).generate(at)
}

/// A code of a step later than any used before: the next step's (one step of drift is allowed).
fn next_code(secret: &str) -> String {
    code_at(secret, now() + 30)
}

/// Turns the authenticator app on for the logged-in `browser`; returns the secret and the
/// recovery codes.
pub async fn set_up_totp(browser: &Browser) -> (String, Vec<String>) {
    let page = browser.submit("/account/security", "/account/security/totp", &[]).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let secret = attribute_in(&html, "[data-totp-secret]", "data-totp-secret").expect("the secret");
    let qr = attribute_in(&html, "img.qr-code", "src").expect("a QR code");
    assert!(qr.starts_with("data:image/svg+xml;base64,"), "drawn on the server: {qr:.40}");
    let uri = crate::support::text_in(&html, "details code").expect("the otpauth URI");
    assert!(uri.starts_with("otpauth://totp/latchkey:") && uri.contains(&secret), "{uri}");

    let token = crate::support::csrf_token_in(&html);
    let wrong = browser
        .post_form("/account/security/totp/confirm", &[("code", "000000"), ("csrf_token", &token)])
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY, "a wrong code enables nothing");
    let code = code_at(&secret, now());
    let confirmed =
        browser.post_form("/account/security/totp/confirm", &[("code", &code), ("csrf_token", &token)]).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&confirmed), "/account/security/recovery-codes");
    let page = browser.get_html("/account/security/recovery-codes").await;
    let document = scraper::Html::parse_document(&page);
    let codes: Vec<String> = document
        .select(&scraper::Selector::parse("[data-recovery-code]").unwrap())
        .filter_map(|e| e.value().attr("data-recovery-code").map(str::to_owned))
        .collect();
    assert_eq!(codes.len(), 10, "{page}");
    assert!(page.contains("download=\"latchkey-recovery-codes.txt\""));
    let again = browser.get("/account/security/recovery-codes").await;
    assert_eq!(location(&again), "/account/security", "shown once");
    (secret, codes)
}

/// Logs out and back in with the password: the answer of the password step.
pub async fn password_step(browser: &Browser, email: &str) -> reqwest::Response {
    browser.logout().await;
    browser.login_with_next(email, PASSWORD, "/account/sessions").await
}

pub async fn submit_code(browser: &Browser, code: &str) -> reqwest::Response {
    browser.submit("/login/mfa", "/login/mfa", &[("code", code)]).await
}

async fn an_authenticator_app_guards_the_login(app: TestApp) {
    let email = "two@example.com";
    app.register(email, PASSWORD).await;
    assert!(app.get_html("/account/security").await.contains("Set up an authenticator app"));
    let confirmed_at = now();
    let (secret, codes) = set_up_totp(&app).await;
    assert!(app.get_html("/account/security").await.contains("10 of 10 recovery codes left"));

    // The password alone is only half a login.
    let step = password_step(&app, email).await;
    assert_eq!(step.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&step), "/login/mfa");
    assert!(!app.is_logged_in().await, "a pending login reaches no login-required page");
    assert_eq!(app.get("/login/mfa").await.status(), StatusCode::OK);
    let replayed = submit_code(&app, &code_at(&secret, confirmed_at)).await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED, "the code used to confirm cannot be replayed");
    let before = app.session_cookie();
    let logged_in = submit_code(&app, &next_code(&secret)).await;
    assert_eq!(logged_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&logged_in), "/account/sessions", "the login form's next is kept");
    assert_ne!(app.session_cookie(), before, "the session id is renewed");
    assert!(app.is_logged_in().await);
    assert!(app.get_html("/account/sessions").await.contains("Second factor used"));

    // A recovery code works once.
    password_step(&app, email).await;
    let recovered = submit_code(&app, &codes[0].to_lowercase()).await;
    assert_eq!(recovered.status(), StatusCode::SEE_OTHER, "recovery codes are read case-insensitively");
    assert!(app.get_html("/account/security").await.contains("9 of 10 recovery codes left"));
    password_step(&app, email).await;
    assert_eq!(submit_code(&app, &codes[0]).await.status(), StatusCode::UNAUTHORIZED, "used up");
    assert_eq!(submit_code(&app, &codes[1]).await.status(), StatusCode::SEE_OTHER);

    // Five wrong codes end the pending login, even split between copies of the cookie.
    password_step(&app, email).await;
    let copy = app.sending(&app.cookies());
    for _ in 0..3 {
        assert_eq!(submit_code(&app, "123456").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(submit_code(&copy, "654321").await.status(), StatusCode::UNAUTHORIZED);
    let fifth = submit_code(&copy, "111111").await;
    assert_eq!(fifth.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&fifth), "/login");
    let token = app.csrf_token("/login").await;
    let after = app.post_form("/login/mfa", &[("code", &next_code(&secret)), ("csrf_token", &token)]).await;
    assert_eq!(location(&after), "/login", "the right code is too late now");
    assert!(!app.is_logged_in().await);
    assert_eq!(location(&app.get("/login/mfa").await), "/login");

    // Wrong codes count as failures of the account: after five, the next login waits a second.
    let held = password_step(&app, email).await;
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(held.headers()["retry-after"], "1");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // A pending login lives five minutes.
    assert_eq!(location(&password_step(&app, email).await), "/login/mfa");
    let token = app.csrf_token("/login/mfa").await;
    let six_minutes_ago = chrono::Utc::now().naive_utc() - chrono::TimeDelta::minutes(6);
    diesel::update(pending_logins::table)
        .set(pending_logins::created_at.eq(six_minutes_ago))
        .execute(&mut app.connection())
        .unwrap();
    let expired = app.post_form("/login/mfa", &[("code", &codes[2]), ("csrf_token", &token)]).await;
    assert_eq!(location(&expired), "/login", "expired: start over");
    assert!(!app.is_logged_in().await);
}
matrix!(an_authenticator_app_guards_the_login);

async fn reauthentication_asks_for_the_code_too_and_turning_it_off_needs_one(app: TestApp) {
    let email = "sudo2@example.com";
    app.register(email, PASSWORD).await;
    let (_secret, codes) = set_up_totp(&app).await;

    let form = app.get_html("/reauth?next=/account/security").await;
    assert!(form.contains("name=\"code\""), "the code field is asked for");
    let token = crate::support::csrf_token_in(&form);
    let password_only =
        [("password", PASSWORD), ("next", "/account/security"), ("csrf_token", token.as_str())];
    assert_eq!(app.post_form("/reauth", &password_only).await.status(), StatusCode::UNAUTHORIZED);
    let with_code = [
        ("password", PASSWORD),
        ("code", codes[0].as_str()),
        ("next", "/account/security"),
        ("csrf_token", token.as_str()),
    ];
    let proved = app.post_form("/reauth", &with_code).await;
    assert_eq!(proved.status(), StatusCode::SEE_OTHER);
    assert!(app.get_html("/account/sessions").await.contains("Second factor used"));

    let refused =
        app.submit("/account/security", "/account/security/totp/disable", &[("code", "999999")]).await;
    assert_eq!(location(&refused), "/account/security");
    assert!(app.get_html("/account/security").await.contains("Turn off the authenticator app"), "still on");
    let off = app.submit("/account/security", "/account/security/totp/disable", &[("code", &codes[1])]).await;
    assert_eq!(location(&off), "/account/security");
    assert!(app.get_html("/account/security").await.contains("Set up an authenticator app"));
    let step = password_step(&app, email).await;
    assert_eq!(location(&step), "/account/sessions", "the password is enough again");
}
matrix!(reauthentication_asks_for_the_code_too_and_turning_it_off_needs_one);

async fn secrets_are_sealed_at_rest_and_move_to_a_new_key(app: TestApp) {
    let email = "sealed@example.com";
    app.register(email, PASSWORD).await;
    let (secret, codes) = set_up_totp(&app).await;
    let stored = || -> String {
        totp_factors::table.select(totp_factors::secret).first(&mut app.connection()).unwrap()
    };
    let sealed = stored();
    assert!(!sealed.contains(&secret) && sealed.split_once('.').is_some(), "sealed with a key id: {sealed}");

    let old_key = app.setting("SECRET_KEY").to_owned();
    let new_key = secret_key();
    let rolling = app.spawn_beside(&[("SECRET_KEY", &new_key), ("SECRET_KEY_PREVIOUS", &old_key)]).await;
    let browser = Browser::new(&rolling.address, None);
    browser.login(email, PASSWORD).await;
    let recovered = submit_code(&browser, &codes[0]).await;
    assert_eq!(
        recovered.status(),
        StatusCode::SEE_OTHER,
        "recovery codes of the old key work while it is kept"
    );
    let resealed = stored();
    assert_ne!(
        resealed.split_once('.').map(|p| p.0),
        sealed.split_once('.').map(|p| p.0),
        "re-sealed under the new key"
    );

    let rolled = app.spawn_beside(&[("SECRET_KEY", &new_key)]).await;
    let browser = Browser::new(&rolled.address, None);
    browser.login(email, PASSWORD).await;
    assert_eq!(submit_code(&browser, &next_code(&secret)).await.status(), StatusCode::SEE_OTHER);
}
matrix!(secrets_are_sealed_at_rest_and_move_to_a_new_key);
