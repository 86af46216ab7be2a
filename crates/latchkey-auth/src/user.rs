//! `AuthUser`: what the auth layer needs of the application's user.

use diesel::QueryResult;
use latchkey_db::DbConnection;

/// The application's user, as the auth layer needs it (Flask-Login's `UserMixin` plus its
/// `user_loader`, axum-login's `AuthUser`).
///
/// ```
/// use diesel::QueryResult;
/// use latchkey_db::DbConnection;
///
/// #[derive(Clone)]
/// struct User { id: i32, epoch: i64 }
///
/// impl latchkey_auth::AuthUser for User {
///     fn id(&self) -> i32 { self.id }
///     fn credential_epoch(&self) -> i64 { self.epoch }
///     fn load(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Self>> {
///         # let _ = (conn, id);
///         // SELECT id, credential_epoch FROM users WHERE id = $1
///         # unimplemented!()
///     }
///     fn advance_credential_epoch(conn: &mut DbConnection, id: i32) -> QueryResult<i64> {
///         # let _ = (conn, id);
///         // UPDATE users SET credential_epoch = credential_epoch + 1 WHERE id = $1 RETURNING …
///         # unimplemented!()
///     }
/// }
/// ```
pub trait AuthUser: Clone + Send + Sync + 'static {
    /// The user's id, as `logins.user_id` stores it.
    fn id(&self) -> i32;

    /// A number that moves on whenever the user's credentials change (password change, "log
    /// out everywhere else"). A login is valid only while it equals the epoch it proved.
    fn credential_epoch(&self) -> i64;

    /// Whether the user may log in (Flask-Login's `is_active`). An inactive user's password,
    /// second factor or passkey is refused with [`crate::AuthError::Inactive`], and their
    /// logins stop working at their next request. Everyone is active unless the application
    /// says otherwise (a disabled account).
    fn is_active(&self) -> bool {
        true
    }

    /// Whether the user has confirmed their email address. With
    /// [`crate::LoginPolicy::require_confirmed_email`] on, a user who has not is sent by
    /// [`crate::LoginRequired`] to the application's confirmation page (see
    /// [`crate::AuthError::EmailUnconfirmed`]). Everyone has unless the application says
    /// otherwise.
    fn email_confirmed(&self) -> bool {
        true
    }

    /// The user with this id, if there still is one.
    fn load(conn: &mut DbConnection, id: i32) -> QueryResult<Option<Self>>
    where
        Self: Sized;

    /// Moves the user's credential epoch on and returns the new one.
    fn advance_credential_epoch(conn: &mut DbConnection, id: i32) -> QueryResult<i64>;
}
