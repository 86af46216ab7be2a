//! The login cache, the session-state cache and the password hashing pool: a login ended on
//! one instance is refused on another that had it cached, and session state written on one is
//! read on the other; an instance whose invalidation channel is down serves nothing
//! from its cache; a login storm past the hashing queue is refused with 503, and pages are
//! answered while logins wait in line.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::matrix;
use crate::support::{redis_url, Browser, Db, Options, Proxy, Store, TestApp, PASSWORD};

/// A metric's value on the instance at `address` (its /metrics, read from loopback).
async fn metric(address: &str, series: &str) -> f64 {
    let text = Browser::new(address, None).get_html("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} is not in /metrics:\n{text}"))
}

/// Waits up to 10 s for the login cache at `address` to be serving (`true`) or not.
async fn wait_for_serving(address: &str, serving: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = if serving { 1.0 } else { 0.0 };
    while metric(address, "latchkey_login_cache_serving").await != want {
        assert!(Instant::now() < deadline, "the login cache at {address} never became serving={serving}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn changes_on_one_instance_reach_the_cache_of_another(app: TestApp) {
    let email = "twice@example.com";
    app.create_user(email).await;
    let other = app.spawn_beside(&[]).await;
    wait_for_serving(&other.address, true).await;
    app.login(email, PASSWORD).await;
    let phone = app.new_browser();
    phone.login(email, PASSWORD).await;
    let (there, phone_there) = (app.at(&other.address), phone.at(&other.address));
    assert!(there.is_logged_in().await && phone_there.is_logged_in().await);
    // On SQLite without Redis any commit (a session written, say) empties the caches, so
    // only the message-carrying channels are sure to hold the logins now.
    let watches_commits = app.setting("DATABASE_URL").starts_with("sqlite") && app.store != Store::Redis;
    if !watches_commits {
        assert!(metric(&other.address, "latchkey_login_cache_entries").await >= 2.0, "both cached there");
    }

    // Logging out here: the cookie, copied, is refused there.
    let copied = app.cookies();
    app.logout().await;
    assert!(Browser::new(&other.address, None).sending(&copied).turns_anonymous().await);

    // A password change here (every other login ends): the phone is logged out there too.
    app.login(email, PASSWORD).await;
    let new_password = "another correct horse battery";
    let changed = app
        .submit(
            "/account/password",
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", new_password),
                ("new_password_confirm", new_password),
            ],
        )
        .await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert!(phone_there.turns_anonymous().await, "the phone's login ended everywhere");
    assert!(app.at(&other.address).is_logged_in().await, "the login that changed it goes on, there too");
}
matrix!(changes_on_one_instance_reach_the_cache_of_another, [("LOGIN_CACHE_TTL", "1h")]);

/// Session state (a guest's cart) written on one instance is read on another that had it
/// cached: the Redis and database stores' state cache is invalidated like the login cache, and
/// the cookie store's parsed states follow the cookie.
async fn session_state_written_on_one_instance_reaches_the_cache_of_another(app: TestApp) {
    let other = app.spawn_beside(&[]).await;
    wait_for_serving(&other.address, true).await;
    let padlock = "1";
    assert_eq!(app.add_to_cart(padlock, "1").await.status(), StatusCode::SEE_OTHER);
    let there = app.at(&other.address);
    assert_eq!(there.cart().await, [(1, 1)]);
    let watches_commits = app.setting("DATABASE_URL").starts_with("sqlite") && app.store != Store::Redis;
    let cached = metric(&other.address, "latchkey_session_cache_entries").await;
    match app.store {
        // The cookie store keeps states parsed, keyed by the state itself: never stale (below).
        Store::Cookie => assert!(cached >= 1.0, "the cart's state is kept parsed there"),
        _ if !watches_commits => assert!(cached >= 1.0, "the cart's session is cached there"),
        _ => {}
    }

    assert_eq!(app.add_to_cart(padlock, "2").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.cart().await, [(1, 3)]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while there.cart().await != [(1, 3)] {
        assert!(Instant::now() < deadline, "the other instance kept serving the old cart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
matrix!(session_state_written_on_one_instance_reaches_the_cache_of_another, [("LOGIN_CACHE_TTL", "1h")]);

/// When a busy login's cache entry ends, the requests that miss at once read the database
/// once between them, not once each: one reads, the others wait for it (each still judged by
/// its own request). So do the Redis and database stores' session states.
async fn a_burst_of_requests_after_the_cache_entry_ends_reads_once(app: TestApp) {
    let email = "burst@example.com";
    app.create_user(email).await;
    app.login(email, PASSWORD).await;
    assert!(app.is_logged_in().await);
    let misses = async || {
        let address = &app.address;
        (
            metric(address, "latchkey_login_cache_misses_total").await,
            metric(address, "latchkey_session_cache_misses_total").await,
        )
    };
    let copied = Browser::new(&app.address, None).sending(&app.cookies());
    for round in 0..3 {
        // Past the time to live (1 s): the login's entry, and its session's, have ended.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (logins_before, sessions_before) = misses().await;
        let pages = futures_util::future::join_all((0..16).map(|_| copied.get("/about"))).await;
        assert!(
            pages.iter().all(|page| page.status() == StatusCode::OK),
            "round {round}: every request answered"
        );
        let (logins_after, sessions_after) = misses().await;
        assert_eq!(logins_after - logins_before, 1.0, "round {round}: one read of the login for 16 requests");
        let session_reads = if app.store == Store::Cookie { 0.0 } else { 1.0 };
        assert_eq!(sessions_after - sessions_before, session_reads, "round {round}: session state read once");
    }
    assert!(copied.is_logged_in().await, "and the login goes on");
}
matrix!(a_burst_of_requests_after_the_cache_entry_ends_reads_once, [("LOGIN_CACHE_TTL", "1s")]);

#[tokio::test]
async fn an_instance_cut_off_from_its_channel_serves_nothing_from_its_cache() {
    let vars = vec![("REDIS_URL", redis_url()), ("LOGIN_CACHE_TTL", "1h".into())];
    let app = TestApp::spawn_with(Db::Postgres, Store::Cookie, Options { vars, ..Options::default() }).await;
    let proxy = Proxy::to_redis().await;
    let other = app.spawn_beside(&[("REDIS_URL", &format!("redis://127.0.0.1:{}", proxy.port))]).await;
    wait_for_serving(&other.address, true).await;
    let email = "cut@example.com";
    app.create_user(email).await;
    app.login(email, PASSWORD).await;
    assert!(app.at(&other.address).is_logged_in().await);
    assert!(metric(&other.address, "latchkey_login_cache_entries").await >= 1.0, "cached there");

    proxy.cut();
    wait_for_serving(&other.address, false).await;
    assert_eq!(metric(&other.address, "latchkey_login_cache_entries").await, 0.0, "and emptied");
    // This instance publishes the logout; the other cannot hear it, and must not need to.
    let copied = app.cookies();
    app.logout().await;
    let replayed = Browser::new(&other.address, None).sending(&copied);
    assert!(!replayed.is_logged_in().await, "refused at once, from the database");

    proxy.restore();
    wait_for_serving(&other.address, true).await;
    app.login(email, PASSWORD).await;
    assert!(app.at(&other.address).is_logged_in().await, "served again once the channel is back");
}

#[tokio::test]
async fn a_login_storm_past_the_hashing_queue_is_refused_and_pages_do_not_wait() {
    // One hashing thread, a queue of two, a quarter of a second per hash.
    let vars = vec![
        ("HASH_THREADS", "1".into()),
        ("HASH_QUEUE", "2".into()),
        ("BCRYPT_COST", "12".into()),
        ("THROTTLE", "off".into()),
    ];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options { vars, ..Options::default() }).await;
    let emails: Vec<String> = (0..8).map(|n| format!("storm{n}@example.com")).collect();
    for email in &emails {
        app.create_user(email).await;
    }
    app.login(&emails[0], PASSWORD).await;
    let logins_before = count_logins(&app);

    // Every login form is fetched first, so the logins themselves arrive together.
    let mut forms = Vec::new();
    for email in &emails {
        let browser = app.new_browser();
        let token = browser.csrf_token("/login").await;
        forms.push((browser, email.clone(), token));
    }
    let started = Instant::now();
    let storm: Vec<_> = forms
        .into_iter()
        .map(|(browser, email, token)| {
            tokio::spawn(async move {
                let fields = [("email", email.as_str()), ("password", PASSWORD), ("csrf_token", &token)];
                let response = browser.post_form("/login", &fields).await;
                let status = response.status();
                let retry_after =
                    response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
                (status, retry_after, response.text().await.unwrap_or_default(), Instant::now())
            })
        })
        .collect();
    // Pages are answered while the logins wait for the hashing thread.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        assert_eq!(app.get("/about").await.status(), StatusCode::OK);
    }
    let pages_done = Instant::now();

    let mut succeeded = 0;
    let mut last_login = started;
    for task in storm {
        let (status, retry_after, page, at) = task.await.expect("login task");
        match status {
            StatusCode::SEE_OTHER => {
                succeeded += 1;
                last_login = last_login.max(at);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let seconds: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
                assert!(seconds >= 1, "Retry-After {seconds}");
                assert!(page.contains("Too many people are signing in"), "{page}");
            }
            other => panic!("a login in the storm answered {other}: {page}"),
        }
    }
    assert!(succeeded >= 3, "one hashing, two queued: at least three logins go through ({succeeded})");
    assert!(succeeded < emails.len(), "the rest are refused");
    assert_eq!(count_logins(&app), logins_before + succeeded as i64, "a refused login records nothing");
    assert!(pages_done < last_login, "the pages did not wait behind the queued logins");
}

fn count_logins(app: &TestApp) -> i64 {
    use diesel::prelude::*;
    latchkey_auth::registry::schema::logins::table
        .count()
        .get_result(&mut app.connection())
        .expect("count logins")
}
