//! Alert rules over the audit events: a burst of failures on one account or from one address,
//! a session-protection trigger, a burst of refused forms. Each raises one alert per window: a
//! row the admin page lists, and a JSON POST to `ALERT_WEBHOOK_URL` (a real HTTP server on
//! loopback here), never on the request's path.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::{location, with_token, Browser, Db, Options, Store, TestApp, PASSWORD};

const WRONG: &str = "not the password at all";

/// An HTTP server that answers 200 to every POST and keeps the bodies (JSON alerts).
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let (reader, mut writer) = stream.into_split();
                    let mut reader = BufReader::new(reader);
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some(value) = line.to_lowercase().strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_ok() {
                        if let Ok(json) = serde_json::from_slice(&body) {
                            kept.lock().unwrap().push(json);
                        }
                    }
                    let _ = writer
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        Receiver { url, bodies }
    }

    /// Waits up to 10 seconds for an alert of `rule`.
    async fn wait_for(&self, rule: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            if let Some(alert) = self.bodies.lock().unwrap().iter().find(|alert| alert["rule"] == rule) {
                return alert.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no {rule} alert: {:?}",
                self.bodies.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn count(&self, rule: &str) -> usize {
        self.bodies.lock().unwrap().iter().filter(|alert| alert["rule"] == rule).count()
    }
}

/// The rules of the alerts the admin page lists (`admin` is an administrator's browser).
async fn alerts_on_admin_page(admin: &Browser) -> Vec<String> {
    let page = admin.get_html("/admin").await;
    let html = scraper::Html::parse_document(&page);
    let rows = scraper::Selector::parse("tr[data-alert]").unwrap();
    html.select(&rows).filter_map(|row| row.value().attr("data-alert").map(str::to_owned)).collect()
}

/// An administrator's browser on `app`.
async fn administrator(app: &TestApp) -> Browser {
    use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
    use latchkey::db::schema::users;
    let browser = app.new_browser();
    assert_eq!(location(&browser.register("admin@example.com", PASSWORD).await), "/");
    diesel::update(users::table.filter(users::email.eq("admin@example.com")))
        .set(users::is_admin.eq(true))
        .execute(&mut app.connection())
        .unwrap();
    browser
}

#[tokio::test]
async fn a_burst_of_failures_on_one_account_raises_one_alert() {
    let receiver = Receiver::start().await;
    let vars = vec![
        ("ALERT_WEBHOOK_URL", receiver.url.clone()),
        ("ALERT_ACCOUNT_FAILURES", "3/1m".into()),
        ("THROTTLE_LOGIN", "20/1m".into()),
        ("THROTTLE_DELAY_AFTER", "20".into()),
    ];
    let app = TestApp::spawn_with(Db::Postgres, Store::Redis, Options { vars, ..Options::default() }).await;
    let email = "target@example.com";
    app.create_user(email).await;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(app.login(email, WRONG).await.status(), StatusCode::UNAUTHORIZED);
        assert!(started.elapsed() < Duration::from_secs(2), "the webhook is not on the request's path");
    }
    let alert = receiver.wait_for("account_failures").await;
    let id: i32 = {
        use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
        use latchkey::db::schema::users;
        users::table.filter(users::email.eq(email)).select(users::id).first(&mut app.connection()).unwrap()
    };
    assert_eq!(alert["subject"], format!("user:{id}"));
    assert_eq!(alert["user_id"], id);
    assert!(alert["detail"].as_str().unwrap().contains("failed sign-ins"), "{alert}");
    assert_eq!(alert["ip"], "127.0.0.1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count("account_failures"), 1, "one alert per burst and window");

    let admin = administrator(&app).await;
    assert!(alerts_on_admin_page(&admin).await.contains(&"account_failures".to_owned()));
}

/// A session-protection trigger and a burst of refused forms each raise an alert; an
/// unreachable webhook delays nothing and the alert is still stored.
#[tokio::test]
async fn protection_triggers_and_csrf_bursts_raise_alerts() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://127.0.0.1:{}/hook", closed.local_addr().unwrap().port());
    drop(closed);
    let vars = vec![
        ("ALERT_WEBHOOK_URL", unreachable),
        ("ALERT_CSRF_FAILURES", "3/1m".into()),
        ("SESSION_PROTECTION", "basic".into()),
    ];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Cookie, Options { vars, ..Options::default() }).await;
    let admin = administrator(&app).await;

    // A copied cookie used from another browser.
    let email = "copied@example.com";
    assert_eq!(location(&app.register(email, PASSWORD).await), "/");
    let thief =
        app.new_browser_with_agent("Mozilla/5.0 (Windows NT 10.0) Firefox/1.0").sending(&app.cookies());
    assert_eq!(thief.get("/account").await.status(), StatusCode::OK);

    for _ in 0..3 {
        let forged = app
            .request(Method::POST, "/login")
            .header("Origin", &app.address)
            .form(&with_token(&[("email", email), ("password", PASSWORD)], "forged"))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    }
    let started = Instant::now();
    loop {
        let rules = alerts_on_admin_page(&admin).await;
        if rules.contains(&"session_protection".to_owned()) && rules.contains(&"csrf_failures".to_owned()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "alerts: {rules:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const FIREFOX_LINUX_NEWER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:129.0) Gecko/20100101 Firefox/129.0";
const CHROME_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";
const NEW_DEVICE: &str = "latchkey: a sign-in from a new device";

/// Posts `form` from the browser `agent`, as the trusted proxy says `ip` sent it.
async fn post_from(
    app: &TestApp,
    (agent, ip): (&str, &str),
    path: &str,
    form: &[(&str, &str)],
) -> StatusCode {
    let browser = app.new_browser_with_agent(agent);
    let token = browser.csrf_token(path).await;
    let request = browser.request(Method::POST, path).header("Origin", &browser.address);
    let answer = request.header("X-Forwarded-For", ip).form(&with_token(form, &token)).send().await.unwrap();
    answer.status()
}

/// A sign-in from a device the account has not used lately (browser and system, whatever
/// their versions, and IP network) is mailed to the owner with a link to their devices, and
/// raises one alert; a known device, another address in its network or a newer browser
/// version does not.
#[tokio::test]
async fn a_sign_in_from_a_new_device_is_mailed_and_alerted() {
    use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
    use latchkey::db::schema::audit_events;
    let receiver = Receiver::start().await;
    let vars = vec![("ALERT_WEBHOOK_URL", receiver.url.clone()), ("TRUSTED_PROXIES", "127.0.0.1".into())];
    let app = TestApp::spawn_with(Db::Sqlite, Store::Database, Options { vars, ..Options::default() }).await;
    let email = "traveller@example.com";
    let fields = [("email", email), ("password", PASSWORD), ("password_confirm", PASSWORD)];
    // Registering signs in: the account's first device.
    let status = post_from(&app, (FIREFOX_LINUX, "198.51.100.7"), "/register", &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let login = [("email", email), ("password", PASSWORD)];
    for device in [(FIREFOX_LINUX, "198.51.100.99"), (FIREFOX_LINUX_NEWER, "198.51.100.7")] {
        assert_eq!(post_from(&app, device, "/login", &login).await, StatusCode::SEE_OTHER, "{device:?}");
    }
    assert_eq!(
        post_from(&app, (CHROME_WINDOWS, "203.0.113.5"), "/login", &login).await,
        StatusCode::SEE_OTHER
    );

    let mail = app.mail.wait_for(email, NEW_DEVICE, Duration::from_secs(10)).await;
    for shown in ["Chrome", "Windows", "203.0.113.5", "/account/sessions", "in the last 90 days"] {
        assert!(mail.body().contains(shown), "{shown}: {}", mail.body());
    }
    let alert = receiver.wait_for("new_device").await;
    assert!(alert["detail"].as_str().unwrap().contains("203.0.113.0/24"), "{alert}");
    // The known devices' sign-ins were judged before this one: nothing else came.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.mail.received_by(email).iter().filter(|m| m.subject() == NEW_DEVICE).count(), 1);
    assert_eq!(receiver.count("new_device"), 1);
    let recorded: i64 = audit_events::table
        .filter(audit_events::event.eq("authn_login_new_device"))
        .count()
        .get_result(&mut app.connection())
        .unwrap();
    assert_eq!(recorded, 1, "on the owner's activity page");
}
