//! `CsrfForm<T>`: the extractor for every state-changing form. It bounds the body (413),
//! checks the CSRF token and origin (403) before anything else runs, then parses `T` (400).

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::AppError;
use crate::web::csrf;

/// The most a form body may weigh.
pub const FORM_LIMIT: usize = 64 * 1024;

/// A url-encoded form whose CSRF token has been verified.
pub struct CsrfForm<T>(pub T);

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf_token: String,
}

/// A form with nothing but its CSRF token (logout, revoke buttons).
#[derive(Deserialize)]
pub struct NoFields {}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            csrf::check_origin(&req)?;
            let content_type =
                req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !content_type.starts_with("application/x-www-form-urlencoded") {
                return Err(AppError::BadRequest("Expected a form submission."));
            }
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|len| len > FORM_LIMIT) {
                return Err(AppError::PayloadTooLarge);
            }
            let mut body = web_bytes(FORM_LIMIT);
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| AppError::BadRequest("The form could not be read."))?;
                if body.len() + chunk.len() > FORM_LIMIT {
                    return Err(AppError::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            let field: CsrfField = serde_urlencoded::from_bytes(&body)
                .map_err(|_| AppError::BadRequest("The form is malformed."))?;
            csrf::verify(&req, &field.csrf_token)?;
            let value = serde_urlencoded::from_bytes(&body)
                .map_err(|_| AppError::BadRequest("The form is malformed."))?;
            Ok(CsrfForm(value))
        })
    }
}

fn web_bytes(limit: usize) -> Vec<u8> {
    Vec::with_capacity(limit.min(8 * 1024))
}
