//! The auth layer (`latchkey-auth`) bound to the site's `User`, so handlers write
//! `LoginRequired` and `CurrentUser` as they would with Flask-Login.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use latchkey_auth::audit::{Event, Record};
use latchkey_auth::guard;

use crate::error::AppError;
use crate::models::User;

/// The user behind a request, or an anonymous visitor.
pub type CurrentUser = latchkey_auth::CurrentUser<User>;

/// A logged-in user; anonymous visitors are sent to `/login?next=…`.
pub type LoginRequired = latchkey_auth::LoginRequired<User>;

/// A logged-in user whose login is fresh; a stale one is sent to `/reauth?next=…`.
pub type FreshLoginRequired = latchkey_auth::FreshLoginRequired<User>;

/// A logged-in administrator whose login is fresh: admin pages show and change other people's
/// accounts. Anonymous visitors are sent to `/login?next=…`; a user who is not an
/// administrator gets a 403 (audited as `authz_fail`) before being asked to prove anything;
/// an administrator's stale login is sent to `/reauth?next=…`.
pub struct AdminRequired(pub FreshLoginRequired);

impl Deref for AdminRequired {
    type Target = User;

    fn deref(&self) -> &User {
        &self.0
    }
}

impl FromRequest for AdminRequired {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let user = LoginRequired::extract(&req).await?;
            if !user.is_admin {
                let record = Record::of(&req, Event::AuthzFail).user(user.id).detail(req.path());
                guard::record(&req, record).await;
                return Err(AppError::Forbidden("This page is for the site's administrators."));
            }
            Ok(AdminRequired(FreshLoginRequired::extract(&req).await?))
        })
    }
}
