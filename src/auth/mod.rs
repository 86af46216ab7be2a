//! Authentication, modelled on Flask-Login: `CurrentUser` (like `current_user`) and
//! `LoginRequired` (like `@login_required`) extractors, login and logout, password hashing,
//! and safe `next` redirects.
//!
//! Who is logged in is decided in one place, `CurrentUser::resolve`: the session carries a
//! random login token (through actix-identity); its hash must name a live row of
//! `login_sessions`. Deleting that row therefore logs the browser out in every session store,
//! even the client-side cookie store, whose cookies cannot be revoked by themselves.

pub mod login;
pub mod next;
pub mod password;

use std::ops::Deref;
use std::rc::Rc;

use actix_identity::IdentityExt;
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use actix_web_flash_messages::FlashMessage;
use chrono::NaiveDateTime;
use futures_util::future::LocalBoxFuture;

use crate::db;
use crate::error::{prefers_json, AppError};
use crate::models::LoginSession;
use crate::startup::AppState;
use crate::web::client::ClientInfo;
use login::{Rules, Touch, Verdict};

/// A logged-in user as the request sees it.
#[derive(Debug)]
pub struct AuthenticatedUser {
    pub id: i32,
    pub email: String,
    pub created_at: NaiveDateTime,
    /// The `login_sessions` row this browser is logged in through.
    pub login: LoginSession,
}

impl AuthenticatedUser {
    pub fn login_session_id(&self) -> &str {
        &self.login.id
    }
}

/// The user behind this request, or an anonymous visitor. Never fails for anonymous visitors.
#[derive(Debug, Clone)]
pub enum CurrentUser {
    Anonymous,
    Authenticated(Rc<AuthenticatedUser>),
}

impl CurrentUser {
    pub fn authenticated(&self) -> Option<&AuthenticatedUser> {
        match self {
            Self::Anonymous => None,
            Self::Authenticated(user) => Some(user),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated().is_some()
    }

    /// Resolves the user once per request and caches the answer in the request extensions.
    pub async fn resolve(req: &HttpRequest) -> Result<CurrentUser, AppError> {
        if let Some(cached) = req.extensions().get::<CurrentUser>() {
            return Ok(cached.clone());
        }
        let resolved = Self::load(req, Touch::Throttled).await?;
        req.extensions_mut().insert(resolved.clone());
        Ok(resolved)
    }

    /// Resolves the user with an explicit `touch` rule, bypassing the cache (session status
    /// and "stay signed in" need exactly this), and caches the answer.
    pub async fn resolve_with(req: &HttpRequest, touch: Touch) -> Result<CurrentUser, AppError> {
        let resolved = Self::load(req, touch).await?;
        req.extensions_mut().insert(resolved.clone());
        Ok(resolved)
    }

    async fn load(req: &HttpRequest, touch: Touch) -> Result<CurrentUser, AppError> {
        let Ok(identity) = req.get_identity() else {
            return Ok(Self::Anonymous);
        };
        let Ok(token) = identity.id() else {
            return Ok(Self::Anonymous);
        };
        let state = app_state(req)?;
        let id = login::token_id(&token);
        let now = chrono::Utc::now().naive_utc();
        let rules = Rules::of(&state.settings.sessions);
        let client = ClientInfo::of(req, &state.settings.sessions.trusted_proxies);
        let verdict =
            db::run(&state.pool, move |conn| login::check(conn, &id, now, rules, &client, touch)).await?;
        match verdict {
            Verdict::Live(login, user) => Ok(Self::Authenticated(Rc::new(AuthenticatedUser {
                id: user.id,
                email: user.email,
                created_at: user.created_at,
                login,
            }))),
            ended => {
                if matches!(ended, Verdict::Expired) {
                    FlashMessage::warning("Your session expired. Please log in again.").send();
                }
                // The login ended on the server (logout, revocation, timeout): forget it here
                // too, which also clears the stale cookie.
                identity.logout();
                Ok(Self::Anonymous)
            }
        }
    }
}

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { CurrentUser::resolve(&req).await })
    }
}

/// A logged-in user; anonymous visitors get a 303 to `/login?next=…` (or 401 for JSON clients).
#[derive(Debug, Clone)]
pub struct LoginRequired(pub Rc<AuthenticatedUser>);

impl Deref for LoginRequired {
    type Target = AuthenticatedUser;

    fn deref(&self) -> &AuthenticatedUser {
        &self.0
    }
}

impl FromRequest for LoginRequired {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match CurrentUser::resolve(&req).await? {
                CurrentUser::Authenticated(user) => Ok(LoginRequired(user)),
                CurrentUser::Anonymous => {
                    let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
                    Err(AppError::LoginRequired { next, wants_json: prefers_json(&req) })
                }
            }
        })
    }
}

pub(crate) fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, AppError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState is not registered")))
}
