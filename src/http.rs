//! HTTP rules every request and response follows: GET routes answer HEAD, compressed bodies
//! and oversized headers are refused, and every response carries the security headers.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{guard, web, Route};

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
        let carries_token = token_path(res.request().path()).is_some();
        let private = carries_token || is_private(&res, self.session_cookie);
        secure(res.headers_mut(), self.production, private);
        if carries_token {
            // The page of a link sent by email: no link or resource it loads learns the token.
            res.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        }
        Ok(res)
    }
}

/// Whether a response must never be stored by a cache: it goes to a visitor with a session
/// (every logged-in visitor has one; static files are served without loading it, so having one
/// is what counts), it is a login or register page or their answer, or it sets or clears the
/// session cookie (a login or logout in this very request).
fn is_private<B>(res: &ServiceResponse<B>, session_cookie: &str) -> bool {
    let req = res.request();
    let has_session = req.cookie(session_cookie).is_some();
    let auth_page = matches!(req.path(), "/login" | "/register" | "/logout");
    let sets_session =
        res.headers().get_all(header::SET_COOKIE).any(|value| set_cookie_name(value) == Some(session_cookie));
    has_session || auth_page || sets_session
}

/// The name of the cookie a `Set-Cookie` header sets.
pub fn set_cookie_name(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok().and_then(|v| v.split_once('=')).map(|(name, _)| name.trim())
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

/// Paths whose last segment is a secret token (a password-reset or email-confirmation link).
const TOKEN_PATHS: &[&str] = &["/password/reset/", "/email/confirm/"];

/// The prefix of `path` if it carries a token after it.
fn token_path(path: &str) -> Option<&'static str> {
    TOKEN_PATHS.iter().copied().find(|prefix| path.starts_with(prefix) && path.len() > prefix.len())
}

/// `path` with the token of a token-carrying path replaced by `[redacted]`, for logs.
pub fn redact_token_path(path: &str) -> std::borrow::Cow<'_, str> {
    match token_path(path) {
        Some(prefix) => format!("{prefix}[redacted]").into(),
        None => path.into(),
    }
}

/// How the site writes a moment for people, in pages and mail: "5 December 2026, 09:30 UTC".
pub const DATE_FORMAT: &str = "%-d %B %Y, %H:%M UTC";

/// Browser and operating system names from a user agent, for people to recognise devices.
pub fn describe_user_agent(user_agent: Option<&str>) -> (String, String) {
    match parse_user_agent(user_agent) {
        Some(result) => {
            let browser = if result.version.is_empty() || result.version == "UNKNOWN" {
                result.name.to_owned()
            } else {
                format!("{} {}", result.name, result.version)
            };
            (browser, os_name(&result))
        }
        None => ("Unknown browser".to_owned(), "Unknown system".to_owned()),
    }
}

/// The browser (without its version, which updates change) and operating system of a user
/// agent: what stays the same for one device.
pub fn device_family(user_agent: Option<&str>) -> (String, String) {
    match parse_user_agent(user_agent) {
        Some(result) => (result.name.to_owned(), os_name(&result)),
        None => ("Unknown browser".to_owned(), "Unknown system".to_owned()),
    }
}

fn parse_user_agent(user_agent: Option<&str>) -> Option<woothee::parser::WootheeResult<'_>> {
    user_agent
        .and_then(|ua| woothee::parser::Parser::new().parse(ua))
        .filter(|result| result.name != "UNKNOWN")
}

fn os_name(result: &woothee::parser::WootheeResult<'_>) -> String {
    if result.os == "UNKNOWN" {
        "Unknown system".to_owned()
    } else {
        result.os.to_owned()
    }
}
