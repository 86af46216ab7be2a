//! The `session_states` table: server-side session state for `SESSION_STORE=database`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::session_states;
use crate::db::DbConnection;

#[derive(Insertable)]
#[diesel(table_name = session_states)]
pub struct NewSessionState<'a> {
    /// SHA-256 (hex) of the session key.
    pub id: &'a str,
    /// The session state, as JSON.
    pub state: &'a str,
    pub expires_at: NaiveDateTime,
}

impl NewSessionState<'_> {
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<()> {
        diesel::insert_into(session_states::table).values(self).execute(conn).map(drop)
    }
}

/// Queries over `session_states`; rows past `expires_at` count as absent.
pub struct SessionState;

impl SessionState {
    pub fn load(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<Option<String>> {
        session_states::table
            .filter(session_states::id.eq(id))
            .filter(session_states::expires_at.gt(now))
            .select(session_states::state)
            .first(conn)
            .optional()
    }

    /// Replaces the state of a live row that has not been retired. Returns whether it did.
    pub fn update(
        conn: &mut DbConnection,
        id: &str,
        state: &str,
        expires_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(
            session_states::table
                .filter(session_states::id.eq(id))
                .filter(session_states::retired.eq(false))
                .filter(session_states::expires_at.gt(now)),
        )
        .set((session_states::state.eq(state), session_states::expires_at.eq(expires_at)))
        .execute(conn)
        .map(|n| n > 0)
    }

    pub fn extend(
        conn: &mut DbConnection,
        id: &str,
        expires_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(
            session_states::table
                .filter(session_states::id.eq(id))
                .filter(session_states::retired.eq(false))
                .filter(session_states::expires_at.gt(now)),
        )
        .set(session_states::expires_at.eq(expires_at))
        .execute(conn)
        .map(drop)
    }

    /// Retires a row: it lives at most until `until` (deletion with a grace period) and is
    /// never extended again.
    pub fn retire(conn: &mut DbConnection, id: &str, until: NaiveDateTime) -> QueryResult<()> {
        diesel::update(session_states::table.filter(session_states::id.eq(id)))
            .set((
                session_states::retired.eq(true),
                session_states::expires_at.eq(diesel::dsl::sql::<diesel::sql_types::Timestamp>(
                    "CASE WHEN expires_at < ",
                )
                .bind::<diesel::sql_types::Timestamp, _>(until)
                .sql(" THEN expires_at ELSE ")
                .bind::<diesel::sql_types::Timestamp, _>(until)
                .sql(" END")),
            ))
            .execute(conn)
            .map(drop)
    }

    /// Deletes every expired row; returns how many.
    pub fn purge_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(session_states::table.filter(session_states::expires_at.le(now))).execute(conn)
    }

    pub fn count(conn: &mut DbConnection) -> QueryResult<i64> {
        session_states::table.count().get_result(conn)
    }
}
