//! `AuthError`: everything the auth layer refuses or fails at, and the response for each.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use latchkey_db::DbError;

/// Where [`AuthError::EmailUnconfirmed`] sends a browser: the application's page that says
/// "confirm your email" and sends the link again.
pub const CONFIRM_EMAIL_PAGE: &str = "/account/confirm-email";

/// Why an auth extractor or operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An anonymous visitor asked for a login-required resource: 303 to the login page, or
    /// 401 for a client that prefers JSON.
    #[error("login required")]
    LoginRequired {
        /// The path and query to come back to after logging in.
        next: String,
        /// Whether the client prefers JSON (see [`crate::prefers_json`]).
        wants_json: bool,
    },
    /// A login that is not fresh asked for a sensitive action: 303 to `/reauth`, or 401 for
    /// a client that prefers JSON (see [`crate::FreshLoginRequired`]).
    #[error("re-authentication required")]
    ReauthRequired {
        /// The path and query to come back to once identity is proved again.
        next: String,
        /// Whether the client prefers JSON (see [`crate::prefers_json`]).
        wants_json: bool,
    },
    /// A user whose email is not confirmed asked for a login-required resource while the
    /// policy requires confirmation ([`crate::LoginPolicy::require_confirmed_email`]): 303 to
    /// [`CONFIRM_EMAIL_PAGE`], or 403 for a client that prefers JSON.
    #[error("email not confirmed")]
    EmailUnconfirmed {
        /// Whether the client prefers JSON (see [`crate::prefers_json`]).
        wants_json: bool,
    },
    /// The CSRF token or the origin check failed (403); the reason is logged, not shown.
    #[error("forbidden: {0}")]
    CsrfRejected(&'static str),
    /// A form body over the limit (413).
    #[error("request body too large")]
    PayloadTooLarge,
    /// A malformed request (400); the message is shown to the client.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Too many attempts: 429 with `Retry-After`, before any password is checked.
    #[error("throttled for {0:?}")]
    Throttled(std::time::Duration),
    /// Every password hashing thread is busy and its queue is full (503 with `Retry-After`,
    /// about the time the queue takes to drain): a login storm waits in line up to the
    /// queue's bound, and is refused beyond it rather than slowing everything else.
    #[error("password hashing queue full; retry in {0:?}")]
    Busy(std::time::Duration),
    /// Password login is stopped for this account after too many consecutive failures (403).
    #[error("password login locked")]
    Locked,
    /// The account may not log in ([`crate::AuthUser::is_active`]; 403).
    #[error("account inactive")]
    Inactive,
    /// The login registry could not be read or written.
    #[error("login registry unavailable")]
    Database(#[from] DbError),
    /// Another backing service (Redis) did not answer (503).
    #[error("backing service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a missing `Auth` registration, a session that would not serialise.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AuthError {
    /// An [`AuthError::Internal`] from any error, for `map_err`.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// The short message a client may see, when there is one more specific than its status.
    pub fn client_message(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest(message) => Some(message),
            Self::Throttled(_) => Some("Too many attempts. Please wait before trying again."),
            Self::Busy(_) => Some("Too many people are signing in at this moment. Please try again shortly."),
            Self::Locked => Some(
                "Password login is locked for this account after too many failed attempts. Reset your password by email, or sign in with a passkey, to unlock it.",
            ),
            Self::Inactive => Some("This account is disabled. Contact the site's administrator."),
            Self::EmailUnconfirmed { .. } => {
                Some("Confirm your email address first: follow the link we sent you.")
            }
            _ => None,
        }
    }

    /// The seconds a throttled client should wait, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Throttled(wait) | Self::Busy(wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            _ => None,
        }
    }
}

/// Formats an error and its whole `source()` chain, for the log only.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::LoginRequired { wants_json: true, .. } | Self::ReauthRequired { wants_json: true, .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::LoginRequired { wants_json: false, .. }
            | Self::ReauthRequired { wants_json: false, .. }
            | Self::EmailUnconfirmed { wants_json: false } => StatusCode::SEE_OTHER,
            Self::EmailUnconfirmed { wants_json: true } => StatusCode::FORBIDDEN,
            Self::CsrfRejected(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Locked | Self::Inactive => StatusCode::FORBIDDEN,
            Self::Unavailable(_) | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(error) if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::LoginRequired { next, wants_json: false } => {
                let location = format!("/login?next={}", crate::next::encode(next));
                return HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish();
            }
            Self::LoginRequired { wants_json: true, .. } => {
                return HttpResponse::Unauthorized().json(serde_json::json!({ "error": "login required" }));
            }
            Self::ReauthRequired { next, wants_json } => {
                let location = format!("/reauth?next={}", crate::next::encode(next));
                if *wants_json {
                    let body =
                        serde_json::json!({ "error": "reauthentication required", "reauth": location });
                    return HttpResponse::Unauthorized().json(body);
                }
                return HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish();
            }
            Self::EmailUnconfirmed { wants_json: false } => {
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, CONFIRM_EMAIL_PAGE))
                    .finish();
            }
            Self::EmailUnconfirmed { wants_json: true } => {
                let body =
                    serde_json::json!({ "error": "email not confirmed", "confirm": CONFIRM_EMAIL_PAGE });
                return HttpResponse::Forbidden().json(body);
            }
            Self::CsrfRejected(reason) => log::warn!("CSRF check failed: {reason}"),
            Self::Database(_) | Self::Internal(_) | Self::Unavailable(_) => {
                log::error!("{status}: {}", cause_chain(self))
            }
            _ => {}
        }
        let mut response = HttpResponse::build(status);
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        response
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body(self.client_message().unwrap_or(status.canonical_reason().unwrap_or("error")))
    }
}
