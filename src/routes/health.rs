//! Liveness and readiness probes for load balancers and orchestrators.

use actix_web::{web, HttpResponse};

use crate::db;
use crate::error::{AppError, RedisDown};
use crate::http;
use crate::state::AppState;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", http::get().to(healthz)).route("/readyz", http::get().to(readyz));
}

/// The process is alive.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok")
}

/// The database, and Redis when sessions live there, answer.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    db::ping(&state.pool).await.map_err(AppError::unavailable)?;
    if let Some(redis) = &state.redis {
        redis.ping().await.map_err(|error| AppError::unavailable(RedisDown(error)))?;
    }
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ready"))
}
