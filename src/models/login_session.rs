//! The `login_sessions` table: one row per login, the server-side truth of who is logged in.

use chrono::NaiveDateTime;
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
    /// False once the client's IP or user agent changed (session protection `basic`).
    pub fresh: bool,
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

impl LoginSession {
    /// The login with this id and its user, whatever its age (callers judge expiry).
    pub fn find_with_user(conn: &mut DbConnection, id: &str) -> QueryResult<Option<(LoginSession, User)>> {
        login_sessions::table
            .inner_join(users::table)
            .filter(login_sessions::id.eq(id))
            .select((LoginSession::as_select(), User::as_select()))
            .first(conn)
            .optional()
    }

    pub fn touch(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> QueryResult<()> {
        diesel::update(login_sessions::table.find(id))
            .set(login_sessions::last_seen_at.eq(now))
            .execute(conn)
            .map(drop)
    }

    pub fn mark_not_fresh(conn: &mut DbConnection, id: &str) -> QueryResult<()> {
        diesel::update(login_sessions::table.find(id))
            .set(login_sessions::fresh.eq(false))
            .execute(conn)
            .map(drop)
    }

    /// Ends one login. Returns whether it existed.
    pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<bool> {
        diesel::delete(login_sessions::table.find(id)).execute(conn).map(|n| n > 0)
    }

    /// Ends one of `user_id`'s logins; another user's id matches nothing.
    pub fn delete_for_user(conn: &mut DbConnection, user_id: i32, id: &str) -> QueryResult<bool> {
        diesel::delete(
            login_sessions::table
                .filter(login_sessions::user_id.eq(user_id))
                .filter(login_sessions::id.eq(id)),
        )
        .execute(conn)
        .map(|n| n > 0)
    }

    /// Ends every login of `user_id` except `keep`; returns how many ended.
    pub fn delete_others(conn: &mut DbConnection, user_id: i32, keep: &str) -> QueryResult<usize> {
        diesel::delete(
            login_sessions::table
                .filter(login_sessions::user_id.eq(user_id))
                .filter(login_sessions::id.ne(keep)),
        )
        .execute(conn)
    }

    /// Every login of `user_id`, most recently active first.
    pub fn list_for_user(conn: &mut DbConnection, user_id: i32) -> QueryResult<Vec<LoginSession>> {
        login_sessions::table
            .filter(login_sessions::user_id.eq(user_id))
            .order(login_sessions::last_seen_at.desc())
            .select(LoginSession::as_select())
            .load(conn)
    }

    pub fn count_for_user(conn: &mut DbConnection, user_id: i32) -> QueryResult<i64> {
        login_sessions::table.filter(login_sessions::user_id.eq(user_id)).count().get_result(conn)
    }
}
