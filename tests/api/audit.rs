//! The audit log: security events (OWASP names) stored with time, user, client address, user
//! agent, outcome and request id, never a secret; each also one JSON line in the log; shown to
//! their owner at `/account/activity`, newest first; purged after `AUDIT_RETENTION`. And the
//! `X-Request-Id` that ties a response to its events.

use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use latchkey::db::schema::audit_events;
use latchkey_auth::audit::Event;
use reqwest::{Method, StatusCode};
use scraper::{Html, Selector};

use crate::matrix;
use crate::support::{
    location, run_latchkey, secret_key, with_token, Db, Options, ServerProcess, Store, TestApp, PASSWORD,
};

const WRONG: &str = "certainly-not-the-password";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0";

/// One row of the activity page.
#[derive(Debug)]
struct Row {
    event: String,
    text: String,
    failure: bool,
}

fn activity_in(page: &str) -> Vec<Row> {
    let html = Html::parse_document(page);
    let rows = Selector::parse("tr.activity-event").unwrap();
    html.select(&rows)
        .map(|row| Row {
            event: row.value().attr("data-event").unwrap_or_default().to_owned(),
            text: row.text().collect::<Vec<_>>().join(" ").split_whitespace().collect::<Vec<_>>().join(" "),
            failure: row.value().classes().any(|class| class == "activity-failure"),
        })
        .collect()
}

/// The stored events named `event`: (user id, ip, user agent, request id, detail).
type Stored = (Option<i32>, Option<String>, Option<String>, Option<String>, Option<String>);

fn stored(app: &TestApp, event: &str) -> Vec<Stored> {
    audit_events::table
        .filter(audit_events::event.eq(event))
        .order(audit_events::id.asc())
        .select((
            audit_events::user_id,
            audit_events::ip,
            audit_events::user_agent,
            audit_events::request_id,
            audit_events::detail,
        ))
        .load(&mut app.connection())
        .unwrap()
}

/// Every stored event's free-text columns, to look for secrets in (the others are names).
fn everything_stored(app: &TestApp) -> String {
    let rows: Vec<Stored> = Event::ALL.iter().flat_map(|event| stored(app, event.name())).collect();
    assert!(!rows.is_empty());
    format!("{rows:?}")
}

async fn the_owner_sees_sign_ins_and_changes_newest_first(app: TestApp) {
    let email = "ada@example.com";
    app.create_user(email).await;
    let firefox = app.new_browser_with_agent(FIREFOX);
    assert_eq!(firefox.login(email, WRONG).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(location(&firefox.login(email, PASSWORD).await), "/");
    // A second device, signed out from the first.
    let other = app.new_browser();
    assert_eq!(location(&other.login(email, PASSWORD).await), "/");
    let revoked = firefox.submit("/account/sessions", "/account/sessions/revoke-others", &[]).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let new_password = "a much longer horse battery";
    let fields = [
        ("current_password", PASSWORD),
        ("new_password", new_password),
        ("new_password_confirm", new_password),
    ];
    let changed = firefox.submit("/account/password", "/account/password", &fields).await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);

    // An unknown email's failure is stored without a user and shown to no one.
    assert_eq!(firefox.login("nobody@example.com", WRONG).await.status(), StatusCode::UNAUTHORIZED);

    let page = firefox.get_html("/account/activity").await;
    let rows = activity_in(&page);
    let events: Vec<&str> = rows.iter().map(|row| row.event.as_str()).collect();
    let position = |name: &str| events.iter().position(|event| *event == name);
    let expected = [
        "authn_password_change",
        "session_revoked",
        "authn_login_success",
        "authn_login_fail",
        "user_created",
    ];
    let positions: Vec<_> = expected.iter().map(|name| position(name)).collect();
    assert!(positions.iter().all(Option::is_some), "{events:?}");
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "newest first: {events:?}");
    assert!(!events.contains(&"session_created"), "a new session is said by its sign-in: {events:?}");

    let failed = &rows[position("authn_login_fail").unwrap()];
    assert!(failed.failure, "a failure is marked: {failed:?}");
    assert!(failed.text.contains("Failed sign-in"), "{failed:?}");
    assert!(failed.text.contains("127.0.0.1"), "the address: {failed:?}");
    assert!(failed.text.contains("Firefox"), "the browser: {failed:?}");
    assert!(!rows[position("authn_login_success").unwrap()].failure);

    let unknown = stored(&app, "authn_login_fail");
    assert_eq!(unknown.len(), 2, "{unknown:?}");
    assert!(unknown[0].0.is_some(), "the known account's failure names it");
    assert_eq!(unknown[1].0, None, "the unknown email's failure has no user");
    for (_, ip, agent, request_id, _) in &unknown {
        assert_eq!(ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(agent.as_deref(), Some(FIREFOX));
        assert_eq!(request_id.as_ref().map(String::len), Some(16), "a request id");
    }
    let everything = everything_stored(&app);
    for secret in [WRONG, PASSWORD, new_password, "nobody@example.com"] {
        assert!(!everything.contains(secret), "{secret} stored: {everything}");
    }

    // Another user sees none of it.
    let stranger = app.new_browser();
    assert_eq!(location(&stranger.register("grace@example.com", PASSWORD).await), "/");
    let theirs: Vec<String> =
        activity_in(&stranger.get_html("/account/activity").await).into_iter().map(|row| row.event).collect();
    assert_eq!(theirs, ["authn_login_success", "user_created"]);

    // A logout is recorded too; the page needs a login.
    firefox.logout().await;
    assert_eq!(location(&firefox.get("/account/activity").await), "/login?next=/account/activity");
    assert_eq!(stored(&app, "session_logout").len(), 1);
}

matrix!(the_owner_sees_sign_ins_and_changes_newest_first);

async fn refused_forms_and_throttled_requests_are_recorded(app: TestApp) {
    app.create_user("eve@example.com").await;
    // A login form without its CSRF token.
    let forged = app
        .request(Method::POST, "/login")
        .header("Origin", &app.address)
        .form(&[("email", "eve@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let csrf = stored(&app, "csrf_fail");
    assert_eq!(csrf.len(), 1, "{csrf:?}");
    assert_eq!(csrf[0].1.as_deref(), Some("127.0.0.1"));

    // Registrations past THROTTLE_REGISTER (eve's was the first of two).
    assert_eq!(
        app.new_browser().register("spam0@example.com", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let refused = app.new_browser().register("spam1@example.com", PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let throttled = stored(&app, "excess_rate_limit_exceeded");
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    assert!(throttled[0].4.as_deref().unwrap_or_default().contains("register"), "{throttled:?}");
    let everything = everything_stored(&app);
    assert!(!everything.contains(PASSWORD), "{everything}");
}

matrix!(refused_forms_and_throttled_requests_are_recorded, [("THROTTLE_REGISTER", "2/1h")]);

/// A response carries `X-Request-Id`, which its audit events share. A client's own id is kept
/// only from a trusted proxy, and only when it is short and plain.
#[tokio::test]
async fn request_ids_tie_responses_to_their_events() {
    let app = TestApp::spawn_with(
        Db::Sqlite,
        Store::Cookie,
        Options { vars: vec![("TRUSTED_PROXIES", "10.0.0.1".into())], ..Options::default() },
    )
    .await;
    let id_of = |response: &reqwest::Response| {
        response.headers().get("x-request-id").expect("X-Request-Id").to_str().unwrap().to_owned()
    };
    let first = id_of(&app.get("/").await);
    let second = id_of(&app.get("/").await);
    assert_eq!(first.len(), 16);
    assert_ne!(first, second, "each request its own id");

    // 127.0.0.1 is not a trusted proxy here: its id is replaced.
    let sent = app.request(Method::GET, "/").header("X-Request-Id", "chosen-by-client").send().await.unwrap();
    assert_ne!(id_of(&sent), "chosen-by-client");

    let token = app.csrf_token("/login").await;
    let failed = app
        .request(Method::POST, "/login")
        .header("Origin", &app.address)
        .form(&with_token(&[("email", "x@example.com"), ("password", WRONG)], &token))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let id = id_of(&failed);
    assert_eq!(stored(&app, "authn_login_fail")[0].3.as_deref(), Some(id.as_str()));
}

/// Behind a trusted proxy, the proxy's request id is kept, so its log and ours line up.
#[tokio::test]
async fn a_trusted_proxys_request_id_is_kept() {
    let app = TestApp::spawn_with(
        Db::Sqlite,
        Store::Cookie,
        Options { vars: vec![("TRUSTED_PROXIES", "127.0.0.1".into())], ..Options::default() },
    )
    .await;
    let kept = app.request(Method::GET, "/").header("X-Request-Id", "proxy-abc.123").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "proxy-abc.123");
    let forged = app.request(Method::GET, "/").header("X-Request-Id", "a b\"c").send().await.unwrap();
    assert_ne!(forged.headers()["x-request-id"], "a b\"c", "not plain: replaced");
}

/// `LOG_FORMAT=json`: every log line one JSON object; audit events stay structured under
/// `audit`, with no secret.
#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let vars = vec![
        ("DATABASE_URL", format!("sqlite://{}", dir.path().join("db.sqlite3").display())),
        ("SECRET_KEY", secret_key()),
        ("BCRYPT_COST", "4".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    let server = ServerProcess::start(dir.path(), &vars);
    let browser = crate::support::Browser::new(&server.address, None);
    assert_eq!(browser.login("who@example.com", WRONG).await.status(), StatusCode::UNAUTHORIZED);

    let mut audit = None;
    // The access log's line comes last.
    for _ in 0..50 {
        if server.log().contains("POST /login") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = server.log();
    for line in log.lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(parsed["time"].is_string() && parsed["level"].is_string(), "{line}");
        if parsed["target"] == "audit" {
            audit = Some(parsed);
        }
    }
    let audit = audit.unwrap_or_else(|| panic!("an audit line in:\n{log}"));
    assert_eq!(audit["audit"]["event"], "authn_login_fail");
    assert_eq!(audit["audit"]["ip"], "127.0.0.1");
    assert!(!log.contains(WRONG) && !log.contains("who@example.com"), "{log}");
    let access = log.lines().find(|line| {
        line.contains("\"target\":\"actix_web::middleware::logger\"") && line.contains("POST /login")
    });
    let request_id = audit["audit"]["request_id"].as_str().expect("a request id");
    assert!(
        access.is_some_and(|line| line.contains(request_id)),
        "the access log, with the request id: {log}"
    );
}

/// Events older than `AUDIT_RETENTION` are deleted by `latchkey sessions purge` (and the
/// periodic purge, which runs the same code).
#[tokio::test]
async fn old_events_are_purged_after_the_retention() {
    let app = TestApp::spawn_with(
        Db::Postgres,
        Store::Cookie,
        Options { vars: vec![("AUDIT_RETENTION", "1s".into())], ..Options::default() },
    )
    .await;
    app.create_user("old@example.com").await;
    let count = || audit_events::table.count().get_result::<i64>(&mut app.connection()).unwrap();
    let before = count();
    assert!(before >= 2, "created and signed in: {before}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let url = app.database_url();
    let key = secret_key();
    let dir = tempfile::tempdir().unwrap();
    let vars = [("DATABASE_URL", url.as_str()), ("SECRET_KEY", key.as_str()), ("AUDIT_RETENTION", "1s")];
    let output = run_latchkey(dir.path(), &vars, &["sessions", "purge"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("{before} old audit event(s)")), "{stdout}");
    assert_eq!(count(), 0);
}
