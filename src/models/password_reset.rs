//! The `password_resets` table: one row per link sent, named by the SHA-256 of its token.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use latchkey_auth::registry::token_id;
use latchkey_db::DbConnection;

use crate::db::schema::{password_resets, users};
use crate::models::User;

/// A password-reset link. The token itself is only in the email.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = password_resets)]
pub struct PasswordReset {
    pub token_hash: String,
    pub user_id: i32,
    /// The user's credential epoch when the link was made: a password change since kills it.
    pub credential_epoch: i64,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

impl PasswordReset {
    /// Records the link of `token` for `user`, valid until `expires_at`.
    pub fn issue(
        conn: &mut DbConnection,
        token: &str,
        user: &User,
        now: NaiveDateTime,
        expires_at: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::insert_into(password_resets::table)
            .values((
                password_resets::token_hash.eq(token_id(token)),
                password_resets::user_id.eq(user.id),
                password_resets::credential_epoch.eq(user.credential_epoch),
                password_resets::created_at.eq(now),
                password_resets::expires_at.eq(expires_at),
            ))
            .execute(conn)
            .map(drop)
    }

    /// The user `token` resets the password of, while the link works: not expired, not used,
    /// and the password unchanged since it was made.
    pub fn user_for(conn: &mut DbConnection, token: &str, now: NaiveDateTime) -> QueryResult<Option<User>> {
        password_resets::table
            .inner_join(users::table)
            .filter(password_resets::token_hash.eq(token_id(token)))
            .filter(password_resets::expires_at.gt(now))
            .filter(password_resets::credential_epoch.eq(users::credential_epoch))
            .select(User::as_select())
            .first(conn)
            .optional()
    }

    /// Uses `token` up: every link of its user is deleted. Returns the user when the link
    /// still worked. Call inside the transaction that changes the password.
    pub fn take(conn: &mut DbConnection, token: &str, now: NaiveDateTime) -> QueryResult<Option<User>> {
        let Some(user) = Self::user_for(conn, token, now)? else { return Ok(None) };
        let deleted =
            diesel::delete(password_resets::table.filter(password_resets::token_hash.eq(token_id(token))))
                .execute(conn)?;
        if deleted == 0 {
            // Another request used it first.
            return Ok(None);
        }
        Self::delete_for_user(conn, user.id)?;
        Ok(Some(user))
    }

    /// Deletes every link of `user_id`.
    pub fn delete_for_user(conn: &mut DbConnection, user_id: i32) -> QueryResult<usize> {
        diesel::delete(password_resets::table.filter(password_resets::user_id.eq(user_id))).execute(conn)
    }

    /// Deletes expired links.
    pub fn purge_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(password_resets::table.filter(password_resets::expires_at.le(now))).execute(conn)
    }
}
