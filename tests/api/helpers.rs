//! `TestApp`: one running server with its own database, and a browser-like client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use diesel::{Connection, PgConnection, RunQueryDsl};
use latchkey::settings::Settings;
use latchkey::startup::Application;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderValue;
use reqwest::{Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub use reqwest::Client;

/// Which database backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Which session store a test runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Cookie,
    Redis,
    Database,
}

pub const PASSWORD: &str = "correct horse battery staple";

/// Generates one `#[tokio::test]` per database and store for an `async fn(TestApp)`, or,
/// given settings, for an `async fn(TestApp)` started with them.
#[macro_export]
macro_rules! matrix {
    ($case:ident) => {
        $crate::matrix!($case, []);
    };
    ($case:ident, [$(($var:expr, $value:expr)),* $(,)?]) => {
        mod $case {
            #[allow(unused_imports)]
            use $crate::helpers::{Db, Options, Store, TestApp};

            async fn spawn(db: Db, store: Store) -> TestApp {
                let vars = vec![$(($var, String::from($value))),*];
                TestApp::spawn_with(db, store, Options { vars, ..Options::default() }).await
            }

            $crate::matrix!(@each $case;
                sqlite_cookie: Sqlite, Cookie;
                sqlite_redis: Sqlite, Redis;
                sqlite_database: Sqlite, Database;
                postgres_cookie: Postgres, Cookie;
                postgres_redis: Postgres, Redis;
                postgres_database: Postgres, Database);
        }
    };
    (@each $case:ident; $($name:ident: $db:ident, $store:ident);*) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$case(spawn(Db::$db, Store::$store).await).await
            }
        )*
    };
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts PostgreSQL and Redis")
    })
}

pub fn postgres_admin_url() -> String {
    required_env("TEST_POSTGRES_URL")
}

pub fn redis_url() -> String {
    required_env("TEST_REDIS_URL")
}

/// Replaces the database name of a PostgreSQL URL.
pub fn postgres_url_for(database: &str) -> String {
    let admin = postgres_admin_url();
    let (base, _) = admin.rsplit_once('/').expect("TEST_POSTGRES_URL has a database path");
    format!("{base}/{database}")
}

/// A PostgreSQL database migrated once per test process; each test clones it.
fn postgres_template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = format!("latchkey_template_{}", std::process::id());
        let mut admin = PgConnection::establish(&postgres_admin_url()).expect("connect to PostgreSQL");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .expect("drop template");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin).expect("create template");
        let mut conn = latchkey::db::DbConnection::Postgres(
            PgConnection::establish(&postgres_url_for(&name)).expect("connect to template"),
        );
        latchkey::db::migrate(&mut conn).expect("migrate template");
        name
    })
}

/// A fresh database, removed when dropped.
pub enum TestDatabase {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl TestDatabase {
    pub fn create(db: Db) -> Self {
        match db {
            Db::Sqlite => Self::Sqlite(tempfile::tempdir().expect("temp dir")),
            Db::Postgres => {
                let template = postgres_template();
                let name = format!("latchkey_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin =
                    PgConnection::establish(&postgres_admin_url()).expect("connect to PostgreSQL");
                // Clones serialise on the template; retry while another test holds it.
                let mut attempt = 0;
                loop {
                    match diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
                        .execute(&mut admin)
                    {
                        Ok(_) => break,
                        Err(e) if attempt < 50 => {
                            attempt += 1;
                            let _ = e;
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        Err(e) => panic!("create test database: {e}"),
                    }
                }
                Self::Postgres(name)
            }
        }
    }

    /// The `DATABASE_URL` for this database; `port` overrides PostgreSQL's (for a proxy).
    pub fn url(&self, port: Option<u16>) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.path().join("test.sqlite3").display()),
            Self::Postgres(name) => {
                let url = postgres_url_for(name);
                match port {
                    None => url,
                    Some(port) => {
                        let (scheme_user, rest) =
                            url.split_once('@').expect("user@host in TEST_POSTGRES_URL");
                        let (_, path) = rest.split_once('/').expect("path");
                        format!("{scheme_user}@127.0.0.1:{port}/{path}")
                    }
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Postgres(name) = self {
            if let Ok(mut admin) = PgConnection::establish(&postgres_admin_url()) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin);
            }
        }
    }
}

/// Options beyond the database and store.
#[derive(Default)]
pub struct Options {
    pub vars: Vec<(&'static str, String)>,
    /// Route the database through a proxy the test can cut.
    pub database_proxy: bool,
    /// Route Redis through a proxy the test can cut.
    pub redis_proxy: bool,
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub jar: Arc<Jar>,
    pub store: Store,
    /// Removed when the app is dropped.
    database: TestDatabase,
    pub database_proxy: Option<Proxy>,
    pub redis_proxy: Option<Proxy>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn secret_key() -> String {
    latchkey::settings::SecretKey::generate()
}

impl TestApp {
    pub async fn spawn(db: Db, store: Store) -> TestApp {
        Self::spawn_with(db, store, Options::default()).await
    }

    pub async fn spawn_with(db: Db, store: Store, options: Options) -> TestApp {
        let database =
            tokio::task::spawn_blocking(move || TestDatabase::create(db)).await.expect("create database");
        let database_proxy = if options.database_proxy {
            let target = match db {
                Db::Postgres => postgres_port(),
                Db::Sqlite => panic!("a database proxy needs PostgreSQL"),
            };
            Some(Proxy::start(target).await)
        } else {
            None
        };
        let database_url = database.url(database_proxy.as_ref().map(|p| p.port));
        let redis_proxy = if options.redis_proxy { Some(Proxy::start(redis_port()).await) } else { None };
        let redis = match &redis_proxy {
            Some(proxy) => format!("redis://127.0.0.1:{}", proxy.port),
            None => redis_url(),
        };

        let mut vars: HashMap<String, String> = HashMap::from([
            ("BIND".into(), "127.0.0.1:0".into()),
            ("DATABASE_URL".into(), database_url.clone()),
            ("DATABASE_TIMEOUT".into(), "1s".into()),
            ("REDIS_TIMEOUT".into(), "1s".into()),
            ("DATABASE_POOL_SIZE".into(), "4".into()),
            ("SECRET_KEY".into(), secret_key()),
            ("BCRYPT_COST".into(), "4".into()),
            (
                "SESSION_STORE".into(),
                match store {
                    Store::Cookie => "cookie".into(),
                    Store::Redis => "redis".into(),
                    Store::Database => "database".into(),
                },
            ),
        ]);
        if store == Store::Redis {
            vars.insert("REDIS_URL".into(), redis);
        }
        for (key, value) in options.vars {
            vars.insert(key.into(), value);
        }
        let settings = Settings::from_vars(&vars).expect("valid test settings");
        let application = Application::build(settings).await.expect("application starts");
        let address = format!("http://127.0.0.1:{}", application.port());
        let server = tokio::spawn(application.run_until_stopped());
        let jar = Arc::new(Jar::default());
        let client = browser(jar.clone());
        TestApp { address, client, jar, store, database, database_proxy, redis_proxy, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_html(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("body")
    }

    /// The CSRF token embedded in the form at `path`.
    pub async fn csrf_token(&self, path: &str) -> String {
        csrf_token_in(&self.get_html(path).await)
    }

    /// POSTs a url-encoded form as a browser would (same-origin `Origin`).
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url(path))
            .header("Origin", &self.address)
            .form(fields)
            .send()
            .await
            .expect("POST")
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        let token = self.csrf_token("/register").await;
        self.post_form(
            "/register",
            &[
                ("email", email),
                ("password", password),
                ("password_confirm", password),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str, next: &str) -> Response {
        let token = self.csrf_token("/login").await;
        self.post_form(
            "/login",
            &[("email", email), ("password", password), ("next", next), ("csrf_token", &token)],
        )
        .await
    }

    /// Logs in with "Remember me" ticked.
    pub async fn login_remembered(&self, email: &str, password: &str) -> Response {
        let token = self.csrf_token("/login").await;
        self.post_form(
            "/login",
            &[("email", email), ("password", password), ("remember", "on"), ("csrf_token", &token)],
        )
        .await
    }

    /// The `DATABASE_URL` the app runs on.
    pub fn database_url(&self) -> String {
        self.database.url(None)
    }

    pub async fn logout(&self) -> Response {
        let token = self.csrf_token("/logout").await;
        self.post_form("/logout", &[("csrf_token", &token)]).await
    }

    /// Saves display preferences through the form at /preferences.
    pub async fn save_preferences(&self, theme: &str, accent: &str) -> Response {
        let token = self.csrf_token("/preferences").await;
        self.post_form("/preferences", &[("theme", theme), ("accent", accent), ("csrf_token", &token)]).await
    }

    /// Registers `email` with `PASSWORD` on a separate client, leaving this one anonymous.
    pub async fn create_user(&self, email: &str) {
        let other = self.new_browser();
        let response = other.register(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "registering {email}");
    }

    /// Another browser against the same server (its own cookie jar).
    pub fn new_browser(&self) -> BrowserView<'_> {
        let jar = Arc::new(Jar::default());
        BrowserView { app: self, client: browser(jar) }
    }

    /// The `Cookie` header this browser would send.
    pub fn cookies(&self) -> String {
        cookie_header(&self.jar, &self.address)
    }

    /// GETs `path` sending exactly `cookies`, from a client with no jar of its own.
    pub async fn get_with_cookies(&self, path: &str, cookies: &str) -> Response {
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        client.get(self.url(path)).header("Cookie", cookies).send().await.expect("GET")
    }

    /// Whether the browser with `cookies` is logged in (GET /account answers 200).
    pub async fn is_logged_in_with(&self, cookies: &str) -> bool {
        let status = self.get_with_cookies("/account", cookies).await.status();
        assert!(status == StatusCode::OK || status == StatusCode::SEE_OTHER, "unexpected {status}");
        status == StatusCode::OK
    }

    /// Whether this browser is logged in (GET /account answers 200), keeping any cookie the
    /// answer sets, as a browser would.
    pub async fn is_logged_in(&self) -> bool {
        let status = self.get("/account").await.status();
        assert!(status == StatusCode::OK || status == StatusCode::SEE_OTHER, "unexpected {status}");
        status == StatusCode::OK
    }

    pub fn session_cookie(&self) -> Option<String> {
        session_cookie_in(&self.cookies())
    }

    /// Adds to the cart through the add-to-cart form of /shop.
    pub async fn add_to_cart(&self, product_id: &str, quantity: &str) -> Response {
        let token = self.csrf_token("/shop").await;
        self.post_form(
            "/cart/items",
            &[("product_id", product_id), ("quantity", quantity), ("csrf_token", &token)],
        )
        .await
    }

    /// The cart as /cart shows it: (product id, quantity) per line.
    pub async fn cart(&self) -> Vec<(i32, i32)> {
        cart_lines_in(&self.get_html("/cart").await)
    }

    /// A direct connection to the app's database, for what the site does not show.
    pub fn connection(&self) -> latchkey::db::DbConnection {
        use diesel::connection::SimpleConnection;
        let url = self.database_url();
        match url.strip_prefix("sqlite://") {
            Some(path) => {
                let mut conn = diesel::SqliteConnection::establish(path).expect("connect to SQLite");
                conn.batch_execute("PRAGMA busy_timeout = 5000").expect("busy_timeout");
                latchkey::db::DbConnection::Sqlite(conn)
            }
            None => latchkey::db::DbConnection::Postgres(
                PgConnection::establish(&url).expect("connect to PostgreSQL"),
            ),
        }
    }

    pub fn preferences_cookie(&self) -> Option<String> {
        preferences_cookie_in(&self.cookies())
    }
}

/// A second browser on the same app, sharing its helpers.
pub struct BrowserView<'a> {
    pub app: &'a TestApp,
    pub client: Client,
}

impl BrowserView<'_> {
    pub async fn register(&self, email: &str, password: &str) -> Response {
        let html =
            self.client.get(self.app.url("/register")).send().await.expect("GET").text().await.expect("body");
        let token = csrf_token_in(&html);
        self.client
            .post(self.app.url("/register"))
            .header("Origin", &self.app.address)
            .form(&[
                ("email", email),
                ("password", password),
                ("password_confirm", password),
                ("csrf_token", &token),
            ])
            .send()
            .await
            .expect("POST")
    }

    pub async fn csrf_token(&self, path: &str) -> String {
        csrf_token_in(&self.get_html(path).await)
    }

    pub async fn get_html(&self, path: &str) -> String {
        self.client.get(self.app.url(path)).send().await.expect("GET").text().await.expect("body")
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        let token = self.csrf_token("/login").await;
        self.post_form("/login", &[("email", email), ("password", password), ("csrf_token", &token)]).await
    }

    pub async fn add_to_cart(&self, product_id: &str, quantity: &str) -> Response {
        let token = self.csrf_token("/shop").await;
        self.post_form(
            "/cart/items",
            &[("product_id", product_id), ("quantity", quantity), ("csrf_token", &token)],
        )
        .await
    }

    pub async fn cart(&self) -> Vec<(i32, i32)> {
        cart_lines_in(&self.get_html("/cart").await)
    }

    async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.client
            .post(self.app.url(path))
            .header("Origin", &self.app.address)
            .form(fields)
            .send()
            .await
            .expect("POST")
    }
}

/// Long enough for any honest request; a hang fails the test instead of stalling the suite.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn browser(jar: Arc<Jar>) -> Client {
    Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn cookie_header(jar: &Jar, address: &str) -> String {
    let url = address.parse().expect("url");
    jar.cookies(&url).map(|v: HeaderValue| v.to_str().expect("ascii cookies").to_owned()).unwrap_or_default()
}

pub fn session_cookie_in(cookies: &str) -> Option<String> {
    cookies.split("; ").find_map(|c| c.strip_prefix("latchkey_session=")).map(str::to_owned)
}

pub fn preferences_cookie_in(cookies: &str) -> Option<String> {
    cookies.split("; ").find_map(|c| c.strip_prefix("latchkey_prefs=")).map(str::to_owned)
}

/// The CSRF token of a page: its form field, or the layout's `<meta name="csrf-token">`.
pub fn csrf_token_in(html: &str) -> String {
    let input = attribute_in(html, r#"input[name="csrf_token"]"#, "value");
    input
        .or_else(|| attribute_in(html, r#"meta[name="csrf-token"]"#, "content"))
        .expect("a CSRF token on the page")
}

/// The lines of a cart page: (product id, quantity) per line, in page order.
pub fn cart_lines_in(html: &str) -> Vec<(i32, i32)> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse("tr.cart-line").expect("selector");
    document
        .select(&selector)
        .map(|row| {
            let number = |name| row.value().attr(name).and_then(|v| v.parse().ok()).expect(name);
            (number("data-product-id"), number("data-quantity"))
        })
        .collect()
}

/// The `attribute` of the first element matching `selector`.
pub fn attribute_in(html: &str, selector: &str, attribute: &str) -> Option<String> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(selector).expect("selector");
    document.select(&selector).next().and_then(|e| e.value().attr(attribute)).map(str::to_owned)
}

/// The `Location` header of a redirect.
pub fn location(response: &Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .expect("ascii location")
        .to_owned()
}

fn port_of(url: &str) -> u16 {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    let host_port = after_at.split('/').find(|s| s.contains(':')).expect("host:port in URL");
    host_port.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port in URL")
}

fn postgres_port() -> u16 {
    port_of(&postgres_admin_url())
}

fn redis_port() -> u16 {
    port_of(&redis_url().replace("redis://", "redis://x@"))
}

/// A TCP forwarder to a local service that a test can cut and restore, to take the real
/// service away from the app without stopping it for every other test.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let up = up.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().expect("lock").push(task);
                }
            })
        };
        Proxy { port, up, connections, accept }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
