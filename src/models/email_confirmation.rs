//! The `email_confirmations` table: one row per link that confirms an address, named by the
//! SHA-256 of its token. The link names the address it confirms: the account's own (a new
//! account) or the one it is changing to (the change applies when the link is used).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use latchkey_auth::registry::token_id;
use latchkey_db::DbConnection;

use crate::db::schema::{email_confirmations, users};
use crate::models::User;

/// A link that confirms `email` for `user_id`. The token itself is only in the email.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = email_confirmations)]
pub struct EmailConfirmation {
    pub token_hash: String,
    pub user_id: i32,
    /// The address the link confirms (already normalised).
    pub email: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

impl EmailConfirmation {
    /// Records the link of `token`, confirming `email` for `user_id` until `expires_at`.
    pub fn issue(
        conn: &mut DbConnection,
        token: &str,
        (user_id, email): (i32, &str),
        now: NaiveDateTime,
        expires_at: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::insert_into(email_confirmations::table)
            .values((
                email_confirmations::token_hash.eq(token_id(token)),
                email_confirmations::user_id.eq(user_id),
                email_confirmations::email.eq(email),
                email_confirmations::created_at.eq(now),
                email_confirmations::expires_at.eq(expires_at),
            ))
            .execute(conn)
            .map(drop)
    }

    /// The link of `token` and its user, while the link works.
    pub fn find(
        conn: &mut DbConnection,
        token: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<(EmailConfirmation, User)>> {
        email_confirmations::table
            .inner_join(users::table)
            .filter(email_confirmations::token_hash.eq(token_id(token)))
            .filter(email_confirmations::expires_at.gt(now))
            .select((EmailConfirmation::as_select(), User::as_select()))
            .first(conn)
            .optional()
    }

    /// Uses `token` up: every link of its user goes (the address is settled, one way or the
    /// other). Returns the link and its user when it still worked. Call inside the
    /// transaction that applies it.
    pub fn take(
        conn: &mut DbConnection,
        token: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<(EmailConfirmation, User)>> {
        let Some(found) = Self::find(conn, token, now)? else { return Ok(None) };
        let deleted = diesel::delete(
            email_confirmations::table.filter(email_confirmations::token_hash.eq(token_id(token))),
        )
        .execute(conn)?;
        if deleted == 0 {
            // Another request used it first.
            return Ok(None);
        }
        diesel::delete(email_confirmations::table.filter(email_confirmations::user_id.eq(found.1.id)))
            .execute(conn)?;
        Ok(Some(found))
    }

    /// The address `user_id` asked to change to and has not confirmed yet, if any (the
    /// newest live link for another address than `current`).
    pub fn pending_change(
        conn: &mut DbConnection,
        user_id: i32,
        current: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<String>> {
        email_confirmations::table
            .filter(email_confirmations::user_id.eq(user_id))
            .filter(email_confirmations::email.ne(current))
            .filter(email_confirmations::expires_at.gt(now))
            .order(email_confirmations::created_at.desc())
            .select(email_confirmations::email)
            .first(conn)
            .optional()
    }

    /// Deletes expired links.
    pub fn purge_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(email_confirmations::table.filter(email_confirmations::expires_at.le(now)))
            .execute(conn)
    }
}
