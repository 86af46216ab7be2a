//! Starting and ending logins: the `login_sessions` row and the session's identity together.

use actix_identity::{Identity, IdentityExt};
use actix_web::{http::header, HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::auth::{app_state, CurrentUser};
use crate::db;
use crate::error::AppError;
use crate::models::{LoginSession, NewLoginSession};

/// The database id of a login token: its SHA-256, hex-encoded.
pub fn token_id(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

const USER_AGENT_MAX: usize = 512;

/// Logs `user_id` in on this browser: ends the login it already had, records a new
/// `login_sessions` row, and stores its token through `Identity::login`, which also renews
/// the session id (session-fixation defence).
pub async fn log_in(req: &HttpRequest, user_id: i32, remember: bool) -> Result<(), AppError> {
    end_current(req).await?;
    let state = app_state(req)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let id = token_id(&token);
    let ip = req.peer_addr().map(|addr| addr.ip().to_string());
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(USER_AGENT_MAX).collect::<String>());
    let now = chrono::Utc::now().naive_utc();
    db::run(&state.pool, move |conn| {
        NewLoginSession {
            id: &id,
            user_id,
            created_at: now,
            last_seen_at: now,
            ip: ip.as_deref(),
            user_agent: user_agent.as_deref(),
            remember,
        }
        .insert(conn)
    })
    .await?;
    Identity::login(&req.extensions(), token).map_err(AppError::internal)?;
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
        let id = user.login_session_id.clone();
        db::run(&state.pool, move |conn| LoginSession::delete(conn, &id)).await?;
    }
    Ok(())
}
