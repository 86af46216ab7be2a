//! Flask-Login for actix-web.
//!
//! - [`CurrentUser`] (Flask-Login's `current_user`) and [`LoginRequired`]
//!   (`@login_required`) extractors, generic over the application's user through
//!   [`AuthUser`] (Flask-Login's `user_loader`).
//! - [`log_in`], [`log_out`] and [`end_other_logins`], over the login registry
//!   ([`registry`]): one row per login, so logging out is real in every session store.
//! - The rules every request is checked against ([`rules`]): idle and absolute timeouts,
//!   remember-me, session protection, the credential epoch and the login generation.
//! - [`password`] hashing (bcrypt on the blocking pool), [`csrf`] forms, safe [`next`]
//!   redirects and the [`client`]'s address behind trusted proxies.
//!
//! Register [`Auth`] as app data, and wrap the app in [`identity_middleware`], the session
//! middleware of `latchkey-sessions`, and [`csrf::CsrfCookie`]:
//!
//! ```no_run
//! use actix_web::{cookie::Key, web, App, HttpServer};
//! use latchkey_auth::{csrf::CsrfCookie, identity_middleware, password::Hasher, Auth, LoginPolicy};
//! use latchkey_sessions::{Backend, Lifetimes, Store};
//!
//! # async fn example(pool: latchkey_db::Pool) -> anyhow::Result<()> {
//! let auth = web::Data::new(Auth::new(pool, LoginPolicy::default(), Hasher::new(12).await?, *b"a CSRF key", false));
//! let store = Store::new(Backend::Cookie, Lifetimes::default());
//! let key = Key::generate();
//! HttpServer::new(move || {
//!     App::new()
//!         .app_data(auth.clone())
//!         .wrap(CsrfCookie)
//!         .wrap(identity_middleware())
//!         .wrap(store.middleware(key.clone(), false))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod csrf;
mod current;
mod error;
mod login;
pub mod next;
pub mod password;
pub mod registry;
pub mod rules;
mod state;

use actix_identity::config::LogoutBehavior;
use actix_identity::IdentityMiddleware;
use diesel::QueryResult;
use latchkey_db::DbConnection;

pub use current::{prefers_json, Authenticated, CurrentUser, LoginExpired, LoginRequired};
pub use error::{cause_chain, AuthError};
pub use login::{end_other_logins, log_in, log_out};
pub use rules::{LoginPolicy, LoginStatus, Protection, Rotation, Touch};
pub use state::{Auth, LoginHook, LoginWork};

/// The application's user, as the auth layer needs it (Flask-Login's `UserMixin` plus its
/// `user_loader`, axum-login's `AuthUser`).
///
/// ```
/// use diesel::QueryResult;
/// use latchkey_db::DbConnection;
///
/// #[derive(Clone)]
/// struct User { id: i32, epoch: i64 }
///
/// impl latchkey_auth::AuthUser for User {
///     fn id(&self) -> i32 { self.id }
///     fn credential_epoch(&self) -> i64 { self.epoch }
///     fn load(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Self>> {
///         # let _ = (conn, id);
///         // SELECT id, credential_epoch FROM users WHERE id = $1
///         # unimplemented!()
///     }
///     fn advance_credential_epoch(conn: &mut DbConnection, id: i32) -> QueryResult<i64> {
///         # let _ = (conn, id);
///         // UPDATE users SET credential_epoch = credential_epoch + 1 WHERE id = $1 RETURNING …
///         # unimplemented!()
///     }
/// }
/// ```
pub trait AuthUser: Send + 'static {
    fn id(&self) -> i32;

    /// A number that moves on whenever the user's credentials change (password change, "log
    /// out everywhere else"). A login is valid only while it equals the epoch it proved.
    fn credential_epoch(&self) -> i64;

    /// The user with this id, if there still is one.
    fn load(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Self>>
    where
        Self: Sized;

    /// Moves the user's credential epoch on and returns the new one.
    fn advance_credential_epoch(conn: &mut DbConnection, id: i32) -> QueryResult<i64>;
}

/// actix-identity's middleware as this crate needs it: when a login ends on the server, only
/// the identity leaves the session (so a new login in the same request works); `log_out`
/// purges the whole session itself.
pub fn identity_middleware() -> IdentityMiddleware {
    IdentityMiddleware::builder().logout_behavior(LogoutBehavior::DeleteIdentityKeys).build()
}
