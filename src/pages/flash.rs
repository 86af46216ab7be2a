//! The flash-message cookie: one-shot messages ("You are logged in.") carried to the next page.
//!
//! Written here rather than using actix-web-flash-messages' `CookieMessageStore`, which sends
//! a cookie with every response (`/healthz` included), always marks it `Secure` (so it fails
//! over plain http on any host but localhost) and has no `__Host-` prefix. This store sends a
//! cookie only to a visitor who is given a message, or to clear one that was shown; its
//! attributes follow the site's other cookies: `__Host-` and `Secure` in production, plain http
//! on any host in development. The framework (`FlashMessagesFramework`) is still the crate's.

use actix_web::cookie::{time::Duration, Cookie, CookieJar, Key, SameSite};
use actix_web::dev::ResponseHead;
use actix_web::http::header::{HeaderValue, SET_COOKIE};
use actix_web::HttpRequest;
use actix_web_flash_messages::storage::{FlashMessageStore, LoadError, StoreError};
use actix_web_flash_messages::FlashMessage;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The flash cookie's name: `__Host-` prefixed in production.
pub fn cookie_name(production: bool) -> &'static str {
    if production {
        "__Host-latchkey_flash"
    } else {
        "latchkey_flash"
    }
}

/// Flash messages in a signed cookie; see the module docs.
pub struct FlashCookieStore {
    key: Key,
    production: bool,
}

impl FlashCookieStore {
    pub fn new(key: Key, production: bool) -> Self {
        Self { key, production }
    }

    fn cookie(&self, value: String) -> Cookie<'static> {
        Cookie::build(cookie_name(self.production), value)
            .path("/")
            .http_only(true)
            .secure(self.production)
            .same_site(SameSite::Lax)
            .finish()
    }
}

impl FlashMessageStore for FlashCookieStore {
    /// The messages of a cookie signed by us; anything else reads as no messages.
    fn load(&self, request: &HttpRequest) -> Result<Vec<FlashMessage>, LoadError> {
        let Some(cookie) = request.cookie(cookie_name(self.production)) else {
            return Ok(Vec::new());
        };
        let messages = CookieJar::new()
            .signed(&self.key)
            .verify(cookie)
            .and_then(|cookie| URL_SAFE_NO_PAD.decode(cookie.value()).ok())
            .and_then(|json| serde_json::from_slice(&json).ok())
            .unwrap_or_default();
        Ok(messages)
    }

    fn store(
        &self,
        messages: &[FlashMessage],
        request: HttpRequest,
        response: &mut ResponseHead,
    ) -> Result<(), StoreError> {
        let cookie = if messages.is_empty() {
            if request.cookie(cookie_name(self.production)).is_none() {
                return Ok(());
            }
            let mut removal = self.cookie(String::new());
            removal.set_max_age(Duration::ZERO);
            removal
        } else {
            let json = serde_json::to_vec(messages).map_err(|e| StoreError::SerializationError(e.into()))?;
            let mut jar = CookieJar::new();
            jar.signed_mut(&self.key).add(self.cookie(URL_SAFE_NO_PAD.encode(json)));
            jar.get(cookie_name(self.production)).cloned().ok_or_else(|| {
                StoreError::GenericError(anyhow::anyhow!("the signed flash cookie went missing"))
            })?
        };
        let value =
            HeaderValue::from_str(&cookie.to_string()).map_err(|e| StoreError::GenericError(e.into()))?;
        response.headers_mut().append(SET_COOKIE, value);
        Ok(())
    }
}

/// Says "Your session expired" on the next page when this request found its login past a
/// timeout (the auth layer marks the request; the words are the site's).
pub async fn expiry_notice(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let res = next.call(req).await?;
    if res.request().extensions().contains::<latchkey_auth::LoginExpired>() {
        FlashMessage::warning("Your session expired. Please log in again.").send();
    }
    Ok(res)
}
