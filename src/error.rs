//! `AppError`, the one error type of the site's request code, and the status, title and
//! message each error shows. A leaf: it knows the errors of the layers below (database, auth,
//! templates) and nothing of pages or routes. `pages::ErrorPages` renders the pages.
//!
//! The client sees a short message; the cause chain goes to the log.

use actix_web::body::BoxBody;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use latchkey_auth::{cause_chain, AuthError};
use latchkey_db::DbError;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    /// The request is malformed; the message is shown to the client.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The body is compressed (`Content-Encoding`), which this site does not accept.
    #[error("unsupported content encoding")]
    UnsupportedEncoding,
    /// The request's headers are larger than the site accepts.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// Not allowed here (403); the message is shown to the client.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A unique constraint refused an insert (handlers turn it into a form error).
    #[error("unique constraint violated")]
    UniqueViolation(#[source] diesel::result::Error),
    /// Refused or failed by the auth layer: login required, CSRF, form size.
    #[error(transparent)]
    Auth(AuthError),
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

    /// The page shown for this error.
    pub fn page(&self) -> ErrorPage {
        let mut page = ErrorPage::for_status(self.status_code());
        if let Some(message) = self.client_message() {
            page.message = message;
        }
        page.detail = self.retry_after().map(|seconds| format!("Try again in {}.", wait_in_words(seconds)));
        page
    }

    /// The seconds a throttled client should wait, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Auth(error) => error.retry_after(),
            _ => None,
        }
    }

    fn client_message(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest(message) | Self::Forbidden(message) => Some(message),
            Self::Auth(error) => error.client_message(),
            _ => None,
        }
    }
}

impl From<DbError> for AppError {
    fn from(error: DbError) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match error {
            DbError::Query(Error::NotFound) => Self::NotFound,
            DbError::Query(error @ Error::DatabaseError(Kind::UniqueViolation, _)) => {
                Self::UniqueViolation(error)
            }
            error if error.is_transient() => Self::unavailable(error),
            other => Self::internal(other),
        }
    }
}

impl From<AuthError> for AppError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Database(error) => error.into(),
            AuthError::Unavailable(error) => Self::Unavailable(error),
            other => Self::Auth(other),
        }
    }
}

impl From<latchkey_auth::throttle::ThrottleError> for AppError {
    fn from(error: latchkey_auth::throttle::ThrottleError) -> Self {
        AuthError::from(error).into()
    }
}

impl From<tera::Error> for AppError {
    fn from(error: tera::Error) -> Self {
        Self::internal(error)
    }
}

/// Redis did not answer: marks a cause so that [`failed_store`] can name the store.
#[derive(Debug, thiserror::Error)]
#[error("Redis did not answer")]
pub struct RedisDown(#[source] pub anyhow::Error);

/// The backing store whose failure `error` is (`database` or `redis`), when it is one (a
/// session store's own failures are told apart by `pages::ErrorPages`, which knows the store).
pub fn failed_store(error: &actix_web::Error) -> Option<&'static str> {
    let cause = match (error.as_error::<AppError>(), error.as_error::<AuthError>()) {
        (Some(AppError::Unavailable(cause)), _) | (_, Some(AuthError::Unavailable(cause))) => cause,
        (_, Some(AuthError::Database(db))) if db.is_transient() => return Some("database"),
        _ => return None,
    };
    cause.chain().find_map(|cause| {
        if cause.is::<DbError>() || cause.is::<diesel::r2d2::PoolError>() {
            Some("database")
        } else if cause.is::<RedisDown>()
            || matches!(cause.downcast_ref(), Some(latchkey_auth::throttle::ThrottleError::Redis(_)))
        {
            Some("redis")
        } else {
            None
        }
    })
}

/// "45 seconds", "3 minutes", "24 hours", "90 days": a wait as a person reads it (rounded
/// up).
pub fn wait_in_words(seconds: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match seconds {
        0..=90 => plural(seconds.max(1), "second"),
        91..=5_400 => plural(seconds.div_ceil(60), "minute"),
        5_401..=172_800 => plural(seconds.div_ceil(3_600), "hour"),
        _ => plural(seconds.div_ceil(86_400), "day"),
    }
}

/// The title and short message of an error page, attached to error responses for
/// `pages::ErrorPages`, and what to do next when there is more to say.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub title: &'static str,
    pub message: &'static str,
    pub detail: Option<String>,
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
            415 => (
                "Unsupported data",
                "The submitted data is compressed or in a format this site does not accept.",
            ),
            422 => ("Invalid input", "The submitted data is not valid."),
            429 => (
                "Too many requests",
                "You are sending requests too quickly. Please wait a moment and try again.",
            ),
            431 => {
                ("Request headers too large", "The request carried more header data than this site accepts.")
            }
            503 => (
                "Service unavailable",
                "The site cannot reach one of its services right now. Please try again in a moment.",
            ),
            _ if status.is_client_error() => ("Request refused", "The request could not be handled."),
            _ => ("Something went wrong", "An unexpected error occurred on our side. It has been logged."),
        };
        Self { title, message, detail: None }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UniqueViolation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Auth(error) => error.status_code(),
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let status = self.status_code();
        match self {
            // The auth layer logs its own and answers login- and re-authentication-required
            // with its redirect.
            Self::Auth(error)
                if matches!(error, AuthError::LoginRequired { .. } | AuthError::ReauthRequired { .. }) =>
            {
                return error.error_response()
            }
            Self::Auth(AuthError::CsrfRejected(reason)) => log::warn!("CSRF check failed: {reason}"),
            _ if status.is_server_error() => log::error!("{status}: {}", cause_chain(self)),
            _ => {}
        }
        let page = self.page();
        let mut builder = HttpResponse::build(status);
        if let Some(seconds) = self.retry_after() {
            builder.insert_header((header::RETRY_AFTER, seconds));
        }
        let mut response =
            builder.insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8")).body(page.message);
        response.extensions_mut().insert(page);
        response
    }
}
