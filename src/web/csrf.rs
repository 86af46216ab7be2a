//! CSRF defence: a per-browser secret in an HttpOnly cookie, and form tokens derived from it.
//!
//! Written by hand because actix has no maintained CSRF crate that fits server-rendered forms
//! without putting every visitor into the session store. The token is
//! `HMAC(csrf_key, browser_secret)`: a token copied from another browser does not match this
//! browser's secret, and it cannot be forged without `SECRET_KEY`. On top of the token, a POST
//! whose `Origin` names another site, or whose `Sec-Fetch-Site` is `cross-site`, is refused.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::startup::AppState;

/// The token to embed in this response's forms, and the cookie to set if the browser had none.
#[derive(Clone)]
pub struct CsrfToken {
    pub token: String,
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
    pub fn for_request(req: &HttpRequest) -> Result<Self, AppError> {
        if let Some(token) = req.extensions().get::<CsrfToken>() {
            return Ok(token.clone());
        }
        let state = state(req)?;
        let token = Self::from_secret(state, browser_secret(req, state.settings.is_production()));
        req.extensions_mut().insert(token.clone());
        Ok(token)
    }

    /// The token for a browser secret read earlier (`None`: make a new secret and cookie).
    pub fn from_secret(state: &AppState, secret: Option<String>) -> Self {
        match secret {
            Some(secret) => Self { token: derive(&state.keys.csrf, &secret), new_cookie: None },
            None => {
                let production = state.settings.is_production();
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let secret = URL_SAFE_NO_PAD.encode(bytes);
                let cookie = Cookie::build(cookie_name(production), secret.clone())
                    .path("/")
                    .http_only(true)
                    .secure(production)
                    .same_site(SameSite::Lax)
                    .finish();
                Self { token: derive(&state.keys.csrf, &secret), new_cookie: Some(cookie) }
            }
        }
    }
}

/// Refuses requests that browsers mark as coming from another site.
pub fn check_origin(req: &HttpRequest) -> Result<(), AppError> {
    let header_value = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header_value("sec-fetch-site") == Some("cross-site") {
        return Err(AppError::CsrfRejected("Sec-Fetch-Site is cross-site"));
    }
    if let Some(origin) = header_value(header::ORIGIN.as_str()) {
        let origin_host = origin.split_once("://").map(|(_, host)| host);
        let own_host = req.connection_info().host().to_owned();
        if origin_host != Some(own_host.as_str()) {
            return Err(AppError::CsrfRejected("Origin names another site"));
        }
    }
    Ok(())
}

/// Checks a submitted token against this browser's secret, in constant time.
pub fn verify(req: &HttpRequest, submitted: &str) -> Result<(), AppError> {
    check_origin(req)?;
    let state = state(req)?;
    let secret = browser_secret(req, state.settings.is_production())
        .ok_or(AppError::CsrfRejected("no CSRF cookie"))?;
    let expected = derive(&state.keys.csrf, &secret);
    if submitted.is_empty() || !bool::from(expected.as_bytes().ct_eq(submitted.as_bytes())) {
        return Err(AppError::CsrfRejected("token missing or wrong"));
    }
    Ok(())
}

/// This browser's CSRF secret, if it sent a well-formed one.
pub fn browser_secret(req: &HttpRequest, production: bool) -> Option<String> {
    req.cookie(cookie_name(production))
        .map(|c| c.value().to_owned())
        .filter(|v| v.len() == 43 && URL_SAFE_NO_PAD.decode(v).is_ok())
}

/// The extractor for state-changing requests made by our JavaScript: the token travels in the
/// `X-CSRF-Token` header (read from the page's `<meta name="csrf-token">`).
pub struct CsrfHeader;

impl actix_web::FromRequest for CsrfHeader {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let submitted = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        std::future::ready(verify(req, submitted).map(|()| CsrfHeader))
    }
}

fn derive(key: &[u8], secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, AppError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState is not registered")))
}
