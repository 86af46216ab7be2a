//! Flask-Login for actix-web.
//!
//! - [`CurrentUser`] (Flask-Login's `current_user`), [`LoginRequired`] (`@login_required`)
//!   and [`FreshLoginRequired`] (`@fresh_login_required`) extractors, generic over the
//!   application's user through [`AuthUser`] (Flask-Login's `user_loader`).
//! - [`log_in`], [`log_out`], [`reauthenticate`] and [`end_other_logins`], over the login registry
//!   ([`registry`]): one row per login, so logging out is real in every session store.
//! - The rules every request is checked against ([`rules`]): idle and absolute timeouts,
//!   remember-me, session protection, the credential epoch and the login generation.
//! - [`password`] hashing (bcrypt on the blocking pool), [`csrf`] forms, safe [`next`]
//!   redirects and the [`client`]'s address behind trusted proxies.
//! - Second factors ([`second_factor`]: TOTP, recovery codes, password logins waiting for
//!   their second step) and [`passkeys`] (WebAuthn: signing in alone, or as the second factor).
//! - Guesses [`throttle`]d across every instance (Redis or the database), and security events
//!   kept in the [`audit`] log; [`guard`] applies both to a request.
//!
//! Register [`Auth`] as app data, and wrap the app in [`identity_middleware`], the session
//! middleware of `latchkey-sessions`, and [`csrf::send_cookie`]:
//!
//! ```no_run
//! use actix_web::{cookie::Key, web, App, HttpServer};
//! use actix_web::middleware::from_fn;
//! use latchkey_auth::{csrf, identity_middleware, password::Hasher, Auth, LoginPolicy};
//! use latchkey_sessions::{Backend, Lifetimes, Store};
//!
//! # async fn example(pool: latchkey_db::Pool) -> anyhow::Result<()> {
//! let auth = web::Data::new(Auth::new(pool, LoginPolicy::default(), Hasher::new(12).await?, *b"a CSRF key", false));
//! let store = Store::new(Backend::Cookie, Lifetimes::default());
//! let key = Key::generate();
//! HttpServer::new(move || {
//!     App::new()
//!         .app_data(auth.clone())
//!         .wrap(from_fn(csrf::send_cookie))
//!         .wrap(identity_middleware())
//!         .wrap(store.middleware(key.clone(), false))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod audit;
pub mod cache;
pub mod client;
pub mod csrf;
mod current;
mod error;
pub mod guard;
mod login;
pub mod next;
pub mod passkeys;
pub mod password;
pub mod registry;
pub mod rules;
pub mod sealing;
pub mod second_factor;
mod state;
pub mod throttle;
mod user;

use actix_identity::config::LogoutBehavior;
use actix_identity::IdentityMiddleware;

pub use current::{
    prefers_json, CurrentUser, FormPage, FreshLoginRequired, LoginExpired, LoginRequired, UnconfirmedAllowed,
};
pub use error::{cause_chain, AuthError, CONFIRM_EMAIL_PAGE};
pub use login::{
    begin_second_factor, complete_second_factor, end_other_logins, has_second_factor, log_in, log_out,
    pending_login, reauthenticate, renew_login, sign_in_with_passkey, verify_second_factor,
    SecondFactorOutcome,
};
pub use registry::Authenticated;
pub use rules::{LoginPolicy, LoginStatus, Protection, Rotation, Touch};
pub use state::{Auth, LoginHook, LoginWork};
pub use user::AuthUser;

/// actix-identity's middleware as this crate needs it: when a login ends on the server, only
/// the identity leaves the session (so a new login in the same request works); `log_out`
/// purges the whole session itself.
pub fn identity_middleware() -> IdentityMiddleware {
    IdentityMiddleware::builder().logout_behavior(LogoutBehavior::DeleteIdentityKeys).build()
}
