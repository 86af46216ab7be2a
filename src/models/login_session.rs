//! The `login_sessions` table: one row per login, the server-side truth of who is logged in.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use crate::db::schema::{login_sessions, users};
use crate::db::DbConnection;
use crate::models::User;

/// A live login. `id` is the SHA-256 (hex) of the token the session carries.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = login_sessions, belongs_to(User))]
pub struct LoginSession {
    pub id: String,
    pub user_id: i32,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub remember: bool,
}

#[derive(Insertable)]
#[diesel(table_name = login_sessions)]
pub struct NewLoginSession<'a> {
    pub id: &'a str,
    pub user_id: i32,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub remember: bool,
}

impl NewLoginSession<'_> {
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<()> {
        diesel::insert_into(login_sessions::table).values(self).execute(conn).map(drop)
    }
}

/// How stale `last_seen_at` may get before a request writes it again.
pub const LAST_SEEN_RESOLUTION: TimeDelta = TimeDelta::seconds(60);

impl LoginSession {
    /// The live login with this id and its user, refreshing `last_seen_at` at most once per
    /// `LAST_SEEN_RESOLUTION` so that ordinary browsing costs one read.
    pub fn find_with_user(
        conn: &mut DbConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<(LoginSession, User)>> {
        let found = login_sessions::table
            .inner_join(users::table)
            .filter(login_sessions::id.eq(id))
            .select((LoginSession::as_select(), User::as_select()))
            .first(conn)
            .optional()?;
        if let Some((session, _)) = &found {
            if now - session.last_seen_at >= LAST_SEEN_RESOLUTION {
                diesel::update(login_sessions::table.find(&session.id))
                    .set(login_sessions::last_seen_at.eq(now))
                    .execute(conn)?;
            }
        }
        Ok(found)
    }

    /// Ends one login. Returns whether it existed.
    pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<bool> {
        diesel::delete(login_sessions::table.find(id)).execute(conn).map(|n| n > 0)
    }

    pub fn count_for_user(conn: &mut DbConnection, user_id: i32) -> QueryResult<i64> {
        login_sessions::table.filter(login_sessions::user_id.eq(user_id)).count().get_result(conn)
    }
}
