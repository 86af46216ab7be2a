//! `CurrentUser` and `LoginRequired`: who is behind a request, decided once per request.
//!
//! The session carries a random login token (through actix-identity); its hash must name a
//! live row of `logins` whose rules ([`crate::rules::check`]) still hold. The answer, user or
//! anonymous, is cached in the request extensions.

use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

use actix_identity::IdentityExt;
use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use latchkey_sessions::{keys, ServedInGrace, TypedSession};
use tokio::sync::OnceCell;

use crate::audit::{Event, Record};
use crate::client::Client;
use crate::error::AuthError;
use crate::registry::{token_id, Authenticated, Login};
use crate::rules::{check, check_cached, Touch, Verdict};
use crate::state::Auth;
use crate::user::AuthUser;

/// The user behind this request, or an anonymous visitor (Flask-Login's `current_user`).
/// Extracting it never fails for anonymous visitors.
///
/// ```no_run
/// use latchkey_auth::{AuthUser, CurrentUser};
/// # #[derive(Clone)] struct User { id: i32, email: String }
/// # impl AuthUser for User {
/// #     fn id(&self) -> i32 { self.id }
/// #     fn credential_epoch(&self) -> i64 { 0 }
/// #     fn load(_: &mut latchkey_db::DbConnection, _: i32) -> diesel::QueryResult<Option<Self>> { Ok(None) }
/// #     fn advance_credential_epoch(_: &mut latchkey_db::DbConnection, _: i32) -> diesel::QueryResult<i64> { Ok(0) }
/// # }
/// async fn greet(user: CurrentUser<User>) -> String {
///     match user.user() {
///         Some(user) => format!("Hello, {}", user.email),
///         None => "Hello, stranger".to_owned(),
///     }
/// }
/// ```
pub enum CurrentUser<U> {
    /// No live login: never logged in, logged out, or the login ended.
    Anonymous,
    /// A live login and its user.
    Authenticated(Arc<Authenticated<U>>),
}

impl<U> Clone for CurrentUser<U> {
    fn clone(&self) -> Self {
        match self {
            Self::Anonymous => Self::Anonymous,
            Self::Authenticated(user) => Self::Authenticated(Arc::clone(user)),
        }
    }
}

impl<U> CurrentUser<U> {
    /// The user and their login, unless anonymous.
    pub fn authenticated(&self) -> Option<&Authenticated<U>> {
        match self {
            Self::Anonymous => None,
            Self::Authenticated(user) => Some(user),
        }
    }

    /// The user, unless anonymous.
    pub fn user(&self) -> Option<&U> {
        self.authenticated().map(|a| &a.user)
    }

    /// The login, unless anonymous.
    pub fn login(&self) -> Option<&Login> {
        self.authenticated().map(|a| &a.login)
    }

    /// Whether someone is logged in.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated().is_some()
    }
}

impl<U: AuthUser> CurrentUser<U> {
    /// Resolves the user once per request and caches the answer in the request extensions.
    ///
    /// actix extracts a handler's arguments together, so `LoginRequired` and a page extractor
    /// ask at the same moment: the first to ask runs the check and the others wait for its
    /// answer, rather than each checking (twice the work, and two rotations of one login).
    pub async fn resolve(req: &HttpRequest) -> Result<Self, AuthError> {
        let cell = Resolution::<U>::cell(req);
        cell.get_or_try_init(|| Self::load(req, Touch::Throttled)).await.cloned()
    }

    /// Resolves the user with an explicit `touch` rule, bypassing the cache (login status and
    /// "stay signed in" need exactly this), and caches the answer.
    pub async fn resolve_with(req: &HttpRequest, touch: Touch) -> Result<Self, AuthError> {
        let resolved = Self::load(req, touch).await?;
        Self::remember(req, resolved.clone());
        Ok(resolved)
    }

    /// The answer already resolved for this request, if any (without checking anything).
    pub fn cached(req: &HttpRequest) -> Option<Self> {
        req.extensions().get::<Resolution<U>>().and_then(|r| r.0.get().cloned())
    }

    /// Makes `user` this request's answer (after a login or logout in the request).
    pub(crate) fn remember(req: &HttpRequest, user: Self) {
        req.extensions_mut().insert(Resolution(Rc::new(OnceCell::new_with(Some(user)))));
    }

    /// Forgets this request's answer, so the next extractor checks again.
    pub(crate) fn forget_cached(req: &HttpRequest) {
        req.extensions_mut().remove::<Resolution<U>>();
    }

    async fn load(req: &HttpRequest, touch: Touch) -> Result<Self, AuthError> {
        // The token actix-identity keeps, read once (`get_identity` and `Identity::id` would
        // parse it twice).
        let session = TypedSession::of(req);
        let Some(token) = session.get(keys::IDENTITY) else {
            return Ok(Self::Anonymous);
        };
        let auth = Auth::of(req)?;
        let id = token_id(&token);
        let generation = session.get(keys::LOGIN_GENERATION).unwrap_or(0);
        let now = chrono::Utc::now().naive_utc();
        let client = Client::of(req, &auth.policy.trusted_proxies);
        let (cached, flight) = auth.logins.lookup::<U>(&id).await;
        if let Some(served) =
            cached.and_then(|cached| Self::from_cache(auth, cached, now, generation, client, touch))
        {
            if served.in_grace {
                req.extensions_mut().insert(ServedInGrace);
            }
            return Ok(served.user);
        }
        let ticket = auth.logins.ticket();
        let (client, policy) = (client.to_info(), Arc::clone(&auth.policy));
        let verdict = latchkey_db::run(&auth.pool, {
            let id = id.clone();
            move |conn| check::<U>(conn, &id, generation, now, &policy, &client, touch)
        })
        .await?;
        match verdict {
            Verdict::Live { login, user, generation, in_grace, flagged } => {
                let authenticated = Arc::new(Authenticated { user, login });
                if generation.is_some() || flagged {
                    // The check moved the login on (or marked it not fresh): other instances
                    // must read it again.
                    auth.logins.forget_login(&id).await;
                } else if let Some(ticket) = ticket {
                    auth.logins.put(ticket, Arc::clone(&authenticated));
                }
                drop(flight);
                if let Some(generation) = generation {
                    session.insert(keys::LOGIN_GENERATION, &generation).map_err(AuthError::internal)?;
                }
                if in_grace {
                    req.extensions_mut().insert(ServedInGrace);
                }
                if flagged {
                    let detail = "IP address or browser changed: the login needs the password again";
                    let user_id = authenticated.login.user_id;
                    crate::guard::record(
                        req,
                        Record::of(req, Event::SessionProtection).user(user_id).detail(detail),
                    )
                    .await;
                }
                Ok(Self::Authenticated(authenticated))
            }
            ended => {
                drop(flight);
                if matches!(ended, Verdict::Expired { .. } | Verdict::Ended { .. }) {
                    // The check deleted the row.
                    auth.logins.forget_login(&id).await;
                }
                let record = match ended {
                    Verdict::Expired { user_id } => {
                        req.extensions_mut().insert(LoginExpired);
                        Some(Record::of(req, Event::SessionExpired).user(user_id))
                    }
                    Verdict::Ended { user_id, by_protection: true } => Some(
                        Record::of(req, Event::SessionProtection)
                            .user(user_id)
                            .detail("IP address or browser changed: the login was ended"),
                    ),
                    Verdict::Superseded { user_id } => {
                        Some(Record::of(req, Event::AuthnTokenReuse).user(user_id))
                    }
                    _ => None,
                };
                if let Some(record) = record {
                    crate::guard::record(req, record).await;
                }
                // The login ended on the server (logout, revocation, timeout, a newer
                // generation): forget it in this session too.
                forget(req);
                Ok(Self::Anonymous)
            }
        }
    }
}

impl<U: AuthUser> CurrentUser<U> {
    /// The login served from its `cached` row, when [`check_cached`] needs nothing written
    /// but perhaps `last_seen_at`, which is then written off the request's path.
    fn from_cache(
        auth: &Auth,
        mut cached: Arc<Authenticated<U>>,
        now: chrono::NaiveDateTime,
        generation: i64,
        client: Client<'_>,
        touch: Touch,
    ) -> Option<Served<U>> {
        let live = check_cached(&cached.login, &cached.user, generation, now, &auth.policy, client, touch)?;
        if live.touch_due {
            cached = auth.logins.touched(&cached, now);
            let (pool, id) = (auth.pool.clone(), cached.login.id.clone());
            actix_web::rt::spawn(async move {
                if let Err(error) = latchkey_db::run(&pool, move |conn| Login::touch(conn, &id, now)).await {
                    log::warn!("could not record a login's last request: {error}");
                }
            });
        }
        Some(Served { user: Self::Authenticated(cached), in_grace: live.in_grace })
    }
}

/// A request served from the login cache.
struct Served<U> {
    user: CurrentUser<U>,
    in_grace: bool,
}

/// This request's answer to "who is it?", shared by every extractor that asks.
struct Resolution<U>(Rc<OnceCell<CurrentUser<U>>>);

impl<U: 'static> Resolution<U> {
    /// The request's cell, created empty by the first to ask.
    fn cell(req: &HttpRequest) -> Rc<OnceCell<CurrentUser<U>>> {
        let mut extensions = req.extensions_mut();
        if let Some(resolution) = extensions.get::<Resolution<U>>() {
            return Rc::clone(&resolution.0);
        }
        let cell = Rc::new(OnceCell::new());
        extensions.insert(Resolution(Rc::clone(&cell)));
        cell
    }
}

/// In the request extensions when this request found its login past a timeout, so the
/// application can say "your session expired".
#[derive(Debug, Clone, Copy)]
pub struct LoginExpired;

impl<U: AuthUser> FromRequest for CurrentUser<U> {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Self::resolve(&req).await })
    }
}

/// A logged-in user (Flask-Login's `@login_required`): anonymous visitors get a 303 to
/// `/login?next=<this path>`, or 401 when they prefer JSON. When the policy requires a
/// confirmed email and the user's is not, the answer is [`AuthError::EmailUnconfirmed`]
/// (unless the resource is marked [`UnconfirmedAllowed`]). Derefs to the user.
///
/// ```no_run
/// # use latchkey_auth::{AuthUser, LoginRequired};
/// # #[derive(Clone)] struct User { id: i32, email: String }
/// # impl AuthUser for User {
/// #     fn id(&self) -> i32 { self.id }
/// #     fn credential_epoch(&self) -> i64 { 0 }
/// #     fn load(_: &mut latchkey_db::DbConnection, _: i32) -> diesel::QueryResult<Option<Self>> { Ok(None) }
/// #     fn advance_credential_epoch(_: &mut latchkey_db::DbConnection, _: i32) -> diesel::QueryResult<i64> { Ok(0) }
/// # }
/// async fn account(user: LoginRequired<User>) -> String {
///     format!("{} (login started {})", user.email, user.login().created_at)
/// }
/// ```
pub struct LoginRequired<U>(pub Arc<Authenticated<U>>);

impl<U> Clone for LoginRequired<U> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<U> LoginRequired<U> {
    /// The login the user is logged in through.
    pub fn login(&self) -> &Login {
        &self.0.login
    }
}

impl<U> Deref for LoginRequired<U> {
    type Target = U;

    fn deref(&self) -> &U {
        &self.0.user
    }
}

impl<U: AuthUser> FromRequest for LoginRequired<U> {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match CurrentUser::<U>::resolve(&req).await? {
                CurrentUser::Authenticated(user) => {
                    let unconfirmed = !user.user.email_confirmed()
                        && Auth::of(&req)?.policy.require_confirmed_email
                        && req.app_data::<UnconfirmedAllowed>().is_none();
                    if unconfirmed {
                        return Err(AuthError::EmailUnconfirmed { wants_json: prefers_json(&req) });
                    }
                    Ok(LoginRequired(user))
                }
                CurrentUser::Anonymous => {
                    let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
                    Err(AuthError::LoginRequired { next, wants_json: prefers_json(&req) })
                }
            }
        })
    }
}

/// Resource data that lets a user whose email is not confirmed through [`LoginRequired`] and
/// [`FreshLoginRequired`] when the policy requires confirmation: for the pages such a user
/// still needs (asking for the link again, correcting the address, logging out).
///
/// ```
/// use actix_web::web;
/// # async fn resend() -> &'static str { "sent" }
/// let resource = web::resource("/account/confirm-email")
///     .app_data(latchkey_auth::UnconfirmedAllowed)
///     .route(web::post().to(resend));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct UnconfirmedAllowed;

/// A logged-in user whose login is fresh (Flask-Login's `@fresh_login_required`), for
/// sensitive actions: changing the password or email, ending other logins, deleting the
/// account. A login is fresh while its last proof of identity is younger than the policy's
/// `reauth_window` and session protection has not flagged it ([`crate::LoginPolicy::is_fresh`]).
/// Anonymous visitors are refused as by [`LoginRequired`]; a stale login gets a 303 to
/// `/reauth?next=…` (401 when it prefers JSON), where the application asks for the password
/// and calls [`crate::reauthenticate`]. Derefs to the user.
///
/// `next` is the request's own path for a `GET` or `HEAD`. A form's `POST` is not replayed
/// after the proof: `next` is the page that holds the form, which the resource names with
/// [`FormPage`] (`/` when it does not).
///
/// ```no_run
/// # use latchkey_auth::{AuthUser, FreshLoginRequired, FormPage};
/// # #[derive(Clone)] struct User { id: i32, email: String }
/// # impl AuthUser for User {
/// #     fn id(&self) -> i32 { self.id }
/// #     fn credential_epoch(&self) -> i64 { 0 }
/// #     fn load(_: &mut latchkey_db::DbConnection, _: i32) -> diesel::QueryResult<Option<Self>> { Ok(None) }
/// #     fn advance_credential_epoch(_: &mut latchkey_db::DbConnection, _: i32) -> diesel::QueryResult<i64> { Ok(0) }
/// # }
/// use actix_web::web;
/// async fn delete_account(user: FreshLoginRequired<User>) -> String {
///     format!("deleting {}", user.email)
/// }
/// let resource = web::resource("/account/delete/confirm")
///     .app_data(FormPage("/account/delete"))
///     .route(web::post().to(delete_account));
/// ```
pub struct FreshLoginRequired<U>(pub Arc<Authenticated<U>>);

impl<U> FreshLoginRequired<U> {
    /// The login the user is logged in through.
    pub fn login(&self) -> &Login {
        &self.0.login
    }

    /// The same user, as a [`LoginRequired`].
    pub fn as_login_required(&self) -> LoginRequired<U> {
        LoginRequired(Arc::clone(&self.0))
    }
}

impl<U> Deref for FreshLoginRequired<U> {
    type Target = U;

    fn deref(&self) -> &U {
        &self.0.user
    }
}

/// Resource data naming the page that holds the form a `POST` to the resource comes from:
/// where [`FreshLoginRequired`] sends the user back after re-authentication.
#[derive(Debug, Clone, Copy)]
pub struct FormPage(pub &'static str);

impl<U: AuthUser> FromRequest for FreshLoginRequired<U> {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let LoginRequired(user) = LoginRequired::<U>::extract(&req).await?;
            let auth = Auth::of(&req)?;
            if auth.policy.is_fresh(&user.login, chrono::Utc::now().naive_utc()) {
                return Ok(FreshLoginRequired(user));
            }
            let reading = matches!(*req.method(), Method::GET | Method::HEAD);
            let next = match req.app_data::<FormPage>() {
                _ if reading => req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned(),
                Some(FormPage(page)) => (*page).to_owned(),
                None => "/".to_owned(),
            };
            Err(AuthError::ReauthRequired { next, wants_json: prefers_json(&req) })
        })
    }
}

/// Whether the request prefers JSON over HTML, from its `Accept` header.
///
/// ```
/// use actix_web::test::TestRequest;
/// let req = TestRequest::default().insert_header(("Accept", "application/json")).to_http_request();
/// assert!(latchkey_auth::prefers_json(&req));
/// ```
pub fn prefers_json(req: &HttpRequest) -> bool {
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// Removes the login from this session, keeping the rest of the session (a later login in
/// the same request still works).
pub(crate) fn forget(req: &HttpRequest) {
    if let Ok(identity) = req.get_identity() {
        identity.logout();
    }
    let session = TypedSession::of(req);
    session.remove(keys::REMEMBER);
    session.remove(keys::TOUCHED);
    session.remove(keys::ROTATED);
    session.remove(keys::LOGIN_GENERATION);
}
