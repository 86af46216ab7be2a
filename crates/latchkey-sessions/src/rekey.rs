//! Key rotation for sealed cookies: [`Rekey`] lets cookies sealed (encrypted or signed) under
//! the key being rotated out keep working while servers move to a new one.
//!
//! Written here because actix-session, like the `cookie` crate, opens a cookie with one key
//! only. [`Rekey`] sits outside every layer that reads cookies. A cookie that the current key
//! opens passes untouched; one that only the previous key opens is re-sealed under the current
//! key in the request itself, so the layers inside (the session middleware, the flash and
//! preferences readers) see a cookie of the current key and need to know nothing about
//! rotation. The browser then gets the cookie re-issued under the current key: the session
//! cookie by [`crate::Lifecycle`], which writes the session (see [`Resealed`]), so the cookie
//! keeps the attributes the session layers give it; any other cookie from the template it was
//! registered with. Once every browser has been back, or the old cookies have expired, the
//! previous key can go.
//!
//! ```
//! use actix_web::cookie::Key;
//! use latchkey_sessions::{Rekey, Sealing};
//!
//! let (current, previous) = (Key::generate(), Key::generate());
//! let rekey = Rekey::default().with_cookie("id", Sealing::Private, current, Some(previous), None);
//! assert!(rekey.is_active());
//! ```

use std::rc::Rc;
use std::sync::Arc;

use actix_web::cookie::{Cookie, CookieJar, Key};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, COOKIE, SET_COOKIE};
use actix_web::HttpMessage;
use futures_util::future::LocalBoxFuture;

use crate::sets_cookie;

/// How a cookie is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Encrypted and authenticated (the `cookie` crate's private jar; actix-session's default).
    Private,
    /// Signed, readable by the client (the `cookie` crate's signed jar).
    Signed,
}

#[derive(Clone)]
struct SealedCookie {
    name: String,
    sealing: Sealing,
    current: Key,
    previous: Key,
    /// The attributes a re-issued cookie gets; `None`: its owner re-issues it.
    reissue: Option<Cookie<'static>>,
}

impl SealedCookie {
    fn open(&self, key: &Key, value: &str) -> Option<String> {
        let cookie = Cookie::new(self.name.clone(), value.to_owned());
        let jar = CookieJar::new();
        let opened = match self.sealing {
            Sealing::Private => jar.private(key).decrypt(cookie),
            Sealing::Signed => jar.signed(key).verify(cookie),
        };
        opened.map(|cookie| cookie.value().to_owned())
    }

    fn seal(&self, plain: String) -> Option<String> {
        let mut jar = CookieJar::new();
        let cookie = Cookie::new(self.name.clone(), plain);
        match self.sealing {
            Sealing::Private => jar.private_mut(&self.current).add(cookie),
            Sealing::Signed => jar.signed_mut(&self.current).add(cookie),
        }
        jar.get(&self.name).map(|cookie| cookie.value().to_owned())
    }

    /// The value re-sealed under the current key, when only the previous key opens it.
    fn reseal(&self, value: &str) -> Option<String> {
        if self.open(&self.current, value).is_some() {
            return None;
        }
        self.open(&self.previous, value).and_then(|plain| self.seal(plain))
    }
}

/// In the request extensions when [`Rekey`] re-sealed cookies of this request: their names.
/// [`crate::Lifecycle`] writes the session when the session cookie is among them, so the
/// browser gets it back under the current key.
#[derive(Debug, Clone, Default)]
pub struct Resealed(Vec<String>);

impl Resealed {
    /// Whether the cookie called `name` was re-sealed.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|resealed| resealed == name)
    }

    /// Whether the session cookie (under either of its names) was re-sealed.
    pub fn holds_session_cookie(&self) -> bool {
        self.contains(crate::cookie_name(true)) || self.contains(crate::cookie_name(false))
    }
}

/// Middleware that accepts cookies sealed under a previous key and re-seals them under the
/// current one; see the module docs. Wrap it outside every layer that reads cookies.
#[derive(Clone, Default)]
pub struct Rekey {
    cookies: Arc<Vec<SealedCookie>>,
}

impl Rekey {
    /// Registers the cookie called `name`, sealed by `sealing` under `current`. With no
    /// `previous` key there is nothing to rotate and the cookie is not registered. `reissue`
    /// gives the attributes (path, `Max-Age`, ...) of the cookie this layer sends back when
    /// it re-sealed one and the response sets none; `None` leaves re-issuing to the cookie's
    /// owner (the session cookie's is [`crate::Lifecycle`]).
    pub fn with_cookie(
        mut self,
        name: &str,
        sealing: Sealing,
        current: Key,
        previous: Option<Key>,
        reissue: Option<Cookie<'static>>,
    ) -> Self {
        if let Some(previous) = previous {
            let cookie = SealedCookie { name: name.to_owned(), sealing, current, previous, reissue };
            Arc::make_mut(&mut self.cookies).push(cookie);
        }
        self
    }

    /// Whether any cookie is registered with a previous key.
    pub fn is_active(&self) -> bool {
        !self.cookies.is_empty()
    }

    /// Re-seals the request's cookies that only a previous key opens, in its `Cookie` headers.
    /// Returns the cookies re-sealed, with their new values.
    fn reseal_request(&self, req: &mut ServiceRequest) -> Vec<(&SealedCookie, String)> {
        let mut resealed = Vec::new();
        let mut pairs: Vec<String> = Vec::new();
        for header in req.headers().get_all(COOKIE) {
            let Ok(header) = header.to_str() else { return Vec::new() };
            for pair in header.split(';').map(str::trim).filter(|pair| !pair.is_empty()) {
                // Values are percent-decoded, as actix-web reads them.
                let fresh = Cookie::parse_encoded(pair).ok().and_then(|parsed| {
                    let cookie = self.cookies.iter().find(|cookie| cookie.name == parsed.name())?;
                    cookie.reseal(parsed.value()).map(|fresh| (cookie, fresh))
                });
                match fresh {
                    Some((cookie, fresh)) => {
                        pairs.push(Cookie::new(cookie.name.as_str(), fresh.as_str()).encoded().to_string());
                        resealed.push((cookie, fresh));
                    }
                    None => pairs.push(pair.to_owned()),
                }
            }
        }
        if resealed.is_empty() {
            return resealed;
        }
        match HeaderValue::from_str(&pairs.join("; ")) {
            Ok(header) => {
                req.headers_mut().insert(COOKIE, header);
                req.extensions_mut().insert(Resealed(resealed.iter().map(|(c, _)| c.name.clone()).collect()));
                resealed
            }
            // Sealed values are base64 and names were read from a valid header: not reached,
            // and the request would then simply go on with its old cookies.
            Err(_) => Vec::new(),
        }
    }
}

transform!(Rekey, RekeyMiddleware);

impl<S, B> Service<ServiceRequest> for RekeyMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        if !self.config.is_active() {
            return Box::pin(service.call(req));
        }
        let reissue: Vec<Cookie<'static>> = self
            .config
            .reseal_request(&mut req)
            .into_iter()
            .filter_map(|(cookie, fresh)| {
                let mut reissued = cookie.reissue.clone()?;
                reissued.set_value(fresh);
                Some(reissued)
            })
            .collect();
        Box::pin(async move {
            let mut res = service.call(req).await?;
            for cookie in reissue {
                if !sets_cookie(res.headers(), cookie.name()) {
                    if let Ok(value) = HeaderValue::from_str(&cookie.encoded().to_string()) {
                        res.headers_mut().append(SET_COOKIE, value);
                    }
                }
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail by panicking")]

    use super::*;

    fn sealed(sealing: Sealing, key: &Key, plain: &str) -> String {
        let cookie = SealedCookie {
            name: "c".into(),
            sealing,
            current: key.clone(),
            previous: key.clone(),
            reissue: None,
        };
        cookie.seal(plain.into()).unwrap()
    }

    #[test]
    fn only_cookies_of_the_previous_key_are_resealed() {
        let (current, previous, stranger) = (Key::generate(), Key::generate(), Key::generate());
        for sealing in [Sealing::Private, Sealing::Signed] {
            let cookie = SealedCookie {
                name: "c".into(),
                sealing,
                current: current.clone(),
                previous: previous.clone(),
                reissue: None,
            };
            let fresh = cookie.reseal(&sealed(sealing, &previous, "state")).unwrap();
            assert_eq!(cookie.open(&current, &fresh).as_deref(), Some("state"), "{sealing:?}");
            assert_eq!(cookie.reseal(&fresh), None, "{sealing:?}: already current");
            assert_eq!(cookie.reseal(&sealed(sealing, &stranger, "x")), None, "{sealing:?}: unknown key");
            assert_eq!(cookie.reseal("garbage"), None, "{sealing:?}");
        }
    }

    #[test]
    fn without_a_previous_key_nothing_is_registered() {
        let rekey = Rekey::default().with_cookie("c", Sealing::Private, Key::generate(), None, None);
        assert!(!rekey.is_active());
    }
}
