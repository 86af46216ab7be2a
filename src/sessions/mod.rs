//! Session storage: the store chosen by `SESSION_STORE`, and the session cookie's settings.

use std::collections::HashMap;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::{
    CookieSessionStore, LoadError, RedisSessionStore, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_session::SessionMiddleware;
use actix_web::cookie::{time::Duration, Key, SameSite};

use crate::settings::{SessionStoreKind, Settings};

/// Name of the session cookie; `__Host-` in production (Secure, Path=/, no Domain enforced
/// by browsers).
pub fn cookie_name(production: bool) -> &'static str {
    if production {
        "__Host-latchkey_session"
    } else {
        "latchkey_session"
    }
}

/// The configured store. actix-session's middleware is generic over one store type; this enum
/// lets the store be chosen at run time from settings.
#[derive(Clone)]
pub enum Store {
    Cookie,
    /// Redis through a connection pool: a lost connection is simply replaced on the next
    /// request (a single reconnecting connection backs off for up to a minute), and every
    /// operation is bounded by `REDIS_TIMEOUT` so an outage answers 503 promptly.
    Redis {
        store: RedisSessionStore,
        pool: deadpool_redis::Pool,
        limit: std::time::Duration,
    },
}

/// Bounds a store operation by `limit`, turning a time-out into the operation's own error.
async fn bounded<T, E>(
    limit: std::time::Duration,
    operation: impl std::future::Future<Output = Result<T, E>>,
    timed_out: impl FnOnce(anyhow::Error) -> E,
) -> Result<T, E> {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or_else(|_| Err(timed_out(anyhow::anyhow!("Redis did not answer within {limit:?}"))))
}

impl Store {
    /// Connects to the store named by the settings.
    pub async fn connect(settings: &Settings) -> Result<Self, anyhow::Error> {
        match (settings.session_store, &settings.redis_url) {
            (SessionStoreKind::Cookie, _) => Ok(Self::Cookie),
            (SessionStoreKind::Redis, Some(url)) => {
                let limit = settings.redis_timeout;
                let pool = deadpool_redis::Config::from_url(url.expose())
                    .builder()
                    .map_err(|e| anyhow::anyhow!("invalid REDIS_URL: {e}"))?
                    .max_size(settings.database_pool_size as usize * 4)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .wait_timeout(Some(limit))
                    .create_timeout(Some(limit))
                    .recycle_timeout(Some(limit))
                    .build()
                    .map_err(|e| anyhow::anyhow!("invalid REDIS_URL: {e}"))?;
                let store = RedisSessionStore::builder_pooled(pool.clone())
                    .cache_keygen(|key| format!("latchkey:session:{key}"))
                    .build()
                    .await?;
                Ok(Self::Redis { store, pool, limit })
            }
            (SessionStoreKind::Redis, None) => {
                anyhow::bail!("REDIS_URL is required when SESSION_STORE=redis")
            }
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
            // The cookie ends with the browser; server-side state expires a day after last use
            // (login_sessions rows are the authority on whether a login is still valid).
            .session_lifecycle(BrowserSession::default().state_ttl(Duration::days(1)))
            .build()
    }
}

/// actix-session's session state (its own alias is crate-private).
type State = HashMap<String, String>;

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        match self {
            Self::Cookie => CookieSessionStore::default().load(key).await,
            Self::Redis { store, limit, .. } => bounded(*limit, store.load(key), LoadError::Other).await,
        }
    }

    async fn save(&self, state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        match self {
            Self::Cookie => CookieSessionStore::default().save(state, ttl).await,
            Self::Redis { store, limit, .. } => {
                bounded(*limit, store.save(state, ttl), SaveError::Other).await
            }
        }
    }

    async fn update(&self, key: SessionKey, state: State, ttl: &Duration) -> Result<SessionKey, UpdateError> {
        match self {
            Self::Cookie => CookieSessionStore::default().update(key, state, ttl).await,
            Self::Redis { store, limit, .. } => {
                bounded(*limit, store.update(key, state, ttl), UpdateError::Other).await
            }
        }
    }

    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        match self {
            Self::Cookie => CookieSessionStore::default().update_ttl(key, ttl).await,
            Self::Redis { store, limit, .. } => bounded(*limit, store.update_ttl(key, ttl), |e| e).await,
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        match self {
            Self::Cookie => CookieSessionStore::default().delete(key).await,
            Self::Redis { store, limit, .. } => bounded(*limit, store.delete(key), |e| e).await,
        }
    }
}
