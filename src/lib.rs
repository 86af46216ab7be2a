//! latchkey: web sessions and authentication done right, on actix-web. The site; its core is
//! the `latchkey-sessions` and `latchkey-auth` crates under `crates/`.

/// Alert rules over the audit events: log, admin page, webhook.
pub mod alerts;
/// `CurrentUser` and `LoginRequired` for the site's `User`.
pub mod auth;
/// The command line of the `latchkey` binary.
pub mod cli;
/// Migrations and the generated schema, over the connection layer of `latchkey-db`.
pub mod db;
/// `AppError`, the site's one error type, and what each error shows.
pub mod error;
/// HTTP rules: HEAD for GET routes, refused encodings and header sizes, security headers.
pub mod http;
/// Purpose-specific keys derived from `SECRET_KEY`.
pub mod keys;
/// The logger: text or JSON lines.
pub mod logging;
/// Email: letters from templates, the outbox, and the task that sends it.
pub mod mail;
/// Prometheus metrics at `/metrics`.
pub mod metrics;
/// One module per table of the site: rows, inserts and queries.
pub mod models;
/// Pages: rendering, error pages, flash messages, display preferences, templates and assets.
pub mod pages;
/// The site's routes, one module per area.
pub mod routes;
/// Typed settings from the environment.
pub mod settings;
/// The demo shop: cart rules, guests' carts in the session, users' in the database.
pub mod shop;
/// `Application::build`: settings in, bound server out.
pub mod startup;
/// `AppState`, what handlers share, and its one lookup.
pub mod state;
