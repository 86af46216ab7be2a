//! `DatabaseStore`: session state in the application's database through Diesel, so
//! server-side sessions need nothing beyond the database the site already has.
//!
//! Written here because actix-session ships only cookie and Redis stores. Keys are stored
//! hashed (SHA-256): someone who reads the table cannot present its rows as cookies. The table
//! (`session_states`, see [`schema`]) comes from the application's migrations.

use std::time::Duration;

use actix_session::storage::{generate_session_key, LoadError, SaveError, SessionKey, UpdateError};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use latchkey_db::{DbConnection, DbError, Pool};

use crate::server_side::{key_id, Loaded};
use crate::typed::State;

/// The table this store needs, as `diesel print-schema` writes it.
pub mod schema {
    diesel::table! {
        /// Server-side session state: one row per live or retired session id.
        session_states (id) {
            /// SHA-256 (hex) of the session key.
            id -> Text,
            /// The state, as JSON.
            state -> Text,
            /// When the state stops being served; expired rows wait for
            /// [`purge_expired`](crate::database::purge_expired).
            expires_at -> Timestamp,
            /// Set when the id was replaced or deleted: it works until `expires_at` (the
            /// grace period) but is never written or extended again.
            retired -> Bool,
        }
    }

    /// The table in PostgreSQL, for applications without migrations of their own.
    pub const POSTGRES_DDL: &str = "CREATE TABLE IF NOT EXISTS session_states (
        id TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL, expires_at TIMESTAMP NOT NULL,
        retired BOOLEAN NOT NULL DEFAULT FALSE);
        CREATE INDEX IF NOT EXISTS session_states_expires_at_idx ON session_states (expires_at);";
    /// The table in SQLite.
    pub const SQLITE_DDL: &str = POSTGRES_DDL;
}

use schema::session_states;

/// Session state in the database; see the module docs.
#[derive(Clone)]
pub struct DatabaseStore {
    pool: Pool,
    /// How long a deleted (or replaced) key keeps working.
    grace: Duration,
}

fn at(now: NaiveDateTime, ttl: Duration) -> NaiveDateTime {
    now + chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX)
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// A row that is live at `now` and not retired.
macro_rules! writable {
    ($id:expr, $now:expr) => {
        session_states::table
            .filter(session_states::id.eq($id))
            .filter(session_states::retired.eq(false))
            .filter(session_states::expires_at.gt($now))
    };
}

impl DatabaseStore {
    /// A store over `pool`; a retired key keeps working for `grace`.
    pub fn new(pool: Pool, grace: Duration) -> Self {
        Self { pool, grace }
    }

    /// The state under `key`, whether the key is retired and how long the state has left. A
    /// row that does not parse is treated as no session, never as an error page.
    pub async fn load(&self, key: &SessionKey) -> Result<Option<Loaded>, LoadError> {
        let id = key_id(key);
        let now = now();
        let row: Option<(String, bool, NaiveDateTime)> = latchkey_db::run(&self.pool, move |conn| {
            session_states::table
                .filter(session_states::id.eq(&id))
                .filter(session_states::expires_at.gt(now))
                .select((session_states::state, session_states::retired, session_states::expires_at))
                .first(conn)
                .optional()
        })
        .await
        .map_err(|e| LoadError::Other(e.into()))?;
        Ok(row.and_then(|(json, retired, expires_at)| {
            let expires_in = (expires_at - now).to_std().unwrap_or_default();
            serde_json::from_str(&json).ok().map(|state| Loaded { state, retired, expires_in })
        }))
    }

    /// Stores new state under a fresh random key that lives for `ttl`, and returns the key.
    pub async fn save(&self, state: State, ttl: Duration) -> Result<SessionKey, SaveError> {
        let json = serde_json::to_string(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let key = generate_session_key();
        let id = key_id(&key);
        let expires_at = at(now(), ttl);
        latchkey_db::run(&self.pool, move |conn| {
            diesel::insert_into(session_states::table)
                .values((
                    session_states::id.eq(&id),
                    session_states::state.eq(&json),
                    session_states::expires_at.eq(expires_at),
                ))
                .execute(conn)
        })
        .await
        .map_err(|e| SaveError::Other(e.into()))?;
        Ok(key)
    }

    /// Replaces the state of a live, unretired key in one statement. Returns whether it wrote.
    pub async fn update(&self, key: &SessionKey, state: State, ttl: Duration) -> Result<bool, UpdateError> {
        let json = serde_json::to_string(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let id = key_id(key);
        let now = now();
        let expires_at = at(now, ttl);
        latchkey_db::run(&self.pool, move |conn| {
            diesel::update(writable!(&id, now))
                .set((session_states::state.eq(&json), session_states::expires_at.eq(expires_at)))
                .execute(conn)
        })
        .await
        .map(|n| n > 0)
        .map_err(|e| UpdateError::Other(e.into()))
    }

    /// Makes a live, unretired key expire `ttl` from now; other keys are left alone.
    pub async fn update_ttl(&self, key: &SessionKey, ttl: Duration) -> Result<(), anyhow::Error> {
        let id = key_id(key);
        let now = now();
        let expires_at = at(now, ttl);
        latchkey_db::run(&self.pool, move |conn| {
            diesel::update(writable!(&id, now)).set(session_states::expires_at.eq(expires_at)).execute(conn)
        })
        .await?;
        Ok(())
    }

    /// Retires the key: it keeps working for the grace period (requests already in flight
    /// with it finish normally), then it is gone.
    pub async fn retire(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        use diesel::sql_types::Timestamp;
        let id = key_id(key);
        let until = at(now(), self.grace);
        latchkey_db::run(&self.pool, move |conn| {
            diesel::update(session_states::table.filter(session_states::id.eq(&id)))
                .set((
                    session_states::retired.eq(true),
                    // Never lengthen: the earlier of its own expiry and the end of the grace.
                    session_states::expires_at.eq(diesel::dsl::sql::<Timestamp>("CASE WHEN expires_at < ")
                        .bind::<Timestamp, _>(until)
                        .sql(" THEN expires_at ELSE ")
                        .bind::<Timestamp, _>(until)
                        .sql(" END")),
                ))
                .execute(conn)
        })
        .await?;
        Ok(())
    }
}

/// Deletes expired session state; returns how many rows went.
pub async fn purge_expired(pool: &Pool) -> Result<usize, DbError> {
    let now = now();
    latchkey_db::run(pool, move |conn| purge_expired_now(conn, now)).await
}

/// Deletes session state expired at `now`, on a connection the caller holds.
pub fn purge_expired_now(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(session_states::table.filter(session_states::expires_at.le(now))).execute(conn)
}

/// How many rows the table holds, expired or not (for tests and tools).
pub fn count(conn: &mut DbConnection) -> QueryResult<i64> {
    session_states::table.count().get_result(conn)
}
