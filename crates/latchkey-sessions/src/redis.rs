//! `RedisStore`: actix-session's `SessionStore` over one multiplexed Redis connection.
//!
//! Written here rather than using actix-session's `RedisSessionStore` because neither of its
//! two modes suits a server that must answer 503 during an outage and be fast otherwise: its
//! single-connection mode reconnects with a back-off of up to a minute that cannot be
//! configured, and its pooled mode (deadpool-redis) sends a `PING` every time a connection is
//! handed out, doubling the round trips of every request. Here one multiplexed connection
//! serves every request; a broken one is dropped and re-opened on the next request, and every
//! operation is bounded by `REDIS_TIMEOUT`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_session::storage::{generate_session_key, LoadError, SaveError, SessionKey, UpdateError};

use crate::server_side::Loaded;
use crate::typed::State;
use redis::aio::MultiplexedConnection;

/// The Redis key holding a session's state.
fn state_key(key: &str) -> String {
    format!("latchkey:session:{key}")
}

/// The Redis key marking a session key as retired (replaced or deleted, in its grace period).
fn retired_key(key: &str) -> String {
    format!("latchkey:retired:{key}")
}

/// Session state in Redis: `latchkey:session:<key>` holds the JSON state with a TTL, and
/// `latchkey:retired:<key>` marks a key in its grace period.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    connection: Arc<RwLock<Option<MultiplexedConnection>>>,
    /// Serialises reconnection, so an outage does not open one connection per request.
    reconnect: Arc<tokio::sync::Mutex<()>>,
    limit: Duration,
    grace: Duration,
}

impl RedisStore {
    /// A store for `url`. It connects on first use, so the site starts (and answers 503)
    /// while Redis is unreachable. `limit` bounds every operation, connecting included; a
    /// retired key keeps working for `grace`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use latchkey_sessions::{redis::RedisStore, Backend, Lifetimes, Store};
    /// let (limit, grace) = (Duration::from_millis(500), Duration::from_secs(30));
    /// let redis = RedisStore::new("redis://127.0.0.1:6379", limit, grace)?;
    /// assert!(Store::new(Backend::Redis(redis), Lifetimes::default()).rotates_ids());
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn new(url: &str, limit: Duration, grace: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: Arc::default(),
            reconnect: Arc::default(),
            limit,
            grace,
        })
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.connection.read().ok().and_then(|c| c.clone())
    }

    async fn connection(&self) -> Result<MultiplexedConnection, anyhow::Error> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let _one_at_a_time = self.reconnect.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let conn = tokio::time::timeout(self.limit, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| anyhow::anyhow!("connecting to Redis took longer than {:?}", self.limit))??;
        if let Ok(mut slot) = self.connection.write() {
            *slot = Some(conn.clone());
        }
        Ok(conn)
    }

    fn forget_connection(&self) {
        if let Ok(mut slot) = self.connection.write() {
            *slot = None;
        }
    }

    /// Runs a command or pipeline within the time limit; a connection that failed or timed
    /// out is dropped so the next request opens a fresh one. Public for other state that
    /// lives beside the sessions and must be shared by every instance (throttling counters).
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        run: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, anyhow::Error> {
        // Waiting for another request's reconnect counts against the same limit.
        let mut conn = tokio::time::timeout(self.limit, self.connection())
            .await
            .map_err(|_| anyhow::anyhow!("no Redis connection within {:?}", self.limit))??;
        match tokio::time::timeout(self.limit, run(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error() {
                    self.forget_connection();
                }
                Err(error.into())
            }
            Err(_) => {
                self.forget_connection();
                Err(anyhow::anyhow!("Redis did not answer within {:?}", self.limit))
            }
        }
    }

    /// Checks that Redis answers (for start-up and `/readyz`).
    pub async fn ping(&self) -> Result<(), anyhow::Error> {
        self.query(async |conn| redis::cmd("PING").query_async::<String>(conn).await).await.map(drop)
    }

    /// The state under `key`, whether the key is retired and how long the state has left, in
    /// one round trip. State that does not parse is treated as no session, never as an error
    /// page.
    pub async fn load(&self, key: &SessionKey) -> Result<Option<Loaded>, LoadError> {
        let (name, retired) = (state_key(key.as_ref()), retired_key(key.as_ref()));
        let ((json, marker), left): ((Option<String>, Option<String>), i64) = self
            .query(async |conn| {
                redis::pipe()
                    .cmd("MGET")
                    .arg(&name)
                    .arg(&retired)
                    .cmd("PTTL")
                    .arg(&name)
                    .query_async(conn)
                    .await
            })
            .await
            .map_err(LoadError::Other)?;
        // PTTL: milliseconds left, or negative for a key without expiry or gone meanwhile.
        let expires_in = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()).map(|state| Loaded {
            state,
            retired: marker.is_some(),
            expires_in,
        }))
    }

    /// Stores new state under a fresh random key that lives for `ttl`, and returns the key.
    pub async fn save(&self, state: State, ttl: Duration) -> Result<SessionKey, SaveError> {
        let json = serde_json::to_string(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let key = generate_session_key();
        let name = state_key(key.as_ref());
        let millis = millis(ttl);
        // NX: 64 random alphanumerics never collide in practice, and never overwrite if they do.
        let stored: Option<String> = self
            .query(async |conn| {
                redis::cmd("SET")
                    .arg(&name)
                    .arg(&json)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis)
                    .query_async(conn)
                    .await
            })
            .await
            .map_err(SaveError::Other)?;
        match stored {
            Some(_) => Ok(key),
            None => Err(SaveError::Other(anyhow::anyhow!("generated session key already exists"))),
        }
    }

    /// Replaces the state of a live key that is not retired, in one atomic step (a Lua
    /// script: no retirement can land between the check and the write). Returns whether it
    /// wrote; an expired or retired key is left alone.
    pub async fn update(&self, key: &SessionKey, state: State, ttl: Duration) -> Result<bool, UpdateError> {
        const UPDATE_UNLESS_RETIRED: &str = "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end \
             if redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[2]) then return 1 end \
             return 0";
        let json = serde_json::to_string(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let (name, retired) = (state_key(key.as_ref()), retired_key(key.as_ref()));
        let millis = millis(ttl);
        let written: i64 = self
            .query(async |conn| {
                redis::cmd("EVAL")
                    .arg(UPDATE_UNLESS_RETIRED)
                    .arg(2)
                    .arg(&name)
                    .arg(&retired)
                    .arg(&json)
                    .arg(millis)
                    .query_async(conn)
                    .await
            })
            .await
            .map_err(UpdateError::Other)?;
        Ok(written == 1)
    }

    /// Makes an existing key expire `ttl` from now; a missing one stays missing.
    pub async fn update_ttl(&self, key: &SessionKey, ttl: Duration) -> Result<(), anyhow::Error> {
        let name = state_key(key.as_ref());
        let millis = millis(ttl);
        self.query(async |conn| {
            redis::cmd("PEXPIRE").arg(&name).arg(millis).arg("XX").query_async::<i64>(conn).await
        })
        .await
        .map(drop)
    }

    /// Retires the key: it keeps working for the grace period, then it is gone.
    pub async fn retire(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let (name, retired) = (state_key(key.as_ref()), retired_key(key.as_ref()));
        let grace = millis(self.grace).max(1);
        // PEXPIRE … LT only ever shortens the remaining time; the marker stops updates from
        // requests still in flight from extending it again. MULTI/EXEC: no update of another
        // instance can land between the two.
        self.query(async |conn| {
            redis::pipe()
                .atomic()
                .cmd("PEXPIRE")
                .arg(&name)
                .arg(grace)
                .arg("LT")
                .ignore()
                .cmd("SET")
                .arg(&retired)
                .arg(1)
                .arg("PX")
                .arg(grace)
                .ignore()
                .query_async::<()>(conn)
                .await
        })
        .await
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
