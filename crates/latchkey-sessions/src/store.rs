//! `Store`: the session store chosen at run time, with per-session lifetimes and retirement.

use std::time::Duration;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::{
    CookieSessionStore, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_session::SessionMiddleware;
use actix_web::cookie::{Key, SameSite};

use crate::database::DatabaseStore;
use crate::redis::RedisStore;
use crate::typed::State;
use crate::{cookie_name, keys, Lifetimes};

/// Where session state lives.
#[derive(Clone)]
pub enum Backend {
    /// In the cookie itself, signed and encrypted: nothing on the server, ids never rotate.
    Cookie,
    /// In Redis, over one multiplexed connection.
    Redis(RedisStore),
    /// In the application's database (`session_states`).
    Database(DatabaseStore),
}

/// The configured store. actix-session's middleware is generic over one store type; this type
/// lets the backend be chosen at run time, and adds what the backends lack: a lifetime per
/// session (a remembered login lives far longer than a browser session) and retirement (a
/// replaced id keeps working for a grace period but is never written or renewed again).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    lifetimes: Lifetimes,
}

impl Store {
    /// A store over `backend`, giving each session the lifetime `lifetimes` assigns it.
    ///
    /// ```
    /// use latchkey_sessions::{Backend, Lifetimes, Store};
    /// let store = Store::new(Backend::Cookie, Lifetimes::default());
    /// assert!(!store.rotates_ids());
    /// assert_eq!(store.describe(), "signed and encrypted cookies");
    /// ```
    pub fn new(backend: Backend, lifetimes: Lifetimes) -> Self {
        Self { backend, lifetimes }
    }

    /// Where this store keeps session state.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Whether session ids name server-side state, and so can be rotated and retired.
    pub fn rotates_ids(&self) -> bool {
        !matches!(self.backend, Backend::Cookie)
    }

    /// A description for the start-up log.
    pub fn describe(&self) -> &'static str {
        match self.backend {
            Backend::Cookie => "signed and encrypted cookies",
            Backend::Redis(_) => "Redis",
            Backend::Database(_) => "the database",
        }
    }

    /// The session middleware over this store: an HttpOnly, SameSite=Lax cookie that ends with
    /// the browser unless [`crate::SessionCookie`] makes it persistent.
    pub fn middleware(&self, key: Key, production: bool) -> SessionMiddleware<Store> {
        SessionMiddleware::builder(self.clone(), key)
            .cookie_name(cookie_name(production).to_owned())
            .cookie_secure(production)
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .cookie_path("/".to_owned())
            .cookie_domain(None)
            .cookie_content_security(CookieContentSecurity::Private)
            .session_lifecycle(BrowserSession::default())
            .build()
    }

    /// How long server-side state lives after this write: a remembered login's for
    /// `remember_duration`, anything else for `idle_timeout`, each plus one idle timeout of
    /// margin. The login decides when it ends; the margin keeps the state long enough for the
    /// server to notice the expiry and say so.
    fn ttl(&self, state: &State) -> Duration {
        let lifetime = if state.get(keys::REMEMBER.name()).map(String::as_str) == Some("true") {
            self.lifetimes.remember_duration
        } else {
            self.lifetimes.idle_timeout
        };
        lifetime.saturating_add(self.lifetimes.idle_timeout)
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

fn seconds(ttl: &actix_web::cookie::time::Duration) -> Duration {
    Duration::from_secs(u64::try_from(ttl.whole_seconds()).unwrap_or(0))
}

fn cookie_ttl(ttl: Duration) -> actix_web::cookie::time::Duration {
    actix_web::cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// The state as stored: without the retired mark, which only lives in the request.
fn stored(mut state: State) -> (State, bool) {
    let retired = state.remove(keys::RETIRED.name()).is_some();
    (state, retired)
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        let loaded = match &self.backend {
            Backend::Cookie => return CookieSessionStore::default().load(key).await,
            Backend::Redis(store) => store.load(key).await?,
            Backend::Database(store) => store.load(key).await?,
        };
        Ok(loaded.map(|(mut state, retired)| {
            if retired {
                state.insert(keys::RETIRED.name().to_owned(), "true".to_owned());
            }
            state
        }))
    }

    async fn save(
        &self,
        state: State,
        _: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, SaveError> {
        let (state, _) = stored(state);
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

    /// Writes the state of a live id. A retired id (or one retired or expired since this
    /// request loaded it) is left as it is and keeps its key: a request served in a grace
    /// period is never handed a new live id of its own.
    async fn update(
        &self,
        key: SessionKey,
        state: State,
        _: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        let (state, retired) = stored(state);
        let ttl = self.ttl(&state);
        match &self.backend {
            Backend::Cookie => {
                fits_in_cookie(&state).map_err(UpdateError::Other)?;
                CookieSessionStore::default().update(key, state, &cookie_ttl(ttl)).await
            }
            _ if retired => Ok(key),
            Backend::Redis(store) => store.update(&key, state, ttl).await.map(|_| key),
            Backend::Database(store) => store.update(&key, state, ttl).await.map(|_| key),
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

    /// Retires the key: it keeps working for the grace period, then it is gone.
    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        match &self.backend {
            Backend::Cookie => Ok(()),
            Backend::Redis(store) => store.retire(key).await,
            Backend::Database(store) => store.retire(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_store_refuses_state_too_large_for_a_cookie() {
        let small: State = [("cart".to_owned(), "x".repeat(1000))].into_iter().collect();
        assert!(fits_in_cookie(&small).is_ok());
        let large: State = [("cart".to_owned(), "x".repeat(COOKIE_STATE_LIMIT))].into_iter().collect();
        assert!(fits_in_cookie(&large).is_err());
    }

    #[test]
    fn the_retired_mark_is_never_stored() {
        let state: State =
            [(keys::RETIRED.name().to_owned(), "true".to_owned()), ("a".to_owned(), "1".to_owned())]
                .into_iter()
                .collect();
        let (kept, retired) = stored(state);
        assert!(retired);
        assert_eq!(kept.len(), 1);
        assert!(!kept.contains_key(keys::RETIRED.name()));
    }

    #[test]
    fn remembered_sessions_live_longer() {
        let lifetimes = Lifetimes::default();
        let store = Store::new(Backend::Cookie, lifetimes.clone());
        let remembered: State = [(keys::REMEMBER.name().to_owned(), "true".to_owned())].into_iter().collect();
        assert_eq!(store.ttl(&remembered), lifetimes.remember_duration + lifetimes.idle_timeout);
        assert_eq!(store.ttl(&State::new()), lifetimes.idle_timeout * 2);
    }
}
