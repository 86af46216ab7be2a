//! The admin area: only administrators (with a fresh login) get in; they find accounts,
//! disable and enable them (a disabled account's logins end at once), force a password reset,
//! remove second factors, lift a lock and end logins, each action audited. And the
//! `latchkey user create | disable | enable` commands.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reqwest::StatusCode;

use crate::matrix;
use crate::support::{
    location, run_latchkey, secret_key, text_in, Browser, Db, Options, Store, TestApp, PASSWORD,
};

const ADMIN: &str = "root@example.com";
const WAIT: Duration = Duration::from_secs(10);

/// Registers `email` in `browser` and makes it an administrator (as `latchkey user create
/// --admin` would); the role counts from the next request.
async fn make_admin(app: &TestApp, browser: &Browser, email: &str) {
    assert_eq!(location(&browser.register(email, PASSWORD).await), "/");
    use latchkey::db::schema::users;
    diesel::update(users::table.filter(users::email.eq(email)))
        .set(users::is_admin.eq(true))
        .execute(&mut app.connection())
        .unwrap();
}

/// The id of `email`'s account.
fn user_id(app: &TestApp, email: &str) -> i32 {
    use latchkey::db::schema::users;
    users::table.filter(users::email.eq(email)).select(users::id).first(&mut app.connection()).unwrap()
}

/// Presses the button for `action` on the admin page of account `id`.
async fn act(admin: &Browser, id: i32, action: &str) -> reqwest::Response {
    admin.submit(&format!("/admin/users/{id}"), &format!("/admin/users/{id}/{action}"), &[]).await
}

/// The events of the owner's activity page.
async fn activity(browser: &Browser) -> Vec<String> {
    let page = browser.get_html("/account/activity").await;
    let html = scraper::Html::parse_document(&page);
    let rows = scraper::Selector::parse("tr.activity-event").unwrap();
    html.select(&rows).filter_map(|row| row.value().attr("data-event").map(str::to_owned)).collect()
}

async fn only_administrators_get_in(app: TestApp) {
    let anonymous = app.new_browser();
    assert_eq!(location(&anonymous.get("/admin").await), "/login?next=/admin");

    let user = app.new_browser();
    assert_eq!(location(&user.register("plain@example.com", PASSWORD).await), "/");
    let refused = user.get("/admin").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("administrators"));
    assert!(!user.get_html("/").await.contains(r#"href="/admin""#), "no Admin link for users");

    make_admin(&app, &app.browser, ADMIN).await;
    let page = app.get_html("/admin").await;
    assert!(page.contains("plain@example.com") && page.contains(ADMIN), "{page}");
    assert!(page.contains(r#"data-event="authz_fail""#), "the refusal is among the latest events");
    assert!(page.contains(r#"<th scope="col">Account</th>"#), "events name their account here");
    assert!(app.get_html("/").await.contains(r#"href="/admin""#));
    let found = app.get_html("/admin?q=PLAIN").await;
    assert!(found.contains("plain@example.com") && !found.contains(r#">root@example.com</a>"#), "{found}");
}

matrix!(only_administrators_get_in);

async fn a_disabled_account_is_out_at_once_until_enabled(app: TestApp) {
    make_admin(&app, &app.browser, ADMIN).await;
    let victim = app.new_browser();
    let email = "suspect@example.com";
    assert_eq!(location(&victim.register(email, PASSWORD).await), "/");
    let id = user_id(&app, email);

    assert_eq!(location(&act(&app, id, "disable").await), format!("/admin/users/{id}"));
    assert!(!victim.is_logged_in().await, "its login ended at once");
    let refused = victim.login(email, PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("This account is disabled"));
    assert_eq!(
        text_in(&app.get_html(&format!("/admin/users/{id}")).await, "#account-state").unwrap(),
        "Disabled"
    );
    // An administrator cannot lock themselves out.
    assert_eq!(act(&app, user_id(&app, ADMIN), "disable").await.status(), StatusCode::BAD_REQUEST);

    assert_eq!(act(&app, id, "enable").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&victim.login(email, PASSWORD).await), "/");
    let events = activity(&victim).await;
    assert!(
        events.contains(&"admin_user_disabled".to_owned())
            && events.contains(&"admin_user_enabled".to_owned())
    );
}

matrix!(a_disabled_account_is_out_at_once_until_enabled);

#[tokio::test]
async fn an_administrator_forces_a_new_password_and_removes_factors() {
    let app = TestApp::spawn(Db::Postgres, Store::Redis).await;
    make_admin(&app, &app.browser, ADMIN).await;
    let owner = app.new_browser();
    let email = "lost@example.com";
    assert_eq!(location(&owner.register(email, PASSWORD).await), "/");
    crate::second_factor::set_up_totp(&owner).await;
    let id = user_id(&app, email);

    // Lost their phone and codes: the administrator removes the factors.
    assert!(app.get_html(&format!("/admin/users/{id}")).await.contains("Remove the second factors"));
    assert_eq!(act(&app, id, "reset-factors").await.status(), StatusCode::SEE_OTHER);
    app.mail.wait_for(email, "An administrator removed your second factors", WAIT).await;
    owner.logout().await;
    assert_eq!(location(&owner.login(email, PASSWORD).await), "/", "no second step any more");

    // A new password is required: the old one stops working, every login ends, a link goes out.
    assert_eq!(act(&app, id, "reset-password").await.status(), StatusCode::SEE_OTHER);
    assert!(!owner.is_logged_in().await);
    assert_eq!(owner.login(email, PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    let mail = app.mail.wait_for(email, "Reset your latchkey password", WAIT).await;
    assert!(mail.body().contains("An administrator"), "{}", mail.body());
    let public = app.setting("PUBLIC_URL");
    let link = mail.link(&format!("{public}/password/reset/")).unwrap();
    let path = link.trim_start_matches(public);
    let fields = [
        ("new_password", "a fresh start for everyone"),
        ("new_password_confirm", "a fresh start for everyone"),
    ];
    assert_eq!(owner.submit(path, path, &fields).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&owner.login(email, "a fresh start for everyone").await), "/");
    let events = activity(&owner).await;
    assert!(
        events.contains(&"admin_password_reset".to_owned())
            && events.contains(&"admin_factors_reset".to_owned())
    );
}

#[tokio::test]
async fn an_administrator_lifts_a_lock_and_ends_a_login() {
    let vars = vec![("THROTTLE_DELAY_AFTER", "1".into()), ("THROTTLE_LOCK_AFTER", "2".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Database, Options { vars, ..Options::default() }).await;
    make_admin(&app, &app.browser, ADMIN).await;
    let email = "unlucky@example.com";
    let phone = app.new_browser();
    assert_eq!(location(&phone.register(email, PASSWORD).await), "/");
    let id = user_id(&app, email);

    let laptop = app.new_browser();
    assert_eq!(laptop.login(email, "wrong wrong wrong").await.status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(laptop.login(email, "wrong wrong wrong").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(laptop.login(email, PASSWORD).await.status(), StatusCode::FORBIDDEN);
    let page = app.get_html(&format!("/admin/users/{id}")).await;
    assert_eq!(text_in(&page, "#account-lock").unwrap(), "Locked after too many failures");
    assert_eq!(act(&app, id, "unlock").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&laptop.login(email, PASSWORD).await), "/");

    // End the phone's login from the list.
    let page = app.get_html(&format!("/admin/users/{id}")).await;
    let html = scraper::Html::parse_document(&page);
    let logins: Vec<String> = html
        .select(&scraper::Selector::parse("[data-login]").unwrap())
        .filter_map(|e| e.value().attr("data-login").map(str::to_owned))
        .collect();
    assert_eq!(logins.len(), 2, "the phone and the laptop");
    for login in &logins {
        let ended = act(&app, id, &format!("logins/{login}/revoke")).await;
        assert_eq!(ended.status(), StatusCode::SEE_OTHER);
    }
    assert!(!phone.is_logged_in().await && !laptop.is_logged_in().await);
    assert_eq!(act(&app, id, &format!("logins/{}/revoke", logins[0])).await.status(), StatusCode::NOT_FOUND);
}

/// An administrator's stale login proves itself again before the admin area opens.
#[tokio::test]
async fn a_stale_administrator_is_asked_to_prove_it() {
    let vars = vec![("REAUTH_WINDOW", "1s".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options { vars, ..Options::default() }).await;
    make_admin(&app, &app.browser, ADMIN).await;
    assert_eq!(app.get("/admin").await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(location(&app.get("/admin").await), "/reauth?next=/admin");
    let proved =
        app.submit("/reauth?next=/admin", "/reauth", &[("password", PASSWORD), ("next", "/admin")]).await;
    assert_eq!(location(&proved), "/admin");
    assert_eq!(app.get("/admin").await.status(), StatusCode::OK);
}

/// `latchkey user create EMAIL --admin` (password on stdin), then `disable` and `enable`.
#[tokio::test]
async fn accounts_from_the_command_line() {
    let app = TestApp::spawn(Db::Postgres, Store::Cookie).await;
    let url = app.database_url();
    let key = secret_key();
    let dir = tempfile::tempdir().unwrap();
    let create = |email: &str, password: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["user", "create", email, "--admin"])
            .current_dir(dir.path())
            .env_clear()
            .env("DATABASE_URL", &url)
            .env("SECRET_KEY", &key)
            .env("BCRYPT_COST", "4")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let weak = create("boss@example.com", "password1234");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too easy to guess"), "{:?}", weak);

    let created = create("Boss@Example.com", PASSWORD);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("boss@example.com (administrator)"));
    assert_eq!(location(&app.login("boss@example.com", PASSWORD).await), "/");
    assert_eq!(app.get("/admin").await.status(), StatusCode::OK);
    assert!(!create("boss@example.com", PASSWORD).status.success(), "the email is taken");

    let vars = [("DATABASE_URL", url.as_str()), ("SECRET_KEY", key.as_str())];
    let disabled = run_latchkey(dir.path(), &vars, &["user", "disable", "boss@example.com"]);
    assert!(disabled.status.success(), "{}", String::from_utf8_lossy(&disabled.stderr));
    assert!(String::from_utf8_lossy(&disabled.stdout).contains("1 login(s) ended"));
    assert!(app.turns_anonymous().await, "the command line's change reaches the server's login cache");
    assert_eq!(app.login("boss@example.com", PASSWORD).await.status(), StatusCode::FORBIDDEN);
    let enabled = run_latchkey(dir.path(), &vars, &["user", "enable", "boss@example.com"]);
    assert!(enabled.status.success());
    assert_eq!(location(&app.login("boss@example.com", PASSWORD).await), "/");
    let unknown = run_latchkey(dir.path(), &vars, &["user", "disable", "nobody@example.com"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no account"));
}
