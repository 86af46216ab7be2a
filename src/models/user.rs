//! The `users` table.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::users;
use latchkey_db::DbConnection;

/// A registered account. `Debug` leaves out the password hash.
#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i32,
    pub email: String,
    pub password_hash: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Moves on whenever the credentials change; see `latchkey_auth::AuthUser`.
    pub credential_epoch: i64,
    /// May use the admin area.
    pub is_admin: bool,
    /// When an administrator disabled the account: it cannot log in.
    pub disabled_at: Option<NaiveDateTime>,
    /// When the owner confirmed the email address by following a link sent to it.
    pub email_confirmed_at: Option<NaiveDateTime>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User").field("id", &self.id).field("email", &self.email).finish_non_exhaustive()
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Set for an account whose address is vouched for (made by an administrator).
    pub email_confirmed_at: Option<NaiveDateTime>,
}

impl NewUser<'_> {
    /// Inserts the user; a taken email fails with a unique violation.
    pub fn insert(&self, conn: &mut DbConnection) -> QueryResult<User> {
        // No RETURNING: MultiConnection cannot express it, and the email is unique anyway.
        diesel::insert_into(users::table).values(self).execute(conn)?;
        User::find_by_email(conn, self.email)?.ok_or(diesel::result::Error::NotFound)
    }
}

impl User {
    pub fn find(conn: &mut DbConnection, id: i32) -> QueryResult<Option<User>> {
        users::table.find(id).select(User::as_select()).first(conn).optional()
    }

    /// Looks up a user by normalised email.
    pub fn find_by_email(conn: &mut DbConnection, email: &str) -> QueryResult<Option<User>> {
        users::table.filter(users::email.eq(email)).select(User::as_select()).first(conn).optional()
    }

    /// Replaces the password hash, moving the credential epoch on (which ends every login
    /// made with the old password); returns the user as it now is.
    pub fn set_password_hash(
        conn: &mut DbConnection,
        id: i32,
        password_hash: &str,
        now: NaiveDateTime,
    ) -> QueryResult<User> {
        diesel::update(users::table.find(id))
            .set((
                users::password_hash.eq(password_hash),
                users::updated_at.eq(now),
                users::credential_epoch.eq(users::credential_epoch + 1),
            ))
            .execute(conn)?;
        Self::find(conn, id)?.ok_or(diesel::result::Error::NotFound)
    }

    /// Replaces a hash made at another bcrypt cost with one of the same password at the
    /// current cost. The credentials do not change, so neither does the epoch.
    pub fn rehash_password(
        conn: &mut DbConnection,
        id: i32,
        old_hash: &str,
        new_hash: &str,
    ) -> QueryResult<bool> {
        diesel::update(users::table.find(id).filter(users::password_hash.eq(old_hash)))
            .set(users::password_hash.eq(new_hash))
            .execute(conn)
            .map(|n| n > 0)
    }

    /// Deletes logins proved with credentials their user no longer has (a login whose
    /// password check raced a password change inserts its row after the change); returns how
    /// many. They are dead already; this keeps the table from holding them.
    pub fn purge_stale_logins(conn: &mut DbConnection) -> QueryResult<usize> {
        diesel::sql_query(
            "DELETE FROM logins WHERE credential_epoch <> \
             (SELECT credential_epoch FROM users WHERE users.id = logins.user_id)",
        )
        .execute(conn)
    }

    /// Makes `email` (already normalised, and just proved by a link sent to it) the user's
    /// confirmed address; a taken one fails with a unique violation.
    pub fn confirm_email(
        conn: &mut DbConnection,
        id: i32,
        email: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::update(users::table.find(id))
            .set((users::email.eq(email), users::email_confirmed_at.eq(now), users::updated_at.eq(now)))
            .execute(conn)
            .map(drop)
    }

    /// Deletes the user; their logins and cart go with them (`ON DELETE CASCADE`). Returns
    /// whether there was such a user.
    pub fn delete(conn: &mut DbConnection, id: i32) -> QueryResult<bool> {
        diesel::delete(users::table.find(id)).execute(conn).map(|n| n > 0)
    }

    /// Disables the account (`Some(when)`) or enables it again (`None`). Disabling moves the
    /// credential epoch on, so every login of the account ends at its next request; returns
    /// whether there was such a user.
    pub fn set_disabled(
        conn: &mut DbConnection,
        id: i32,
        disabled_at: Option<NaiveDateTime>,
    ) -> QueryResult<bool> {
        let epoch = users::credential_epoch + i64::from(disabled_at.is_some());
        diesel::update(users::table.find(id))
            .set((users::disabled_at.eq(disabled_at), users::credential_epoch.eq(epoch)))
            .execute(conn)
            .map(|n| n > 0)
    }

    /// Makes the user an administrator, or not.
    pub fn set_admin(conn: &mut DbConnection, id: i32, is_admin: bool) -> QueryResult<bool> {
        diesel::update(users::table.find(id)).set(users::is_admin.eq(is_admin)).execute(conn).map(|n| n > 0)
    }

    /// Users whose email contains `fragment` (any case), newest first, at most `limit`.
    pub fn search(conn: &mut DbConnection, fragment: &str, limit: i64) -> QueryResult<Vec<User>> {
        let escaped: String = fragment
            .to_lowercase()
            .chars()
            .flat_map(|c| if matches!(c, '\\' | '%' | '_') { vec!['\\', c] } else { vec![c] })
            .collect();
        users::table
            .filter(users::email.like(format!("%{escaped}%")).escape('\\'))
            .order(users::id.desc())
            .limit(limit)
            .select(User::as_select())
            .load(conn)
    }

    pub fn count(conn: &mut DbConnection) -> QueryResult<i64> {
        users::table.count().get_result(conn)
    }
}

impl latchkey_auth::AuthUser for User {
    fn id(&self) -> i32 {
        self.id
    }

    fn credential_epoch(&self) -> i64 {
        self.credential_epoch
    }

    fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }

    fn email_confirmed(&self) -> bool {
        self.email_confirmed_at.is_some()
    }

    fn load(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Self>> {
        Self::find(conn, id)
    }

    fn advance_credential_epoch(conn: &mut DbConnection, id: i32) -> QueryResult<i64> {
        diesel::update(users::table.find(id))
            .set(users::credential_epoch.eq(users::credential_epoch + 1))
            .execute(conn)?;
        users::table.find(id).select(users::credential_epoch).first(conn)
    }
}
