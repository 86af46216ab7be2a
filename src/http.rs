//! HTTP rules every request and response follows: GET routes answer HEAD, compressed bodies
//! and oversized headers are refused, and every response carries the security headers.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{guard, web, HttpMessage, Route};
use latchkey_sessions::LoggedInSession;

use crate::auth::CurrentUser;
use crate::error::AppError;

/// The most header data a request may carry, names and values together.
pub const HEADER_LIMIT: usize = 16 * 1024;

/// A route for GET that answers HEAD too (actix-http sends HEAD answers without their body).
pub fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Refuses what the site never accepts, before any other work: a compressed body (415) and
/// headers over [`HEADER_LIMIT`] (431; actix-http itself refuses heads over 128 KiB).
pub async fn refuse_unsupported(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let size: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if size > HEADER_LIMIT {
        return Err(AppError::HeadersTooLarge.into());
    }
    // Every Content-Encoding header, each a list: anything but `identity` is refused.
    let encoded = req.headers().get_all(header::CONTENT_ENCODING).any(|value| {
        value.to_str().map_or(true, |v| v.split(',').any(|e| !e.trim().eq_ignore_ascii_case("identity")))
    });
    if encoded {
        return Err(AppError::UnsupportedEncoding.into());
    }
    next.call(req).await
}

/// The security headers; see [`secure`].
#[derive(Clone, Copy)]
pub struct SecurityHeaders {
    pub production: bool,
    /// The name of the login's session cookie.
    pub session_cookie: &'static str,
}

impl SecurityHeaders {
    /// Adds the headers to every response. It runs outermost, so it sees every cookie the
    /// layers inside set.
    pub async fn apply(
        self,
        req: ServiceRequest,
        next: Next<impl MessageBody>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let mut res = next.call(req).await?;
        let private = is_private(&res, self.session_cookie);
        secure(res.headers_mut(), self.production, private);
        Ok(res)
    }
}

/// Whether a response must never be stored by a cache: it goes to a logged-in visitor (or one
/// with a session), it is a login or register page or their answer, or it sets or clears the
/// session cookie.
fn is_private<B>(res: &ServiceResponse<B>, session_cookie: &str) -> bool {
    let req = res.request();
    // Static files are served without loading the session: a visitor who has one may be
    // logged in, so their files are not stored either.
    let logged_in = req.extensions().contains::<LoggedInSession>()
        || CurrentUser::cached(req).is_some_and(|user| user.is_authenticated())
        || req.cookie(session_cookie).is_some();
    let auth_page = matches!(req.path(), "/login" | "/register" | "/logout");
    let sets_session = res
        .headers()
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .any(|cookie| cookie.split_once('=').is_some_and(|(name, _)| name.trim() == session_cookie));
    logged_in || auth_page || sets_session
}

/// Writes the security headers: no framing, no sniffing, scripts, styles and forms only from
/// us, HSTS in production, and `Cache-Control: no-store` on `private` responses.
pub fn secure(headers: &mut HeaderMap, production: bool, private: bool) {
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(header::HeaderName::from_static(name), HeaderValue::from_static(value));
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "same-origin");
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; \
         form-action 'self'; base-uri 'none'",
    );
    if production {
        set(headers, "strict-transport-security", "max-age=63072000; includeSubDomains");
    }
    if private {
        set(headers, "cache-control", "no-store");
    }
}
