//! `AppError`, the one error type of request code, and `ErrorPages`, the one place where any
//! error (ours, actix's, or a session store's) becomes an HTML page with the right status.
//!
//! The client sees a short message; the cause chain goes to the log.

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;

use actix_web::web;

use crate::auth::CurrentUser;
use crate::startup::AppState;
use crate::web::preferences::Preferences;
use crate::web::{csrf, page};

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    /// The request is malformed; the message is shown to the client.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// CSRF or origin check failed; the reason is logged, not shown.
    #[error("forbidden: {0}")]
    CsrfRejected(&'static str),
    #[error("request body too large")]
    PayloadTooLarge,
    /// An anonymous visitor asked for a login-required page.
    #[error("login required")]
    LoginRequired { next: String, wants_json: bool },
    /// A unique constraint refused an insert (handlers turn it into a form error).
    #[error("unique constraint violated")]
    UniqueViolation(#[source] diesel::result::Error),
    /// A backing service (database, Redis) did not answer.
    #[error("backing service unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable(cause.into())
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match error {
            Error::NotFound => Self::NotFound,
            Error::DatabaseError(Kind::UniqueViolation, _) => Self::UniqueViolation(error),
            Error::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => {
                Self::unavailable(error)
            }
            // SQLite reports a lock held past busy_timeout this way: transient, so 503.
            Error::DatabaseError(_, ref info) if info.message().contains("database is locked") => {
                Self::unavailable(error)
            }
            other => Self::internal(other),
        }
    }
}

impl From<tera::Error> for AppError {
    fn from(error: tera::Error) -> Self {
        Self::internal(error)
    }
}

/// The title and short message of an error page, attached to error responses for `ErrorPages`.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub title: &'static str,
    pub message: &'static str,
}

impl ErrorPage {
    /// The page shown for a status when nothing more specific is known.
    pub fn for_status(status: StatusCode) -> Self {
        let (title, message) = match status.as_u16() {
            400 => {
                ("Bad request", "The request could not be understood. Please check the form and try again.")
            }
            401 => ("Login required", "Please log in to see this page."),
            403 => (
                "Forbidden",
                "This request was refused. If you submitted a form, reload the page and try again.",
            ),
            404 => ("Page not found", "There is no page at this address."),
            405 => ("Method not allowed", "This address does not accept that kind of request."),
            413 => ("Request too large", "The submitted data is larger than this site accepts."),
            415 => ("Unsupported form", "The submitted data is not in a format this site accepts."),
            422 => ("Invalid input", "The submitted data is not valid."),
            429 => (
                "Too many requests",
                "You are sending requests too quickly. Please wait a moment and try again.",
            ),
            503 => (
                "Service unavailable",
                "The site cannot reach one of its services right now. Please try again in a moment.",
            ),
            _ if status.is_client_error() => ("Request refused", "The request could not be handled."),
            _ => ("Something went wrong", "An unexpected error occurred on our side. It has been logged."),
        };
        Self { title, message }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::CsrfRejected(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::LoginRequired { wants_json: true, .. } => StatusCode::UNAUTHORIZED,
            Self::LoginRequired { wants_json: false, .. } => StatusCode::SEE_OTHER,
            Self::UniqueViolation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let status = self.status_code();
        match self {
            Self::Unavailable(_) | Self::Internal(_) => log::error!("{status}: {:#}", anyhow_chain(self)),
            Self::CsrfRejected(reason) => log::warn!("CSRF check failed: {reason}"),
            _ => {}
        }
        match self {
            Self::LoginRequired { next, wants_json: false } => {
                let location = format!("/login?next={}", crate::auth::next::encode(next));
                return HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish();
            }
            Self::LoginRequired { wants_json: true, .. } => {
                return HttpResponse::Unauthorized().json(serde_json::json!({ "error": "login required" }));
            }
            _ => {}
        }
        let mut page = ErrorPage::for_status(status);
        if let Self::BadRequest(message) = self {
            page.message = message;
        }
        let mut response = HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body(page.message);
        response.extensions_mut().insert(page);
        response
    }
}

/// Formats the whole `source()` chain, for the log only.
fn anyhow_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Middleware that turns every error response into the HTML error page.
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
        let path = req.path().to_owned();
        let csrf_secret =
            state.as_ref().and_then(|s| csrf::browser_secret(req.request(), s.settings.is_production()));
        let preferences = state
            .as_ref()
            .map(|s| {
                Preferences::from_request(req.request(), &s.keys.preferences, s.settings.is_production())
            })
            .unwrap_or_default();
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            match service.call(req).await {
                Ok(res) if !needs_page(res.response()) => Ok(res.map_into_left_body()),
                Ok(res) => {
                    let (status, page) = describe(res.response(), res.response().error());
                    let (req, _) = res.into_parts();
                    let response = page::render_error(&req, status, &page);
                    Ok(ServiceResponse::new(req, response).map_into_right_body())
                }
                Err(error) => {
                    let (status, page) = describe(&error.error_response(), Some(&error));
                    let user = CurrentUser::Anonymous;
                    let layout = state
                        .as_deref()
                        .map(|state| page::Layout {
                            state,
                            user: &user,
                            csrf: csrf::CsrfToken::from_secret(state, csrf_secret),
                            preferences,
                            path: &path,
                        })
                        .ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState is not registered")));
                    let response = page::render_error_in(layout, status, &page);
                    Err(actix_web::error::InternalError::from_response(page.title, response).into())
                }
            }
        })
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
    if status.is_server_error() {
        if let Some(error) = error.filter(|e| e.as_error::<AppError>().is_none()) {
            log::error!("{status}: {error:?}");
        }
    }
    let page =
        response.extensions().get::<ErrorPage>().cloned().unwrap_or_else(|| ErrorPage::for_status(status));
    (status, page)
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

/// The request's preference for JSON over HTML, from its `Accept` header.
pub fn prefers_json(req: &HttpRequest) -> bool {
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}
