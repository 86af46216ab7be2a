//! HTTP rules: HEAD, refused encodings and header sizes, security headers on every response,
//! cookies kept through error pages, the flash cookie, the client's address behind proxies,
//! and a binary that runs from any directory.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};

use crate::matrix;
use crate::support::{
    free_port, location, set_cookie, set_cookie_names, Db, Options, Store, TestApp, PASSWORD,
};

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn is_html_page(response: &Response) -> bool {
    header(response, "content-type").is_some_and(|t| t.starts_with("text/html"))
}

#[tokio::test]
async fn every_get_page_answers_head() {
    let app = TestApp::spawn(Db::Sqlite, Store::Database).await;
    for path in
        ["/", "/login", "/register", "/shop", "/cart", "/preferences", "/healthz", "/static/style.css"]
    {
        let response = app.request(Method::HEAD, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "HEAD {path}");
        assert!(response.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
    }
    let response = app.request(Method::HEAD, "/account").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_compressed_body_is_refused_with_415_and_changes_nothing() {
    let app = TestApp::spawn(Db::Sqlite, Store::Database).await;
    let token = app.csrf_token("/register").await;
    let body = format!("email=zip%40example.com&password=x&password_confirm=x&csrf_token={token}");
    let response = app
        .request(Method::POST, "/register")
        .header("Origin", &app.address)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Content-Encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(is_html_page(&response));
    let hidden = app
        .request(Method::POST, "/register")
        .header("Origin", &app.address)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Content-Encoding", "identity")
        .header("Content-Encoding", "identity, br")
        .body("email=x")
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "a second header, a list");
    assert!(!app.is_logged_in().await);
    assert_eq!(app.login("zip@example.com", "x").await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn headers_over_16_kib_are_refused_with_431() {
    let app = TestApp::spawn(Db::Sqlite, Store::Database).await;
    let under =
        app.request(Method::GET, "/").header("X-Padding", "a".repeat(15 * 1024)).send().await.unwrap();
    assert_eq!(under.status(), StatusCode::OK);
    let over = app.request(Method::GET, "/").header("X-Padding", "a".repeat(17 * 1024)).send().await.unwrap();
    assert_eq!(over.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(is_html_page(&over));
}

/// The headers every response carries, pages, redirects, files and error pages alike.
fn assert_security_headers(response: &Response, production: bool) {
    let what = response.url().path().to_owned();
    let csp = header(response, "content-security-policy").unwrap_or_default();
    assert!(csp.contains("object-src 'none'") && csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert_eq!(header(response, "x-content-type-options").as_deref(), Some("nosniff"), "{what}");
    let hsts = header(response, "strict-transport-security");
    if production {
        assert_eq!(hsts.as_deref(), Some("max-age=63072000; includeSubDomains"), "{what}");
    } else {
        assert_eq!(hsts, None, "{what}: no HSTS over plain http in development");
    }
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    for production in [false, true] {
        let options = if production { Options::production() } else { Options::default() };
        let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, options).await;
        for path in ["/", "/account", "/no-such-page", "/static/style.css", "/healthz"] {
            assert_security_headers(&app.get(path).await, production);
        }
        let forged = app.post_form("/logout", &[("csrf_token", "forged")]).await;
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert_security_headers(&forged, production);
    }
}

fn is_no_store(response: &Response) -> bool {
    header(response, "cache-control").is_some_and(|c| c.contains("no-store"))
}

async fn private_responses_are_never_stored(app: TestApp) {
    assert!(!is_no_store(&app.get("/static/style.css").await), "a guest's static file may be cached");
    assert!(is_no_store(&app.get("/login").await));
    assert!(is_no_store(&app.get("/register").await));
    let logged_in = app.register("cache@example.com", PASSWORD).await;
    assert_eq!(logged_in.status(), StatusCode::SEE_OTHER);
    assert!(is_no_store(&logged_in), "the 303 that sets the login cookie");
    for path in ["/", "/account", "/static/style.css", "/no-such-page"] {
        assert!(is_no_store(&app.get(path).await), "{path} for a logged-in visitor");
    }
    let logged_out = app.logout().await;
    assert!(is_no_store(&logged_out), "the 303 that clears the login cookie");
    assert_eq!(header(&logged_out, "clear-site-data").as_deref(), Some("\"cookies\""));
    assert_eq!(location(&logged_out), "/?logged_out=1");
    // The message does not depend on a cookie: a browser that honoured Clear-Site-Data
    // (here: a fresh one) still sees it.
    let home = app.new_browser().get_html(&location(&logged_out)).await;
    assert!(home.contains("You have been logged out."), "{home}");
}
matrix!(private_responses_are_never_stored);

/// An error page keeps the cookies the layers inside set: a rotation that lands on a 404
/// does not log the user out.
async fn an_error_page_keeps_a_rotated_session_cookie(app: TestApp) {
    if app.store == Store::Cookie {
        return; // no server-side id to rotate
    }
    app.register("rot@example.com", PASSWORD).await;
    let before = app.session_cookie().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let missing = app.get("/no-such-page").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(set_cookie(&missing, "latchkey_session").is_some(), "the 404 dropped the rotated cookie");
    assert_ne!(app.session_cookie().unwrap(), before);
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the old id's grace
    assert!(app.is_logged_in().await);
}
matrix!(an_error_page_keeps_a_rotated_session_cookie, [("ROTATE_INTERVAL", "1s"), ("ROTATE_GRACE", "1s")]);

#[tokio::test]
async fn the_flash_cookie_goes_only_to_visitors_given_a_message() {
    let app = TestApp::spawn(Db::Sqlite, Store::Cookie).await;
    for path in ["/healthz", "/readyz", "/static/style.css"] {
        assert!(set_cookie_names(&app.get(path).await).is_empty(), "{path} sets a cookie");
    }
    assert!(!set_cookie_names(&app.get("/").await).iter().any(|n| n.contains("flash")));
    let registered = app.register("flash@example.com", PASSWORD).await;
    let cookie = set_cookie(&registered, "latchkey_flash").expect("a flash cookie with the message");
    assert!(!cookie.contains("Secure"), "development flash cookies work over plain http: {cookie}");
    assert!(app.get_html("/").await.contains("Welcome!"));
    // Shown once, then cleared; after that, no more flash cookies.
    assert!(!app.get_html("/").await.contains("Welcome!"));
    assert!(!set_cookie_names(&app.get("/").await).iter().any(|n| n.contains("flash")));
}

#[tokio::test]
async fn the_flash_cookie_is_secure_and_host_prefixed_in_production() {
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options::production()).await;
    let fields = [("email", "prod@example.com"), ("password", PASSWORD), ("password_confirm", PASSWORD)];
    let (_, response) = app.submit_in_production("/register", "/register", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&response, "__Host-latchkey_flash").expect("a __Host- flash cookie");
    assert!(cookie.contains("Secure") && cookie.contains("Path=/") && !cookie.contains("Domain"), "{cookie}");
    assert!(set_cookie(&response, "_flash").is_none());
}

/// The address recorded for a login, as the devices page shows it.
async fn recorded_ip(app: &TestApp, forwarded_for: &str) -> String {
    let token = app.csrf_token("/login").await;
    let fields = [("email", "ip@example.com"), ("password", PASSWORD), ("csrf_token", token.as_str())];
    let response = app
        .request(Method::POST, "/login")
        .header("Origin", &app.address)
        .header("X-Forwarded-For", forwarded_for)
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = app.get_html("/account/sessions").await;
    let ip = crate::support::text_in(&page, ".device-current .facts dd").unwrap_or_default();
    app.logout().await;
    ip
}

#[tokio::test]
async fn the_client_address_behind_trusted_proxies() {
    // The tests' requests come from 127.0.0.1, listed here in its IPv4-mapped IPv6 form.
    let options =
        Options { vars: vec![("TRUSTED_PROXIES", "::ffff:127.0.0.1".into())], ..Options::default() };
    let app = TestApp::spawn_with(Db::Sqlite, Store::Database, options).await;
    app.create_user("ip@example.com").await;
    assert_eq!(recorded_ip(&app, "203.0.113.9").await, "203.0.113.9", "a mapped proxy matches its IPv4 peer");
    assert_eq!(recorded_ip(&app, "198.51.100.7, 203.0.113.9").await, "203.0.113.9");
    assert_eq!(
        recorded_ip(&app, "198.51.100.7, not-an-address").await,
        "127.0.0.1",
        "the walk stops at an entry that does not parse"
    );
}

/// The binary serves pages and static files wherever it is started, and a template or static
/// directory that cannot be loaded stops start-up with a message that says where it looked.
#[tokio::test]
async fn the_binary_runs_from_any_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let port = free_port();
    let database = format!("sqlite://{}", elsewhere.path().join("db.sqlite3").display());
    let start = |extra: &[(&str, String)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
        command
            .current_dir(elsewhere.path())
            .env_clear()
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &database)
            .env("SECRET_KEY", crate::support::secret_key())
            .env("BCRYPT_COST", "4")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (key, value) in extra {
            command.env(key, value);
        }
        command
    };
    let mut server = start(&[]).spawn().unwrap();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let mut home = None;
    for _ in 0..100 {
        if let Ok(response) = client.get(url("/")).send().await {
            home = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let home = home.expect("the server answers");
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.unwrap().contains("Hello, guest"));
    let css = client.get(url("/static/style.css")).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    server.kill().unwrap();
    server.wait().unwrap();

    for (var, dir) in [("TEMPLATES_DIR", "/nowhere/templates"), ("STATIC_DIR", "/nowhere/static")] {
        let output = start(&[(var, dir.to_owned())]).output().unwrap();
        assert!(!output.status.success(), "{var}={dir} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(dir) && stderr.contains(var), "{stderr}");
    }
}
