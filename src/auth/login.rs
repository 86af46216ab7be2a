//! Starting, checking and ending logins: the `login_sessions` row and the session together.

use actix_identity::{Identity, IdentityExt};
use actix_session::SessionExt;
use actix_web::{HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{NaiveDateTime, TimeDelta};
use diesel::{Connection, QueryResult};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::auth::{app_state, CurrentUser};
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::models::{LoginSession, NewLoginSession, User};
use crate::sessions::keys;
use crate::settings::{SessionPolicy, SessionProtection};
use crate::shop::cart::GuestCart;
use crate::web::client::ClientInfo;

/// The database id of a login token: its SHA-256, hex-encoded.
pub fn token_id(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Logs `user_id` in on this browser: ends the login it already had, records a new
/// `login_sessions` row, moves a guest's cart into the user's, and stores the login's token
/// through `Identity::login`, which also renews the session id (session-fixation defence).
/// `remember` picks a persistent cookie.
pub async fn log_in(req: &HttpRequest, user_id: i32, remember: bool) -> Result<(), AppError> {
    end_current(req).await?;
    let state = app_state(req)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let id = token_id(&token);
    let client = ClientInfo::of(req, &state.settings.sessions.trusted_proxies);
    let now = chrono::Utc::now().naive_utc();
    let session = req.get_session();
    let guest_cart = GuestCart::load(&session);
    // The login and the guest cart it takes over commit together: if either fails, the
    // visitor is still a guest with their cart, never logged in with a cart half merged.
    let merged = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            NewLoginSession {
                id: &id,
                user_id,
                created_at: now,
                last_seen_at: now,
                ip: client.ip.as_deref(),
                user_agent: client.user_agent.as_deref(),
                remember,
            }
            .insert(conn)?;
            guest_cart.merge_into(conn, user_id)
        })
    })
    .await?;
    // Merged: gone from the session before anything else can fail, so no retry adds it twice.
    GuestCart::clear(&session);
    if merged > 0 {
        log::info!("user {user_id}: {merged} line(s) of their guest cart moved into their cart");
    }
    Identity::login(&req.extensions(), token).map_err(AppError::internal)?;
    let unix_now = now.and_utc().timestamp();
    session
        .insert(keys::REMEMBER, remember)
        .and_then(|()| session.insert(keys::TOUCHED, unix_now))
        .and_then(|()| session.insert(keys::ROTATED, unix_now))
        .map_err(AppError::internal)?;
    req.extensions_mut().remove::<CurrentUser>();
    Ok(())
}

/// Logs this browser out: deletes its `login_sessions` row (so a copied cookie is dead too)
/// and purges the session.
pub async fn log_out(req: &HttpRequest) -> Result<(), AppError> {
    end_current(req).await?;
    if let Ok(identity) = req.get_identity() {
        identity.logout();
    }
    req.extensions_mut().insert(CurrentUser::Anonymous);
    Ok(())
}

async fn end_current(req: &HttpRequest) -> Result<(), AppError> {
    if let CurrentUser::Authenticated(user) = CurrentUser::resolve(req).await? {
        let state = app_state(req)?;
        let id = user.login_session_id().to_owned();
        db::run(&state.pool, move |conn| LoginSession::delete(conn, &id)).await?;
    }
    Ok(())
}

/// What a login token is worth right now.
pub enum Verdict {
    Live(LoginSession, User),
    /// Past its idle or absolute timeout; the row has been deleted.
    Expired,
    /// Ended by session protection (`strong`); the row has been deleted.
    Ended,
    /// No such login (logged out, revoked, or never existed).
    Missing,
}

/// The timing rules of `SessionPolicy`, in a form cheap to move to the blocking pool.
#[derive(Clone, Copy)]
pub struct Rules {
    idle: TimeDelta,
    absolute: TimeDelta,
    remember: TimeDelta,
    touch: TimeDelta,
    protection: SessionProtection,
}

fn delta(duration: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

impl Rules {
    pub fn of(policy: &SessionPolicy) -> Self {
        Self {
            idle: delta(policy.idle_timeout),
            absolute: delta(policy.absolute_timeout),
            remember: delta(policy.remember_duration),
            touch: delta(policy.touch_interval()),
            protection: policy.protection,
        }
    }

    /// When the login ends if nothing more happens: (idle deadline, absolute deadline).
    pub fn deadlines(&self, session: &LoginSession) -> (NaiveDateTime, Option<NaiveDateTime>) {
        if session.remember {
            (session.last_seen_at + self.remember, None)
        } else {
            (session.last_seen_at + self.idle, Some(session.created_at + self.absolute))
        }
    }
}

/// Seconds left before the login ends, as the idle-timeout warning reads them.
#[derive(Debug, serde::Serialize)]
pub struct SessionStatus {
    pub authenticated: bool,
    pub idle_expires_in: Option<i64>,
    pub absolute_expires_in: Option<i64>,
    /// How long before the idle timeout the page warns, in seconds.
    pub warn_before: i64,
}

impl SessionStatus {
    pub fn of(user: &CurrentUser, policy: &SessionPolicy) -> Self {
        let warn_before = i64::try_from(policy.timeout_warning.as_secs()).unwrap_or(i64::MAX);
        let Some(user) = user.authenticated() else {
            return Self {
                authenticated: false,
                idle_expires_in: None,
                absolute_expires_in: None,
                warn_before,
            };
        };
        let now = chrono::Utc::now().naive_utc();
        let (idle, absolute) = Rules::of(policy).deadlines(&user.login);
        // Rounded up: a session with 2.9 s left has not got 2 s left.
        let seconds_until =
            |deadline: NaiveDateTime| ((deadline - now).num_milliseconds().max(0) + 999) / 1000;
        Self {
            authenticated: true,
            idle_expires_in: Some(seconds_until(idle)),
            absolute_expires_in: absolute.map(seconds_until),
            warn_before,
        }
    }
}

/// How a check treats `last_seen_at`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Refresh it at most once per touch interval (ordinary requests).
    Throttled,
    /// Refresh it now ("Stay signed in").
    Force,
    /// Leave it (status polling must not extend the session).
    Never,
}

/// Decides whether the login `id` is live at `now` for `client`, applying the timeouts and
/// session protection, and refreshing `last_seen_at` as `touch` says.
pub fn check(
    conn: &mut DbConnection,
    id: &str,
    now: NaiveDateTime,
    rules: Rules,
    client: &ClientInfo,
    touch: Touch,
) -> QueryResult<Verdict> {
    let Some((mut session, user)) = LoginSession::find_with_user(conn, id)? else {
        return Ok(Verdict::Missing);
    };
    let (idle_deadline, absolute_deadline) = rules.deadlines(&session);
    if now > idle_deadline || absolute_deadline.is_some_and(|deadline| now > deadline) {
        LoginSession::delete(conn, id)?;
        log::info!("login session of user {} expired", user.id);
        return Ok(Verdict::Expired);
    }
    let changed = session.ip != client.ip || session.user_agent != client.user_agent;
    if changed {
        match rules.protection {
            SessionProtection::Off => {}
            SessionProtection::Basic if session.fresh => {
                LoginSession::mark_not_fresh(conn, id)?;
                session.fresh = false;
                log::warn!("login session of user {} changed IP or user agent: marked not fresh", user.id);
            }
            SessionProtection::Basic => {}
            SessionProtection::Strong => {
                LoginSession::delete(conn, id)?;
                log::warn!("login session of user {} changed IP or user agent: ended", user.id);
                return Ok(Verdict::Ended);
            }
        }
    }
    let due = match touch {
        Touch::Throttled => now - session.last_seen_at >= rules.touch,
        Touch::Force => true,
        Touch::Never => false,
    };
    if due {
        LoginSession::touch(conn, id, now)?;
        session.last_seen_at = now;
    }
    Ok(Verdict::Live(session, user))
}
