//! Sessions for actix-web: where their state lives, how long it lives, and how its id rotates.
//!
//! - [`Store`]: actix-session's `SessionStore`, backed by a signed and encrypted cookie, Redis
//!   ([`redis::RedisStore`]) or the database ([`database::DatabaseStore`]), chosen at run time.
//!   Each session gets its own server-side lifetime ([`Lifetimes`]), and a replaced id is
//!   retired with a grace period rather than deleted.
//! - [`Lifecycle`] and [`SessionCookie`]: middleware that refresh and rotate sessions that
//!   hold a login, make the cookie of a remembered login persistent, and keep a request served
//!   in a grace period from sending an old cookie back.
//! - [`TypedSession`] and [`keys`]: every key of the session state, with its type.
//! - [`cache::Cache`] and [`invalidation::Invalidations`]: per-instance caches (of the Redis
//!   and database stores' state, and of the auth layer's verified logins) that instances keep
//!   consistent over Redis pub/sub, PostgreSQL `LISTEN/NOTIFY` or SQLite's `data_version`.
//! - [`Rekey`]: middleware that keeps cookies sealed under a previous key working while the
//!   servers move to a new one, and re-seals them under the new one.
//!
//! ```no_run
//! use actix_web::{cookie::Key, App, HttpServer};
//! use latchkey_sessions::{Backend, Lifecycle, Lifetimes, SessionCookie, Store};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let lifetimes = Lifetimes::default();
//! let store = Store::new(Backend::Cookie, lifetimes.clone());
//! let key = Key::generate();
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(Lifecycle::new(&lifetimes, store.rotates_ids()))
//!         .wrap(store.middleware(key.clone(), false))
//!         .wrap(SessionCookie::new(&lifetimes, false))
//! })
//! .bind("127.0.0.1:0")?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

/// The `Transform` of a middleware whose configuration `$config` (cloned into each worker) is
/// kept beside the inner service in `$middleware`; the middleware's `Service` impl is its own.
macro_rules! transform {
    ($config:ty, $middleware:ident) => {
        #[doc(hidden)]
        pub struct $middleware<S> {
            service: std::rc::Rc<S>,
            config: $config,
        }

        impl<S, B> actix_web::dev::Transform<S, actix_web::dev::ServiceRequest> for $config
        where
            S: actix_web::dev::Service<
                    actix_web::dev::ServiceRequest,
                    Response = actix_web::dev::ServiceResponse<B>,
                    Error = actix_web::Error,
                > + 'static,
            B: 'static,
        {
            type Response = actix_web::dev::ServiceResponse<B>;
            type Error = actix_web::Error;
            type Transform = $middleware<S>;
            type InitError = ();
            type Future = std::future::Ready<Result<Self::Transform, Self::InitError>>;

            fn new_transform(&self, service: S) -> Self::Future {
                std::future::ready(Ok($middleware {
                    service: std::rc::Rc::new(service),
                    config: self.clone(),
                }))
            }
        }
    };
}

pub mod cache;
pub mod database;
pub mod invalidation;
mod lifecycle;
mod parsed;
pub mod redis;
mod rekey;
pub mod server_side;
mod store;
mod typed;

use std::time::Duration;

pub use lifecycle::{Lifecycle, ServedInGrace, SessionCookie};
pub use rekey::{Rekey, Resealed, Sealing};
pub use store::{Backend, Store, COOKIE_STATE_LIMIT};
pub use typed::{keys, SessionKey, TypedSession};

/// How long sessions live and how often their ids change.
#[derive(Debug, Clone)]
pub struct Lifetimes {
    /// An ordinary session's state lives this long after its last write (plus one more idle
    /// timeout of margin, so the server can still say "your session expired").
    pub idle_timeout: Duration,
    /// A remembered session's state and cookie live this long.
    pub remember_duration: Duration,
    /// A session holding a login is refreshed (TTL extended, cookie re-issued) at most this often.
    pub touch_interval: Duration,
    /// Server-side ids of sessions holding a login are replaced this often.
    pub rotate_interval: Duration,
    /// A replaced id keeps working this long, for requests already in flight with it.
    pub rotate_grace: Duration,
}

impl Default for Lifetimes {
    /// 30 minutes idle, 30 days remembered, rotation every 15 minutes with 30 seconds of grace.
    fn default() -> Self {
        let idle_timeout = Duration::from_secs(30 * 60);
        Self {
            idle_timeout,
            remember_duration: Duration::from_secs(30 * 86_400),
            touch_interval: touch_interval(idle_timeout),
            rotate_interval: Duration::from_secs(15 * 60),
            rotate_grace: Duration::from_secs(30),
        }
    }
}

/// How stale a login's activity mark may get before a request writes it again: a minute, or
/// a tenth of the idle timeout if that is shorter, so ordinary browsing costs one read per
/// request and at most one write a minute.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(latchkey_sessions::touch_interval(Duration::from_secs(1800)), Duration::from_secs(60));
/// assert_eq!(latchkey_sessions::touch_interval(Duration::from_secs(20)), Duration::from_secs(2));
/// ```
pub fn touch_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 10).min(Duration::from_secs(60))
}

/// Name of the session cookie; `__Host-` in production (Secure, Path=/, no Domain, enforced
/// by browsers).
///
/// ```
/// assert_eq!(latchkey_sessions::cookie_name(true), "__Host-latchkey_session");
/// ```
pub fn cookie_name(production: bool) -> &'static str {
    if production {
        "__Host-latchkey_session"
    } else {
        "latchkey_session"
    }
}

/// Whether the response headers set the cookie called `name`.
pub(crate) fn sets_cookie(headers: &actix_web::http::header::HeaderMap, name: &str) -> bool {
    headers.get_all(actix_web::http::header::SET_COOKIE).any(|value| names(value, name))
}

/// Whether the `Set-Cookie` header `value` is for the cookie called `name` (its first bytes,
/// without parsing the rest).
pub(crate) fn names(value: &actix_web::http::header::HeaderValue, name: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() > name.len() && bytes.starts_with(name.as_bytes()) && bytes[name.len()] == b'='
}

/// The cookie a `Set-Cookie` header sets, if it is the one called `name`.
pub(crate) fn set_cookie_named(
    value: &actix_web::http::header::HeaderValue,
    name: &str,
) -> Option<actix_web::cookie::Cookie<'static>> {
    let cookie = actix_web::cookie::Cookie::parse(value.to_str().ok()?.to_owned()).ok()?;
    (cookie.name() == name).then_some(cookie)
}
