//! End-to-end tests in a real headless Chromium, driven through WebDriver: the idle-timeout
//! warning of `static/session-timeout.js` ("Your session will expire in 1:59 — Stay signed in /
//! Log out"), which only a browser runs.
//!
//! `TEST_CHROMEDRIVER` (and optionally `TEST_CHROMIUM`) come from `scripts/test`. Set
//! `TEST_SCREENSHOT_DIR` to keep screenshots of the dialog.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;

use crate::support::{free_port, Db, Options, Store, TestApp, PASSWORD};

/// Chromium flags for running headless as root on a machine with no network but loopback.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,768",
];

/// Short timeouts so that a test sees the warning, and the expiry, within seconds.
const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
const TIMEOUT_WARNING: Duration = Duration::from_secs(5);

fn chromedriver_path() -> String {
    std::env::var("TEST_CHROMEDRIVER").unwrap_or_else(|_| {
        panic!(
            "TEST_CHROMEDRIVER is not set: run the tests with scripts/test, which installs Chromium \
             and chromedriver and sets it (or point it at a chromedriver binary)"
        )
    })
}

/// A chromedriver child process and one headless Chromium session in a fresh profile. Dropping
/// it ends the session (which closes Chromium) and kills chromedriver. (The other tests' HTTP
/// browser is `support::Browser`.)
pub struct Chromium {
    pub client: Client,
    driver: Child,
    port: u16,
    session_id: String,
    /// Chromium's profile and chromedriver's log; removed after both have gone.
    _dir: tempfile::TempDir,
}

impl Chromium {
    pub async fn start() -> Chromium {
        let driver_path = chromedriver_path();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let mut driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {driver_path}: {e}"));

        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("chromedriver exited ({status}) before listening on port {port}:\n{log}");
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = driver.kill();
                panic!("chromedriver did not listen on port {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let profile = dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut chrome_options = serde_json::json!({ "args": args });
        if let Ok(binary) = std::env::var("TEST_CHROMIUM") {
            chrome_options["binary"] = binary.into();
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), chrome_options);

        let connected = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match connected {
            Ok(client) => client,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("could not start a Chromium session through chromedriver: {e}\n{log}");
            }
        };
        let session_id = client.session_id().await.expect("session id").expect("a session");
        Chromium { client, driver, port, session_id, _dir: dir }
    }

    /// Opens `path` on the app's `PUBLIC_URL` (`http://localhost:port`): a name, not an IP
    /// address, as passkeys need.
    pub async fn goto(&self, app: &TestApp, path: &str) {
        let url = format!("{}{path}", app.setting("PUBLIC_URL"));
        self.client.goto(&url).await.unwrap_or_else(|e| panic!("go to {path}: {e}"));
    }

    /// Gives the browser a virtual platform authenticator (WebDriver's `POST
    /// /session/{id}/webauthn/authenticator`) that holds discoverable credentials, verifies its
    /// user and consents at once, as a fingerprint reader whose owner always touches it would.
    pub async fn add_virtual_authenticator(&self) {
        let url =
            format!("http://127.0.0.1:{}/session/{}/webauthn/authenticator", self.port, self.session_id);
        let options = serde_json::json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserConsenting": true,
            "isUserVerified": true,
        });
        let answer =
            reqwest::Client::new().post(&url).json(&options).send().await.expect("chromedriver answers");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "adding a virtual authenticator: {status} {body}");
    }

    /// The current path and query, e.g. `/login?next=%2F`.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Polls the current path until `accept` approves it; panics with the last one after `within`.
    pub async fn wait_for_path(&self, within: Duration, what: &str, accept: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let path = self.path().await;
            if accept(&path) {
                return path;
            }
            assert!(Instant::now() < deadline, "{what}: still at {path} after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn fill(&self, selector: &str, value: &str) {
        let field =
            self.client.find(Locator::Css(selector)).await.unwrap_or_else(|e| panic!("find {selector}: {e}"));
        field.send_keys(value).await.unwrap_or_else(|e| panic!("type into {selector}: {e}"));
    }

    pub async fn click(&self, selector: &str) {
        let element =
            self.client.find(Locator::Css(selector)).await.unwrap_or_else(|e| panic!("find {selector}: {e}"));
        element.click().await.unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// Registers through the form at /register and waits to land on `/`.
    pub async fn register(&self, app: &TestApp, email: &str) {
        self.goto(app, "/register").await;
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        self.fill("#password_confirm", PASSWORD).await;
        self.click(r#"form[action="/register"] button[type="submit"]"#).await;
        self.wait_for_path(Duration::from_secs(10), "registering", |path| path == "/").await;
    }

    /// Logs in through the form at /login, ticking "Remember me" if `remember`, and waits to
    /// land on `/`.
    pub async fn log_in(&self, app: &TestApp, email: &str, remember: bool) {
        self.goto(app, "/login").await;
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        if remember {
            self.click("#remember").await;
        }
        self.click(r#"form[action="/login"] button[type="submit"]"#).await;
        self.wait_for_path(Duration::from_secs(10), "logging in", |path| path == "/").await;
    }

    /// Picks the dark theme on /preferences and waits for the page to show it.
    pub async fn choose_dark_theme(&self, app: &TestApp) {
        self.goto(app, "/preferences").await;
        self.click("#theme-dark").await;
        self.click(r#"form[action="/preferences"] button[type="submit"]"#).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let theme = self.script("return document.documentElement.dataset.theme;").await;
            if theme == "dark" {
                return;
            }
            assert!(Instant::now() < deadline, "the dark theme was not applied: {theme}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&self, selector: &str) -> String {
        let element =
            self.client.find(Locator::Css(selector)).await.unwrap_or_else(|e| panic!("find {selector}: {e}"));
        element.text().await.unwrap_or_else(|e| panic!("text of {selector}: {e}"))
    }

    pub async fn script(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    /// The warning dialog as the page has it, or `None` when the page has none (logged out).
    pub async fn dialog(&self) -> Option<Dialog> {
        let state = self
            .script(
                r#"const dialog = document.getElementById("session-timeout");
                   if (!dialog) return null;
                   return { open: dialog.open, countdown: dialog.querySelector("[data-countdown]").textContent };"#,
            )
            .await;
        serde_json::from_value(state).expect("dialog state")
    }

    /// Polls the dialog until it is open (`open`) or closed; panics after `within`.
    pub async fn wait_for_dialog(&self, open: bool, within: Duration) -> Dialog {
        let deadline = Instant::now() + within;
        loop {
            let dialog = self.dialog().await;
            if let Some(dialog) = dialog.as_ref().filter(|d| d.open == open) {
                return dialog.clone();
            }
            let want = if open { "open" } else { "closed" };
            assert!(Instant::now() < deadline, "the warning was not {want} within {within:?}: {dialog:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the dialog until `until`, failing the test if it opens before then.
    pub async fn assert_dialog_stays_closed(&self, until: Instant) {
        while Instant::now() < until {
            let dialog = self.dialog().await.expect("the dialog on a logged-in page");
            let early = until.saturating_duration_since(Instant::now());
            assert!(!dialog.open, "the warning opened {early:?} too early");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes a screenshot of the window, and keeps it as `name` in `TEST_SCREENSHOT_DIR` if set.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Ok(dir) = std::env::var("TEST_SCREENSHOT_DIR") {
            let path = std::path::Path::new(&dir).join(name);
            std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
    }
}

impl Drop for Chromium {
    /// Ends the WebDriver session synchronously (even while a failed test unwinds), so that
    /// chromedriver closes Chromium: killing chromedriver alone would leave Chromium running.
    fn drop(&mut self) {
        end_session(self.port, &self.session_id);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}`, waiting for the answer, which chromedriver gives once Chromium has
/// quit. (chromedriver leaves the connection open after answering, so read only the answer.)
fn end_session(port: u16, session_id: &str) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let request = format!(
        "DELETE /session/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return;
            }
        }
    }
}

/// The `<dialog id="session-timeout">` of a logged-in page.
#[derive(Debug, Clone, Deserialize)]
pub struct Dialog {
    pub open: bool,
    /// `m:ss`
    pub countdown: String,
}

impl Dialog {
    /// The countdown in seconds.
    pub fn seconds_left(&self) -> u64 {
        let parsed = self.countdown.split_once(':').and_then(|(minutes, seconds)| {
            let minutes: u64 = minutes.parse().ok()?;
            let seconds: u64 = seconds.parse().ok().filter(|s| *s < 60 && seconds.len() == 2)?;
            Some(minutes * 60 + seconds)
        });
        parsed.unwrap_or_else(|| panic!("the countdown is m:ss, not {:?}", self.countdown))
    }
}

async fn spawn_app() -> TestApp {
    let vars = vec![
        ("IDLE_TIMEOUT", format!("{}s", IDLE_TIMEOUT.as_secs())),
        ("TIMEOUT_WARNING", format!("{}s", TIMEOUT_WARNING.as_secs())),
    ];
    TestApp::spawn_with(Db::Sqlite, Store::Database, Options { vars, ..Options::default() }).await
}

#[tokio::test]
async fn the_warning_appears_before_the_idle_timeout_and_stay_signed_in_keeps_the_session() {
    let app = spawn_app().await;
    let browser = Chromium::start().await;

    // The session starts after this moment, so it ends at least IDLE_TIMEOUT after it.
    let before = Instant::now();
    browser.register(&app, "ann@example.com").await;
    let landed = Instant::now();
    let warning_due = before + IDLE_TIMEOUT - TIMEOUT_WARNING;

    // No warning while more than TIMEOUT_WARNING is left (a little slack for timers)...
    browser.assert_dialog_stays_closed(warning_due - Duration::from_millis(200)).await;
    // ...and then the page warns, TIMEOUT_WARNING before the idle timeout: 3 s after it was
    // rendered.
    let within = (landed + Duration::from_secs(4)).saturating_duration_since(Instant::now());
    let dialog = browser.wait_for_dialog(true, within).await;
    let left = dialog.seconds_left();
    assert!((1..=TIMEOUT_WARNING.as_secs()).contains(&left), "countdown {}", dialog.countdown);
    let text = browser.text("#session-timeout-text").await;
    assert!(text.starts_with("Your session will expire in 0:0"), "{text}");
    browser.screenshot("latchkey-dialog.png").await;

    browser.click(r#"#session-timeout [data-action="extend"]"#).await;
    browser.wait_for_dialog(false, Duration::from_secs(2)).await;

    // Past the deadline the page was rendered with: "Stay signed in" moved it on the server.
    tokio::time::sleep_until((landed + IDLE_TIMEOUT + Duration::from_millis(500)).into()).await;
    browser.goto(&app, "/account").await;
    assert_eq!(browser.path().await, "/account", "still logged in after the original deadline");
    let page = browser.client.source().await.expect("page source");
    assert!(page.contains("ann@example.com"), "the account page of the user");
}

#[tokio::test]
async fn an_idle_page_goes_to_the_login_page_when_the_session_expires() {
    let app = spawn_app().await;
    app.create_user("ben@example.com").await;
    let browser = Chromium::start().await;
    // The dialog in the dark theme too (the other tests see the default, light).
    browser.choose_dark_theme(&app).await;

    browser.log_in(&app, "ben@example.com", false).await;
    let landed = Instant::now();
    browser.wait_for_dialog(true, Duration::from_secs(4)).await;
    browser.screenshot("latchkey-dialog-dark.png").await;

    let path = browser
        .wait_for_path(IDLE_TIMEOUT + Duration::from_secs(4), "expiring", |path| path.starts_with("/login"))
        .await;
    let waited = landed.elapsed();
    assert!(path == "/login?next=%2F" || path == "/login?next=/", "back here after logging in: {path}");
    assert!(waited >= IDLE_TIMEOUT - Duration::from_secs(1), "not before the idle timeout: {waited:?}");
    let page = browser.client.source().await.expect("page source");
    assert!(page.contains("Your session expired"), "the login page says why");
    assert!(browser.dialog().await.is_none(), "no warning on the login page");
}

#[tokio::test]
async fn staying_signed_in_in_one_window_closes_the_warning_in_the_others() {
    let app = spawn_app().await;
    let browser = Chromium::start().await;
    browser.register(&app, "cy@example.com").await;
    let first = browser.client.window().await.expect("window");
    let second = browser.client.new_window(false).await.expect("new window").handle;
    browser.client.switch_to_window(second.clone()).await.expect("switch");
    browser.goto(&app, "/").await;

    browser.wait_for_dialog(true, Duration::from_secs(5)).await;
    browser.client.switch_to_window(first.clone()).await.expect("switch");
    browser.wait_for_dialog(true, Duration::from_secs(3)).await;

    browser.client.switch_to_window(second).await.expect("switch");
    browser.click(r#"#session-timeout [data-action="extend"]"#).await;
    browser.wait_for_dialog(false, Duration::from_secs(2)).await;
    browser.client.switch_to_window(first).await.expect("switch");
    browser.wait_for_dialog(false, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_remembered_login_waits_quietly_for_its_warning() {
    // REMEMBER_DURATION keeps its default, 30 days: longer than setTimeout can wait (24.8 days).
    let app = spawn_app().await;
    app.create_user("dot@example.com").await;
    let browser = Chromium::start().await;
    browser.log_in(&app, "dot@example.com", true).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let polls = browser
        .script(
            r#"return performance.getEntriesByType("resource")
                 .filter(entry => new URL(entry.name).pathname === "/session/status").length;"#,
        )
        .await;
    assert_eq!(polls, 0, "the page asks the server nothing until the warning is due");
    assert!(!browser.dialog().await.expect("the dialog").open);
}
