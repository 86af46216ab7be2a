//! Session lifecycle middleware.
//!
//! - [`Lifecycle`] (inside the session middleware) refreshes a session that holds a login at
//!   most once per touch interval (extending its server-side lifetime and re-issuing its
//!   cookie), and replaces its id every rotate interval where ids name server-side state. A
//!   retired id being served in its grace period is neither refreshed nor rotated. A session
//!   whose cookie [`crate::Rekey`] re-sealed under the current key is written, so its cookie
//!   goes back to the browser under that key.
//! - [`SessionCookie`] (outside it) adjusts the outgoing session cookie. It makes the cookie
//!   persistent for logins that chose "Remember me": actix-session has one lifecycle for every
//!   session (actix-extras #266), so the per-login choice is kept in the session
//!   ([`keys::REMEMBER`]) and applied here by giving the outgoing cookie a `Max-Age`; without
//!   it the cookie ends with the browser. And it withholds the cookie from a request served in
//!   a grace period ([`ServedInGrace`]), which must not send the browser back an old cookie
//!   after a concurrent request has given it a new one. It also sends the cookie's value
//!   without the percent-escapes the cookie crate puts in base64 ([`unescaped`]), so that
//!   actix-web need not decode them on every request.

use std::rc::Rc;
use std::time::Duration;

use actix_web::cookie::Cookie;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderValue, SET_COOKIE};
use actix_web::HttpMessage;
use futures_util::future::LocalBoxFuture;

use crate::rekey::Resealed;
use crate::{cookie_name, keys, names, set_cookie_named, sets_cookie, Lifetimes, TypedSession};

/// In the request extensions when the request is served on a session in its grace period: a
/// retired id (set here), or in the auth layer a login's previous generation. [`SessionCookie`]
/// then sends no session cookie, so a concurrent request's new cookie is the one the browser
/// keeps. A login or logout in the request removes the mark: its cookie must go out.
#[derive(Debug, Clone, Copy)]
pub struct ServedInGrace;

/// Marks a request whose session is a remembered login (read by `SessionCookie`).
#[derive(Clone, Copy)]
struct Remembered;

/// Requests that must not count as activity: status polling, probes and assets.
fn is_passive(path: &str) -> bool {
    matches!(path, "/session/status" | "/healthz" | "/readyz") || path.starts_with("/static/")
}

/// Refreshes and rotates sessions that hold a login; see the module docs.
#[derive(Clone)]
pub struct Lifecycle {
    touch_interval: Duration,
    /// `None` where ids name no server-side state (the cookie store).
    rotate_interval: Option<Duration>,
}

impl Lifecycle {
    /// `rotates_ids` is [`crate::Store::rotates_ids`].
    pub fn new(lifetimes: &Lifetimes, rotates_ids: bool) -> Self {
        Self {
            touch_interval: lifetimes.touch_interval,
            rotate_interval: rotates_ids.then_some(lifetimes.rotate_interval),
        }
    }
}

/// Makes the session cookie of remembered logins persistent for `remember_duration`, and
/// withholds it from requests [`ServedInGrace`]; see the module docs.
#[derive(Clone)]
pub struct SessionCookie {
    cookie_name: &'static str,
    lifetime: Duration,
}

impl SessionCookie {
    /// `production` must match the session middleware's, so the right cookie is found.
    pub fn new(lifetimes: &Lifetimes, production: bool) -> Self {
        Self { cookie_name: cookie_name(production), lifetime: lifetimes.remember_duration }
    }
}

transform!(Lifecycle, LifecycleMiddleware);
transform!(SessionCookie, SessionCookieMiddleware);

impl<S, B> Service<ServiceRequest> for LifecycleMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let session = TypedSession::of(req.request());
        let retired = session.is_retired();
        if retired {
            req.extensions_mut().insert(ServedInGrace);
        }
        let now = chrono::Utc::now().timestamp();
        let resealed = req.extensions().get::<Resealed>().is_some_and(Resealed::holds_session_cookie);
        if resealed && !retired {
            // The cookie came sealed under a previous key: writing the session sends it back
            // under the current one, with the attributes the session layers give it.
            let _ = session.insert(keys::TOUCHED, &now);
        }
        if !retired && session.contains(keys::IDENTITY) && !is_passive(req.path()) {
            let elapsed = |since: Option<i64>| {
                Duration::from_secs(u64::try_from(now - since.unwrap_or(0)).unwrap_or(0))
            };
            if elapsed(session.get(keys::TOUCHED)) >= self.config.touch_interval {
                // Serialising an integer cannot fail; ignoring keeps serving.
                let _ = session.insert(keys::TOUCHED, &now);
            }
            if let Some(interval) = self.config.rotate_interval {
                if elapsed(session.get(keys::ROTATED)) >= interval {
                    session.renew();
                    let _ = session.insert(keys::ROTATED, &now);
                }
            }
        }
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            let res = service.call(req).await?;
            if TypedSession::of(res.request()).get(keys::REMEMBER) == Some(true) {
                res.request().extensions_mut().insert(Remembered);
            }
            Ok(res)
        })
    }
}

impl<S, B> Service<ServiceRequest> for SessionCookieMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let config = self.config.clone();
        Box::pin(async move {
            let mut res = service.call(req).await?;
            if !sets_cookie(res.headers(), config.cookie_name) {
                return Ok(res);
            }
            if res.request().extensions().contains::<ServedInGrace>() {
                edit_cookie(res.headers_mut(), config.cookie_name, |_, _| None);
                return Ok(res);
            }
            let max_age = res.request().extensions().get::<Remembered>().map(|_| {
                actix_web::cookie::time::Duration::seconds(
                    i64::try_from(config.lifetime.as_secs()).unwrap_or(i64::MAX),
                )
            });
            edit_cookie(res.headers_mut(), config.cookie_name, |mut cookie, value| {
                let Some(max_age) = max_age else { return Some(value) };
                if cookie.max_age().is_some_and(|age| age.is_zero()) {
                    return Some(value); // a removal stays one
                }
                cookie.set_max_age(max_age);
                Some(HeaderValue::from_str(&cookie.to_string()).unwrap_or(value))
            });
            Ok(res)
        })
    }
}

/// The `Set-Cookie` header `value` with the escapes `%2F`, `%2B` and `%3D` in its first part
/// (`name=value`) written as the characters they stand for; `None` when it has none.
///
/// actix-session sends its cookie through the cookie crate's percent-encoding, which escapes
/// base64's `/` and `=` though both are cookie octets (RFC 6265, section 4.1.1). Each escape
/// is three characters for one, carried on every request, and a value with escapes is decoded
/// into a new buffer where one without is borrowed. It saves little: actix-web's scan for
/// `%` costs the same either way (callgrind). Sent bare, the cookie decodes to the same value,
/// and a cookie sent with escapes before still reads the same.
fn unescaped(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let end = text.find(';').unwrap_or(text.len());
    let (pair, attributes) = text.split_at(end);
    if !pair.contains('%') {
        return None;
    }
    let mut bare = String::with_capacity(text.len());
    let mut rest = pair;
    while let Some(at) = rest.find('%') {
        bare.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        match escape {
            "%2F" | "%2f" => bare.push('/'),
            "%2B" | "%2b" => bare.push('+'),
            "%3D" | "%3d" => bare.push('='),
            other => bare.push_str(other),
        }
        rest = &rest[at + escape.len()..];
    }
    bare.push_str(rest);
    bare.push_str(attributes);
    HeaderValue::from_str(&bare).ok()
}

/// Passes every `Set-Cookie` of the cookie called `name` through `edit`, with its value's
/// escapes undone ([`unescaped`]); `edit` returns the header to send in its place or `None` to
/// send none. Other cookies are left as they are.
fn edit_cookie(
    headers: &mut HeaderMap,
    name: &str,
    edit: impl Fn(Cookie<'static>, HeaderValue) -> Option<HeaderValue>,
) {
    let values: Vec<HeaderValue> = headers.get_all(SET_COOKIE).cloned().collect();
    headers.remove(SET_COOKIE);
    for value in values {
        let value = if names(&value, name) { unescaped(&value).unwrap_or(value) } else { value };
        let sent = match set_cookie_named(&value, name) {
            Some(cookie) => edit(cookie, value),
            None => Some(value),
        };
        if let Some(sent) = sent {
            headers.append(SET_COOKIE, sent);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail by panicking")]
    use super::*;

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn base64_escapes_in_the_value_are_undone_and_the_attributes_kept() {
        let sent = unescaped(&header("s=ab%2Fc+d%2Bx%3D%3D; Path=/a%2Fb; HttpOnly")).unwrap();
        assert_eq!(sent.to_str().unwrap(), "s=ab/c+d+x==; Path=/a%2Fb; HttpOnly");
        let cookie = Cookie::parse_encoded(sent.to_str().unwrap().to_owned()).unwrap();
        let before = Cookie::parse_encoded("s=ab%2Fc+d%2Bx%3D%3D".to_owned()).unwrap();
        assert_eq!(cookie.value(), before.value(), "the value a request reads is the same");
    }

    #[test]
    fn other_escapes_and_values_without_escapes_are_left_alone() {
        assert_eq!(unescaped(&header("s=abc; Path=/")), None);
        let sent = unescaped(&header("s=a%22b%2Fc%2")).unwrap();
        assert_eq!(sent.to_str().unwrap(), "s=a%22b/c%2");
    }

    #[test]
    fn a_header_names_the_cookie_only_by_its_whole_name() {
        assert!(names(&header("latchkey_session=x; Path=/"), "latchkey_session"));
        assert!(!names(&header("latchkey_session2=x"), "latchkey_session"));
        assert!(!names(&header("latchkey_sess=x"), "latchkey_session"));
        assert!(!names(&header("latchkey_session"), "latchkey_session"));
    }
}
