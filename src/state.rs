//! `AppState`: what the site's handlers share, registered once as `web::Data<AppState>`, and
//! its one lookup, [`AppState::of`](crate::state::AppState::of). (The auth layer keeps its own, `latchkey_auth::Auth`.)

use actix_web::{web, HttpRequest};
use latchkey_sessions::redis::RedisStore;
use latchkey_sessions::Store;

use crate::db::Pool;
use crate::error::AppError;
use crate::keys::Keys;
use crate::mail::Mailer;
use crate::settings::Settings;

pub struct AppState {
    pub settings: Settings,
    pub pool: Pool,
    pub tera: tera::Tera,
    pub keys: Keys,
    /// The Redis store, when sessions live in Redis (for readiness checks).
    pub redis: Option<RedisStore>,
    /// Writes letters into the outbox.
    pub mailer: Mailer,
    /// The session store (for its state cache's metrics).
    pub sessions: Store,
}

impl AppState {
    /// The state registered with the app.
    pub fn of(req: &HttpRequest) -> Result<&AppState, AppError> {
        req.app_data::<web::Data<AppState>>()
            .map(|data| data.get_ref())
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState is not registered")))
    }

    pub fn is_production(&self) -> bool {
        self.settings.is_production()
    }
}
