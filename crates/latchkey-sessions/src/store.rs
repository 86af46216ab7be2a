//! `Store`: the session store chosen at run time, with per-session lifetimes, retirement, and
//! a per-instance cache of the Redis and database stores' state.

use std::time::Duration;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::{
    CookieSessionStore, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_session::SessionMiddleware;
use actix_web::cookie::{Key, SameSite};

use crate::cache::{Cache, Entries, Lookup};
use crate::database::DatabaseStore;
use crate::invalidation::Invalidations;
use crate::parsed::ParsedStates;
use crate::redis::RedisStore;
use crate::server_side::{key_id, Loaded};
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
/// session (a remembered login lives far longer than a browser session), retirement (a
/// replaced id keeps working for a grace period but is never written or renewed again), and
/// a per-instance cache of server-side state ([`Store::with_cache`]).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    lifetimes: Lifetimes,
    /// State and retired mark by [`key_id`]; invalidated with `s:<key id>`.
    cache: Cache<(State, bool)>,
    /// The cookie store's states by their JSON.
    parsed: ParsedStates,
}

/// The state cache's messages: `s:<key id>`.
fn receive(entries: &Entries<(State, bool)>, message: &str) -> bool {
    match message.strip_prefix("s:") {
        Some(id) => {
            entries.remove(id);
            true
        }
        None => false,
    }
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
        Self { backend, lifetimes, cache: Cache::off(), parsed: ParsedStates::new(0) }
    }

    /// Keeps the state of the Redis and database stores in this instance's memory: at most
    /// `capacity` sessions, each at most `ttl` and never past the backend's own expiry, kept
    /// consistent with the other instances through `invalidations` (see [`crate::cache`]).
    /// Every write of state (on any instance) invalidates it. The cookie store keeps up to
    /// `capacity` (at most 10,000) states of up to 1 KiB parsed instead: its state arrives in
    /// each request's cookie, and an entry, keyed by the state itself, is never stale.
    pub fn with_cache(mut self, ttl: Duration, capacity: usize, invalidations: &Invalidations) -> Self {
        if self.rotates_ids() {
            self.cache = Cache::new(ttl, capacity, invalidations, receive);
        } else {
            self.parsed = ParsedStates::new(capacity);
        }
        self
    }

    /// How many times a request found no state in the cache and read the store (the Redis and
    /// database stores), since the process started.
    pub fn cache_misses(&self) -> u64 {
        self.cache.misses()
    }

    /// How many sessions' state this instance holds in its cache (parsed, for the cookie store).
    pub fn cached_states(&self) -> usize {
        self.cache.len() + self.parsed.len()
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

impl Store {
    /// The state under `key` from the cache, or else from `read` (the backend), which the
    /// cache then keeps until the backend's expiry at most.
    async fn load_cached(
        &self,
        key: &SessionKey,
        read: impl AsyncFnOnce() -> Result<Option<Loaded>, LoadError>,
    ) -> Result<Option<(State, bool)>, LoadError> {
        if !self.cache.is_serving() {
            return Ok(read().await?.map(|loaded| (loaded.state, loaded.retired)));
        }
        let id = key_id(key);
        let Lookup { value, flight } = self.cache.lookup(&id).await;
        if let Some(cached) = value {
            return Ok(Some(cached));
        }
        let ticket = self.cache.ticket();
        let Some(loaded) = read().await? else { return Ok(None) };
        if let Some(ticket) = ticket {
            self.cache.put(ticket, &id, (loaded.state.clone(), loaded.retired), loaded.expires_in);
        }
        drop(flight);
        Ok(Some((loaded.state, loaded.retired)))
    }

    /// Saves new state through `write` (the backend), and keeps it in the cache: the next
    /// request of a new session (the page after a login) need not read it back.
    async fn save_cached(
        &self,
        state: State,
        ttl: Duration,
        write: impl AsyncFnOnce(State) -> Result<SessionKey, SaveError>,
    ) -> Result<SessionKey, SaveError> {
        let Some(ticket) = self.cache.ticket() else { return write(state).await };
        let key = write(state.clone()).await?;
        self.cache.put(ticket, &key_id(&key), (state, false), ttl);
        Ok(key)
    }

    /// The state under `key` changed or its life did: forgets it here and on every instance
    /// (even while this instance's subscription is down: the others' may be up).
    async fn forget(&self, key: &SessionKey) {
        if self.cache.is_on() {
            let id = key_id(key);
            self.cache.forget(|entries| entries.remove(&id), &format!("s:{id}")).await;
        }
    }
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        let loaded = match &self.backend {
            // What `CookieSessionStore::load` does, through the parsed states.
            Backend::Cookie => {
                return self
                    .parsed
                    .parse(key.as_ref())
                    .map(Some)
                    .map_err(|e| LoadError::Deserialization(e.into()));
            }
            Backend::Redis(store) => self.load_cached(key, async || store.load(key).await).await?,
            Backend::Database(store) => self.load_cached(key, async || store.load(key).await).await?,
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
            Backend::Redis(store) => {
                self.save_cached(state, ttl, async |state| store.save(state, ttl).await).await
            }
            Backend::Database(store) => {
                self.save_cached(state, ttl, async |state| store.save(state, ttl).await).await
            }
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
        let written = match &self.backend {
            Backend::Cookie => {
                fits_in_cookie(&state).map_err(UpdateError::Other)?;
                return CookieSessionStore::default().update(key, state, &cookie_ttl(ttl)).await;
            }
            _ if retired => return Ok(key),
            Backend::Redis(store) => store.update(&key, state, ttl).await,
            Backend::Database(store) => store.update(&key, state, ttl).await,
        };
        self.forget(&key).await;
        written.map(|_| key)
    }

    async fn update_ttl(
        &self,
        key: &SessionKey,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<(), anyhow::Error> {
        let extended = match &self.backend {
            Backend::Cookie => return CookieSessionStore::default().update_ttl(key, ttl).await,
            Backend::Redis(store) => store.update_ttl(key, seconds(ttl)).await,
            Backend::Database(store) => store.update_ttl(key, seconds(ttl)).await,
        };
        self.forget(key).await;
        extended
    }

    /// Retires the key: it keeps working for the grace period, then it is gone.
    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let retired = match &self.backend {
            Backend::Cookie => return Ok(()),
            Backend::Redis(store) => store.retire(key).await,
            Backend::Database(store) => store.retire(key).await,
        };
        self.forget(key).await;
        retired
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
