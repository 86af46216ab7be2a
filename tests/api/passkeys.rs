//! Passkeys: end to end in headless Chromium with a WebDriver virtual authenticator (adding
//! one, signing in with it alone, using it as the second factor of a password login and to
//! prove it's you again, an answer replayed), and over HTTP: ceremonies kept on the server and
//! taken once in every store, malformed answers, and passkeys off when `PUBLIC_URL` names an IP
//! address.

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use latchkey_auth::passkeys::schema::{passkey_ceremonies, passkeys};

use crate::browser::Chromium;
use crate::matrix;
use crate::second_factor::{password_step, set_up_totp, submit_code};
use crate::support::{csrf_token_in, location, Browser, Db, Options, Store, TestApp, PASSWORD};

const WAIT: Duration = Duration::from_secs(15);

/// The passkey button of the place `kind` (`register`, `sign-in`, `second-factor`, `reauth`).
fn start_button(kind: &str) -> String {
    format!(r#"[data-passkey="{kind}"] [data-passkey-start]"#)
}

fn ceremonies(app: &TestApp) -> i64 {
    passkey_ceremonies::table.count().get_result(&mut app.connection()).unwrap()
}

/// Registers `email` in Chromium and adds a passkey named `name`: the first factor of the
/// account, so its recovery codes are shown next.
async fn register_with_passkey(browser: &Chromium, app: &TestApp, email: &str, name: &str) {
    browser.register(app, email).await;
    browser.goto(app, "/account/security").await;
    browser.fill("#passkey-name", name).await;
    browser.click(&start_button("register")).await;
    browser.wait_for_path(WAIT, "adding a passkey", |path| path == "/account/security/recovery-codes").await;
    let names: Vec<String> = passkeys::table.select(passkeys::name).load(&mut app.connection()).unwrap();
    assert_eq!(names.len(), 1);
    assert!(name.is_empty() || names[0] == name, "{names:?}");
    assert_eq!(ceremonies(app), 0, "the ceremony was taken");
}

async fn log_out(browser: &Chromium, app: &TestApp) {
    browser.goto(app, "/logout").await;
    browser.click(r#"form[action="/logout"] button[type="submit"]"#).await;
    browser.wait_for_path(WAIT, "logging out", |path| path.starts_with("/?logged_out")).await;
}

/// Whether the page Chromium is on belongs to a logged-in user.
async fn logged_in(browser: &Chromium) -> bool {
    browser.script("return !!document.querySelector('form[action=\"/logout\"]');").await == Value::Bool(true)
}

async fn spawn(db: Db, store: Store, vars: &[(&'static str, &str)]) -> TestApp {
    let vars = vars.iter().map(|(name, value)| (*name, (*value).to_owned())).collect();
    TestApp::spawn_with(db, store, Options { vars, ..Options::default() }).await
}

#[tokio::test]
async fn a_passkey_added_on_the_security_page_signs_in_alone() {
    // The cookie store: the ceremony's state must still stay on the server.
    let app = spawn(Db::Sqlite, Store::Cookie, &[]).await;
    let browser = Chromium::start().await;
    browser.add_virtual_authenticator().await;
    register_with_passkey(&browser, &app, "alone@example.com", "Work laptop").await;
    browser.goto(&app, "/account/security").await;
    assert_eq!(browser.text("#passkeys tbody td").await, "Work laptop");
    browser.screenshot("passkey-security-page.png").await;
    // The authenticator app's set-up page, with its QR code drawn on the server.
    browser.click(r#"form[action="/account/security/totp"] button"#).await;
    browser.wait_for_path(WAIT, "setting up TOTP", |path| path == "/account/security/totp").await;
    let qr = browser
        .script("const img = document.querySelector('img.qr-code'); return img && img.naturalWidth;")
        .await;
    assert!(qr.as_u64().is_some_and(|width| width >= 200), "the QR code is drawn: {qr}");
    browser.screenshot("totp-set-up-page.png").await;
    log_out(&browser, &app).await;

    browser.goto(&app, "/login?next=/account/sessions").await;
    browser.screenshot("passkey-login-page.png").await;
    browser.click(&start_button("sign-in")).await;
    browser.wait_for_path(WAIT, "signing in with a passkey", |path| path == "/account/sessions").await;
    assert!(logged_in(&browser).await);
    assert!(
        browser.text(".device-current").await.contains("Second factor used"),
        "a passkey counts as two factors"
    );
    let last_used: Vec<Option<chrono::NaiveDateTime>> =
        passkeys::table.select(passkeys::last_used_at).load(&mut app.connection()).unwrap();
    assert!(last_used[0].is_some(), "its last use is recorded");
    browser.screenshot("passkey-signed-in.png").await;
}

#[tokio::test]
async fn a_passkey_is_the_second_factor_of_a_password_login_and_proves_it_is_you_again() {
    let app = spawn(Db::Postgres, Store::Redis, &[("REAUTH_WINDOW", "5s")]).await;
    let browser = Chromium::start().await;
    browser.add_virtual_authenticator().await;
    let email = "second@example.com";
    register_with_passkey(&browser, &app, email, "").await;
    let names: Vec<String> = passkeys::table.select(passkeys::name).load(&mut app.connection()).unwrap();
    assert!(names[0].starts_with("Passkey added "), "an unnamed passkey gets a name: {names:?}");
    log_out(&browser, &app).await;

    // The password alone is not enough any more. (The form is filled in by script: focusing
    // the email field would offer the passkey in its autofill, which the virtual authenticator
    // takes at once.)
    browser.goto(&app, "/login").await;
    browser
        .script(&format!(
            "document.getElementById('email').value = '{email}';
             document.getElementById('password').value = '{PASSWORD}';
             document.querySelector('form[action=\"/login\"] button[type=\"submit\"]').click();
             return true;"
        ))
        .await;
    browser.wait_for_path(WAIT, "the password step", |path| path == "/login/mfa").await;
    assert!(!logged_in(&browser).await);
    browser.click(&start_button("second-factor")).await;
    browser.wait_for_path(WAIT, "the passkey step", |path| path == "/").await;
    assert!(logged_in(&browser).await);

    // Once the login is stale, the passkey alone proves it's you.
    tokio::time::sleep(Duration::from_secs(6)).await;
    browser.goto(&app, "/account/delete").await;
    browser.wait_for_path(WAIT, "a stale login", |path| path.starts_with("/reauth?next=")).await;
    browser.click(&start_button("reauth")).await;
    browser.wait_for_path(WAIT, "re-authenticating with a passkey", |path| path == "/account/delete").await;
    assert!(browser.text("main").await.contains("Delete"), "the confirmation page");

    // Removing the only passkey removes the recovery codes that stood in for it.
    browser.goto(&app, "/account/security").await;
    browser.click(r#"#passkeys form button[type="submit"]"#).await;
    // The form answers with the page it is on, so the path alone does not say it is done.
    let started = std::time::Instant::now();
    while passkeys::table.count().get_result::<i64>(&mut app.connection()).unwrap() > 0 {
        assert!(started.elapsed() < WAIT, "the passkey was not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.wait_for_path(WAIT, "removing the passkey", |path| path == "/account/security").await;
    use latchkey_auth::second_factor::schema::recovery_codes;
    assert_eq!(recovery_codes::table.count().get_result::<i64>(&mut app.connection()).unwrap(), 0);
}

#[tokio::test]
async fn a_passkey_answer_is_accepted_once() {
    let app = spawn(Db::Sqlite, Store::Database, &[]).await;
    let browser = Chromium::start().await;
    browser.add_virtual_authenticator().await;
    register_with_passkey(&browser, &app, "replay@example.com", "Phone").await;
    log_out(&browser, &app).await;

    // Keep what the page sends to /login/passkey (in sessionStorage, which outlives the page).
    browser.goto(&app, "/login").await;
    browser
        .script(
            "const original = window.fetch;
             window.fetch = (url, init) => {
               if (url === '/login/passkey') sessionStorage.setItem('sentAnswer', init.body);
               return original(url, init);
             };
             return true;",
        )
        .await;
    // The email field's autofill offers the passkey (conditional mediation); the virtual
    // authenticator picks it at once, as a person choosing it from the list would.
    browser.click("#email").await;
    browser.wait_for_path(WAIT, "signing in from the autofill", |path| path == "/").await;
    let sent = browser.script("return sessionStorage.getItem('sentAnswer');").await;
    let answer: Value = serde_json::from_str(sent.as_str().expect("the answer was sent")).unwrap();

    // An attacker who saw it replays it from another browser: the ceremony is gone.
    let attacker = app.new_browser();
    let logins_before = logins(&app);
    let replayed = post_json(&attacker, "/login/passkey", &answer).await;
    assert_eq!(replayed.0, StatusCode::BAD_REQUEST, "{:?}", replayed.1);
    // With a ceremony of their own, the old answer signs the wrong challenge.
    let (status, options) = post_json(&attacker, "/login/passkey/options", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let mut forged = answer.clone();
    forged["ceremony"] = options["ceremony"].clone();
    let (status, body) = post_json(&attacker, "/login/passkey", &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(logins(&app), logins_before, "no login was made");
    assert!(!attacker.is_logged_in().await);
}

fn logins(app: &TestApp) -> i64 {
    use latchkey_auth::registry::schema::logins;
    logins::table.count().get_result(&mut app.connection()).unwrap()
}

/// POSTs `body` as JSON with the CSRF header of the login page, as `static/passkeys.js` does.
async fn send_json(browser: &Browser, path: &str, body: &Value) -> reqwest::Response {
    let token = csrf_token_in(&browser.get_html("/login").await);
    browser
        .request(Method::POST, path)
        .header("X-CSRF-Token", token)
        .header("Accept", "application/json")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// [`send_json`]'s status and JSON answer.
async fn post_json(browser: &Browser, path: &str, body: &Value) -> (StatusCode, Value) {
    let answer = send_json(browser, path, body).await;
    let status = answer.status();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A well-formed answer from no real passkey.
fn made_up_credential() -> Value {
    json!({
        "id": "AAAAAAAAAAAAAAAAAAAAAA",
        "rawId": "AAAAAAAAAAAAAAAAAAAAAA",
        "type": "public-key",
        "response": {
            "authenticatorData": "AAAA",
            "clientDataJSON": "AAAA",
            "signature": "AAAA",
            "userHandle": null
        }
    })
}

async fn ceremonies_live_on_the_server_and_are_taken_once(app: TestApp) {
    let answer = send_json(&app, "/login/passkey/options", &json!({})).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers().get_all("set-cookie").iter().count(), 0, "nothing is stored in the browser");
    let options: Value = answer.json().await.unwrap();
    let challenge = options["options"]["publicKey"]["challenge"].as_str().expect("a challenge");
    assert!(challenge.len() >= 43, "at least 32 random bytes: {challenge}");
    assert_eq!(options["options"]["mediation"], "conditional", "offered in the email field's autofill");
    assert_eq!(ceremonies(&app), 1, "the state is a row on the server, whatever the session store");

    // Five minutes at most.
    let (_, late) = post_json(&app, "/login/passkey/options", &json!({})).await;
    let six_minutes_ago = chrono::Utc::now().naive_utc() - chrono::TimeDelta::minutes(6);
    let late_id = latchkey_auth::registry::token_id(late["ceremony"].as_str().unwrap());
    diesel::update(passkey_ceremonies::table.find(late_id))
        .set(passkey_ceremonies::created_at.eq(six_minutes_ago))
        .execute(&mut app.connection())
        .unwrap();
    let too_late = json!({ "ceremony": late["ceremony"], "credential": made_up_credential() });
    let (status, body) = post_json(&app, "/login/passkey", &too_late).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "That took too long, or was already used. Try again.");

    let answer = json!({ "ceremony": options["ceremony"], "credential": made_up_credential() });
    let (status, body) = post_json(&app, "/login/passkey", &answer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "That passkey is not registered here.");
    assert_eq!(ceremonies(&app), 0, "taken, though it failed");
    let (status, body) = post_json(&app, "/login/passkey", &answer).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!app.is_logged_in().await);

    // Malformed answers are a 400 with a page that says so; no token is a 403.
    let token = csrf_token_in(&app.get_html("/login").await);
    let malformed = app
        .request(Method::POST, "/login/passkey")
        .header("X-CSRF-Token", &token)
        .header("Content-Type", "application/json")
        .body("{\"ceremony\": 7")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(malformed.text().await.unwrap().contains("The passkey&#x27;s answer is malformed."));
    let forged = app.request(Method::POST, "/login/passkey/options").json(&json!({})).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(ceremonies(&app), 0);

    // Adding a passkey needs a login; the second-factor step, a password login waiting for it.
    let (status, _) = post_json(&app, "/account/security/passkeys/options", &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post_json(&app, "/login/mfa/passkey/options", &json!({})).await;
    assert_eq!((status, &body["redirect"]), (StatusCode::BAD_REQUEST, &json!("/login")));
    app.register("keyless@example.com", PASSWORD).await;
    let (status, body) = post_json(&app, "/reauth/passkey/options", &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no passkey to ask for: {body}");
    let (status, body) = post_json(&app, "/account/security/passkeys/options", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["options"]["publicKey"]["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(body["options"]["publicKey"]["rp"]["id"], "localhost");
    assert_eq!(ceremonies(&app), 1);
}

matrix!(ceremonies_live_on_the_server_and_are_taken_once);

async fn a_wrong_passkey_counts_as_a_wrong_code(app: TestApp) {
    let email = "counted@example.com";
    app.register(email, PASSWORD).await;
    set_up_totp(&app).await;
    password_step(&app, email).await;
    let (status, body) = post_json(&app, "/login/mfa/passkey/options", &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no passkey to offer: {body}");
    for left in [4, 3] {
        let answer = json!({ "ceremony": "made-up", "credential": made_up_credential() });
        let (status, body) = post_json(&app, "/login/mfa/passkey", &answer).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["error"].as_str().unwrap().contains(&format!("{left} more tries")), "{body}");
    }
    for _ in 0..2 {
        assert_eq!(submit_code(&app, "123456").await.status(), StatusCode::UNAUTHORIZED);
    }
    let fifth = submit_code(&app, "654321").await;
    assert_eq!(location(&fifth), "/login", "the passkey answers counted toward the five");
    assert!(!app.is_logged_in().await);
}

matrix!(a_wrong_passkey_counts_as_a_wrong_code);

#[tokio::test]
async fn passkeys_are_off_when_public_url_names_an_ip_address() {
    let app = spawn(Db::Sqlite, Store::Cookie, &[("PUBLIC_URL", "http://127.0.0.1:8080")]).await;
    let login = app.get_html("/login").await;
    assert!(!login.contains("data-passkey"), "no passkey button");
    assert!(login.contains(r#"autocomplete="email""#));
    app.register("ip@example.com", PASSWORD).await;
    let security = app.get_html("/account/security").await;
    let off = crate::support::text_in(&security, "#passkeys-off").expect("the security page says why");
    assert!(off.contains("IP address"), "{off}");
    assert!(!security.contains("Add a passkey"));
    let (status, body) = post_json(&app, "/login/passkey/options", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(ceremonies(&app), 0);
}
