//! Starting and ending logins: the `logins` row and the session together.

use actix_identity::{Identity, IdentityExt};
use actix_web::{HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::Connection;
use latchkey_sessions::{keys, ServedInGrace, TypedSession};
use rand::RngCore;

use crate::client::ClientInfo;
use crate::csrf;
use crate::current::{forget, CurrentUser, LoginRequired};
use crate::error::AuthError;
use crate::registry::{token_id, Login, NewLogin};
use crate::state::Auth;
use crate::user::AuthUser;

/// Logs `user` in on this browser (Flask-Login's `login_user`): ends the login the browser
/// had, records a new row (with the application's [`crate::LoginHook`] in the same
/// transaction), stores the login's token through `Identity::login` (which renews the session
/// id: session-fixation defence) and renews the CSRF secret. `remember` picks a persistent
/// cookie and the longer lifetime.
///
/// Pass the user as it was read *before* its password was checked: the login is valid only
/// for the credentials of that moment, so a password change that lands while bcrypt runs
/// ends it.
pub async fn log_in<U: AuthUser>(req: &HttpRequest, user: &U, remember: bool) -> Result<(), AuthError> {
    end_current(req).await?;
    let auth = Auth::of(req)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let id = token_id(&token);
    let client = ClientInfo::of(req, &auth.policy.trusted_proxies);
    let now = chrono::Utc::now().naive_utc();
    let (user_id, credential_epoch) = (user.id(), user.credential_epoch());
    let hook_work = auth.hook.as_ref().map(|hook| hook.prepare(req));
    latchkey_db::run(&auth.pool, move |conn| {
        conn.transaction(|conn| {
            NewLogin {
                id: &id,
                user_id,
                created_at: now,
                last_seen_at: now,
                ip: client.ip.as_deref(),
                user_agent: client.user_agent.as_deref(),
                remember,
                credential_epoch,
                rotated_at: now,
                proved_at: now,
            }
            .insert(conn)?;
            match hook_work {
                Some(work) => work(conn, user_id),
                None => Ok(()),
            }
        })
    })
    .await?;
    if let Some(hook) = &auth.hook {
        hook.committed(req);
    }
    Identity::login(&req.extensions(), token).map_err(AuthError::internal)?;
    let session = TypedSession::of(req);
    let unix_now = now.and_utc().timestamp();
    session
        .insert(keys::REMEMBER, &remember)
        .and_then(|()| session.insert(keys::TOUCHED, &unix_now))
        .and_then(|()| session.insert(keys::ROTATED, &unix_now))
        .and_then(|()| session.insert(keys::LOGIN_GENERATION, &0))
        .map_err(AuthError::internal)?;
    CurrentUser::<U>::forget_cached(req);
    // A new login's cookie must reach the browser, even from a session served in grace.
    req.extensions_mut().remove::<ServedInGrace>();
    csrf::renew(req)
}

/// Records that the logged-in user just proved their identity again (the password, at the
/// re-authentication page): the login is fresh for another `reauth_window`, session
/// protection compares later requests with this client, and the session id is renewed, as at
/// login, so an id observed before the proof is worth less after it.
///
/// Check the proof before calling this; a failed proof must change nothing.
pub async fn reauthenticate<U: AuthUser>(
    req: &HttpRequest,
    current: &LoginRequired<U>,
) -> Result<(), AuthError> {
    let auth = Auth::of(req)?;
    let id = current.login().id.clone();
    let now = chrono::Utc::now().naive_utc();
    let client = ClientInfo::of(req, &auth.policy.trusted_proxies);
    latchkey_db::run(&auth.pool, move |conn| Login::record_proof(conn, &id, now, &client)).await?;
    TypedSession::of(req).renew();
    CurrentUser::<U>::forget_cached(req);
    // The renewed cookie must reach the browser, even from a session served in grace.
    req.extensions_mut().remove::<ServedInGrace>();
    Ok(())
}

/// Logs this browser out (Flask-Login's `logout_user`): deletes its login row (so a copied
/// cookie is dead too), purges the session and renews the CSRF secret.
pub async fn log_out<U: AuthUser>(req: &HttpRequest) -> Result<(), AuthError> {
    end_current(req).await?;
    forget(req);
    TypedSession::of(req).purge();
    CurrentUser::<U>::remember(req, CurrentUser::Anonymous);
    req.extensions_mut().remove::<ServedInGrace>();
    csrf::renew(req)
}

/// Ends every other login of the current user, including any whose password check is still
/// running: the user's credential epoch moves on and only this login follows it. Returns how
/// many rows ended.
pub async fn end_other_logins<U: AuthUser>(
    req: &HttpRequest,
    current: &LoginRequired<U>,
) -> Result<usize, AuthError> {
    let auth = Auth::of(req)?;
    let (user_id, keep) = (current.id(), current.login().id.clone());
    let ended = latchkey_db::run(&auth.pool, move |conn| {
        conn.transaction(|conn| {
            let epoch = U::advance_credential_epoch(conn, user_id)?;
            Login::set_credential_epoch(conn, &keep, epoch)?;
            Login::delete_others(conn, user_id, &keep)
        })
    })
    .await?;
    CurrentUser::<U>::forget_cached(req);
    Ok(ended)
}

/// Deletes the login row this browser's session names, if any.
async fn end_current(req: &HttpRequest) -> Result<(), AuthError> {
    let Some(token) = req.get_identity().ok().and_then(|identity| identity.id().ok()) else {
        return Ok(());
    };
    let auth = Auth::of(req)?;
    let id = token_id(&token);
    latchkey_db::run(&auth.pool, move |conn| Login::delete(conn, &id)).await?;
    Ok(())
}
