//! latchkey: web sessions and authentication done right, on actix-web.

/// Flask-Login-style authentication: `CurrentUser`, `LoginRequired`, login and logout.
pub mod auth;
/// The command line of the `latchkey` binary.
pub mod cli;
/// Connections, pool, migrations and the generated schema, over PostgreSQL and SQLite.
pub mod db;
/// `AppError` and the error pages: the one place errors become responses.
pub mod error;
/// One module per table: rows, inserts and queries.
pub mod models;
/// The site's routes, one module per area.
pub mod routes;
/// Session storage chosen by settings, and the session cookie.
pub mod sessions;
/// Typed settings from the environment.
pub mod settings;
/// The demo shop: cart rules, guests' carts in the session, users' in the database.
pub mod shop;
/// `Application::build`: settings in, bound server out.
pub mod startup;
/// HTTP plumbing: page rendering, CSRF-checked forms, derived keys, the preferences cookie.
pub mod web;
