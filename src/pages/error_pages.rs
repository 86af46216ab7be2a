//! `ErrorPages`: the one place where any error response (ours, the auth layer's, actix's, or a
//! session store's) becomes an HTML page with the right status.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use futures_util::future::LocalBoxFuture;
use latchkey_auth::csrf::{self, CsrfToken};
use latchkey_auth::{Auth, AuthError};

use super::preferences::Preferences;
use super::{render_error, render_error_in, Layout};
use crate::auth::CurrentUser;
use crate::error::{AppError, ErrorPage};
use crate::metrics::Metrics;
use crate::settings::SessionStoreKind;
use crate::state::AppState;

/// Middleware that turns every error response into the HTML error page, keeping every
/// `Set-Cookie` the inner layers wrote (a rotated session id, a renewed login).
///
/// It runs outside the session middleware so that a failing session store (whose errors
/// actix-session reports as opaque 500s) becomes a 503 page rather than a bare 500.
pub struct ErrorPages;

impl<S, B> Transform<S, ServiceRequest> for ErrorPages
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = actix_web::Error;
    type Transform = ErrorPagesMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ErrorPagesMiddleware { service: Rc::new(service) }))
    }
}

#[doc(hidden)]
pub struct ErrorPagesMiddleware<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for ErrorPagesMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, BoxBody>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // If an inner middleware fails, the request is gone with it; keep what the error page
        // needs. (Cloning the request itself would break actix's routing, which needs it unshared.)
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let auth = req.app_data::<web::Data<Auth>>().cloned();
        let path = req.path().to_owned();
        let production = state.as_ref().is_some_and(|s| s.is_production());
        let csrf_secret = csrf::browser_secret(req.request(), production);
        let preferences = state
            .as_ref()
            .map(|s| Preferences::from_request(req.request(), &s.keys.preferences, production))
            .unwrap_or_default();
        let metrics = req.app_data::<web::Data<Arc<Metrics>>>().cloned();
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            let result = service.call(req).await;
            if let (Some(metrics), Some(state)) = (&metrics, &state) {
                // Every such failure is answered 503 (the session store's by `describe`).
                let error = match &result {
                    Ok(res) => res.response().error(),
                    Err(error) => Some(error),
                };
                if let Some(store) = error.and_then(|error| failed_store(error, state)) {
                    metrics.count_store_error(store);
                }
            }
            match result {
                Ok(res) if !needs_page(res.response()) => Ok(res.map_into_left_body()),
                Ok(res) => {
                    let (status, page) = describe(res.response(), res.response().error());
                    let cookies: Vec<header::HeaderValue> =
                        res.response().headers().get_all(header::SET_COOKIE).cloned().collect();
                    let retry_after = res.response().headers().get(header::RETRY_AFTER).cloned();
                    let (req, _) = res.into_parts();
                    let mut response = render_error(&req, status, &page);
                    keep_cookies(&mut response, cookies);
                    if let Some(retry_after) = retry_after {
                        response.headers_mut().insert(header::RETRY_AFTER, retry_after);
                    }
                    Ok(ServiceResponse::new(req, response).map_into_right_body())
                }
                Err(error) => {
                    let (status, page) = describe(&error.error_response(), Some(&error));
                    let user = CurrentUser::Anonymous;
                    let layout = match (state.as_deref(), auth.as_deref()) {
                        (Some(state), Some(auth)) => Ok(Layout {
                            state,
                            auth,
                            user: &user,
                            csrf: CsrfToken::from_secret(auth, csrf_secret),
                            preferences,
                            path: &path,
                        }),
                        _ => Err(AppError::internal(anyhow::anyhow!("AppState or Auth is not registered"))),
                    };
                    let mut response = render_error_in(layout, status, &page);
                    // The security headers' middleware never sees an error; add them here.
                    crate::http::secure(response.headers_mut(), production, true);
                    Err(actix_web::error::InternalError::from_response(page.title, response).into())
                }
            }
        })
    }
}

/// Adds the inner response's cookies to the page, except those the page sets itself.
fn keep_cookies(response: &mut HttpResponse, cookies: Vec<header::HeaderValue>) {
    let set_by_page: Vec<String> = response.cookies().map(|c| c.name().to_owned()).collect();
    for value in cookies {
        let kept =
            crate::http::set_cookie_name(&value).is_some_and(|name| !set_by_page.iter().any(|n| n == name));
        if kept {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// An error status whose body is not already a page or JSON.
fn needs_page<B>(response: &HttpResponse<B>) -> bool {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return false;
    }
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    !(content_type.starts_with("text/html") || content_type.starts_with("application/json"))
}

fn describe<B>(response: &HttpResponse<B>, error: Option<&actix_web::Error>) -> (StatusCode, ErrorPage) {
    if error.is_some_and(is_session_store_error) {
        log::error!("session store failed: {:?}", error);
        let status = StatusCode::SERVICE_UNAVAILABLE;
        return (status, ErrorPage::for_status(status));
    }
    let status = response.status();
    let ours =
        error.is_some_and(|e| e.as_error::<AppError>().is_some() || e.as_error::<AuthError>().is_some());
    if status.is_server_error() && !ours {
        if let Some(error) = error {
            log::error!("{status}: {error:?}");
        }
    }
    let mut page =
        response.extensions().get::<ErrorPage>().cloned().unwrap_or_else(|| ErrorPage::for_status(status));
    if let Some(auth) = error.and_then(|e| e.as_error::<AuthError>()) {
        if let Some(message) = auth.client_message() {
            page.message = message;
        }
        if let Some(seconds) = auth.retry_after() {
            page.detail = Some(format!("Try again in {}.", crate::error::wait_in_words(seconds)));
        }
    }
    (status, page)
}

/// The store whose failure `error` is: the session store's backend for its own errors, else
/// what the error's causes name.
fn failed_store(error: &actix_web::Error, state: &AppState) -> Option<&'static str> {
    if is_session_store_error(error) {
        return match state.settings.session_store {
            SessionStoreKind::Redis => Some("redis"),
            SessionStoreKind::Database => Some("database"),
            SessionStoreKind::Cookie => None,
        };
    }
    crate::error::failed_store(error)
}

/// actix-session reports store failures as `InternalError<LoadError | SaveError | UpdateError>`
/// (and `anyhow::Error` for deletes); all mean the store is unreachable or misbehaving.
fn is_session_store_error(error: &actix_web::Error) -> bool {
    use actix_session::storage::{LoadError, SaveError, UpdateError};
    use actix_web::error::InternalError;
    error.as_error::<InternalError<LoadError>>().is_some()
        || error.as_error::<InternalError<SaveError>>().is_some()
        || error.as_error::<InternalError<UpdateError>>().is_some()
        || error.as_error::<InternalError<anyhow::Error>>().is_some()
}
