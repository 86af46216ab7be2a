//! The idle-timeout warning's endpoints: read the session's remaining time without
//! extending it, and extend it on request ("Stay signed in").

use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::login::{SessionStatus, Touch};
use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::startup::AppState;
use crate::web::csrf::CsrfHeader;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/session/status", web::get().to(status)).route("/session/extend", web::post().to(extend));
}

/// Reports the remaining time; never extends the session.
async fn status(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let user = CurrentUser::resolve_with(&req, Touch::Never).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(SessionStatus::of(&user, &state.settings.sessions)))
}

/// Resets the idle clock ("Stay signed in").
async fn extend(
    req: HttpRequest,
    _csrf: CsrfHeader,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let user = CurrentUser::resolve_with(&req, Touch::Force).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(SessionStatus::of(&user, &state.settings.sessions)))
}
