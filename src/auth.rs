//! The auth layer (`latchkey-auth`) bound to the site's `User`, so handlers write
//! `LoginRequired` and `CurrentUser` as they would with Flask-Login.

use crate::models::User;

/// The user behind a request, or an anonymous visitor.
pub type CurrentUser = latchkey_auth::CurrentUser<User>;

/// A logged-in user; anonymous visitors are sent to `/login?next=…`.
pub type LoginRequired = latchkey_auth::LoginRequired<User>;

/// A logged-in user whose login is fresh; a stale one is sent to `/reauth?next=…`.
pub type FreshLoginRequired = latchkey_auth::FreshLoginRequired<User>;
