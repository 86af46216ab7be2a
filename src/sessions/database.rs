//! `DatabaseStore`: actix-session's `SessionStore` over our own database through Diesel, so
//! server-side sessions need nothing beyond the database the site already has.
//!
//! Written here because actix-session ships only cookie and Redis stores. Session keys are
//! stored hashed (SHA-256): someone who reads the table cannot present its rows as cookies.

use std::collections::HashMap;
use std::time::Duration;

use actix_session::storage::{generate_session_key, LoadError, SaveError, SessionKey, UpdateError};
use chrono::{NaiveDateTime, Utc};
use sha2::{Digest, Sha256};

use crate::db::{self, Pool};
use crate::models::{NewSessionState, SessionState};

#[derive(Clone)]
pub struct DatabaseStore {
    pool: Pool,
    /// How long a deleted (or replaced) key keeps working.
    grace: Duration,
}

type State = HashMap<String, String>;

fn key_id(key: &SessionKey) -> String {
    Sha256::digest(key.as_ref().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn at(now: NaiveDateTime, ttl: Duration) -> NaiveDateTime {
    now + chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX)
}

impl DatabaseStore {
    pub fn new(pool: Pool, grace: Duration) -> Self {
        Self { pool, grace }
    }

    pub async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        let id = key_id(key);
        let now = Utc::now().naive_utc();
        let json = db::run(&self.pool, move |conn| SessionState::load(conn, &id, now))
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        match json {
            None => Ok(None),
            // A row that does not parse is treated as no session, never as an error page.
            Some(json) => Ok(serde_json::from_str(&json).ok()),
        }
    }

    pub async fn save(&self, state: State, ttl: Duration) -> Result<SessionKey, SaveError> {
        let json = serde_json::to_string(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let key = generate_session_key();
        let id = key_id(&key);
        let expires_at = at(Utc::now().naive_utc(), ttl);
        db::run(&self.pool, move |conn| NewSessionState { id: &id, state: &json, expires_at }.insert(conn))
            .await
            .map_err(|e| SaveError::Other(e.into()))?;
        Ok(key)
    }

    /// Updates a live key; a key that has expired or been retired gets its state saved under
    /// a fresh key instead (as the Redis store does), so it is never revived.
    pub async fn update(
        &self,
        key: SessionKey,
        state: State,
        ttl: Duration,
    ) -> Result<SessionKey, UpdateError> {
        let json = serde_json::to_string(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let id = key_id(&key);
        let now = Utc::now().naive_utc();
        let expires_at = at(now, ttl);
        let updated =
            db::run(&self.pool, move |conn| SessionState::update(conn, &id, &json, expires_at, now))
                .await
                .map_err(|e| UpdateError::Other(e.into()))?;
        if updated {
            return Ok(key);
        }
        self.save(state, ttl).await.map_err(super::update_error)
    }

    pub async fn update_ttl(&self, key: &SessionKey, ttl: Duration) -> Result<(), anyhow::Error> {
        let id = key_id(key);
        let now = Utc::now().naive_utc();
        let expires_at = at(now, ttl);
        db::run(&self.pool, move |conn| SessionState::extend(conn, &id, expires_at, now)).await?;
        Ok(())
    }

    /// Retires the key: it keeps working for the grace period (requests already in flight
    /// with it finish normally), then it is gone. A logged-out session is dead at once
    /// regardless, because its `login_sessions` row is deleted.
    pub async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let id = key_id(key);
        let until = at(Utc::now().naive_utc(), self.grace);
        db::run(&self.pool, move |conn| SessionState::retire(conn, &id, until)).await?;
        Ok(())
    }
}

/// Deletes expired session state; run periodically and by `latchkey sessions purge`.
pub async fn purge_expired(pool: &Pool) -> Result<usize, crate::error::AppError> {
    let now = Utc::now().naive_utc();
    db::run(pool, move |conn| SessionState::purge_expired(conn, now)).await
}
