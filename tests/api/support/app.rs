//! `TestApp`: the real server on a random port, on a database of its own, with the settings a
//! test chooses, and a default browser on it.

use std::collections::HashMap;
use std::ops::Deref;

use latchkey::db::DbConnection;
use latchkey::settings::Settings;
use latchkey::startup::Application;
use reqwest::StatusCode;
use tokio::task::JoinHandle;

use super::{redis_url, secret_key, Browser, Db, Proxy, SmtpSink, Store, TestDatabase, PASSWORD};

/// Options beyond the database and store.
#[derive(Default)]
pub struct Options {
    /// Settings (environment variables) over the tests' defaults.
    pub vars: Vec<(&'static str, String)>,
    /// Route the database through a proxy the test can cut (PostgreSQL only).
    pub database_proxy: bool,
    /// Route Redis through a proxy the test can cut.
    pub redis_proxy: bool,
}

impl Options {
    /// `APP_ENV=production`: `Secure`, `__Host-` cookies.
    pub fn production() -> Options {
        // Production refuses a bcrypt cost under 10.
        let vars = vec![("APP_ENV", "production".into()), ("BCRYPT_COST", "10".into())];
        Options { vars, ..Options::default() }
    }
}

/// A running server. Derefs to its default browser, so `app.login(…)` is that browser's.
pub struct TestApp {
    /// The browser `app.get(…)`, `app.login(…)` and the like use.
    pub browser: Browser,
    pub store: Store,
    pub database_proxy: Option<Proxy>,
    pub redis_proxy: Option<Proxy>,
    /// The SMTP server its mail goes to (`SMTP_URL`), unless the test set `SMTP_URL` itself.
    pub mail: SmtpSink,
    /// Removed when the app is dropped.
    database: TestDatabase,
    /// The settings it was started with, for instances beside it.
    vars: HashMap<String, String>,
    server: JoinHandle<std::io::Result<()>>,
}

/// Another instance of a `TestApp`'s site (see [`TestApp::spawn_beside`]), stopped when dropped.
pub struct Instance {
    /// `http://127.0.0.1:port`
    pub address: String,
    server: JoinHandle<std::io::Result<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Deref for TestApp {
    type Target = Browser;

    fn deref(&self) -> &Browser {
        &self.browser
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    pub async fn spawn(db: Db, store: Store) -> TestApp {
        Self::spawn_with(db, store, Options::default()).await
    }

    pub async fn spawn_with(db: Db, store: Store, options: Options) -> TestApp {
        let database =
            tokio::task::spawn_blocking(move || TestDatabase::create(db)).await.expect("create database");
        let database_proxy = match (options.database_proxy, db) {
            (false, _) => None,
            (true, Db::Postgres) => Some(Proxy::to_postgres().await),
            (true, Db::Sqlite) => panic!("a database proxy needs PostgreSQL"),
        };
        let redis_proxy = if options.redis_proxy { Some(Proxy::to_redis().await) } else { None };

        let mail = SmtpSink::start().await;
        let session_store = match store {
            Store::Cookie => "cookie",
            Store::Redis => "redis",
            Store::Database => "database",
        };
        // How long the server waits for PostgreSQL or Redis before answering 503: short where
        // the test cuts a service (through a proxy) and waits for that 503; longer elsewhere, so
        // that a busy moment of a machine running hundreds of tests is not taken for an outage.
        let backing_timeout = if options.database_proxy || options.redis_proxy { "1s" } else { "5s" };
        let mut vars: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), database.url(database_proxy.as_ref().map(|p| p.port))),
            ("DATABASE_TIMEOUT".into(), backing_timeout.into()),
            ("REDIS_TIMEOUT".into(), backing_timeout.into()),
            ("DATABASE_POOL_SIZE".into(), "4".into()),
            ("SECRET_KEY".into(), secret_key()),
            ("BCRYPT_COST".into(), "4".into()),
            ("SESSION_STORE".into(), session_store.into()),
            ("SMTP_URL".into(), mail.url()),
            ("MAIL_RETRY".into(), "1s".into()),
        ]);
        if store == Store::Redis {
            let redis = match &redis_proxy {
                Some(proxy) => format!("redis://127.0.0.1:{}", proxy.port),
                None => redis_url(),
            };
            vars.insert("REDIS_URL".into(), redis);
        }
        for (key, value) in options.vars {
            vars.insert(key.into(), value);
        }
        let (address, server) = start(&mut vars).await;
        let browser = Browser::new(&address, None);
        TestApp { browser, store, database_proxy, redis_proxy, mail, database, vars, server }
    }

    /// Another instance of this site, as behind a load balancer: the same database, Redis and
    /// settings, with `vars` over them (another `SECRET_KEY`, say).
    pub async fn spawn_beside(&self, vars: &[(&str, &str)]) -> Instance {
        let mut settings = self.vars.clone();
        settings.extend(vars.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())));
        settings.remove("PUBLIC_URL");
        let (address, server) = start(&mut settings).await;
        Instance { address, server }
    }

    /// Another browser on this site, with a cookie jar of its own.
    pub fn new_browser(&self) -> Browser {
        Browser::new(&self.address, None)
    }

    /// Another browser on this site that sends `user_agent`.
    pub fn new_browser_with_agent(&self, user_agent: &str) -> Browser {
        Browser::new(&self.address, Some(user_agent))
    }

    /// Registers `email` with `PASSWORD` in another browser, leaving the default one as it is.
    pub async fn create_user(&self, email: &str) {
        let response = self.new_browser().register(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "registering {email}");
    }

    /// The `DATABASE_URL` of the app's database (not through any proxy).
    pub fn database_url(&self) -> String {
        self.database.url(None)
    }

    /// A direct connection to the app's database, for what the site does not show.
    pub fn connection(&self) -> DbConnection {
        self.database.connect()
    }

    /// The setting `name` this app was started with.
    pub fn setting(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_default()
    }

    /// How many rows of server-side session state the database holds.
    pub fn session_states(&self) -> i64 {
        latchkey_sessions::database::count(&mut self.connection()).expect("count session state")
    }
}

/// Starts a server with `vars` as its environment, on a port of its own on loopback, which
/// `PUBLIC_URL` names as `http://localhost:port` unless `vars` set it (browsers allow
/// passkeys for localhost, not for 127.0.0.1). Returns its address (`http://127.0.0.1:port`)
/// and its task.
async fn start(vars: &mut HashMap<String, String>) -> (String, JoinHandle<std::io::Result<()>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    vars.entry("PUBLIC_URL".into()).or_insert_with(|| format!("http://localhost:{port}"));
    let settings = Settings::from_vars(vars).expect("valid test settings");
    let application = Application::build_on(settings, Some(listener)).await.expect("application starts");
    let address = format!("http://127.0.0.1:{port}");
    (address, tokio::spawn(application.run_until_stopped()))
}
