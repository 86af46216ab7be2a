//! Session storage and lifecycle: the store chosen by `SESSION_STORE` (cookie, Redis or our
//! database), per-session lifetimes (remember-me), touching, rotation and purging.

pub mod database;
pub mod lifecycle;

use std::collections::HashMap;
use std::time::Duration;

use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::{
    CookieSessionStore, LoadError, RedisSessionStore, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_session::SessionMiddleware;
use actix_web::cookie::{Key, SameSite};

use crate::db::Pool;
use crate::settings::{SessionPolicy, SessionStoreKind, Settings};
use database::DatabaseStore;

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
    /// Redis through a connection pool: a lost connection is simply replaced on the next
    /// request (a single reconnecting connection backs off for up to a minute), and every
    /// operation is bounded by `REDIS_TIMEOUT` so an outage answers 503 promptly.
    Redis {
        store: RedisSessionStore,
        pool: deadpool_redis::Pool,
        limit: Duration,
    },
    Database(DatabaseStore),
}

/// The Redis key of a session key (shared with actix-session's store through `cache_keygen`).
fn redis_key(key: &str) -> String {
    format!("latchkey:session:{key}")
}

/// The Redis key marking a session key as retired (replaced or deleted, in its grace period).
fn redis_retired_key(key: &str) -> String {
    format!("latchkey:retired:{key}")
}

impl Store {
    /// Connects to the store named by the settings.
    pub async fn connect(settings: &Settings, pool: &Pool) -> Result<Self, anyhow::Error> {
        let backend = match (settings.session_store, &settings.redis_url) {
            (SessionStoreKind::Cookie, _) => Backend::Cookie,
            (SessionStoreKind::Database, _) => {
                Backend::Database(DatabaseStore::new(pool.clone(), settings.sessions.rotate_grace))
            }
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
                let store =
                    RedisSessionStore::builder_pooled(pool.clone()).cache_keygen(redis_key).build().await?;
                Backend::Redis { store, pool, limit }
            }
            (SessionStoreKind::Redis, None) => {
                anyhow::bail!("REDIS_URL is required when SESSION_STORE=redis")
            }
        };
        Ok(Self { backend, policy: settings.sessions.clone() })
    }

    /// The Redis pool, when sessions live in Redis.
    pub fn redis_pool(&self) -> Option<&deadpool_redis::Pool> {
        match &self.backend {
            Backend::Redis { pool, .. } => Some(pool),
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
            Backend::Redis { .. } => "Redis",
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

fn cookie_ttl(ttl: Duration) -> actix_web::cookie::time::Duration {
    actix_web::cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// Bounds a Redis operation by `limit`, turning a time-out into the operation's own error.
async fn bounded<T, E>(
    limit: Duration,
    operation: impl std::future::Future<Output = Result<T, E>>,
    timed_out: impl FnOnce(anyhow::Error) -> E,
) -> Result<T, E> {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or_else(|_| Err(timed_out(anyhow::anyhow!("Redis did not answer within {limit:?}"))))
}

/// Runs one Redis command on the pool, bounded by `limit`.
async fn redis_command<T: redis::FromRedisValue>(
    pool: &deadpool_redis::Pool,
    limit: Duration,
    command: redis::Cmd,
) -> Result<T, anyhow::Error> {
    bounded(
        limit,
        async {
            let mut conn = pool.get().await?;
            Ok(command.query_async::<T>(&mut conn).await?)
        },
        |e| e,
    )
    .await
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        match &self.backend {
            Backend::Cookie => CookieSessionStore::default().load(key).await,
            Backend::Redis { store, limit, .. } => bounded(*limit, store.load(key), LoadError::Other).await,
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
            Backend::Redis { store, limit, .. } => {
                bounded(*limit, store.save(state, &cookie_ttl(ttl)), SaveError::Other).await
            }
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
            Backend::Redis { store, pool, limit } => {
                // A retired key (see `delete`) must not be revived by an update from a request
                // that was in flight when it was replaced: give that request a fresh key.
                let retired: bool = redis_command(
                    pool,
                    *limit,
                    redis::cmd("EXISTS").arg(redis_retired_key(key.as_ref())).clone(),
                )
                .await
                .map_err(UpdateError::Other)?;
                if retired {
                    return bounded(*limit, store.save(state, &cookie_ttl(ttl)), SaveError::Other)
                        .await
                        .map_err(|e| match e {
                            SaveError::Serialization(e) => UpdateError::Serialization(e),
                            SaveError::Other(e) => UpdateError::Other(e),
                        });
                }
                bounded(*limit, store.update(key, state, &cookie_ttl(ttl)), UpdateError::Other).await
            }
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
            Backend::Redis { store, limit, .. } => bounded(*limit, store.update_ttl(key, ttl), |e| e).await,
            Backend::Database(store) => {
                store.update_ttl(key, Duration::from_secs(ttl.whole_seconds().max(0) as u64)).await
            }
        }
    }

    /// Retires the key: it keeps working for `ROTATE_GRACE`, then it is gone.
    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        match &self.backend {
            Backend::Cookie => Ok(()),
            Backend::Redis { pool, limit, .. } => {
                let grace = u64::try_from(self.policy.rotate_grace.as_millis()).unwrap_or(u64::MAX).max(1);
                // PEXPIRE ... LT only ever shortens the remaining time; the marker stops
                // updates from requests still in flight from extending it again.
                let mut pipeline = redis::pipe();
                pipeline
                    .cmd("PEXPIRE")
                    .arg(redis_key(key.as_ref()))
                    .arg(grace)
                    .arg("LT")
                    .ignore()
                    .cmd("SET")
                    .arg(redis_retired_key(key.as_ref()))
                    .arg(1)
                    .arg("PX")
                    .arg(grace)
                    .ignore();
                bounded(
                    *limit,
                    async {
                        let mut conn = pool.get().await?;
                        pipeline.query_async::<()>(&mut conn).await?;
                        Ok(())
                    },
                    |e| e,
                )
                .await
            }
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
