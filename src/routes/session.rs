//! The idle-timeout warning's endpoints: read the login's remaining time without extending
//! it, and extend it on request ("Stay signed in").

use actix_web::{web, HttpRequest, HttpResponse};
use latchkey_auth::csrf::CsrfHeader;
use latchkey_auth::{Auth, LoginStatus, Touch};

use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::http;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/session/status", http::get().to(status)).route("/session/extend", web::post().to(extend));
}

/// Reports the remaining time; never extends the login.
async fn status(req: HttpRequest) -> Result<HttpResponse, AppError> {
    report(&req, Touch::Never).await
}

/// Resets the idle clock ("Stay signed in").
async fn extend(req: HttpRequest, _csrf: CsrfHeader) -> Result<HttpResponse, AppError> {
    report(&req, Touch::Force).await
}

async fn report(req: &HttpRequest, touch: Touch) -> Result<HttpResponse, AppError> {
    let user = CurrentUser::resolve_with(req, touch).await?;
    let status = LoginStatus::of(user.login(), Auth::of(req)?.policy());
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(status))
}
