//! Logins: valid only for the credentials they proved, ending on time however active,
//! rotating where the session id cannot, never minting ids from a retired one, working from a
//! browser whose old login ended, purged once ended, and rehashed when the cost changes.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use latchkey::db::schema::users;
use latchkey_auth::registry::schema::logins;
use reqwest::StatusCode;

use crate::matrix;
use crate::support::{set_cookie, Browser, Db, Options, Store, TestApp, PASSWORD};

const NEW_PASSWORD: &str = "a brand new passphrase";

/// An app on `db` and `store` with `vars` over the tests' settings.
async fn app(db: Db, store: Store, vars: &[(&'static str, &str)]) -> TestApp {
    let vars = vars.iter().map(|&(var, value)| (var, value.to_owned())).collect();
    TestApp::spawn_with(db, store, Options { vars, ..Options::default() }).await
}

fn logins_in_database(app: &TestApp) -> i64 {
    logins::table.count().get_result(&mut app.connection()).unwrap()
}

/// Starts a login of `browser` after `delay`; the task hands the browser back once the login
/// POST has been answered.
fn login_in_background(browser: Browser, delay: Duration) -> tokio::task::JoinHandle<Browser> {
    tokio::spawn(async move {
        let token = browser.csrf_token("/login").await;
        tokio::time::sleep(delay).await;
        let fields = [("email", "race@example.com"), ("password", PASSWORD), ("csrf_token", token.as_str())];
        browser.post_form("/login", &fields).await;
        browser
    })
}

/// How long one password check takes at this app's cost.
async fn password_check_time(app: &TestApp) -> Duration {
    let probe = app.new_browser();
    let started = Instant::now();
    assert_eq!(probe.login("race@example.com", "not the password").await.status(), StatusCode::UNAUTHORIZED);
    started.elapsed()
}

/// A password change ends every login made with the old password, including logins whose
/// password check was still running when the change committed (they read the user before
/// it and insert their row after it). Whatever the order, none may end up logged in.
async fn a_login_racing_a_password_change_does_not_survive_it(app: TestApp) {
    app.register("race@example.com", PASSWORD).await;
    let check = password_check_time(&app).await;
    // The change takes two checks' time (verify the current password, hash the new one):
    // logins started during the second one read the old user and insert after the commit.
    let racers: Vec<_> = [1.2, 1.5, 1.8]
        .into_iter()
        .map(|at| login_in_background(app.new_browser(), check.mul_f64(at)))
        .collect();
    let fields = [
        ("current_password", PASSWORD),
        ("new_password", NEW_PASSWORD),
        ("new_password_confirm", NEW_PASSWORD),
    ];
    let changed = app.submit("/account/password", "/account/password", &fields).await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    let mut browsers = Vec::new();
    for racer in racers {
        browsers.push(racer.await.unwrap());
    }
    // Before any racer asks again: the devices page lists only this browser, and the purge
    // removes rows proved with the old password.
    let page = app.get_html("/account/sessions").await;
    assert_eq!(page.matches(r#"<li class="device"#).count(), 1, "a racing login is listed: {page}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(logins_in_database(&app), 1, "rows of racing logins were not purged");
    for (n, racer) in browsers.iter().enumerate() {
        assert!(!racer.is_logged_in().await, "racing login {n} survived the password change");
    }
    assert!(app.is_logged_in().await, "the browser that changed the password stays logged in");
    assert!(
        app.new_browser().login("race@example.com", NEW_PASSWORD).await.status() == StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_login_racing_a_password_change_does_not_survive_it_sqlite() {
    a_login_racing_a_password_change_does_not_survive_it(
        app(Db::Sqlite, Store::Cookie, &[("BCRYPT_COST", "10"), ("SESSION_PURGE_INTERVAL", "1s")]).await,
    )
    .await;
}

#[tokio::test]
async fn a_login_racing_a_password_change_does_not_survive_it_postgres() {
    a_login_racing_a_password_change_does_not_survive_it(
        app(Db::Postgres, Store::Redis, &[("BCRYPT_COST", "10"), ("SESSION_PURGE_INTERVAL", "1s")]).await,
    )
    .await;
}

/// "Log out everywhere else" also ends a login whose password check began before it.
async fn a_login_racing_log_out_everywhere_else_does_not_survive_it(app: TestApp) {
    app.register("race@example.com", PASSWORD).await;
    let check = password_check_time(&app).await;
    let racer = login_in_background(app.new_browser(), Duration::ZERO);
    tokio::time::sleep(check / 3).await;
    let ended = app.submit("/account/sessions", "/account/sessions/revoke-others", &[]).await;
    assert_eq!(ended.status(), StatusCode::SEE_OTHER);
    let racer = racer.await.unwrap();
    assert!(!racer.is_logged_in().await, "a login begun before 'log out everywhere else' survived it");
    assert!(app.is_logged_in().await);
    // A login begun afterwards is a new login and stands.
    assert!(login_in_background(racer, Duration::ZERO).await.unwrap().is_logged_in().await);
}

#[tokio::test]
async fn a_login_racing_log_out_everywhere_else_does_not_survive_it_sqlite() {
    a_login_racing_log_out_everywhere_else_does_not_survive_it(
        app(Db::Sqlite, Store::Database, &[("BCRYPT_COST", "10")]).await,
    )
    .await;
}

#[tokio::test]
async fn a_login_racing_log_out_everywhere_else_does_not_survive_it_postgres() {
    a_login_racing_log_out_everywhere_else_does_not_survive_it(
        app(Db::Postgres, Store::Cookie, &[("BCRYPT_COST", "10")]).await,
    )
    .await;
}

/// A remembered login ends REMEMBER_DURATION after the password was entered, however busy.
async fn a_remembered_login_ends_on_time_however_active(app: TestApp) {
    app.register("rita@example.com", PASSWORD).await;
    app.logout().await;
    let started = Instant::now();
    app.login_remembered("rita@example.com", PASSWORD).await;
    let status: serde_json::Value = app.get("/session/status").await.json().await.unwrap();
    let left = status["absolute_expires_in"].as_i64().unwrap();
    assert!((3..=4).contains(&left), "absolute_expires_in {left} for REMEMBER_DURATION=4s");
    assert!(status["idle_expires_in"].is_null(), "{status}");
    // A request every 700 ms: far inside any idle timeout.
    while started.elapsed() < Duration::from_millis(3300) {
        assert!(app.is_logged_in().await, "ended early, at {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_millis(4300).saturating_sub(started.elapsed())).await;
    assert!(!app.is_logged_in().await, "a remembered login outlived REMEMBER_DURATION by being used");
}
matrix!(
    a_remembered_login_ends_on_time_however_active,
    [("REMEMBER_DURATION", "4s"), ("IDLE_TIMEOUT", "30s"), ("TIMEOUT_WARNING", "10s")]
);

/// The cookie store rotates the login's generation: a copy of an older cookie works for
/// ROTATE_GRACE after the move, then not at all, while the browser that moved on stays in.
async fn a_cookie_of_an_older_generation_stops_working(app: TestApp) {
    app.register("gen@example.com", PASSWORD).await;
    let copied = app.sending(&app.cookies());
    let before = app.session_cookie();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(app.is_logged_in().await, "the first request after the interval moves the generation on");
    assert_ne!(app.session_cookie(), before, "a cookie of the new generation");
    let in_grace = copied.get("/account").await;
    assert_eq!(in_grace.status(), StatusCode::OK, "the old cookie works within the grace period");
    assert!(
        set_cookie(&in_grace, "latchkey_session").is_none(),
        "a request in grace sent an old cookie back"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!copied.is_logged_in().await, "the old cookie works after the grace period");
    assert!(app.is_logged_in().await);
}

/// Rotation every 2 s with 1 s of grace. IDLE_TIMEOUT=10s refreshes the session every
/// second, so the request in grace writes its session and would send its old cookie back.
const GENERATIONS: [(&str, &str); 4] =
    [("ROTATE_INTERVAL", "2s"), ("ROTATE_GRACE", "1s"), ("IDLE_TIMEOUT", "10s"), ("TIMEOUT_WARNING", "5s")];

#[tokio::test]
async fn a_cookie_of_an_older_generation_stops_working_sqlite() {
    a_cookie_of_an_older_generation_stops_working(app(Db::Sqlite, Store::Cookie, &GENERATIONS).await).await;
}

#[tokio::test]
async fn a_cookie_of_an_older_generation_stops_working_postgres() {
    a_cookie_of_an_older_generation_stops_working(app(Db::Postgres, Store::Cookie, &GENERATIONS).await).await;
}

/// A request carrying a session id retired within ROTATE_GRACE is served, but is never
/// handed a new live id of its own.
async fn a_retired_id_is_served_but_never_renewed(app: TestApp) {
    if app.store == Store::Cookie {
        return; // cookie sessions have no server-side id; their generation is tested above
    }
    app.register("old@example.com", PASSWORD).await;
    let old = app.sending(&app.cookies());
    let old_id = app.session_cookie().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(app.is_logged_in().await);
    assert_ne!(app.session_cookie().unwrap(), old_id, "the id rotated");

    let response = old.get("/account").await;
    assert_eq!(response.status(), StatusCode::OK, "the retired id is served in its grace period");
    let reissued = set_cookie(&response, "latchkey_session");
    assert!(reissued.is_none(), "a retired id was sent a session cookie: {reissued:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(!old.is_logged_in().await, "the retired id outlived its grace period");
    assert!(app.is_logged_in().await);
}
matrix!(a_retired_id_is_served_but_never_renewed, [("ROTATE_INTERVAL", "1s"), ("ROTATE_GRACE", "2s")]);

/// A browser whose login ended on the server (revoked from another device) logs in again with
/// one POST, and no orphan row is left behind.
async fn a_login_from_a_browser_whose_login_ended_works(app: TestApp) {
    app.register("stale@example.com", PASSWORD).await;
    // The form is loaded while logged in; no page view follows the revocation, so the login
    // POST itself is the first request to meet the ended login.
    let token = app.csrf_token("/shop").await;
    let other = app.new_browser();
    other.login("stale@example.com", PASSWORD).await;
    let ended = other.submit("/account/sessions", "/account/sessions/revoke-others", &[]).await;
    assert_eq!(ended.status(), StatusCode::SEE_OTHER);

    let response = app
        .post_form(
            "/login",
            &[("email", "stale@example.com"), ("password", PASSWORD), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(app.is_logged_in().await, "the login POST from a stale browser did not log in");
    assert_eq!(logins_in_database(&app), 2, "one login per browser, no orphan");
}
matrix!(a_login_from_a_browser_whose_login_ended_works);

/// Keeps `browser` active for `duration` (a request every 500 ms, far inside the idle timeout).
async fn stay_active(browser: &Browser, duration: Duration) {
    let started = Instant::now();
    while started.elapsed() < duration {
        assert!(browser.is_logged_in().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The devices page lists only live logins, even before the purge has run.
async fn ended_logins_are_not_listed(app: TestApp) {
    app.register("ida@example.com", PASSWORD).await;
    app.new_browser().login("ida@example.com", PASSWORD).await;
    stay_active(&app, Duration::from_millis(4000)).await;
    assert_eq!(logins_in_database(&app), 2, "the purge has not run yet");
    let page = app.get_html("/account/sessions").await;
    assert_eq!(page.matches(r#"<li class="device"#).count(), 1, "an ended login is listed: {page}");
    assert!(page.contains("This device"));
}
matrix!(
    ended_logins_are_not_listed,
    [("IDLE_TIMEOUT", "3s"), ("TIMEOUT_WARNING", "1s"), ("SESSION_PURGE_INTERVAL", "1h")]
);

/// Ended logins are deleted by the periodic purge, in every store.
async fn ended_logins_are_purged(app: TestApp) {
    app.register("ida@example.com", PASSWORD).await;
    let idle = app.new_browser();
    idle.login("ida@example.com", PASSWORD).await;
    assert_eq!(logins_in_database(&app), 2);
    stay_active(&app, Duration::from_millis(5000)).await;
    assert_eq!(logins_in_database(&app), 1, "the ended login was not purged");
    assert!(!idle.is_logged_in().await);
}
matrix!(
    ended_logins_are_purged,
    [("IDLE_TIMEOUT", "3s"), ("TIMEOUT_WARNING", "1s"), ("SESSION_PURGE_INTERVAL", "1s")]
);

/// A hash made at another bcrypt cost is replaced at the next successful login.
#[tokio::test]
async fn a_password_hash_of_another_cost_is_replaced_at_login() {
    let app = TestApp::spawn(Db::Sqlite, Store::Database).await;
    app.create_user("cost@example.com").await;
    let old_hash = latchkey_auth::password::hash_blocking(PASSWORD, 5).unwrap();
    let stored = |conn: &mut latchkey::db::DbConnection| -> String {
        users::table.select(users::password_hash).first(conn).unwrap()
    };
    diesel::update(users::table)
        .set(users::password_hash.eq(&old_hash))
        .execute(&mut app.connection())
        .unwrap();

    assert_eq!(app.login("cost@example.com", "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(stored(&mut app.connection()), old_hash, "a failed login changes nothing");
    assert_eq!(app.login("cost@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let new_hash = stored(&mut app.connection());
    assert!(new_hash.starts_with("$2b$04$"), "rehashed at the configured cost: {new_hash}");
    app.logout().await;
    assert_eq!(app.login("cost@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
}
