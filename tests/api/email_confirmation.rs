//! Confirming email addresses: a new account's link (single use, `EMAIL_CONFIRM_TTL`), an
//! email change that applies only when the new address confirms it (the old address told at
//! both steps), resends throttled, and `REQUIRE_VERIFIED_EMAIL`: login-required pages send an
//! unconfirmed user to "confirm your email", and registration answers the same for new and
//! taken addresses.

use std::time::Duration;

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl};
use latchkey::db::schema::users;
use reqwest::StatusCode;

use crate::matrix;
use crate::support::{location, text_in, Browser, Db, Options, Store, TestApp, PASSWORD};

const WAIT: Duration = Duration::from_secs(10);
const CONFIRM: &str = "Confirm your latchkey email address";
const CONFIRM_NEW: &str = "Confirm your new latchkey email address";

/// The path of the newest confirmation link mailed to `email` under `subject`, waiting for
/// the `nth` (1-based) such mail.
async fn link_for(app: &TestApp, email: &str, subject: &str, nth: usize) -> String {
    let public = app.setting("PUBLIC_URL");
    let started = std::time::Instant::now();
    loop {
        let links: Vec<String> = app
            .mail
            .received_by(email)
            .iter()
            .filter(|mail| mail.subject() == subject)
            .filter_map(|mail| mail.link(&format!("{public}/email/confirm/")))
            .collect();
        if links.len() >= nth {
            return links[nth - 1].trim_start_matches(public).to_owned();
        }
        assert!(started.elapsed() < WAIT, "no mail {nth} {subject:?} to {email}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When `email`'s address was confirmed, read from the database.
fn confirmed_at(app: &TestApp, email: &str) -> Option<chrono::NaiveDateTime> {
    users::table
        .filter(users::email.eq(email))
        .select(users::email_confirmed_at)
        .first(&mut app.connection())
        .optional()
        .unwrap()
        .flatten()
}

/// Presses the button on the link's page.
async fn confirm(browser: &Browser, path: &str) -> reqwest::Response {
    browser.submit(path, path, &[]).await
}

async fn a_new_account_confirms_its_address(app: TestApp) {
    let email = "fresh@example.com";
    assert_eq!(location(&app.register(email, PASSWORD).await), "/");
    assert!(app.get_html("/").await.contains("follow the link we sent to fresh@example.com"));
    let account = app.get_html("/account").await;
    assert!(text_in(&account, "#email-unconfirmed").is_some(), "{account}");
    assert!(confirmed_at(&app, email).is_none());

    let path = link_for(&app, email, CONFIRM, 1).await;
    assert_eq!(path.trim_start_matches("/email/confirm/").len(), 43, "256 bits, base64url");
    // Opening the link changes nothing (mail scanners open links); the button does.
    let page = app.get(&path).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(text_in(&page.text().await.unwrap(), "#confirm-what").unwrap().contains(email));
    assert!(confirmed_at(&app, email).is_none());

    let done = confirm(&app, &path).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), "/account");
    assert!(confirmed_at(&app, email).is_some());
    let account = app.get_html("/account").await;
    assert!(text_in(&account, "#email-confirmed").is_some(), "{account}");
    assert!(app.get_html("/account/activity").await.contains("Email address confirmed"));

    // Used once.
    assert_eq!(app.get(&path).await.status(), StatusCode::GONE);
    assert_eq!(confirm(&app, &path).await.status(), StatusCode::GONE);
    // Asking again for a confirmed address sends nothing.
    let again = app.submit("/account/confirm-email", "/account/confirm-email", &[]).await;
    assert_eq!(location(&again), "/account");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.mail.received_by(email).len(), 1);
}

matrix!(a_new_account_confirms_its_address);

async fn the_email_changes_only_when_the_new_address_confirms(app: TestApp) {
    app.create_user("taken@example.com").await;
    let email = "old@example.com";
    app.register(email, PASSWORD).await;
    let app = &app;
    let change = |new_email: &'static str| async move {
        app.submit("/account/email", "/account/email", &[("new_email", new_email)]).await
    };
    for (new_email, message) in [
        ("taken@example.com", "An account with this email already exists."),
        ("TAKEN@example.com ", "An account with this email already exists."),
        ("old@example.com", "That is already your email address."),
        ("not an address", "Enter a valid email address."),
        ("", "Enter your email address."),
    ] {
        let refused = change(new_email).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{new_email:?}");
        assert!(refused.text().await.unwrap().contains(message), "{new_email:?}");
    }

    let asked = change("New@Example.com").await;
    assert_eq!(asked.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&asked), "/account");
    // Nothing has changed yet: the old address still signs in, the new one does not.
    let account = app.get_html("/account").await;
    assert!(text_in(&account, "#email-pending").unwrap().contains("new@example.com"), "{account}");
    let fresh = app.new_browser();
    assert_eq!(fresh.login("new@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(location(&fresh.login(email, PASSWORD).await), "/");
    let warned = app.mail.wait_for(email, "A change of your email address was asked for", WAIT).await;
    assert!(warned.body().contains("new@example.com"), "{}", warned.body());
    assert!(warned.body().contains("127.0.0.1"), "from where: {}", warned.body());

    // The link works from any browser, signed in or not.
    let path = link_for(app, "new@example.com", CONFIRM_NEW, 1).await;
    let visitor = app.new_browser();
    let page = visitor.get_html(&path).await;
    assert!(text_in(&page, "#confirm-what").unwrap().contains("old@example.com"), "{page}");
    let done = confirm(&visitor, &path).await;
    assert_eq!(location(&done), "/login", "nobody is signed in by a link");
    assert!(confirmed_at(app, "new@example.com").is_some());

    let later = app.new_browser();
    assert_eq!(later.login(email, PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(location(&later.login("new@example.com", PASSWORD).await), "/");
    let notice = app.mail.wait_for(email, "Your email address was changed", WAIT).await;
    assert!(notice.body().contains("new@example.com"), "{}", notice.body());
    assert!(app.get_html("/account").await.contains("new@example.com"), "the logged-in browser sees it");
    assert_eq!(app.mail.received_by(email).len(), 3, "the link at registration, and the two notices");
}

matrix!(the_email_changes_only_when_the_new_address_confirms);

/// An address taken between the request and the link answers 409 and changes nothing.
#[tokio::test]
async fn a_change_to_an_address_taken_meanwhile_is_refused() {
    let app = TestApp::spawn(Db::Postgres, Store::Database).await;
    app.register("mine@example.com", PASSWORD).await;
    let asked =
        app.submit("/account/email", "/account/email", &[("new_email", "contested@example.com")]).await;
    assert_eq!(asked.status(), StatusCode::SEE_OTHER);
    let path = link_for(&app, "contested@example.com", CONFIRM_NEW, 1).await;
    app.create_user("contested@example.com").await;
    let refused = confirm(&app, &path).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(text_in(&refused.text().await.unwrap(), "#confirm-gone").unwrap().contains("another account"));
    assert!(app.get_html("/account").await.contains("mine@example.com"));
    assert_eq!(location(&app.new_browser().login("mine@example.com", PASSWORD).await), "/");
}

/// Links expire after `EMAIL_CONFIRM_TTL`; asking again is throttled per address
/// (`THROTTLE_EMAIL`), a 429 that sends nothing.
#[tokio::test]
async fn links_expire_and_resending_is_throttled() {
    let vars = vec![("EMAIL_CONFIRM_TTL", "2s".into()), ("THROTTLE_EMAIL", "2/1h".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Redis, Options { vars, ..Options::default() }).await;
    let email = "slow@example.com";
    app.register(email, PASSWORD).await;
    let first = link_for(&app, email, CONFIRM, 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let gone = app.get(&first).await;
    assert_eq!(gone.status(), StatusCode::GONE);
    assert!(text_in(&gone.text().await.unwrap(), "#confirm-gone").is_some());

    let page = app.get_html("/account/confirm-email").await;
    assert!(text_in(&page, "#confirm-status").unwrap().contains(email), "{page}");
    for nth in 2..=3 {
        let sent = app.submit("/account/confirm-email", "/account/confirm-email", &[]).await;
        assert_eq!(location(&sent), "/account/confirm-email");
        link_for(&app, email, CONFIRM, nth).await;
    }
    let refused = app.submit("/account/confirm-email", "/account/confirm-email", &[]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));

    let newest = link_for(&app, email, CONFIRM, 3).await;
    assert_eq!(location(&confirm(&app, &newest).await), "/account");
    assert!(confirmed_at(&app, email).is_some());
}

/// With `REQUIRE_VERIFIED_EMAIL=true`: registration signs nobody in and answers the same for a
/// new and a taken address (whose owner is told); login-required pages send an unconfirmed
/// user to "confirm your email" until the link is used.
#[tokio::test]
async fn required_confirmation_gates_pages_and_hides_who_has_an_account() {
    let vars = vec![("REQUIRE_VERIFIED_EMAIL", "true".into())];
    let app = TestApp::spawn_with(Db::Postgres, Store::Redis, Options { vars, ..Options::default() }).await;
    let owner = "owner@example.com";
    let first = app.new_browser().register(owner, PASSWORD).await;
    assert_eq!(first.status(), StatusCode::OK);
    let path = link_for(&app, owner, CONFIRM, 1).await;
    assert_eq!(location(&confirm(&app.new_browser(), &path).await), "/login");

    let answer = |browser: Browser, email: &'static str| async move {
        let response = browser.register(email, PASSWORD).await;
        let status = response.status();
        let logged_in_cookie = response.headers().get_all("set-cookie").iter().count();
        let page = response.text().await.unwrap();
        let sent = text_in(&page, "#register-sent").unwrap().replace(email, "EMAIL");
        (status, sent, logged_in_cookie, browser.is_logged_in().await)
    };
    let taken = answer(app.new_browser(), owner).await;
    let new = answer(app.new_browser(), "newcomer@example.com").await;
    assert_eq!(taken, new, "the same answer for a taken and a new address");
    assert_eq!(new.0, StatusCode::OK);
    assert!(!new.3, "nobody is signed in");
    let told = app.mail.wait_for(owner, "latchkey: someone tried to register with your address", WAIT).await;
    assert!(told.body().contains("/password/forgot"), "{}", told.body());
    assert!(confirmed_at(&app, "newcomer@example.com").is_none());

    // An unconfirmed user may sign in, and is asked to confirm before anything else.
    let newcomer = app.new_browser();
    assert_eq!(location(&newcomer.login("newcomer@example.com", PASSWORD).await), "/");
    for page in ["/account", "/account/sessions", "/account/security"] {
        assert_eq!(location(&newcomer.get(page).await), "/account/confirm-email", "{page}");
    }
    let json = newcomer.request(reqwest::Method::GET, "/account").header("Accept", "application/json");
    let json = json.send().await.unwrap();
    assert_eq!(json.status(), StatusCode::FORBIDDEN);
    assert_eq!(json.json::<serde_json::Value>().await.unwrap()["confirm"], "/account/confirm-email");
    let page = newcomer.get_html("/account/confirm-email").await;
    assert!(text_in(&page, "#confirm-status").unwrap().contains("Before you go on"), "{page}");
    // Correcting a mistyped address stays open.
    assert_eq!(newcomer.get("/account/email").await.status(), StatusCode::OK);

    let resent = newcomer.submit("/account/confirm-email", "/account/confirm-email", &[]).await;
    assert_eq!(location(&resent), "/account/confirm-email");
    let path = link_for(&app, "newcomer@example.com", CONFIRM, 2).await;
    assert_eq!(location(&confirm(&newcomer, &path).await), "/account");
    assert_eq!(newcomer.get("/account").await.status(), StatusCode::OK);
    assert_eq!(newcomer.get("/account/sessions").await.status(), StatusCode::OK);
}
