//! What every test needs, by job: a running server on its own database (`app`), the
//! throwaway database itself (`database`), an HTTP browser (`browser`), reading pages
//! (`html`), a connection the test can cut (`proxy`), an SMTP server that keeps
//! what it receives (`smtp`), and the `matrix!` of databases and
//! session stores (`matrix`).

pub mod app;
pub mod browser;
pub mod database;
pub mod html;
mod matrix;
pub mod process;
pub mod proxy;
pub mod smtp;

pub use app::{Options, TestApp};
pub use browser::{forged_forms, with_token, Browser};
pub use database::TestDatabase;
pub use html::{attribute_in, cart_lines_in, csrf_token_in, location, set_cookie, set_cookie_names, text_in};
pub use process::{run_latchkey, ServerProcess};
pub use proxy::Proxy;
pub use smtp::{Mail, SmtpSink};

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

/// The password every test user has unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery staple";

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts PostgreSQL and Redis")
    })
}

/// The throwaway PostgreSQL server's URL, naming its `postgres` database.
pub fn postgres_admin_url() -> String {
    required_env("TEST_POSTGRES_URL")
}

/// The throwaway Redis server's URL, shared by every test.
pub fn redis_url() -> String {
    required_env("TEST_REDIS_URL")
}

/// A free loopback port: bound, read and released for a server to take.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A new random `SECRET_KEY`.
pub fn secret_key() -> String {
    latchkey::settings::SecretKey::generate()
}
