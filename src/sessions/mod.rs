//! Session storage and lifecycle: the store chosen by `SESSION_STORE` (cookie, Redis or our
//! database), per-session lifetimes (remember-me), touching, rotation and purging.

pub mod database;
pub mod lifecycle;
pub mod redis;

use std::collections::HashMap;
use std::time::Duration;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::{
    CookieSessionStore, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_session::SessionMiddleware;
use actix_web::cookie::{Key, SameSite};

use crate::db::Pool;
use crate::settings::{SessionPolicy, SessionStoreKind, Settings};
use database::DatabaseStore;
use redis::RedisStore;

/// Keys of our own entries in the session state (actix-identity keeps its own).
pub mod keys {
    /// `"true"` when the login chose "Remember me".
    pub const REMEMBER: &str = "latchkey.remember";
    /// Unix time the session was last refreshed (TTL extended, cookie re-issued).
    pub const TOUCHED: &str = "latchkey.touched";
    /// Unix time the session id was last replaced.
    pub const ROTATED: &str = "latchkey.rotated";
    /// A guest's cart (`shop::cart::GuestCart`); moved into the user's cart at login.
    pub const CART: &str = "latchkey.cart";
}

/// Name of the session cookie; `__Host-` in production (Secure, Path=/, no Domain enforced
/// by browsers).
pub fn cookie_name(production: bool) -> &'static str {
    if production {
        "__Host-latchkey_session"
    } else {
        "latchkey_session"
    }
}

/// actix-session's session state (its own alias is crate-private).
type State = HashMap<String, String>;

/// The configured store. actix-session's middleware is generic over one store type; this enum
/// lets the store be chosen at run time, and adds what the stores lack: a lifetime per session
/// (a remembered login lives far longer than a browser session) and deletion with a grace
/// period (so a rotated id does not log out requests already in flight).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    policy: SessionPolicy,
}

#[derive(Clone)]
enum Backend {
    Cookie,
    /// Redis, over one multiplexed connection (see `redis.rs` for why not actix-session's).
    Redis(RedisStore),
    Database(DatabaseStore),
}

impl Store {
    /// Connects to the store named by the settings.
    pub async fn connect(settings: &Settings, pool: &Pool) -> Result<Self, anyhow::Error> {
        let backend = match (settings.session_store, &settings.redis_url) {
            (SessionStoreKind::Cookie, _) => Backend::Cookie,
            (SessionStoreKind::Database, _) => {
                Backend::Database(DatabaseStore::new(pool.clone(), settings.sessions.rotate_grace))
            }
            (SessionStoreKind::Redis, Some(url)) => Backend::Redis(
                RedisStore::new(url.expose(), settings.redis_timeout, settings.sessions.rotate_grace)
                    .map_err(|e| anyhow::anyhow!("invalid REDIS_URL: {e}"))?,
            ),
            (SessionStoreKind::Redis, None) => {
                anyhow::bail!("REDIS_URL is required when SESSION_STORE=redis")
            }
        };
        Ok(Self { backend, policy: settings.sessions.clone() })
    }

    /// The Redis store, when sessions live in Redis (for readiness checks).
    pub fn redis(&self) -> Option<&RedisStore> {
        match &self.backend {
            Backend::Redis(store) => Some(store),
            _ => None,
        }
    }

    /// Whether session ids name server-side state (and so can be rotated and revoked).
    pub fn is_server_side(&self) -> bool {
        !matches!(self.backend, Backend::Cookie)
    }

    /// Whether state lives in our database (and so needs purging).
    pub fn is_database(&self) -> bool {
        matches!(self.backend, Backend::Database(_))
    }

    pub fn describe(&self) -> &'static str {
        match self.backend {
            Backend::Cookie => "signed and encrypted cookies",
            Backend::Redis(_) => "Redis",
            Backend::Database(_) => "the database",
        }
    }

    /// The session middleware over this store.
    pub fn middleware(&self, key: Key, production: bool) -> SessionMiddleware<Store> {
        SessionMiddleware::builder(self.clone(), key)
            .cookie_name(cookie_name(production).to_owned())
            .cookie_secure(production)
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .cookie_path("/".to_owned())
            .cookie_domain(None)
            .cookie_content_security(CookieContentSecurity::Private)
            // A browser-session cookie by default; `lifecycle::RememberCookie` makes it
            // persistent for logins that chose "Remember me". Server-side lifetimes come from
            // `Store::ttl`, not from this setting.
            .session_lifecycle(BrowserSession::default())
            .build()
    }

    /// How long server-side state lives after this write (it is rewritten while in use):
    /// a remembered login's for `REMEMBER_DURATION`, anything else for `IDLE_TIMEOUT`, each
    /// plus one `IDLE_TIMEOUT` of margin. The `login_sessions` row decides when a login ends;
    /// the margin keeps the state around long enough for the server to notice the expiry
    /// and tell the user, rather than the login silently vanishing with its state.
    fn ttl(&self, state: &State) -> Duration {
        let lifetime = if state.get(keys::REMEMBER).map(String::as_str) == Some("true") {
            self.policy.remember_duration
        } else {
            self.policy.idle_timeout
        };
        lifetime.saturating_add(self.policy.idle_timeout)
    }
}

/// The most session state (as JSON) the cookie store accepts: encrypted, base64-encoded and
/// named, it stays under the 4 KB browsers keep per cookie.
pub const COOKIE_STATE_LIMIT: usize = 2800;

/// Refuses state that would make the session cookie too large for browsers, which would
/// otherwise drop it silently (and the session with it).
fn fits_in_cookie(state: &State) -> Result<(), anyhow::Error> {
    let size = serde_json::to_string(state).map(|json| json.len()).unwrap_or(usize::MAX);
    if size > COOKIE_STATE_LIMIT {
        log::error!("session state of {size} bytes exceeds the cookie store's {COOKIE_STATE_LIMIT}");
        anyhow::bail!("session state too large for a cookie ({size} bytes)");
    }
    Ok(())
}

/// An update that fell back to saving under a fresh key reports the save's error as its own.
fn update_error(error: SaveError) -> UpdateError {
    match error {
        SaveError::Serialization(e) => UpdateError::Serialization(e),
        SaveError::Other(e) => UpdateError::Other(e),
    }
}

fn seconds(ttl: &actix_web::cookie::time::Duration) -> Duration {
    Duration::from_secs(u64::try_from(ttl.whole_seconds()).unwrap_or(0))
}

fn cookie_ttl(ttl: Duration) -> actix_web::cookie::time::Duration {
    actix_web::cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        match &self.backend {
            Backend::Cookie => CookieSessionStore::default().load(key).await,
            Backend::Redis(store) => store.load(key).await,
            Backend::Database(store) => store.load(key).await,
        }
    }

    async fn save(
        &self,
        state: State,
        _: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, SaveError> {
        let ttl = self.ttl(&state);
        match &self.backend {
            Backend::Cookie => {
                fits_in_cookie(&state).map_err(SaveError::Other)?;
                CookieSessionStore::default().save(state, &cookie_ttl(ttl)).await
            }
            Backend::Redis(store) => store.save(state, ttl).await,
            Backend::Database(store) => store.save(state, ttl).await,
        }
    }

    async fn update(
        &self,
        key: SessionKey,
        state: State,
        _: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        let ttl = self.ttl(&state);
        match &self.backend {
            Backend::Cookie => {
                fits_in_cookie(&state).map_err(UpdateError::Other)?;
                CookieSessionStore::default().update(key, state, &cookie_ttl(ttl)).await
            }
            Backend::Redis(store) => store.update(key, state, ttl).await,
            Backend::Database(store) => store.update(key, state, ttl).await,
        }
    }

    async fn update_ttl(
        &self,
        key: &SessionKey,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<(), anyhow::Error> {
        match &self.backend {
            Backend::Cookie => CookieSessionStore::default().update_ttl(key, ttl).await,
            Backend::Redis(store) => store.update_ttl(key, seconds(ttl)).await,
            Backend::Database(store) => store.update_ttl(key, seconds(ttl)).await,
        }
    }

    /// Retires the key: it keeps working for `ROTATE_GRACE`, then it is gone.
    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        match &self.backend {
            Backend::Cookie => Ok(()),
            Backend::Redis(store) => store.delete(key).await,
            Backend::Database(store) => store.delete(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_store_refuses_state_too_large_for_a_cookie() {
        let small: State = [("latchkey.cart".to_owned(), "x".repeat(1000))].into_iter().collect();
        assert!(fits_in_cookie(&small).is_ok());
        let large: State =
            [("latchkey.cart".to_owned(), "x".repeat(COOKIE_STATE_LIMIT))].into_iter().collect();
        assert!(fits_in_cookie(&large).is_err());
    }
}
