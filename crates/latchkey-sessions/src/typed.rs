//! `TypedSession`: the session state read and written through typed keys, so every key is
//! named once, with the type of its value (zero2prod's `TypedSession`, generalised).

use std::collections::HashMap;
use std::marker::PhantomData;

use actix_session::{Session, SessionExt, SessionInsertError};
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// actix-session's session state, as the stores hold it (its own alias is crate-private).
pub(crate) type State = HashMap<String, String>;

/// A key of the session state and the type of its value.
///
/// ```
/// use latchkey_sessions::SessionKey;
/// const CART: SessionKey<Vec<(i32, i32)>> = SessionKey::new("shop.cart");
/// assert_eq!(CART.name(), "shop.cart");
/// ```
pub struct SessionKey<T> {
    name: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<T> SessionKey<T> {
    /// A key stored under `name`; keep names unique across the application.
    pub const fn new(name: &'static str) -> Self {
        Self { name, value: PhantomData }
    }

    /// The name the value is stored under.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> Clone for SessionKey<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SessionKey<T> {}

/// Every key the core crates keep in the session. Applications declare theirs as
/// [`SessionKey`] constants too (latchkey's shop keeps its guest cart under one).
pub mod keys {
    use super::SessionKey;

    /// The login token, written by actix-identity (`Identity::login`); its presence means
    /// the session holds a login.
    pub const IDENTITY: SessionKey<String> = SessionKey::new("actix_identity.user_id");
    /// Whether the login chose "Remember me": a persistent cookie and a longer lifetime.
    /// Stored only when it did (absent reads as `false`).
    pub const REMEMBER: SessionKey<bool> = SessionKey::new("latchkey.remember");
    /// Unix time the session was last refreshed (TTL extended, cookie re-issued).
    pub const TOUCHED: SessionKey<i64> = SessionKey::new("latchkey.touched");
    /// Unix time the session id was last replaced; kept only where ids rotate (not by the
    /// cookie store, whose logins rotate [`LOGIN_GENERATION`] instead).
    pub const ROTATED: SessionKey<i64> = SessionKey::new("latchkey.rotated");
    /// The generation of the login this session carries. Where the session id cannot rotate
    /// (the cookie store), the auth layer rotates this instead. Absent until it first moves
    /// on (reads as 0).
    pub const LOGIN_GENERATION: SessionKey<i64> = SessionKey::new("latchkey.generation");
    /// Set by the store, never stored: this request's id was retired (replaced or deleted)
    /// and is being served within its grace period.
    pub const RETIRED: SessionKey<bool> = SessionKey::new("latchkey.retired");
}

/// The session of a request, read and written through [`SessionKey`]s.
///
/// ```
/// use actix_session::SessionExt;
/// use latchkey_sessions::{keys, TypedSession};
///
/// fn remembered(req: &actix_web::HttpRequest) -> bool {
///     TypedSession::of(req).get(keys::REMEMBER).unwrap_or(false)
/// }
/// ```
#[derive(Clone)]
pub struct TypedSession(Session);

impl TypedSession {
    /// The session of `req`.
    pub fn of(req: &HttpRequest) -> Self {
        Self(req.get_session())
    }

    /// Wraps a session already extracted from the request.
    pub fn from_session(session: Session) -> Self {
        Self(session)
    }

    /// The value under `key`; a missing value, or one that does not parse as `T`, is `None`.
    pub fn get<T: DeserializeOwned>(&self, key: SessionKey<T>) -> Option<T> {
        self.0.get(key.name).ok().flatten()
    }

    /// Whether anything is stored under `key`, parsable or not.
    pub fn contains<T>(&self, key: SessionKey<T>) -> bool {
        self.0.contains_key(key.name)
    }

    /// Stores `value` under `key`; fails only if the value does not serialise.
    pub fn insert<T: Serialize>(&self, key: SessionKey<T>, value: &T) -> Result<(), SessionInsertError> {
        self.0.insert(key.name, value)
    }

    /// Removes whatever is stored under `key`.
    pub fn remove<T>(&self, key: SessionKey<T>) {
        self.0.remove(key.name);
    }

    /// Whether this request's session id was retired and is only being served out its grace
    /// period: nothing written to it is kept, and it is never given a new id of its own.
    pub fn is_retired(&self) -> bool {
        self.contains(keys::RETIRED)
    }

    /// Gives the session a new id at the end of the request (the old one is retired).
    pub fn renew(&self) {
        self.0.renew();
    }

    /// Empties the session and removes its cookie.
    pub fn purge(&self) {
        self.0.purge();
    }

    /// The untyped actix-session handle.
    pub fn session(&self) -> &Session {
        &self.0
    }
}
