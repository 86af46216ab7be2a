//! CSRF defence: a per-browser secret in an HttpOnly cookie, and tokens derived from it.
//!
//! Written by hand because actix has no maintained CSRF crate that fits server-rendered forms
//! without putting every visitor into the session store. The token is
//! `HMAC(csrf_key, browser_secret)`: a token copied from another browser does not match this
//! browser's secret, and it cannot be forged without the key. The secret is renewed at login
//! and logout, so a token from before either no longer works. While the key rotates, tokens
//! of the previous key are accepted too ([`crate::Auth::with_previous_csrf_key`]). On top of
//! the token, a request whose `Origin` names another site, or whose `Sec-Fetch-Site` is
//! `cross-site`, is refused.

use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::audit::{Event, Record};
use crate::error::AuthError;
use crate::state::Auth;

/// The token to embed in this response's forms, and the cookie to set if the browser needs a
/// new secret.
#[derive(Clone)]
pub struct CsrfToken {
    /// The value for the form's `csrf_token` field or the `X-CSRF-Token` header.
    pub token: String,
    /// The cookie of a browser secret minted for this response, if one was; [`send_cookie`]
    /// sends it.
    pub new_cookie: Option<Cookie<'static>>,
}

/// The CSRF cookie's name: `__Host-` prefixed in production so no subdomain can plant one.
pub fn cookie_name(production: bool) -> &'static str {
    if production {
        "__Host-latchkey_csrf"
    } else {
        "latchkey_csrf"
    }
}

impl CsrfToken {
    /// The token for this request, creating a browser secret (and its cookie) when missing.
    /// Cached in the request so every form on a page, and the error page, agree.
    pub fn for_request(req: &HttpRequest) -> Result<Self, AuthError> {
        if let Some(token) = req.extensions().get::<CsrfToken>() {
            return Ok(token.clone());
        }
        let auth = Auth::of(req)?;
        let token = Self::from_secret(auth, browser_secret(req, auth.production));
        req.extensions_mut().insert(token.clone());
        Ok(token)
    }

    /// The token for a browser secret read earlier (`None`: make a new secret and cookie).
    pub fn from_secret(auth: &Auth, secret: Option<String>) -> Self {
        match secret {
            Some(secret) => Self { token: derive(&auth.csrf_key, &secret), new_cookie: None },
            None => {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let secret = URL_SAFE_NO_PAD.encode(bytes);
                let cookie = Cookie::build(cookie_name(auth.production), secret.clone())
                    .path("/")
                    .http_only(true)
                    .secure(auth.production)
                    .same_site(SameSite::Lax)
                    .finish();
                Self { token: derive(&auth.csrf_key, &secret), new_cookie: Some(cookie) }
            }
        }
    }
}

/// Gives this browser a new CSRF secret with this response: tokens issued before stop working.
pub fn renew(req: &HttpRequest) -> Result<(), AuthError> {
    let token = CsrfToken::from_secret(Auth::of(req)?, None);
    req.extensions_mut().insert(token);
    Ok(())
}

/// Refuses requests that browsers mark as coming from another site.
pub fn check_origin(req: &HttpRequest) -> Result<(), AuthError> {
    let header_value = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header_value("sec-fetch-site") == Some("cross-site") {
        return Err(AuthError::CsrfRejected("Sec-Fetch-Site is cross-site"));
    }
    if let Some(origin) = header_value(header::ORIGIN.as_str()) {
        let origin_host = origin.split_once("://").map(|(_, host)| host);
        let own_host = req.connection_info().host().to_owned();
        if origin_host != Some(own_host.as_str()) {
            return Err(AuthError::CsrfRejected("Origin names another site"));
        }
    }
    Ok(())
}

/// Checks the origin and a submitted token against this browser's secret, in constant time.
pub fn verify(req: &HttpRequest, submitted: Option<&str>) -> Result<(), AuthError> {
    check_origin(req)?;
    let auth = Auth::of(req)?;
    let submitted = submitted.filter(|t| !t.is_empty()).ok_or(AuthError::CsrfRejected("no CSRF token"))?;
    let secret = browser_secret(req, auth.production).ok_or(AuthError::CsrfRejected("no CSRF cookie"))?;
    let matches = |key: &[u8]| bool::from(derive(key, &secret).as_bytes().ct_eq(submitted.as_bytes()));
    if matches(&auth.csrf_key) || auth.csrf_key_previous.as_deref().is_some_and(matches) {
        Ok(())
    } else {
        Err(AuthError::CsrfRejected("wrong CSRF token"))
    }
}

/// This browser's CSRF secret, if it sent a well-formed one.
pub fn browser_secret(req: &HttpRequest, production: bool) -> Option<String> {
    let name = cookie_name(production);
    let cookies = req.cookies().ok()?;
    let value = cookies.iter().find(|cookie| cookie.name() == name)?.value();
    // 43 characters of unpadded base64 are the 32 bytes of a secret.
    let mut secret = [0u8; 32];
    let well_formed = value.len() == 43 && URL_SAFE_NO_PAD.decode_slice(value, &mut secret).is_ok();
    well_formed.then(|| value.to_owned())
}

fn derive(key: &[u8], secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn header_token(req: &HttpRequest) -> Option<&str> {
    req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// The extractor for state-changing requests made by scripts: the token travels in the
/// `X-CSRF-Token` header (read from the page's `<meta name="csrf-token">`).
pub struct CsrfHeader;

impl FromRequest for CsrfHeader {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { audited(&req, verify(&req, header_token(&req))).await.map(|()| CsrfHeader) })
    }
}

/// Records a CSRF refusal in the audit log (`csrf_fail`, with the reason, never the token).
async fn audited<T>(req: &HttpRequest, result: Result<T, AuthError>) -> Result<T, AuthError> {
    if let Err(AuthError::CsrfRejected(reason)) = &result {
        crate::guard::record(req, Record::of(req, Event::CsrfFail).detail(reason)).await;
    }
    result
}

/// The most a form body may weigh.
pub const FORM_LIMIT: usize = 64 * 1024;

/// A url-encoded form whose CSRF token has been verified: the extractor for every
/// state-changing form. In order: the origin (403), the body's size (413), the token from the
/// `csrf_token` field or the `X-CSRF-Token` header (403 when missing or wrong, whatever the
/// body is), and only then the content type and the fields of `T` (400).
///
/// ```no_run
/// use latchkey_auth::csrf::CsrfForm;
/// #[derive(serde::Deserialize)]
/// struct Comment { text: String }
/// async fn post(CsrfForm(comment): CsrfForm<Comment>) -> String {
///     comment.text
/// }
/// ```
pub struct CsrfForm<T>(pub T);

/// A form with nothing but its CSRF token (logout, revoke buttons).
#[derive(Deserialize)]
pub struct NoFields {}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let form = read_form(&req, payload).await;
            audited(&req, form).await.map(CsrfForm)
        })
    }
}

/// The body of [`CsrfForm`]'s extraction.
async fn read_form<T: DeserializeOwned>(req: &HttpRequest, mut payload: Payload) -> Result<T, AuthError> {
    check_origin(req)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > FORM_LIMIT) {
        return Err(AuthError::PayloadTooLarge);
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(FORM_LIMIT));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| AuthError::BadRequest("The form could not be read."))?;
        if body.len() + chunk.len() > FORM_LIMIT {
            return Err(AuthError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    // The token is found without parsing the form into `T`: url-decoding pairs never
    // fails, whatever the body holds.
    let mut fields = form_urlencoded::parse(&body).filter(|(name, _)| name == "csrf_token").map(|(_, v)| v);
    let field = fields.next();
    if fields.next().is_some() {
        return Err(AuthError::BadRequest("The form is malformed."));
    }
    verify(req, field.as_deref().or_else(|| header_token(req)))?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(AuthError::BadRequest("Expected a form submission."));
    }
    serde_urlencoded::from_bytes(&body).map_err(|_| AuthError::BadRequest("The form is malformed."))
}

/// Middleware (for `actix_web::middleware::from_fn`) that sends the cookie of a CSRF secret
/// minted or renewed during the request (by a page's token, or by `log_in`/`log_out`), unless
/// the response already sets it.
///
/// ```no_run
/// use actix_web::{middleware::from_fn, App};
/// let app = App::new().wrap(from_fn(latchkey_auth::csrf::send_cookie));
/// ```
pub async fn send_cookie(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let cookie = res.request().extensions().get::<CsrfToken>().and_then(|t| t.new_cookie.clone());
    if let Some(cookie) = cookie {
        if !res.response().cookies().any(|c| c.name() == cookie.name()) {
            res.response_mut().add_cookie(&cookie).map_err(actix_web::error::ErrorInternalServerError)?;
        }
    }
    Ok(res)
}
