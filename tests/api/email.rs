//! Email through a real SMTP server on loopback (`SmtpSink`): a forgotten password reset by a
//! link (the same answer for every address, single use, 30 minutes, dead once the password
//! changes, every login ended, a lock lifted), notices of changes to how people sign in, the
//! outbox that waits out a mail server that is down, `.eml` files in development, and an
//! access log that never shows a token.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::matrix;
use crate::support::{
    location, secret_key, text_in, Browser, Db, Mail, Options, ServerProcess, Store, TestApp, PASSWORD,
};

const NEW_PASSWORD: &str = "another fine horse battery";
const SUBJECT: &str = "Reset your latchkey password";
const WAIT: Duration = Duration::from_secs(10);

/// Asks for a reset link for `email` in `browser`; returns the answer's status and page.
async fn ask_for_link(browser: &Browser, email: &str) -> (StatusCode, String) {
    let answer = browser.submit("/password/forgot", "/password/forgot", &[("email", email)]).await;
    (answer.status(), answer.text().await.unwrap())
}

/// The path of the reset link mailed to `email`.
async fn link_for(app: &TestApp, email: &str) -> String {
    let mail = app.mail.wait_for(email, SUBJECT, WAIT).await;
    let public = app.setting("PUBLIC_URL");
    let link = mail.link(&format!("{public}/password/reset/")).expect("a reset link built from PUBLIC_URL");
    link.trim_start_matches(public).to_owned()
}

/// Sets `password` through the reset page at `path`.
async fn reset(browser: &Browser, path: &str, password: &str) -> reqwest::Response {
    browser.submit(path, path, &[("new_password", password), ("new_password_confirm", password)]).await
}

async fn a_forgotten_password_is_reset_by_email(app: TestApp) {
    let email = "forgetful@example.com";
    app.create_user(email).await;
    let laptop = app.new_browser();
    assert_eq!(location(&laptop.login(email, PASSWORD).await), "/");

    let visitor = app.new_browser();
    let login_page = visitor.get_html("/login").await;
    assert!(login_page.contains(r#"href="/password/forgot""#), "the login page offers it");
    let (status, page) = ask_for_link(&visitor, email).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text_in(&page, "#reset-sent").unwrap().contains(email));

    let path = link_for(&app, email).await;
    let token = path.trim_start_matches("/password/reset/");
    assert_eq!(token.len(), 43, "256 bits, base64url: {token}");
    let form = visitor.get(&path).await;
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(form.headers()["referrer-policy"], "no-referrer");

    // The same password rules as anywhere else; nothing changes.
    let weak = reset(&visitor, &path, "password1234").await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text_in(&weak.text().await.unwrap(), "#new_password-errors").is_some());

    let done = reset(&visitor, &path, NEW_PASSWORD).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), "/login");
    assert!(!visitor.is_logged_in().await, "a reset logs no one in");
    assert!(!laptop.is_logged_in().await, "every login of the account ended");

    // Used once.
    let again = visitor.get(&path).await;
    assert_eq!(again.status(), StatusCode::GONE);
    assert!(text_in(&again.text().await.unwrap(), "#reset-gone").is_some());
    assert_eq!(reset(&visitor, &path, "yet another horse battery").await.status(), StatusCode::GONE);

    assert_eq!(visitor.login(email, PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(location(&visitor.login(email, NEW_PASSWORD).await), "/");
    let notice = app.mail.wait_for(email, "Your password was reset", WAIT).await;
    assert!(notice.body().contains("/password/forgot"), "{}", notice.body());
    assert!(!notice.body().contains(token));
}

matrix!(a_forgotten_password_is_reset_by_email);

/// Known and unknown addresses get the same status and page, and only a real account gets
/// mail.
#[tokio::test]
async fn every_address_gets_the_same_answer() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    app.create_user("known@example.com").await;
    let (known_status, known_page) = ask_for_link(&app, "known@example.com").await;
    let (unknown_status, unknown_page) = ask_for_link(&app, "unknown@example.com").await;
    assert_eq!(known_status, unknown_status);
    let sent = |page: &str, email: &str| text_in(page, "#reset-sent").unwrap().replace(email, "EMAIL");
    assert_eq!(sent(&known_page, "known@example.com"), sent(&unknown_page, "unknown@example.com"));

    app.mail.wait_for("known@example.com", SUBJECT, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(app.mail.received_by("unknown@example.com").is_empty());

    // An invalid address is a form error, and changes nothing.
    let (status, _) = ask_for_link(&app, "not an address").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// A link stops working once the password changes, and after `PASSWORD_RESET_TTL`.
#[tokio::test]
async fn a_link_dies_with_a_password_change_and_with_time() {
    let vars = vec![("PASSWORD_RESET_TTL", "2s".into())];
    let app =
        TestApp::spawn_with(Db::Postgres, Store::Database, Options { vars, ..Options::default() }).await;
    let email = "careful@example.com";
    assert_eq!(location(&app.register(email, PASSWORD).await), "/");
    ask_for_link(&app, email).await;
    let path = link_for(&app, email).await;
    assert_eq!(app.get(&path).await.status(), StatusCode::OK);
    let fields = [
        ("current_password", PASSWORD),
        ("new_password", NEW_PASSWORD),
        ("new_password_confirm", NEW_PASSWORD),
    ];
    let changed = app.submit("/account/password", "/account/password", &fields).await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.get(&path).await.status(), StatusCode::GONE, "the password changed since");
    app.mail.wait_for(email, "Your password was changed", WAIT).await;

    let visitor = app.new_browser();
    let started = Instant::now();
    ask_for_link(&visitor, email).await;
    // The first link was used up by the change; wait for the second.
    let second = loop {
        let links: Vec<String> = app
            .mail
            .received_by(email)
            .iter()
            .filter(|mail| mail.subject() == SUBJECT)
            .filter_map(|mail| mail.link(&format!("{}/password/reset/", app.setting("PUBLIC_URL"))))
            .collect();
        if links.len() == 2 {
            break links[1].trim_start_matches(app.setting("PUBLIC_URL")).to_owned();
        }
        assert!(started.elapsed() < WAIT, "a second link");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(started.elapsed())).await;
    assert_eq!(visitor.get(&second).await.status(), StatusCode::GONE, "expired");
    assert_eq!(reset(&visitor, &second, "a brand new horse battery").await.status(), StatusCode::GONE);
}

/// A lock is announced to the owner, whose way out is a reset.
#[tokio::test]
async fn a_reset_lifts_a_lock() {
    let vars = vec![("THROTTLE_DELAY_AFTER", "1".into()), ("THROTTLE_LOCK_AFTER", "2".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Redis, Options { vars, ..Options::default() }).await;
    let email = "locked@example.com";
    app.create_user(email).await;
    assert_eq!(app.login(email, "wrong wrong wrong").await.status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.login(email, "wrong wrong wrong").await.status(), StatusCode::UNAUTHORIZED);
    let locked = app.login(email, PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::FORBIDDEN);
    assert!(locked.text().await.unwrap().contains("Reset your password by email"));
    let notice = app.mail.wait_for(email, "Password sign-in to your account was locked", WAIT).await;
    assert!(notice.body().contains("reset your password by email"), "{}", notice.body());

    ask_for_link(&app, email).await;
    let path = link_for(&app, email).await;
    assert_eq!(reset(&app, &path, NEW_PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&app.login(email, NEW_PASSWORD).await), "/");
}

/// Links per address (`THROTTLE_EMAIL`) stop silently, the same for every address; asking
/// from one IP too often (`THROTTLE_EMAIL_IP`) is a 429.
#[tokio::test]
async fn asking_for_links_is_throttled() {
    let vars = vec![("THROTTLE_EMAIL", "1/1h".into()), ("THROTTLE_EMAIL_IP", "3/1h".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Database, Options { vars, ..Options::default() }).await;
    let email = "popular@example.com";
    app.create_user(email).await;
    assert_eq!(ask_for_link(&app, email).await.0, StatusCode::OK);
    assert_eq!(ask_for_link(&app, email).await.0, StatusCode::OK, "the same answer");
    app.mail.wait_for(email, SUBJECT, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let links = app.mail.received_by(email).into_iter().filter(|mail| mail.subject() == SUBJECT).count();
    assert_eq!(links, 1, "one link an hour for one address");
    assert_eq!(ask_for_link(&app, "someone@example.com").await.0, StatusCode::OK);
    let (status, page) = ask_for_link(&app, "else@example.com").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("Try again in"), "{page}");
}

/// A mail server that is down changes neither the answer nor its timing; the message goes
/// out once the server is back.
#[tokio::test]
async fn the_outbox_waits_out_a_mail_server_that_is_down() {
    let app = TestApp::spawn(Db::Postgres, Store::Cookie).await;
    let email = "patient@example.com";
    app.create_user(email).await;
    // The registration's confirmation link goes out first.
    app.mail.wait_for(email, "Confirm your latchkey email address", WAIT).await;
    app.mail.stop();
    let started = Instant::now();
    let (status, _) = ask_for_link(&app, email).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the page does not wait on SMTP: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(app.mail.received().iter().all(|mail| mail.subject() != SUBJECT));
    app.mail.resume().await;
    // Retries after MAIL_RETRY (1 s here), doubling: 1 s, 2 s, 4 s…
    app.mail.wait_for(email, SUBJECT, Duration::from_secs(15)).await;
}

/// Changes to how someone signs in are announced to their address; an email change to the
/// old one.
async fn changes_are_announced_by_email(app: TestApp) {
    let email = "watchful@example.com";
    assert_eq!(location(&app.register(email, PASSWORD).await), "/");
    let changed = app.submit("/account/email", "/account/email", &[("new_email", "moved@example.com")]).await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    let public = app.setting("PUBLIC_URL");
    let link = app.mail.wait_for("moved@example.com", "Confirm your new latchkey email address", WAIT).await;
    let path = link.link(&format!("{public}/email/confirm/")).unwrap().trim_start_matches(public).to_owned();
    assert_eq!(location(&app.submit(&path, &path, &[]).await), "/account");
    let notice = app.mail.wait_for(email, "Your email address was changed", WAIT).await;
    assert!(notice.body().contains("moved@example.com"), "{}", notice.body());
    assert!(notice.body().contains("127.0.0.1"), "from where: {}", notice.body());

    crate::second_factor::set_up_totp(&app).await;
    let added = app.mail.wait_for("moved@example.com", "An authenticator app was added", WAIT).await;
    assert!(added.body().contains("/account/activity"), "{}", added.body());
    let renewed = app.submit("/account/security", "/account/security/recovery-codes", &[]).await;
    assert_eq!(renewed.status(), StatusCode::SEE_OTHER);
    app.mail.wait_for("moved@example.com", "New recovery codes were made", WAIT).await;
    // The registration's link, the change asked for, the change made; nothing later.
    assert_eq!(app.mail.received_by(email).len(), 3, "later notices go to the new address");
}

matrix!(changes_are_announced_by_email);

/// In development without `SMTP_URL`, mail is written to `OUTBOX_DIR` as `.eml` files and the
/// log says where; the access log shows a reset link's path without its token.
#[tokio::test]
async fn development_writes_eml_files_and_the_log_hides_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let vars = vec![
        ("DATABASE_URL", format!("sqlite://{}", dir.path().join("db.sqlite3").display())),
        ("SECRET_KEY", secret_key()),
        ("BCRYPT_COST", "4".to_owned()),
        ("OUTBOX_DIR", outbox.display().to_string()),
    ];
    let server = ServerProcess::start(dir.path(), &vars);
    let browser = Browser::new(&server.address, None);
    let email = "developer@example.com";
    assert_eq!(browser.register(email, PASSWORD).await.status(), StatusCode::SEE_OTHER);
    browser.logout().await;
    ask_for_link(&browser, email).await;

    let started = Instant::now();
    let message = loop {
        let files: Vec<_> = std::fs::read_dir(&outbox).unwrap().flatten().map(|entry| entry.path()).collect();
        // The registration's confirmation link is there too; find the reset link's message.
        let reset = files
            .iter()
            .filter(|path| path.extension().is_some_and(|e| e == "eml"))
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .find(|text| text.contains(SUBJECT));
        if let Some(text) = reset {
            break text;
        }
        assert!(started.elapsed() < WAIT, "an .eml file in {}", outbox.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let message = Mail { to: vec![], data: message };
    let path = message.link("/password/reset/").expect("a link in the message");
    let token = path.trim_start_matches("/password/reset/");
    assert_eq!(browser.get(&path).await.status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    assert!(log.contains(&outbox.display().to_string()), "the log says where mail goes: {log}");
    assert!(log.contains("GET /password/reset/[redacted]"), "{log}");
    assert!(!log.contains(token), "the token is in the log: {log}");
}
